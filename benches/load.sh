#!/usr/bin/env bash
# Load benchmark: builds the release server, imports the national postcode register, starts the
# server on loopback and drives it with wrk. Prints import time, time to ready, server RSS, and
# requests/s with p50/p99 latency for the trivial /health endpoint (the loopback ceiling of this
# HTTP stack on this machine), $lookup of random existing codes, CodeSystem/$validate-code, and
# $expand?filter= with varied 1–2 word prefixes and count=20, and $expand paging a million codes deep;
# then the register browser's pages (home, register search and deep page, concept, diff, ValueSet,
# search across registers).
#
#   benches/load.sh                 # the real 1.68M-postcode Code-Point Open file (../shared/data)
#   SCALE=2.7m benches/load.sh      # + benches/gen_postcodes.py: three releases, 2.7M in the last
#   DURATION=10s CONNECTIONS=32 THREADS=2 PORT=18090 benches/load.sh
#   HISTORY=60 benches/load.sh      # 60 monthly releases of 2.7M postcodes (benches/history.sh)
#
# Needs ../shared/data beside the repository (as CI has), python3 for SCALE=2.7m, and wrk (installed
# with apt-get when missing). Work files go to a temporary folder, removed at the end.
set -euo pipefail
# HISTORY=60: years of monthly releases instead (benches/history.sh says what it measures).
if [ -n "${HISTORY:-}" ]; then exec "$(dirname "$0")/history.sh"; fi
# Access log lines (one per request) would cost the measured server CPU and fill its log file.
export RUST_LOG="${RUST_LOG:-info,fhir_registers::access=off}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/data}"
SCALE="${SCALE:-1.68m}"
DURATION="${DURATION:-15s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
PORT="${PORT:-18090}"
SOURCE="$SHARED/postcodes/codepoint_open_gb_2014-08.csv.gz"
SYSTEM="https://digital.nhs.uk/services/organisation-data-service/CodeSystem/postcode"
BASE="http://127.0.0.1:$PORT"

[ -f "$SOURCE" ] || { echo "missing $SOURCE (../shared/data beside the repository)" >&2; exit 2; }

cd "$ROOT"
cargo build --release --quiet
BIN="$ROOT/target/release/fhir-registers"
WORK="$(mktemp -d)"
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
need_wrk

# Releases to import: file<TAB>version per line.
if [ "$SCALE" = "2.7m" ]; then
  echo "generating 2.7M postcodes in three releases" >&2
  python3 "$ROOT/benches/gen_postcodes.py" "$SOURCE" "$WORK/gen" | cut -f1,2 > "$WORK/releases"
else
  printf '%s\t%s\n' "$SOURCE" "2014-08-01" > "$WORK/releases"
fi

declare -a IMPORTS=()
while IFS=$'\t' read -r file version; do
  start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$WORK/time" "$BIN" import --data-dir "$WORK/data" --version "$version" \
    "$ROOT/mappings/postcodes-codepoint.toml" "$file" 2> "$WORK/import.log" \
    || { cat "$WORK/import.log" >&2; exit 1; }
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  rows=$(grep -o '[0-9]* concepts' "$WORK/import.log" | head -1 | cut -d' ' -f1)
  stored=$(grep -o 'records, [0-9]* shared.*: [0-9]* bytes' "$WORK/import.log" | grep -o '[0-9]* bytes' || true)
  # Start-up on the releases so far: how time to ready and memory grow with each release.
  start_server
  stop_server
  IMPORTS+=("$(printf '| import %s (%s concepts) | %.1f s | peak RSS %d MiB | stored %s | %.2f s, %d MiB |' \
    "$version" "$rows" "$secs" $(( $(cat "$WORK/time") / 1024 )) "$stored" "$READY" "$RSS_READY")")
done < "$WORK/releases"

start_server
# The runs start once the background index build is over, so it does not share them.
wait_indexes

# Random existing codes and 1–2 word prefixes of their displays (`TS`, `TS18`, `TS18 1`).
LAST=$(tail -1 "$WORK/releases" | cut -f1)
zcat "$LAST" | tail -n +2 | shuf -n 20000 --random-source=<(yes) | cut -d, -f1 | tr -d '" ' > "$WORK/codes"
awk '{ o = substr($0, 1, length($0) - 3); i = substr($0, length($0) - 2, 1);
       print substr(o, 1, 2); print o; print o "%20" i }' "$WORK/codes" | shuf -n 20000 --random-source=<(yes) > "$WORK/filters"
ENC_SYSTEM=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$SYSTEM" 2>/dev/null \
  || echo "https%3A%2F%2Fdigital.nhs.uk%2Fservices%2Forganisation-data-service%2FCodeSystem%2Fpostcode")

ROWS=()
ROWS+=("$(run health "$WORK/codes" "/health?x=")")
ROWS+=("$(run lookup "$WORK/codes" "/fhir/CodeSystem/\$lookup?system=$ENC_SYSTEM&code=")")
ROWS+=("$(run validate-code "$WORK/codes" "/fhir/CodeSystem/\$validate-code?url=$ENC_SYSTEM&code=")")
ROWS+=("$(run expand-filter "$WORK/filters" "/fhir/ValueSet/postcodes-all/\$expand?count=20&filter=")")
# The same with one connection a core: the latency of one request, without queueing behind 31 others.
ROWS+=("$(run "expand-filter, $(nproc) connections" "$WORK/filters" "/fhir/ValueSet/postcodes-all/\$expand?count=20&filter=" "" "$(nproc)")")
seq 1000000 1000 1200000 > "$WORK/offsets"
ROWS+=("$(run expand-deep-page "$WORK/offsets" "/fhir/ValueSet/postcodes-all/\$expand?count=20&offset=")")
# The register browser's pages (HTML rendered by the server), one connection a core: the time to
# render one page. The diff and the timeline counts are computed on the first request and kept.
PAGES=()
NPROC="$(nproc)"
seq 0 50 5000 > "$WORK/diff-offsets"
curl -sf "$BASE/registers/postcode" > /dev/null
PAGES+=("$(run "page: home" "$WORK/codes" "/?x=" "" "$NPROC")")
PAGES+=("$(run "page: register, search" "$WORK/filters" "/registers/postcode?q=" "" "$NPROC")")
PAGES+=("$(run "page: register, deep page" "$WORK/offsets" "/registers/postcode?offset=" "" "$NPROC")")
PAGES+=("$(run "page: concept (with history)" "$WORK/codes" "/registers/postcode/concepts/" "" "$NPROC")")
# A diff needs two releases (SCALE=2.7m imports three; the real file alone is one).
if [ "$(wc -l < "$WORK/releases")" -ge 2 ]; then
  PAGES+=("$(run "page: diff of the last two releases" "$WORK/diff-offsets" "/registers/postcode/diff?offset=" "" "$NPROC")")
fi
PAGES+=("$(run "page: ValueSet, filtered" "$WORK/filters" "/valuesets/postcodes-all?q=" "" "$NPROC")")
PAGES+=("$(run "page: search across registers" "$WORK/filters" "/search?q=" "" "$NPROC")")
RSS_AFTER=$(( $(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status") / 1024 ))
RATIO=$(echo "scale=1; 100 * $(cat "$WORK/rps-lookup") / $(cat "$WORK/rps-health")" | bc)
edge_ratio "$WORK/codes" "/fhir/CodeSystem/\$lookup?system=$ENC_SYSTEM&code="

echo
echo "fhir-registers load benchmark: $SCALE postcodes, $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
echo
echo "| step | time | memory | storage | serve on the releases so far: ready, RSS |"
echo "|---|---|---|---|---|"
printf '%s\n' "${IMPORTS[@]}"
printf '| serve: ready | %.2f s | RSS %d MiB at ready, %d MiB after the runs | | |\n' "$READY" "$RSS_READY" "$RSS_AFTER"
echo
echo "| endpoint | requests/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Register browser pages, $(nproc) connections:"
echo
echo "| page | requests/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|"
printf '%s\n' "${PAGES[@]}"
echo
echo "The edge: \$lookup runs at $EDGE_RATIO% of the trivial endpoint's rate (median of ${ROUNDS:-5} alternating pairs of 3 s runs; $RATIO% from the rows above)."
echo "The server is preempted $PREEMPT_LOOKUP times per 1,000 lookups and $PREEMPT_HEALTH per 1,000 health checks: each response wakes a wrk thread sharing its cores."
echo "With wrk at SCHED_BATCH, whose wakeups do not preempt the server (as a client on another machine cannot): $EDGE_RATIO_BATCH%."
