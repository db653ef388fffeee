#!/usr/bin/env bash
# The quick-start demo: a worker prices a simulated GPU fleet, LLM gateway and storage buckets (with
# incidents injected) and a live table shows the priced spend. Expects the broker to be running
# (`make demo` starts it). Everything the demo runs logs under .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
BW=.venv/bin/burnwatch
DEMO_DIR=.demo
mkdir -p "$DEMO_DIR"
export BURNWATCH_KAFKA_BOOTSTRAP_SERVERS="${BURNWATCH_KAFKA_BOOTSTRAP_SERVERS:-localhost:${KAFKA_PORT:-9092}}"
export BURNWATCH_DATA_DIR="${BURNWATCH_DATA_DIR:-$DEMO_DIR/state}"
# A fresh topic prefix per run, so the table shows this run's spend only.
export BURNWATCH_TOPIC_PREFIX="${BURNWATCH_TOPIC_PREFIX:-demo$(date +%s).}"
export BURNWATCH_APP_ID="${BURNWATCH_APP_ID:-burnwatch-${BURNWATCH_TOPIC_PREFIX%.}}"
export BURNWATCH_WEB_PORT="${BURNWATCH_WEB_PORT:-6066}"
export BURNWATCH_BUDGETS_PATH="${BURNWATCH_BUDGETS_PATH:-deploy/demo-budgets.yaml}"
export BURNWATCH_ALERTING_PATH="${BURNWATCH_ALERTING_PATH:-deploy/demo-alerting.yaml}"  # demo-scale group waits
HEALTH="http://localhost:${BURNWATCH_WEB_PORT}/health"
DURATION_S="${DEMO_SIMULATED_SECONDS:-7200}"   # simulated seconds
SPEED="${DEMO_SPEED:-30}"                       # simulated seconds per wall second

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "==> starting the worker (log: $DEMO_DIR/worker.log; metrics: http://localhost:${BURNWATCH_WEB_PORT}/metrics)"
$BW worker >"$DEMO_DIR/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
  if curl -fsS "$HEALTH" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
curl -fsS "$HEALTH" >/dev/null || { echo "worker did not become healthy; see $DEMO_DIR/worker.log"; tail -20 "$DEMO_DIR/worker.log"; exit 1; }

# The notifier's console receiver prints each alert notification here; its log goes to the file.
export BURNWATCH_NOTIFIER_WEB_PORT="${BURNWATCH_NOTIFIER_WEB_PORT:-6067}"
echo "==> starting the notifier (log: $DEMO_DIR/notifier.log); alert notifications print below as they are sent"
$BW notifier 2>"$DEMO_DIR/notifier.log" &
pids+=($!)
for _ in $(seq 1 120); do
  if curl -fsS "http://localhost:${BURNWATCH_NOTIFIER_WEB_PORT}/health" >/dev/null 2>&1; then break; fi
  sleep 0.5
done

echo "==> simulating $((DURATION_S / 3600)) h of traffic at ${SPEED}x with incidents (log: $DEMO_DIR/simulate.log)"
$BW simulate --speed "$SPEED" --duration "$DURATION_S" --incidents all --truth "$DEMO_DIR/incidents.json" \
  >"$DEMO_DIR/simulate.log" 2>&1 &
sim=$!
pids+=($sim)

echo "==> priced spend, live from costs.priced (Ctrl-C to stop)"
$BW tail costs.priced --summary --from-beginning --timeout 15 &
tailpid=$!
pids+=($tailpid)
wait "$sim" || { echo "simulator failed; see $DEMO_DIR/simulate.log"; exit 1; }
wait "$tailpid" || true

# Budgets, spend tables and detectors run behind pricing; wait until every stage has read its input.
echo "==> waiting for every stage to read its input (burnwatch lag --wait)"
$BW lag --wait --timeout "${DEMO_CATCH_UP_S:-900}" || echo "still behind after ${DEMO_CATCH_UP_S:-900} s: the figures below are partial"

echo "==> budgets, live from budget.burn"
$BW budgets --timeout 3 || true
sleep "${BURNWATCH_SPEND_PUBLISH_INTERVAL_S:-5}"  # the spend tables publish every few seconds
echo "==> spend per team and hour, live from the spend tables (spend.windows; by event time)"
$BW spend --by team --period hour --last 3 --timeout 3 || true
echo "==> alerts on the alerts topic: detector findings and budget thresholds (event times)"
$BW tail alerts --from-beginning --timeout 3 || true
echo "==> injected incidents (ground truth, $DEMO_DIR/incidents.json)"
.venv/bin/python -c 'import json, sys
for i in json.load(open(sys.argv[1]))["incidents"]:
    print("  %(kind)-14s %(entity)-28s %(start)s .. %(end)s" % i)' "$DEMO_DIR/incidents.json"
echo "==> notifications sent by the notifier: $DEMO_DIR/notifications.jsonl (raw alerts: $BW tail alerts --from-beginning)"
echo "==> done. Injected incidents: $DEMO_DIR/incidents.json; dead letters: $BW tail usage.dlq --from-beginning --timeout 5"
