#!/usr/bin/env bash
# The register browser in headless Chromium. Builds nothing: it starts the debug binary that
# `cargo test` (or `cargo build`) made, on a free loopback port with a temporary data directory
# (the shipped registers are imported from mappings/ at start), waits until the server is ready,
# runs browser.test.mjs against it and stops the server. Screenshots go to
# target/browser-screenshots/.
#
#   tests/browser/run.sh                       # after `cargo build` and `npm ci` in tests/browser
#   BIN=target/release/fhir-registers tests/browser/run.sh
#
# Needs node (18 or later), the npm packages of package-lock.json (`npm ci`) and Chromium at
# /usr/bin/chromium (Debian's `chromium` package), or CHROMIUM=/path/to/chromium.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${BIN:-$ROOT/target/debug/fhir-registers}"
[ -x "$BIN" ] || { echo "no server binary at $BIN: run cargo build (or cargo test) first" >&2; exit 2; }
[ -d "$ROOT/tests/browser/node_modules/playwright-core" ] \
  || { echo "run npm ci in tests/browser first" >&2; exit 2; }

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
WORK="$(mktemp -d)"
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

cd "$ROOT"
RUST_LOG="${RUST_LOG:-warn}" "$BIN" serve --data-dir "$WORK/data" --mappings "$ROOT/mappings" \
  --listen "127.0.0.1:$PORT" > "$WORK/serve.log" 2>&1 &
SERVER=$!

# Ready: the shipped registers imported and the latest versions' indexes built (5 minutes at most).
for _ in $(seq 3000); do
  curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { echo "the server stopped:" >&2; cat "$WORK/serve.log" >&2; exit 1; }
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null \
  || { echo "the server was not ready in time:" >&2; tail -20 "$WORK/serve.log" >&2; exit 1; }

BASE_URL="http://127.0.0.1:$PORT" SCREENSHOTS="$ROOT/target/browser-screenshots" \
  node "$ROOT/tests/browser/browser.test.mjs"
