#!/usr/bin/env bash
# Soak and abuse test: builds the release server, starts it on loopback over the shipped registers,
# and drives it for DURATION with a mix of valid operations under wrk, first alone (the baseline),
# then beside every abusive request of issue 11 (benches/abuse.py: deep and attribute-flooded XML,
# huge batches, 100,000-word filters, a 20,000-deep supplied hierarchy, $cache-control floods, long
# URLs, large headers, bad bytes, slow-header and idle connections). Prints:
#   - the valid requests' rate, p50, p99 and non-2xx, without and with abuse;
#   - what each abusive request got back;
#   - server RSS at the start, at its peak, and after a cool-down.
# Exits non-zero if a valid request failed, the server died, or RSS after the cool-down is more than
# 20% above the start.
#
#   benches/abuse.sh
#   DURATION=60 BASELINE=20 COOLDOWN=10 CONNECTIONS=4 PORT=18091 benches/abuse.sh
#
# Needs python3 and wrk (installed with apt-get when missing). Work files go to a temporary folder,
# removed at the end. Traffic goes to 127.0.0.1 only and every loop stops by itself.
set -euo pipefail
# Access log lines (one per request) would cost the measured server CPU and fill its log file.
export RUST_LOG="${RUST_LOG:-info,fhir_registers::access=off}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${DURATION:-60}"
BASELINE="${BASELINE:-20}"
COOLDOWN="${COOLDOWN:-10}"
CONNECTIONS="${CONNECTIONS:-4}"
PORT="${PORT:-18091}"
BASE="http://127.0.0.1:$PORT"

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q wrk >/dev/null; else sudo apt-get install -y -q wrk >/dev/null; fi
fi

cd "$ROOT"
cargo build --release --quiet
BIN="$ROOT/target/release/fhir-registers"
WORK="$(mktemp -d)"
SERVER=""
SAMPLER=""
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" serve --data-dir "$WORK/data" --mappings "$ROOT/mappings" --listen "127.0.0.1:$PORT" \
  > "$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1200); do
  curl -sf "$BASE/health" >/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
  sleep 0.1
done
for _ in $(seq 600); do grep -q "indexes built" "$WORK/serve.log" && break; sleep 0.1; done

rss() { echo $(( $(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status") / 1024 )); }

# The valid mix: cheap and moderate operations of every kind, over the shipped registers.
ODS="https%3A%2F%2Ffhir.nhs.uk%2FId%2Fods-organization-code"
ICD="http%3A%2F%2Fhl7.org%2Ffhir%2Fsid%2Ficd-10"
cat > "$WORK/valid" <<EOF
/fhir/CodeSystem/\$lookup?system=$ODS&code=A81001
/fhir/CodeSystem/\$lookup?system=$ICD&code=J45.9
/fhir/CodeSystem/\$validate-code?url=$ICD&code=J45.9
/fhir/ValueSet/\$validate-code?url=https%3A%2F%2Ffhir-registers.org%2Ffhir%2FValueSet%2Fods-gp-practices&system=$ODS&code=A81001
/fhir/ValueSet/icd-10-chapter-x/\$expand?count=10
/fhir/ValueSet/postcodes-all/\$expand?count=20&filter=TS18%201
/fhir/ValueSet/ods-gp-practices/\$expand?count=20&filter=medical
/fhir/CodeSystem/\$subsumes?system=$ICD&codeA=J45&codeB=J45.9
/fhir/ConceptMap/\$translate?url=https%3A%2F%2Ffhir-registers.org%2Ffhir%2FConceptMap%2Ficd-10-alt-code-to-icd-10&system=https%3A%2F%2Ffhir-registers.org%2Ffhir%2FCodeSystem%2Ficd-10-alt-code&code=J459
/fhir/CodeSystem?_count=5
/fhir/metadata
EOF
for path in $(cat "$WORK/valid"); do
  status=$(curl -s -o /dev/null -w '%{http_code}' "$BASE$path")
  [ "$status" = 200 ] || { echo "a valid request fails before any abuse: $status $path" >&2; exit 1; }
done
cat > "$WORK/mix.lua" <<'LUA'
local paths = {}
for line in io.lines(os.getenv("ITEMS")) do paths[#paths + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[n % #paths + 1])
end
LUA

valid_run() { # seconds → "rps p50 p99 non2xx"
  local out
  out=$(ITEMS="$WORK/valid" wrk -t2 -c"$CONNECTIONS" -d"${1}s" --timeout 10s --latency \
    -s "$WORK/mix.lua" "$BASE" 2>&1)
  echo "$out" > "$WORK/wrk-$1.txt"
  local rps p50 p99 non2xx errors
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  errors=$(echo "$out" | awk '/Socket errors/ {print $0}' | sed 's/.*errors: //')
  echo "$rps|$p50|$p99|${non2xx:-0}|${errors:-none}"
}

BASE_ROW=$(valid_run "$BASELINE")
RSS_START=$(rss)

# Peak RSS, sampled every 0.2 s while the abuse runs.
( peak=0; while kill -0 "$SERVER" 2>/dev/null; do
    r=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status" 2>/dev/null || echo 0)
    [ "${r:-0}" -gt "$peak" ] && peak=$r && echo $(( peak / 1024 )) > "$WORK/peak"
    sleep 0.2
  done ) &
SAMPLER=$!

python3 "$ROOT/benches/abuse.py" 127.0.0.1 "$PORT" "$DURATION" > "$WORK/abuse.txt" 2>&1 &
ABUSER=$!
sleep 2
ABUSE_ROW=$(valid_run "$((DURATION - 4))")
wait "$ABUSER" || true
kill "$SAMPLER" 2>/dev/null; SAMPLER=""
ALIVE=yes
kill -0 "$SERVER" 2>/dev/null || ALIVE=no
sleep "$COOLDOWN"
RSS_AFTER=$( [ "$ALIVE" = yes ] && rss || echo 0)
RSS_PEAK=$(cat "$WORK/peak" 2>/dev/null || echo "$RSS_START")

row() { IFS='|' read -r rps p50 p99 non2xx errors <<< "$2"; printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99" "$non2xx" "$errors"; }
echo
echo "fhir-registers abuse test: $(nproc) cores, valid mix under wrk -t2 -c$CONNECTIONS, abuse for ${DURATION} s"
echo
echo "| valid requests | requests/s | p50 | p99 | non-2xx | socket errors |"
echo "|---|---|---|---|---|---|"
row "alone (${BASELINE} s)" "$BASE_ROW"
row "beside the abuse ($((DURATION - 4)) s)" "$ABUSE_ROW"
echo
cat "$WORK/abuse.txt"
echo
echo "| server RSS | MiB |"
echo "|---|---|"
echo "| at the start | $RSS_START |"
echo "| peak | $RSS_PEAK |"
echo "| after ${COOLDOWN} s of cool-down | $RSS_AFTER |"
echo

FAILED=0
IFS='|' read -r _ _ _ NON2XX ERRORS <<< "$ABUSE_ROW"
if [ "$ALIVE" != yes ]; then echo "FAIL: the server died" ; tail -20 "$WORK/serve.log"; FAILED=1; fi
if [ "$NON2XX" != 0 ]; then echo "FAIL: $NON2XX valid requests were not answered 2xx"; FAILED=1; fi
if [ "$ERRORS" != none ]; then echo "FAIL: valid requests had socket errors: $ERRORS"; FAILED=1; fi
if [ "$ALIVE" = yes ] && [ "$RSS_AFTER" -gt $(( RSS_START * 12 / 10 )) ]; then
  echo "FAIL: RSS after the cool-down ($RSS_AFTER MiB) is more than 20% above the start ($RSS_START MiB)"; FAILED=1
fi
[ "$FAILED" = 0 ] && echo "ok: no valid request failed, and memory came back within 20% of the start"
exit "$FAILED"
