#!/usr/bin/env bash
# Batch memory: starts a release server over the shipped registers (imported into a temporary data
# folder), posts twice a batch of 40 `ValueSet/postcodes-all/$expand?count=50000` entries (the
# shipped slice has 62,507 postcodes, so each answer holds 50,000, ~6.4 MB, and the batch 245 MiB),
# and prints the server's RSS before, its sampled peak during each batch, and after (at once and
# 12 s later, when jemalloc's background threads have purged), from /proc/PID/status.
#
#   cargo build --release && benches/batch_memory.sh                       # default budget
#   benches/batch_memory.sh --max-batch-bytes 300000000                  # every entry runs
#   BIN=/path/to/fhir-registers PORT=18190 benches/batch_memory.sh        # another build
#
# Run with RUST_LOG=info,fhir_registers=debug to have the allocator's statistics in the log.
set -euo pipefail
# Access log lines (one per request) would cost the measured server CPU and fill its log file.
export RUST_LOG="${RUST_LOG:-info,fhir_registers::access=off}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release/fhir-registers}"
PORT="${PORT:-18190}"
WORK="$(mktemp -d)"
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

cd "$ROOT"
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" "$@" > "$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
    sleep 1
done
rss() { awk '/VmRSS|VmHWM/ { printf "%s %d MiB  ", $1, $2 / 1024 } END { print "" }' "/proc/$PID/status"; }
python3 -c '
import json
entry = {"request": {"method": "GET", "url": "ValueSet/postcodes-all/$expand?count=50000"}}
print(json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [entry] * 40}))
' > "$WORK/batch.json"
curl -s -o /dev/null "http://127.0.0.1:$PORT/fhir/ValueSet/postcodes-all/\$expand?count=10"
echo -n "before:  "; rss
for run in 1 2; do
    ( while kill -0 "$PID" 2> /dev/null; do
        awk '/VmRSS/ { print $2 }' "/proc/$PID/status" >> "$WORK/samples.$run"; sleep 0.05
      done ) &
    SAMPLER=$!
    curl -s -o "$WORK/out.$run" -w "run $run: HTTP %{http_code}, %{size_download} bytes, %{time_total} s\n" \
        -X POST -H 'Content-Type: application/fhir+json' --data-binary "@$WORK/batch.json" \
        "http://127.0.0.1:$PORT/fhir"
    kill "$SAMPLER" 2> /dev/null || true
    wait "$SAMPLER" 2> /dev/null || true
    python3 -c '
import collections, json, sys
bundle = json.load(open(sys.argv[1]))
print("  entries:", dict(collections.Counter(e["response"]["status"] for e in bundle.get("entry", []))),
      "postcodes in the ValueSet:", bundle["entry"][0]["resource"]["expansion"]["total"])
' "$WORK/out.$run"
    sort -n "$WORK/samples.$run" | tail -1 | awk '{ printf "  peak sampled RSS: %d MiB\n", $1 / 1024 }'
    echo -n "  after (at once): "; rss
    sleep 12
    echo -n "  after (+12 s):   "; rss
done
grep allocator "$WORK/server.log" || true
