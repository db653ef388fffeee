//! The young entities' log of one partition, as `detectors/pending_log.py`'s `PendingLog` keeps it (the
//! Python code is the reference, and says why): each step's records (`["d", id, doc]`, `["b", id, entry]`,
//! `["x", id]`) written as JSON as they happen, which entities are pinned at which entry, and which
//! entries the table holds.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;

use crate::pending_doc::{Entry, Pending};
use crate::value::write_str;

pub const LOG_KEPT: u64 = 256; // detectors.pending_log.LOG_KEPT

pub struct PendingLog {
    pub enabled: bool,
    kept: u64,
    next_seq: u64,
    records: Vec<u8>, // this step's records, as JSON, comma-separated
    pinned: FxHashMap<String, u64>,
    pins: BTreeMap<u64, usize>,
    written: VecDeque<u64>,
}

impl Default for PendingLog {
    fn default() -> Self {
        Self {
            enabled: false,
            kept: LOG_KEPT,
            next_seq: 0,
            records: Vec::new(),
            pinned: FxHashMap::default(),
            pins: BTreeMap::new(),
            written: VecDeque::new(),
        }
    }
}

impl PendingLog {
    /// Log from now on, writing entities again once pinned more than `kept` entries back.
    pub fn enable(&mut self, kept: u64) {
        self.enabled = true;
        self.kept = kept.max(2);
    }

    fn start(&mut self, tag: &[u8], key: &str) {
        if !self.records.is_empty() {
            self.records.push(b',');
        }
        self.records.extend_from_slice(b"[\"");
        self.records.extend_from_slice(tag);
        self.records.extend_from_slice(b"\",");
        write_str(&mut self.records, key);
    }

    /// `key`'s whole document (new, or written again): pinned at this step's entry.
    pub fn opened(&mut self, key: &str, doc: &Pending) {
        if !self.enabled {
            return;
        }
        self.unpin(key);
        self.start(b"d", key);
        self.records.push(b',');
        doc.write_doc(&mut self.records);
        self.records.push(b']');
        self.pin(key.to_owned(), self.next_seq);
    }

    /// One more bucket entry of a waiting entity.
    pub fn added(&mut self, key: &str, entry: &Entry) {
        if !self.enabled {
            return;
        }
        self.start(b"b", key);
        self.records.push(b',');
        entry.write(&mut self.records);
        self.records.push(b']');
    }

    /// `key` no longer waits.
    pub fn gone(&mut self, key: &str) {
        if !self.enabled {
            return;
        }
        self.start(b"x", key);
        self.records.push(b']');
        self.unpin(key);
    }

    /// A restored entity pinned at entry `seq`, or (None) logged again whole.
    pub fn restore(&mut self, key: &str, doc: &Pending, seq: Option<u64>) {
        match seq {
            Some(seq) if self.enabled => {
                self.unpin(key);
                self.pin(key.to_owned(), seq);
            }
            _ => self.opened(key, doc),
        }
    }

    /// The entries the table holds.
    pub fn restore_entries(&mut self, mut written: Vec<u64>) {
        written.sort_unstable();
        self.next_seq = written.last().map_or(0, |last| last + 1);
        self.written = written.into();
    }

    /// End a step: its entry `(seq, JSON)` if it has one to write, and the entries to delete.
    pub fn take(&mut self, docs: &FxHashMap<String, Pending>) -> (Option<(u64, Vec<u8>)>, Vec<u64>) {
        if !self.enabled {
            return (None, Vec::new());
        }
        if self.pins.first_key_value().is_some_and(|(&oldest, _)| oldest + self.kept < self.next_seq) {
            let edge = self.next_seq - self.kept / 2;
            let mut again: Vec<String> =
                self.pinned.iter().filter(|(_, &seq)| seq < edge).map(|(key, _)| key.clone()).collect();
            again.sort_unstable();
            for key in again {
                if let Some(doc) = docs.get(&key) {
                    self.opened(&key, doc);
                }
            }
        }
        let mut written = None;
        if !self.records.is_empty() {
            let mut json = Vec::with_capacity(self.records.len() + 2);
            json.push(b'[');
            json.append(&mut self.records);
            json.push(b']');
            written = Some((self.next_seq, json));
            self.written.push_back(self.next_seq);
            self.next_seq += 1;
        }
        let floor = self.pins.first_key_value().map_or(self.next_seq, |(&seq, _)| seq);
        let mut deleted = Vec::new();
        while let Some(&seq) = self.written.front().filter(|&&seq| seq < floor) {
            self.written.pop_front();
            if written.as_ref().is_some_and(|(at, _)| *at == seq) {
                written = None; // every entity it names is gone already
            } else {
                deleted.push(seq);
            }
        }
        (written, deleted)
    }

    fn pin(&mut self, key: String, seq: u64) {
        self.pinned.insert(key, seq);
        *self.pins.entry(seq).or_insert(0) += 1;
    }

    fn unpin(&mut self, key: &str) {
        if let Some(seq) = self.pinned.remove(key) {
            if let Some(count) = self.pins.get_mut(&seq) {
                *count -= 1;
                if *count == 0 {
                    self.pins.remove(&seq);
                }
            }
        }
    }
}
