#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 60) each, starting from the
# committed seeds, with a 2 GiB RSS limit and a 10 s per-input timeout.
# Exits non-zero on the first crash, hang or memory blow-up (the input is
# left in fuzz/artifacts/<target>/, the log in fuzz/logs/). Needs nightly
# and cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
targets=(relay_tunnel agent_session cookies pairing proxy_headers yamux_flood exposition)
cargo +nightly fuzz build -O
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== fuzz $t for ${secs}s"
    status=0
    cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        > "logs/$t.log" 2>&1 || status=$?
    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "logs/$t.log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "logs/$t.log"
        echo "fuzz target $t failed (exit $status)"
        exit "$status"
    fi
done
