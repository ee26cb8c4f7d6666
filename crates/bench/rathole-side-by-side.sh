#!/usr/bin/env bash
# Side by side, in one sitting, with the same tools: small requests (wrk,
# 64 connections, 10 s) and one bulk download (curl, 512 MiB) against
#   1. the simulated box directly,
#   2. the box through rathole (tcp transport),
#   3. the box through our full authenticated path (devstack: api-server
#      with a real login through the development provider, relay, agent).
# Prints each figure and our ratio to rathole. Loopback only; stops by
# itself. An interim harness until edge-bench runs rathole itself
# (issue 11).
#
# Needs: `cargo build --release --bins`, `wrk` (apt), `rathole` on PATH
# (`cargo install rathole`), curl, python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release
for tool in wrk rathole curl python3; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
for b in devstack sim-box edge-agent; do
    [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: cargo build --release --bins" >&2; exit 2; }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

BOX=$(free_port)
"$BIN/sim-box" --listen "127.0.0.1:$BOX" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$BOX"

# rathole: server and client on loopback, forwarding to the box.
RS=$(free_port); RB=$(free_port)
cat >"$WORK/server.toml" <<EOF
[server]
bind_addr = "127.0.0.1:$RS"
[server.services.box]
token = "bench-only"
bind_addr = "127.0.0.1:$RB"
EOF
cat >"$WORK/client.toml" <<EOF
[client]
remote_addr = "127.0.0.1:$RS"
[client.services.box]
token = "bench-only"
local_addr = "127.0.0.1:$BOX"
EOF
rathole --server "$WORK/server.toml" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$RS"
rathole --client "$WORK/client.toml" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$RB"

# Our stack, signed in as alice, with the simulated box paired.
API=$(free_port); TUN=$(free_port); INT=$(free_port); IDP=$(free_port)
mkdir -p "$WORK/stack"
(cd "$WORK/stack" && exec "$OLDPWD/$BIN/devstack" --data-dir data --api-listen "127.0.0.1:$API" \
    --tunnel-listen "127.0.0.1:$TUN" --internal-listen "127.0.0.1:$INT" --idp-listen "127.0.0.1:$IDP") \
    >"$WORK/devstack.log" 2>&1 & PIDS+=($!)
wait_port "$API"; wait_port "$IDP"
JAR="$WORK/jar"
ORIGIN="http://localhost:$API"
authorize=$(curl -s -o /dev/null -c "$JAR" -b "$JAR" -w '%{redirect_url}' "$ORIGIN/api/auth/login?return_to=/")
callback=$(curl -s -o /dev/null -w '%{redirect_url}' --data "${authorize#*\?}&user=alice" "${authorize%%\?*}")
curl -s -o /dev/null -c "$JAR" -b "$JAR" "$callback"
COOKIE="edge_session=$(awk '$6 == "edge_session" { print $7 }' "$JAR")"
code=$(curl -s -X POST -H "cookie: $COOKIE" -H 'x-csrf: 1' "$ORIGIN/api/pairing/codes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["code"])')
(cd "$WORK/stack" && "$OLDPWD/$BIN/edge-agent" pair --server "$ORIGIN" --code "$code" >/dev/null)
for _ in $(seq 1 100); do
    DEV=$(curl -s -H "cookie: $COOKIE" "$ORIGIN/api/devices" | python3 -c 'import json,sys; d=[x for x in json.load(sys.stdin) if x["status"]=="online"]; print(d[0]["id"] if d else "")')
    [ -n "$DEV" ] && break; sleep 0.2
done
[ -n "$DEV" ] || { echo "the box never came online" >&2; exit 1; }
OURS="$ORIGIN/api/devices/$DEV/proxy"

rps() { # url [header] -> "req/s p99"
    local out
    if [ $# -gt 1 ]; then out=$(wrk -t2 -c64 -d10s --latency -H "$2" "$1/api/info"); else out=$(wrk -t2 -c64 -d10s --latency "$1/api/info"); fi
    echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1 == "99%" {print $2}' <<<"$out") $(awk '/Non-2xx/ {print $NF}' <<<"$out")"
}
bulk() { # url [header] -> MiB/s
    local bytes=$((512 << 20)) speed
    if [ $# -gt 1 ]; then speed=$(curl -s -o /dev/null -H "$2" -w '%{speed_download}' "$1/test/download?bytes=$bytes");
    else speed=$(curl -s -o /dev/null -w '%{speed_download}' "$1/test/download?bytes=$bytes"); fi
    python3 -c "print(round($speed / 1048576, 1))"
}

read -r d_rps d_p99 _ <<<"$(rps "http://127.0.0.1:$BOX")"
read -r r_rps r_p99 _ <<<"$(rps "http://127.0.0.1:$RB")"
read -r o_rps o_p99 o_err <<<"$(rps "$OURS" "cookie: $COOKIE")"
d_bulk=$(bulk "http://127.0.0.1:$BOX"); r_bulk=$(bulk "http://127.0.0.1:$RB"); o_bulk=$(bulk "$OURS" "cookie: $COOKIE")
ratio() { python3 -c "print(round($1 / $2, 2))"; }
echo "small requests (wrk -c64 -d10s, GET /api/info):"
echo "  direct to the box       $d_rps req/s  p99 $d_p99"
echo "  rathole (tcp)           $r_rps req/s  p99 $r_p99"
echo "  ours, full path         $o_rps req/s  p99 $o_p99  non-2xx ${o_err:-0}  ratio to rathole $(ratio "$o_rps" "$r_rps")"
echo "bulk download, 512 MiB (curl):"
echo "  direct to the box       $d_bulk MiB/s"
echo "  rathole (tcp)           $r_bulk MiB/s"
echo "  ours, full path         $o_bulk MiB/s  ratio to rathole $(ratio "$o_bulk" "$r_bulk")"
