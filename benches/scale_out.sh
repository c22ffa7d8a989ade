#!/usr/bin/env bash
# Local scale-out test: Debian's nginx balancing 3 read-only replicas (`serve --read-only`) over
# one data directory that a writer fills, all on loopback ports. wrk drives lookups and
# validate-codes through nginx while
#   (a) the writer imports a new real release (ODS etr 2024-11, which adds trusts such as G6V2S):
#       every replica must serve it within the reload interval, with no failed request;
#   (b) one replica is killed with `kill -9` and restarted: nginx's retries must keep failed
#       requests at zero;
#   (c) throughput is measured through nginx with 1, 2 and 3 replicas (and one replica directly).
# Prints a table; exits 1 if (a) or (b) fails.
#
#   benches/scale_out.sh
#   DURATION=30s RELOAD=5 PROFILE=release BASE_PORT=18100 benches/scale_out.sh
#
# Needs ../shared/data beside the repository, nginx and wrk (installed with apt-get when missing,
# as root or with sudo), curl and python3. PROFILE=dev uses the debug build (as `cargo test` makes
# it) instead of building a release binary.
set -euo pipefail
# Access log lines (one per request) would cost the measured server CPU and fill its log file.
export RUST_LOG="${RUST_LOG:-info,fhir_registers::access=off}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/data}"
DURATION="${DURATION:-30s}"
RELOAD="${RELOAD:-5}"
PROFILE="${PROFILE:-release}"
BASE_PORT="${BASE_PORT:-18100}"
CONNECTIONS="${CONNECTIONS:-32}"
NEW_RELEASE="$SHARED/ods/etr/etr_2024-11.csv"
NEW_CODE="G6V2S"
ODS="https%3A%2F%2Ffhir.nhs.uk%2FId%2Fods-organization-code"
ICD="http%3A%2F%2Fhl7.org%2Ffhir%2Fsid%2Ficd-10"
LB_PORT=$BASE_PORT
WRITER_PORT=$((BASE_PORT + 1))
REPLICA_PORTS=($((BASE_PORT + 2)) $((BASE_PORT + 3)) $((BASE_PORT + 4)))

install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$@" >/dev/null; }
}
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "installing nginx" >&2; install nginx; }
command -v wrk >/dev/null || { echo "installing wrk" >&2; install wrk; }
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -f "$NEW_RELEASE" ] || { echo "missing $NEW_RELEASE (../shared/data beside the repository)" >&2; exit 2; }

cd "$ROOT"
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin fhir-registers
  BIN="$ROOT/target/release/fhir-registers"
else
  cargo build --quiet --bin fhir-registers
  BIN="$ROOT/target/debug/fhir-registers"
fi
WORK="$(mktemp -d)"
chmod 755 "$WORK"
declare -A PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_up() { # port pid log
  for _ in $(seq 1200); do
    curl -sf "http://127.0.0.1:$1/ready" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3" >&2; return 1; }
    sleep 0.1
  done
  echo "port $1 never got ready" >&2; cat "$3" >&2; return 1
}

# The writer: imports the shipped registers into the shared data directory, then serves.
"$BIN" serve --data-dir "$WORK/data" --mappings "$ROOT/mappings" --listen "127.0.0.1:$WRITER_PORT" \
  > "$WORK/writer.log" 2>&1 &
PIDS[writer]=$!
wait_up "$WRITER_PORT" "${PIDS[writer]}" "$WORK/writer.log"

start_replica() { # index
  local port=${REPLICA_PORTS[$1]}
  "$BIN" serve --read-only --data-dir "$WORK/data" --mappings "$ROOT/mappings" \
    --listen "127.0.0.1:$port" --reload-interval "$RELOAD" >> "$WORK/replica$1.log" 2>&1 &
  PIDS[replica$1]=$!
}
for i in 0 1 2; do start_replica "$i"; done
for i in 0 1 2; do wait_up "${REPLICA_PORTS[$i]}" "${PIDS[replica$i]}" "$WORK/replica$i.log"; done

nginx_conf() { # number of replicas
  local servers=""
  for i in $(seq 0 $(($1 - 1))); do
    servers+="    server 127.0.0.1:${REPLICA_PORTS[$i]} max_fails=1 fail_timeout=5s;"$'\n'
  done
  cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream replicas {
$servers    keepalive 64;
  }
  server {
    listen 127.0.0.1:$LB_PORT;
    location / {
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      # A replica that is gone (refused, reset) or not ready (503) is skipped and the request
      # retried on the next one; reads are idempotent.
      proxy_next_upstream error timeout http_502 http_503 http_504;
      proxy_next_upstream_tries 3;
      proxy_connect_timeout 1s;
      proxy_read_timeout 30s;
    }
  }
}
NGINX
}
nginx_conf 3
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" -g "daemon on;"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$LB_PORT/health" >/dev/null && break; sleep 0.1; done

# Requests that are 200 before and after the new release: validate-code of the new trust (false,
# then true), lookups of a practice and an ICD-10 code.
cat > "$WORK/paths" <<PATHS
/fhir/CodeSystem/\$validate-code?url=$ODS&code=$NEW_CODE
/fhir/CodeSystem/\$lookup?system=$ODS&code=A83075
/fhir/CodeSystem/\$lookup?system=$ICD&code=J45.9
/fhir/ValueSet/ods-nhs-trusts/\$validate-code?system=$ODS&code=$NEW_CODE
PATHS
cat > "$WORK/paths.lua" <<'LUA'
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[n % #paths + 1])
end
LUA

wrk_run() { # url duration -> raw wrk output
  PATHS="$WORK/paths" wrk -t2 -c"$CONNECTIONS" -d"$2" --latency -s "$WORK/paths.lua" "$1" 2>&1
}
field() { # wrk-output name
  case $2 in
    rps) echo "$1" | awk '/Requests\/sec/ {print $2}' ;;
    p99) echo "$1" | awk '$1 == "99%" {print $2}' ;;
    total) echo "$1" | awk '/requests in/ {print $1}' ;;
    non2xx) echo "$1" | awk '/Non-2xx/ {print $NF}' | grep . || echo 0 ;;
    errors) echo "$1" | awk '/Socket errors/ {print $4+$6+$8+$10}' | grep . || echo 0 ;;
  esac
}
sees_new() { # port: does this replica validate the new trust?
  curl -sf "http://127.0.0.1:$1/fhir/CodeSystem/\$validate-code?url=$ODS&code=$NEW_CODE" \
    | grep -q '"name":"result","valueBoolean":true'
}
secs() { date +%s.%N; }

FAIL=0
for i in 0 1 2; do
  if sees_new "${REPLICA_PORTS[$i]}"; then echo "replica $i already knows $NEW_CODE" >&2; exit 1; fi
done

# (a) publish under load.
wrk_run "http://127.0.0.1:$LB_PORT" "$DURATION" > "$WORK/wrk-a" &
WRK=$!
sleep 5
IMPORT_START=$(secs)
"$BIN" import --data-dir "$WORK/data" --mappings "$ROOT/mappings" --version 2024-11-01 \
  "$ROOT/mappings/ods-etr.toml" "$NEW_RELEASE" 2> "$WORK/import.log" || { cat "$WORK/import.log" >&2; exit 1; }
IMPORTED=$(secs)
declare -a SEEN=()
for i in 0 1 2; do
  until sees_new "${REPLICA_PORTS[$i]}"; do
    if (( $(echo "$(secs) - $IMPORTED > $RELOAD + 30" | bc) )); then break; fi
    sleep 0.05
  done
  SEEN[$i]=$(echo "$(secs) - $IMPORTED" | bc)
done
wait "$WRK"
A=$(cat "$WORK/wrk-a")
A_NON2XX=$(field "$A" non2xx); A_ERR=$(field "$A" errors)
LATEST_OK=1
for i in 0 1 2; do
  (( $(echo "${SEEN[$i]} <= $RELOAD" | bc) )) || LATEST_OK=0
done
A_PASS=pass
if [ "$A_NON2XX" != 0 ] || [ "$A_ERR" != 0 ] || [ "$LATEST_OK" != 1 ]; then A_PASS=FAIL; FAIL=1; fi

# (b) kill -9 a replica under load, restart it.
wrk_run "http://127.0.0.1:$LB_PORT" "$DURATION" > "$WORK/wrk-b" &
WRK=$!
sleep 5
kill -9 "${PIDS[replica1]}"
wait "${PIDS[replica1]}" 2>/dev/null || true
sleep 5
start_replica 1
RESTART=$(secs)
wait_up "${REPLICA_PORTS[1]}" "${PIDS[replica1]}" "$WORK/replica1.log"
BACK=$(echo "$(secs) - $RESTART" | bc)
wait "$WRK"
B=$(cat "$WORK/wrk-b")
B_NON2XX=$(field "$B" non2xx); B_ERR=$(field "$B" errors)
B_PASS=pass
if [ "$B_NON2XX" != 0 ] || [ "$B_ERR" != 0 ]; then B_PASS=FAIL; FAIL=1; fi
sees_new "${REPLICA_PORTS[1]}" || { echo "the restarted replica does not serve the new release" >&2; B_PASS=FAIL; FAIL=1; }

# (c) throughput with 1, 2 and 3 replicas behind nginx, and one replica directly.
SHORT="${SHORT:-10s}"
declare -a C=()
DIRECT=$(wrk_run "http://127.0.0.1:${REPLICA_PORTS[0]}" "$SHORT")
C+=("| 1 replica, direct (no nginx) | $(field "$DIRECT" rps) | $(field "$DIRECT" p99) | $(field "$DIRECT" non2xx) |")
for n in 1 2 3; do
  nginx_conf "$n"
  "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" -s reload
  sleep 1
  OUT=$(wrk_run "http://127.0.0.1:$LB_PORT" "$SHORT")
  C+=("| $n replica(s) through nginx | $(field "$OUT" rps) | $(field "$OUT" p99) | $(field "$OUT" non2xx) |")
done

echo
echo "fhir-registers scale-out test: nginx + 3 read-only replicas + writer, $(nproc) cores, wrk -t2 -c$CONNECTIONS, profile $PROFILE, reload interval ${RELOAD} s"
echo
echo "| phase | requests | non-2xx | socket errors | p99 | result |"
echo "|---|---|---|---|---|---|"
echo "| (a) etr 2024-11 imported by another process under load ($DURATION) | $(field "$A" total) | $A_NON2XX | $A_ERR | $(field "$A" p99) | $A_PASS |"
echo "| (b) replica 1 killed (kill -9) and restarted under load ($DURATION) | $(field "$B" total) | $B_NON2XX | $B_ERR | $(field "$B" p99) | $B_PASS |"
echo
printf 'import took %.2f s; replicas served %s %.2f s, %.2f s, %.2f s after the import ended; the restarted replica was ready %.2f s after its start\n' \
  "$(echo "$IMPORTED - $IMPORT_START" | bc)" "$NEW_CODE" "${SEEN[0]}" "${SEEN[1]}" "${SEEN[2]}" "$BACK"
echo
echo "| (c) throughput ($SHORT each) | requests/s | p99 | non-2xx |"
echo "|---|---|---|---|"
printf '%s\n' "${C[@]}"
exit "$FAIL"
