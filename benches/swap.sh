#!/usr/bin/env bash
# Publish-without-restart benchmark: a release server follows epraccur from a local upstream
# (python's http.server on loopback, with Last-Modified and 304s) while wrk drives $lookup.
# Prints: the time of each sync + publish (`POST /admin/sync/ods-epraccur`, which answers once the
# new registry serves), p50/p99 latency and failed requests under wrk before and during swaps,
# and the server's RSS at ready, after one swap and after all of them.
#
#   benches/swap.sh                       # shipped registers + the national 1.68M postcodes
#   POSTCODES=0 benches/swap.sh           # shipped registers only
#   SWAPS=10 DURATION=20s CONNECTIONS=32 PORT=18091 UPSTREAM_PORT=18092 benches/swap.sh
#
# Needs ../shared/data beside the repository (for POSTCODES=1), python3, curl and wrk. Work files go
# to a temporary folder, removed at the end.
set -euo pipefail
# Access log lines (one per request) would cost the measured server CPU and fill its log file.
export RUST_LOG="${RUST_LOG:-info,fhir_registers::access=off}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/data}"
POSTCODES="${POSTCODES:-1}"
SWAPS="${SWAPS:-10}"
DURATION="${DURATION:-20s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
PORT="${PORT:-18091}"
UPSTREAM_PORT="${UPSTREAM_PORT:-18092}"
BASE="http://127.0.0.1:$PORT"
TOKEN="swap-benchmark-admin-token"
ODS="https%3A%2F%2Ffhir.nhs.uk%2FId%2Fods-organization-code"

command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 2; }
cd "$ROOT"
cargo build --release --quiet
BIN="$ROOT/target/release/fhir-registers"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# The shipped mappings, epraccur following the local upstream.
cp -r "$ROOT/mappings" "$WORK/mappings"
printf '\n[sync]\nurl = "http://127.0.0.1:%s/epraccur.zip"\nmember = "epraccur.csv"\n' "$UPSTREAM_PORT" \
  >> "$WORK/mappings/ods-epraccur.toml"
mkdir -p "$WORK/up" "$WORK/data"

# Release variants: epraccur 2020-01 with one practice renamed per swap, each dated a day later
# (its Last-Modified, and so its version).
cat > "$WORK/variant.py" <<'PY'
import calendar, csv, gzip, io, os, sys, zipfile
src, out, i = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = list(csv.reader(gzip.open(src, "rt", encoding="latin-1", newline="")))
if i > 0:
    rows[i][1] = "RENAMED IN SWAP %d" % i
text = io.StringIO()
csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerows(rows)
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("epraccur.csv", text.getvalue().encode("latin-1"))
tmp = out + ".tmp"
open(tmp, "wb").write(buf.getvalue())
t = calendar.timegm((2020, 2, 1 + i, 0, 0, 0))
os.utime(tmp, (t, t))
os.replace(tmp, out)
PY
variant() { python3 "$WORK/variant.py" "$ROOT/mappings/data/ods/epraccur_2020-01.csv.gz" "$WORK/up/epraccur.zip" "$1"; }

python3 -m http.server "$UPSTREAM_PORT" --bind 127.0.0.1 --directory "$WORK/up" > "$WORK/upstream.log" 2>&1 &
PIDS+=($!)

if [ "$POSTCODES" = 1 ]; then
  SOURCE="$SHARED/postcodes/codepoint_open_gb_2014-08.csv.gz"
  [ -f "$SOURCE" ] || { echo "missing $SOURCE" >&2; exit 2; }
  # The Scottish slices overlap the national file: serve the national postcodes instead.
  rm "$WORK/mappings/postcodes-codepoint-scotland.toml"
  echo "importing the national postcodes (1.68M)" >&2
  "$BIN" import --data-dir "$WORK/data" --mappings "$WORK/mappings" --version 2014-09-01 \
    "$WORK/mappings/postcodes-codepoint.toml" "$SOURCE" 2> "$WORK/import.log" \
    || { cat "$WORK/import.log" >&2; exit 1; }
fi

rss() { echo $(( $(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status") / 1024 )); }
FHIR_REGISTERS_ADMIN_TOKEN="$TOKEN" "$BIN" serve --data-dir "$WORK/data" --mappings "$WORK/mappings" \
  --listen "127.0.0.1:$PORT" > "$WORK/serve.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
until curl -sf "$BASE/ready" >/dev/null; do
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
  sleep 0.1
done
sleep 12   # let the allocator settle after start-up
RSS_READY=$(rss)

sync_once() { # prints milliseconds for sync + publish
  local start end
  start=$(date +%s%N)
  curl -sf -X POST -H "Authorization: Bearer $TOKEN" "$BASE/admin/sync/ods-epraccur" > "$WORK/report.json" \
    || { cat "$WORK/report.json" >&2; tail -20 "$WORK/serve.log" >&2; exit 1; }
  grep -q '"imported":\["' "$WORK/report.json" || { cat "$WORK/report.json" >&2; exit 1; }
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 ))
}

load() { # name: wrk over $lookup of a practice, prints a table row
  local out p50 p99 rps non2xx errors
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
    "$BASE/fhir/CodeSystem/\$lookup?system=$ODS&code=A83075" 2>&1)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  errors=$(echo "$out" | awk '/Socket errors/ {print $0}' | sed 's/.*Socket errors: //')
  printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99" "${non2xx:-0}" "${errors:-none}"
}

ROWS=()
ROWS+=("$(load "no swap")")

variant 1
FIRST_MS=$(sync_once)
sleep 12
RSS_ONE=$(rss)

# wrk runs while the other swaps happen, one every ~2 s.
load "swaps during the run" > "$WORK/during" &
LOAD=$!
declare -a TIMES=()
sleep 1
for i in $(seq 2 "$SWAPS"); do
  variant "$i"
  TIMES+=("$(sync_once)")
  sleep 1
done
wait "$LOAD"
ROWS+=("$(cat "$WORK/during")")
sleep 12
RSS_ALL=$(rss)
BUILDS=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/serve.log" | grep -o 'build_ms=[0-9]*' | cut -d= -f2 | tr '\n' ' ' || true)
GENERATION=$(curl -sf -H "Authorization: Bearer $TOKEN" "$BASE/admin/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["registryGeneration"])')

echo
echo "fhir-registers publish benchmark: $(nproc) cores, postcodes=$POSTCODES, wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
echo
echo "sync + publish (POST /admin/sync answers once the new registry serves): first ${FIRST_MS} ms; then ${TIMES[*]} ms"
echo "registry builds in the background (ms): $BUILDS"
echo "registry generation at the end: $GENERATION"
echo "RSS: ${RSS_READY} MiB at ready, ${RSS_ONE} MiB after 1 swap, ${RSS_ALL} MiB after ${SWAPS} swaps (each 12 s after the last swap)"
echo
echo "| \$lookup A83075 | requests/s | p50 | p99 | non-2xx | socket errors |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
