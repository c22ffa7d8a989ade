#!/usr/bin/env bash
# History benchmark (run as `HISTORY=60 benches/load.sh`): years of monthly releases of a 2.7M
# postcode register. Generates HISTORY monthly releases (benches/gen_history.py: the real Code-Point
# Open file scaled to 2.7M, 0.1 % introduced, 0.1 % terminated and 0.4 % changed a month, a ward
# code refresh of 10–90 % of postcodes once a year), imports them one by one, starts `serve` after
# the first, the 12th and the last, then measures on all of them: `$lookup` of the latest version
# and with `date=` on any month, `$concept-history` of one postcode, `$diff` between consecutive
# months and between the first and the last, `$expand` with `date=` and a text filter, and the
# trivial /health endpoint. Prints one table.
#
#   HISTORY=60 benches/load.sh
#   HISTORY=24 TARGET=1000000 DURATION=10s benches/load.sh
#
# Needs ../shared/data beside the repository, python3 and wrk. Takes ~25 minutes on 2 cores for 60
# months; the generated files (~35 MB each) go to a temporary folder and each is removed once
# imported (but the first and the last).
#
# HISTORY_KEEP=DIR keeps the imported store in DIR (the stores after the first, the 12th and the
# last release, the codes measured and the import figures). A later run with the same HISTORY_KEEP
# skips generating and importing and measures serving and queries only, printing the import
# figures of the run that built the store: how to compare two builds of the server on one history.
#
#   HISTORY=60 HISTORY_KEEP=/var/tmp/history60 benches/load.sh   # builds (once) and measures
#   HISTORY=60 HISTORY_KEEP=/var/tmp/history60 benches/load.sh   # measures again, in minutes
set -euo pipefail
export RUST_LOG="${RUST_LOG:-info,fhir_registers::access=off}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/data}"
HISTORY="${HISTORY:-60}"
TARGET="${TARGET:-2700000}"
DURATION="${DURATION:-15s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
PORT="${PORT:-18090}"
SOURCE="$SHARED/postcodes/codepoint_open_gb_2014-08.csv.gz"
SYSTEM="https://digital.nhs.uk/services/organisation-data-service/CodeSystem/postcode"
ENC_SYSTEM="https%3A%2F%2Fdigital.nhs.uk%2Fservices%2Forganisation-data-service%2FCodeSystem%2Fpostcode"
BASE="http://127.0.0.1:$PORT"

[ -f "$SOURCE" ] || { echo "missing $SOURCE (../shared/data beside the repository)" >&2; exit 2; }

cd "$ROOT"
# BIN=path measures another build of the server (e.g. main's, for a comparison in one session).
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN="$ROOT/target/release/fhir-registers"
fi
WORK="$(mktemp -d)"
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
need_wrk

STORE="${HISTORY_KEEP:-$WORK}"
mkdir -p "$STORE"
if [ -f "$STORE/complete" ] && [ "$(cat "$STORE/complete")" = "$HISTORY $TARGET" ]; then
  echo "measuring the store kept in $STORE ($HISTORY releases of $TARGET postcodes)" >&2
else
rm -rf "$STORE/data" "$STORE/data-1" "$STORE/data-12" "$STORE/imports" "$STORE/complete"
: > "$STORE/imports"
echo "generating $HISTORY monthly releases of $TARGET postcodes" >&2
gen_start=$(date +%s)
python3 "$ROOT/benches/gen_history.py" "$SOURCE" "$WORK/gen" --months "$HISTORY" --target "$TARGET" > "$STORE/releases"
echo $(( $(date +%s) - gen_start )) > "$STORE/gen-secs"
FIRST=$(head -1 "$STORE/releases" | cut -f1)
LAST=$(tail -1 "$STORE/releases" | cut -f1)
# Postcodes in every month (in the first and the last: a terminated postcode never comes back).
zcat "$FIRST" | tail -n +2 | cut -d, -f1 | tr -d '" ' | sort > "$WORK/first-codes"
zcat "$LAST" | tail -n +2 | cut -d, -f1 | tr -d '" ' | sort > "$WORK/last-codes"
comm -12 "$WORK/first-codes" "$WORK/last-codes" | shuf -n 20000 --random-source=<(yes) > "$STORE/codes"
rm -f "$WORK/first-codes" "$WORK/last-codes"

n=0
while IFS=$'\t' read -r file version rows introduced terminated changed kind; do
  n=$((n + 1))
  start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$WORK/time" "$BIN" import --data-dir "$STORE/data" --version "$version" \
    "$ROOT/mappings/postcodes-codepoint.toml" "$file" 2> "$WORK/import.log" \
    || { cat "$WORK/import.log" >&2; exit 1; }
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  bytes=$(grep -o 'releases: [0-9]* bytes' "$WORK/import.log" | grep -o '[0-9]*' || echo 0)
  peak=$(( $(cat "$WORK/time") / 1024 ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$version" "$kind" "$secs" "$bytes" "$peak" "$changed" >> "$STORE/imports"
  echo "imported $version ($kind, $changed changed): $secs s, $bytes bytes, peak $peak MiB" >&2
  [ "$file" != "$FIRST" ] && [ "$file" != "$LAST" ] && rm -f "$file"
  # The stores after the first and the 12th release, for start-up measured on them below.
  if { [ "$n" = 1 ] || [ "$n" = 12 ]; } && [ "$n" != "$HISTORY" ]; then
    cp -r "$STORE/data" "$STORE/data-$n"
  fi
done < "$STORE/releases"
echo "$HISTORY $TARGET" > "$STORE/complete"
fi
GEN_SECS=$(cat "$STORE/gen-secs")
# A kept store's lists, for the runs (without HISTORY_KEEP the store is the work folder already).
if [ "$STORE" != "$WORK" ]; then
  cp "$STORE/codes" "$WORK/codes"
  cp "$STORE/releases" "$WORK/releases"
fi

# Start-up with 1, 12 and all releases stored: time to ready and RSS, at ready and once the latest
# version's indexes are built in the background (what a warm server holds).
declare -a READY_ROWS=()
for n in $(printf '%s\n' 1 12 "$HISTORY" | sort -nu); do
  [ "$n" -le "$HISTORY" ] || continue
  data="$STORE/data-$n"; [ "$n" = "$HISTORY" ] && data="$STORE/data"
  start_server "$data"
  wait_indexes
  RSS_WARM=$(( $(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status") / 1024 ))
  ANON_WARM=$(( $(awk '/RssAnon/ {print $2}' "/proc/$SERVER/status") / 1024 ))
  READY_ROWS+=("$(printf '| %d | %.2f s | %d MiB (%d anonymous) | %d MiB (%d anonymous) |' "$n" "$READY" "$RSS_READY" "$RSS_ANON" "$RSS_WARM" "$ANON_WARM")")
  [ "$n" = 1 ] && RSS_ONE=$RSS_READY && WARM_ONE=$RSS_WARM
  [ "$n" = "$HISTORY" ] && RSS_ALL=$RSS_READY && WARM_ALL=$RSS_WARM
  stop_server
done
DISK=$(du -sb "$STORE/data/feeds" | cut -f1)

start_server "$STORE/data"
wait_indexes

# Dated lookups: each code on a random day of a random month.
cut -f2 "$WORK/releases" > "$WORK/versions"
awk -v versions="$WORK/versions" 'BEGIN { srand(1); while ((getline v < versions) > 0) d[++n] = v }
  { print $0 "&date=" substr(d[int(rand() * n) + 1], 1, 8) sprintf("%02d", int(rand() * 28) + 1) }' \
  "$WORK/codes" > "$WORK/dated"
# Text filters (1–2 word prefixes of postcodes) on a month in the middle of the history.
MID=$(sed -n "$(( (HISTORY + 1) / 2 ))p" "$WORK/versions")
awk '{ o = substr($0, 1, length($0) - 3); i = substr($0, length($0) - 2, 1);
       print substr(o, 1, 2); print o; print o "%20" i }' "$WORK/codes" | shuf -n 20000 --random-source=<(yes) > "$WORK/filters"
# Warm what the runs use: the dated versions' lookup samples, the middle month's text index.
for v in $(cat "$WORK/versions"); do curl -sf -o /dev/null "$BASE/fhir/CodeSystem/\$lookup?system=$ENC_SYSTEM&code=$(head -1 "$WORK/codes")&date=$v"; done
curl -sf -o /dev/null "$BASE/fhir/ValueSet/postcodes-all/\$expand?count=20&filter=TS1&date=$MID" || true

ROWS=()
ROWS+=("$(run health "$WORK/codes" "/health?x=")")
ROWS+=("$(run lookup "$WORK/codes" "/fhir/CodeSystem/\$lookup?system=$ENC_SYSTEM&code=")")
ROWS+=("$(run lookup-dated "$WORK/dated" "/fhir/CodeSystem/\$lookup?system=$ENC_SYSTEM&code=")")
ROWS+=("$(run "concept-history, $(nproc) connections" "$WORK/codes" "/fhir/CodeSystem/\$concept-history?system=$ENC_SYSTEM&code=" "" "$(nproc)")")
ROWS+=("$(run "expand-filter date=$MID, $(nproc) connections" "$WORK/filters" "/fhir/ValueSet/postcodes-all/\$expand?count=20&date=$MID&filter=" "" "$(nproc)")")
RSS_AFTER=$(( $(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status") / 1024 ))

# $diff: consecutive months spread over the history (the third month of each year: not a
# refresh; the second with fewer than three months), then the first and the last (three times).
diff_time() { curl -s -o "$WORK/diff.json" -w '%{time_total}\n' "$BASE/fhir/CodeSystem/\$diff?url=$ENC_SYSTEM&fromVersion=$1&toVersion=$2&count=1"; }
diff_counts() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); p={x["name"]: x.get("valueInteger") for x in d.get("parameter", [])}; print("+%s −%s ~%s" % (p.get("added"), p.get("removed"), p.get("changed")))' "$WORK/diff.json"; }
: > "$WORK/diff-consecutive"
for k in $(seq $(( HISTORY < 3 ? 2 : 3 )) 12 "$HISTORY"); do
  a=$(sed -n "$((k - 1))p" "$WORK/versions"); b=$(sed -n "${k}p" "$WORK/versions")
  diff_time "$a" "$b" >> "$WORK/diff-consecutive"
done
CONSECUTIVE_COUNTS=$(diff_counts)
: > "$WORK/diff-span"
for _ in 1 2 3; do diff_time "$(head -1 "$WORK/versions")" "$(tail -1 "$WORK/versions")" >> "$WORK/diff-span"; done
SPAN_COUNTS=$(diff_counts)
RATIO=$(echo "scale=1; 100 * $(cat "$WORK/rps-lookup") / $(cat "$WORK/rps-health")" | bc)
edge_ratio "$WORK/codes" "/fhir/CodeSystem/\$lookup?system=$ENC_SYSTEM&code="
DATED=$(echo "scale=1; 100 * $(cat "$WORK/rps-lookup-dated") / $(cat "$WORK/rps-lookup")" | bc)

echo
echo "fhir-registers history benchmark: $HISTORY monthly releases of $TARGET postcodes, $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION (generated in $GEN_SECS s)"
echo
echo "| import | releases | median | max | peak RSS (max) | stored bytes (median) |"
echo "|---|---|---|---|---|---|"
for kind in first monthly refresh; do
  awk -F'\t' -v k="$kind" '$2 == k' "$STORE/imports" > "$WORK/kind"
  [ -s "$WORK/kind" ] || continue
  printf '| %s | %d | %.1f s | %.1f s | %d MiB | %s |\n' "$kind" "$(wc -l < "$WORK/kind")" \
    "$(cut -f3 "$WORK/kind" | median)" "$(cut -f3 "$WORK/kind" | sort -g | tail -1)" \
    "$(cut -f5 "$WORK/kind" | sort -g | tail -1)" "$(cut -f4 "$WORK/kind" | median)"
done
echo
echo "On disk: $DISK bytes for $HISTORY releases ($(( DISK / HISTORY )) a release on average)."
echo
echo "| releases stored | serve ready | RSS at ready | RSS once the latest version's indexes are built |"
# RSS is VmRSS: anonymous memory plus the resident pages of memory-mapped store files.
echo "|---|---|---|---|"
printf '%s\n' "${READY_ROWS[@]}"
echo
echo "With $HISTORY releases RSS is $(echo "scale=2; $RSS_ALL / $RSS_ONE" | bc)× that with one at ready, $(echo "scale=2; $WARM_ALL / $WARM_ONE" | bc)× once indexes are built; $RSS_AFTER MiB after the runs."
echo
echo "| endpoint | requests/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
printf '| $diff | runs | p50 | max | counts (last run) |\n|---|---|---|---|---|\n'
printf '| consecutive months | %d | %.3f s | %.3f s | %s |\n' "$(wc -l < "$WORK/diff-consecutive")" "$(median < "$WORK/diff-consecutive")" "$(sort -g "$WORK/diff-consecutive" | tail -1)" "$CONSECUTIVE_COUNTS"
printf '| first → last | %d | %.3f s | %.3f s | %s |\n' "$(wc -l < "$WORK/diff-span")" "$(median < "$WORK/diff-span")" "$(sort -g "$WORK/diff-span" | tail -1)" "$SPAN_COUNTS"
echo
echo "Dated \$lookup runs at $DATED% of the latest version's rate."
echo "The edge: \$lookup runs at $EDGE_RATIO% of the trivial endpoint's rate (median of ${ROUNDS:-5} alternating pairs of 3 s runs; $RATIO% from the rows above)."
echo "The server is preempted $PREEMPT_LOOKUP times per 1,000 lookups and $PREEMPT_HEALTH per 1,000 health checks: each response wakes a wrk thread sharing its cores."
echo "With wrk at SCHED_BATCH, whose wakeups do not preempt the server (as a client on another machine cannot): $EDGE_RATIO_BATCH%."
