# Shared by benches/load.sh and benches/history.sh (sourced, not run). Expects ROOT, BIN, WORK,
# PORT, BASE, CONNECTIONS, THREADS and DURATION to be set.

# Installs wrk with apt-get when it is missing.
need_wrk() {
  command -v wrk >/dev/null && return
  echo "installing wrk" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q wrk >/dev/null; else sudo apt-get install -y -q wrk >/dev/null; fi
}

# Starts the server on the data imported so far ($WORK/data, or the folder given); sets SERVER,
# READY (seconds), RSS_READY and RSS_ANON (MiB).
start_server() { # [data folder]
  local start
  start=$(date +%s.%N)
  "$BIN" serve --no-default-imports --data-dir "${1:-$WORK/data}" --mappings "$ROOT/mappings" \
    --listen "127.0.0.1:$PORT" > "$WORK/serve.log" 2>&1 &
  SERVER=$!
  until curl -sf "$BASE/health" >/dev/null; do
    kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.01
  done
  READY=$(echo "$(date +%s.%N) - $start" | bc)
  RSS_READY=$(( $(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status") / 1024 ))
  # Of which anonymous memory (the rest is pages of mapped store files: page cache).
  RSS_ANON=$(( $(awk '/RssAnon/ {print $2}' "/proc/$SERVER/status") / 1024 ))
}
stop_server() { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; SERVER=""; }

# Waits (up to a minute) for the background build of the latest versions' indexes.
wait_indexes() {
  for _ in $(seq 600); do grep -q "indexes built" "$WORK/serve.log" && break; sleep 0.1; done
}

# The wrk script: GET PREFIX .. (an item of the file ITEMS, spread) .. SUFFIX.
cat > "$WORK/random.lua" <<'LUA'
local items = {}
for line in io.lines(os.getenv("ITEMS")) do items[#items + 1] = line end
local prefix, suffix = os.getenv("PREFIX"), os.getenv("SUFFIX") or ""
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", prefix .. items[(n * 7919) % #items + 1] .. suffix)
end
LUA

# One wrk run: prints a table row (requests/s, p50, p99, non-2xx) and keeps requests/s in
# $WORK/rps-NAME.
run() { # name items prefix [suffix] [connections]
  local out
  local conns="${5:-$CONNECTIONS}" threads="$THREADS"
  [ "$conns" -lt "$threads" ] && threads="$conns"
  out=$(ITEMS="$2" PREFIX="$3" SUFFIX="${4:-}" wrk -t"$threads" -c"$conns" -d"$DURATION" --latency \
    -s "$WORK/random.lua" "$BASE" 2>&1)
  local rps p50 p99 non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  printf '| %s | %s | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99" "${non2xx:-0}"
  echo "$rps" > "$WORK/rps-$1"
}

# The median of numbers on standard input, one a line ("-" for none).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Involuntary context switches of the server's threads so far (times it was preempted).
preempted() { cat "/proc/$SERVER/task/"*/status 2>/dev/null | awk '/^nonvoluntary_ctxt_switches/ { n += $2 } END { print n + 0 }'; }

# One 3 s wrk run of PREFIX .. item, under WRAP (a command prefix, or empty): prints requests/s,
# requests, and how many times the server was preempted meanwhile.
edge_run() { # items wrap prefix
  local out before after
  before=$(preempted)
  # shellcheck disable=SC2086
  out=$(ITEMS="$1" PREFIX="$3" $2 wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$WORK/random.lua" "$BASE" 2>&1)
  after=$(preempted)
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '/requests in/ {print $1}') $((after - before))"
}

# The $lookup/health ratio, read as medians of ROUNDS (default 5) alternating pairs of 3 s runs
# (one pair of long runs swings by 20 % on a shared machine), in two ways:
# - as every other run here: wrk and the server share the cores, and each response wakes a wrk
#   thread, which may preempt the server thread that sent it; the server's involuntary context
#   switches per 1,000 requests of each kind are counted, as they are much of what the ratio
#   pays for;
# - with wrk at SCHED_BATCH (`chrt -b 0`): its wakeups do not preempt the server (the scheduler
#   runs it when a core is free or at the tick), as a client on another machine cannot.
# Sets EDGE_RATIO, EDGE_RATIO_BATCH, PREEMPT_HEALTH and PREEMPT_LOOKUP (per 1,000 requests).
edge_ratio() { # items lookup-prefix
  local mode wrap health lookup
  : > "$WORK/edge"
  for _ in $(seq "${ROUNDS:-5}"); do
    for mode in plain batch; do
      wrap=""
      [ "$mode" = batch ] && wrap="chrt -b 0"
      health=$(edge_run "$1" "$wrap" "/health?x=")
      lookup=$(edge_run "$1" "$wrap" "$2")
      echo "$mode $health $lookup" | awk '{ printf "%s\t%.1f\t%.0f\t%.0f\n", $1, 100 * $5 / $2, 1000 * $4 / $3, 1000 * $7 / $6 }' >> "$WORK/edge"
    done
  done
  EDGE_RATIO=$(awk -F'\t' '$1 == "plain" { print $2 }' "$WORK/edge" | median)
  EDGE_RATIO_BATCH=$(awk -F'\t' '$1 == "batch" { print $2 }' "$WORK/edge" | median)
  PREEMPT_HEALTH=$(awk -F'\t' '$1 == "plain" { print $3 }' "$WORK/edge" | median)
  PREEMPT_LOOKUP=$(awk -F'\t' '$1 == "plain" { print $4 }' "$WORK/edge" | median)
}
