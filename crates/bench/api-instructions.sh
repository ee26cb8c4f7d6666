#!/usr/bin/env bash
# Instructions the api-server runs per proxied small request, counted by
# valgrind's callgrind: the same count for the same build and inputs,
# whatever else the machine does, so a change of a few per cent shows where
# edge-bench's wall-clock figures are lost in the machine's noise.
#
#   crates/bench/api-instructions.sh [BINDIR] [REQUESTS]
#
# BINDIR holds edge-bench and the servers (default target/profiling, built
# with `cargo build --profile profiling --bins`); REQUESTS (default 2000)
# small requests go through the full path, once with REQUESTS and once with
# twice as many, and the difference is divided by REQUESTS, so start-up,
# the bulk runs and the store's setup cancel out. Needs valgrind
# (`apt-get install valgrind`). edge-bench sends REQUESTS through the full
# path and as many through `edge forward` (an upgraded connection the
# api-server pipes), so the whole process's count is per pair, one of each;
# the count under the proxy's lane (the connection's task: head, checks,
# box exchange, answer) is the full path's alone. KEEP=1 leaves callgrind's
# files in the directory it prints.
set -euo pipefail

bindir=$(cd "${1:-target/profiling}" && pwd)
requests=${2:-2000}
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

# edge-bench starts the servers found beside itself: a copy of it, the
# other binaries linked, and an api-server that runs the real one under
# callgrind. edge-bench ends its children with SIGKILL, which would lose
# callgrind's counts, so the wrapper keeps valgrind in the background and
# this script ends it with SIGTERM (the api-server's own graceful stop).
cp "$bindir/edge-bench" "$work/"
for b in remote-proxy edge-agent sim-box edge; do ln -s "$bindir/$b" "$work/$b"; done
cat >"$work/api-server" <<EOF
#!/usr/bin/env bash
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.\$RUN.out" "$bindir/api-server" "\$@" &
echo \$! >"$work/pid.\$RUN"
wait
EOF
chmod +x "$work/api-server"

count() {
    local run=$1 n=$2
    RUN=$run "$work/edge-bench" --rathole /nonexistent --requests "$n" --rounds 1 \
        --bulk-mib 1 --idle-tunnels 10 >"$work/bench.$run.txt" 2>&1 ||
        { cat "$work/bench.$run.txt" >&2; exit 1; }
    local pid
    pid=$(cat "$work/pid.$run")
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
    callgrind_annotate --inclusive=yes --threshold=100 "$work/callgrind.$run.out" 2>/dev/null \
        >"$work/annotated.$run.txt"
}

ir() { # the inclusive count of the first line matching $2 in run $1
    grep -m1 -- "$2" "$work/annotated.$1.txt" | awk '{gsub(",", "", $1); print $1}'
}

count one "$requests"
count two "$((requests * 2))"
total=$((($(ir two 'PROGRAM TOTALS') - $(ir one 'PROGRAM TOTALS')) / requests))
lane=$((($(ir two 'proxy_lane::serve::{{closure}} \[') - $(ir one 'proxy_lane::serve::{{closure}} \[')) / requests))
echo "api-server instructions per proxied small request ($requests and $((requests * 2)) requests, difference):"
echo "  whole process (user space), a full-path and an edge-forward request   $total"
echo "  under the proxy's lane, a full-path request                          $lane"
if [ -n "${KEEP:-}" ]; then echo "callgrind's files: $work"; fi
