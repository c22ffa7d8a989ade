#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for FUZZ_SECONDS seconds (default 60),
# printing per target the executions, executions per second and any crash found.
#
#   benches/fuzz.sh                      # every target, 60 s each
#   FUZZ_SECONDS=300 benches/fuzz.sh compose filters
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). The stable toolchain is enough:
# RUSTC_BOOTSTRAP=1 lets it pass the -Z flags cargo-fuzz uses. No sanitizer: the code is safe
# Rust (unsafe is forbidden), so a crash is a panic, an abort or a timeout, found without ASan.
# Each target fuzzes from its committed corpus (fuzz/corpus/{target}) and writes new inputs to a
# scratch copy (fuzz/target/corpus/{target}); crashes land in fuzz/artifacts/{target}/. Minimise a
# grown corpus back into the committed one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz cmin -O -s none {target} fuzz/corpus/{target}
# and turn each crash into a regression test before committing it to fuzz/corpus/{target}.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(mapping_toml csv_rows parameters_json parameters_xml compose filters)
fi
# Inputs larger than this are not tried: large inputs only slow the search down, and deeply
# nested XML overflows fhirbolt's recursive parser (a known finding handled at the HTTP layer).
max_len="${FUZZ_MAX_LEN:-4096}"

export RUSTC_BOOTSTRAP=1
cargo fuzz build -O -s none

printf '%-16s %12s %10s %s\n' target executions exec/s crashes
for t in "${targets[@]}"; do
    scratch="fuzz/target/corpus/$t"
    mkdir -p "$scratch" "fuzz/artifacts/$t"
    log="fuzz/target/$t.log"
    status=0
    cargo fuzz run -O -s none "$t" "$scratch" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
    rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
    crashes="$(find "fuzz/artifacts/$t" -type f | wc -l)"
    printf '%-16s %12s %10s %s\n' "$t" "${runs:-?}" "${rate:-?}" "$crashes"
    if [[ $status -ne 0 ]]; then
        echo "  $t stopped (exit $status); see $log:" >&2
        grep -m3 -E "panicked|ERROR|deadly signal|timeout" "$log" | sed 's/^/    /' >&2 || true
    fi
done
