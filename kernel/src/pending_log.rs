//! The young entities' log of one partition, as `detectors/pending_log.py`'s `PendingLog` keeps it (the
//! Python code is the reference, and says why): each step's records (`["d", id, doc]`, `["b", id, entry]`,
//! `["x", id]`) written as JSON as they happen, which entities are pinned at which entry, and which
//! entries the table holds.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::pending_doc::{Entry, Pending};
use crate::value::{write_f64, write_str};

const CARRIED_PER_STEP: usize = 256; // detectors.pending_log.CARRIED_PER_STEP

/// What a step of the log leaves to write: its entry `(seq, JSON)`, the entries to delete, and the
/// entities whose documents saved before the log go.
pub type Taken = (Option<(u64, Vec<u8>)>, Vec<u64>, Vec<String>);

pub struct PendingLog {
    pub enabled: bool,
    carry_after_s: f64,
    next_seq: u64,
    records: Vec<u8>, // this step's records, as JSON, comma-separated
    pinned: FxHashMap<String, u64>,
    by_seq: BTreeMap<u64, FxHashSet<String>>, // sorted when carried (`take`)
    written: BTreeMap<u64, f64>,              // the entries the table holds, by seq: their event times
    old: FxHashSet<String>, // entities whose document saved before the log is still their base
    dropped: Vec<String>,
}

impl Default for PendingLog {
    fn default() -> Self {
        Self {
            enabled: false,
            carry_after_s: f64::INFINITY,
            next_seq: 0,
            records: Vec::new(),
            pinned: FxHashMap::default(),
            by_seq: BTreeMap::new(),
            written: BTreeMap::new(),
            old: FxHashSet::default(),
            dropped: Vec::new(),
        }
    }
}

impl PendingLog {
    /// Log from now on, writing entities again once pinned at an entry `carry_after_s` of event time old.
    pub fn enable(&mut self, carry_after_s: f64) {
        self.enabled = true;
        self.carry_after_s = carry_after_s;
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
        self.drop_old(key);
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
        if !self.pinned.contains_key(key) {
            self.pin(key.to_owned(), self.next_seq); // its first record over a document saved before the log
        }
    }

    /// `key` no longer waits.
    pub fn gone(&mut self, key: &str) {
        if !self.enabled {
            return;
        }
        self.start(b"x", key);
        self.records.push(b']');
        self.unpin(key);
        self.drop_old(key);
    }

    /// A restored entity: pinned at entry `seq` (None: at none yet), `old` if a document saved before the
    /// log is its base.
    pub fn restore(&mut self, key: &str, seq: Option<u64>, old: bool) {
        self.unpin(key);
        if let Some(seq) = seq {
            self.pin(key.to_owned(), seq);
        }
        if old {
            self.old.insert(key.to_owned());
        }
    }

    /// The entries the table holds: `(seq, event time)`.
    pub fn restore_entries(&mut self, written: Vec<(u64, f64)>) {
        self.written = written.into_iter().collect();
        self.next_seq = self.written.last_key_value().map_or(0, |(last, _)| last + 1);
    }

    /// End a step at event time `now` (see `Taken`).
    pub fn take(&mut self, docs: &FxHashMap<String, Pending>, now: f64) -> Taken {
        if !self.enabled {
            return (None, Vec::new(), Vec::new());
        }
        let edge = now - self.carry_after_s;
        let mut due: Vec<String> = Vec::new();
        'seqs: for (seq, keys) in &self.by_seq {
            if self.written.get(seq).copied().unwrap_or(now) >= edge {
                break;
            }
            let mut keys: Vec<&String> = keys.iter().collect();
            keys.sort_unstable(); // carried in the order the Python log carries them
            for key in keys {
                if due.len() == CARRIED_PER_STEP {
                    break 'seqs;
                }
                due.push(key.clone());
            }
        }
        for key in due {
            if let Some(doc) = docs.get(&key) {
                self.opened(&key, doc);
            }
        }
        let mut written = None;
        if !self.records.is_empty() {
            let mut json = Vec::with_capacity(self.records.len() + 40);
            json.extend_from_slice(b"{\"t\":");
            if now.is_finite() {
                write_f64(&mut json, now);
            } else {
                json.extend_from_slice(b"null");
            }
            json.extend_from_slice(b",\"r\":[");
            json.append(&mut self.records);
            json.extend_from_slice(b"]}");
            written = Some((self.next_seq, json));
            self.written.insert(self.next_seq, now);
            self.next_seq += 1;
        }
        let floor = self.by_seq.first_key_value().map_or(self.next_seq, |(&seq, _)| seq);
        let mut deleted = Vec::new();
        let kept = self.written.split_off(&floor); // those below it go
        for seq in std::mem::replace(&mut self.written, kept).into_keys() {
            if written.as_ref().is_some_and(|(at, _)| *at == seq) {
                written = None; // every entity it names is gone already
            } else {
                deleted.push(seq);
            }
        }
        (written, deleted, std::mem::take(&mut self.dropped))
    }

    fn pin(&mut self, key: String, seq: u64) {
        self.by_seq.entry(seq).or_default().insert(key.clone());
        self.pinned.insert(key, seq);
    }

    fn unpin(&mut self, key: &str) {
        if let Some(seq) = self.pinned.remove(key) {
            if let Some(keys) = self.by_seq.get_mut(&seq) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_seq.remove(&seq);
                }
            }
        }
    }

    fn drop_old(&mut self, key: &str) {
        if self.old.remove(key) {
            self.dropped.push(key.to_owned());
        }
    }
}
