#!/usr/bin/env bash
# End-to-end numbers beside the peers of ../shared/bench (nginx, HAProxy, direct upstream):
# builds keygate in release, writes two keygate configs (key auth on, and `auth: none`),
# creates a keygate key, and runs the shared harness with keygate as extra peers, so every
# row comes from the same run, the same pinning (proxy on one core, wrk + upstream on the
# other) and interleaved rounds. Only loopback; the harness stops what it started by PID.
#
#   benches/shared-bench.sh                                  # full run (3 rounds x 10 s)
#   ROUNDS=1 DURATION=5s benches/shared-bench.sh             # quicker
#   PEERS="direct nginx-plain" benches/shared-bench.sh       # fewer peers
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=${BENCH:-$ROOT/../shared/bench}
WORK=${WORK:-/tmp/kg-bench}
[ -x "$BENCH/run-peers.sh" ] || { echo "no harness at $BENCH (set BENCH=)" >&2; exit 1; }
for tool in wrk nginx haproxy curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk nginx haproxy curl" >&2; exit 1; }
done

(cd "$ROOT" && cargo build --release --locked --bin keygate)
BIN=$ROOT/target/release/keygate

# The harness looks for its upstream binary inside its own tree, and shared/ is not ours
# to write: run a copy of it, with the upstream built into our work dir.
rm -rf "$WORK" && mkdir -p "$WORK"
cp -r "$BENCH" "$WORK/harness" && chmod -R u+w "$WORK/harness"
UP_TARGET=${UP_TARGET:-/tmp/bench-upstream-target}
(cd "$WORK/harness/upstream" && CARGO_TARGET_DIR=$UP_TARGET cargo build --release)
mkdir -p "$WORK/harness/upstream/target/release"
ln -sf "$UP_TARGET/release/bench-upstream" "$WORK/harness/upstream/target/release/bench-upstream"
common() { # common PORT AUTH
  cat <<YAML
listen: 127.0.0.1:$1
store: { kind: embedded, path: $WORK/keygate.db }
cache: { max_entries: 100000, ttl: 30s, negative_ttl: 5s, stale_if_error: 5m }
roles: { reader: [bench:read] }
server: { workers: 1 }
log: { level: warn }
upstreams:
  up: { targets: [http://127.0.0.1:18080], connect_timeout: 2s, timeout: 30s }
routes:
YAML
  if [ "$2" = key ]; then
    echo "  - { path: /, upstream: up, permissions: [bench:read] }"
  else
    echo "  - { path: /, upstream: up, auth: none }"
  fi
}
common 18090 key > "$WORK/auth.yaml"
common 18091 none > "$WORK/open.yaml"
KEY=$("$BIN" --config "$WORK/auth.yaml" --json keys create --org bench --role reader --name bench \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

cat > "$WORK/extra-peers" <<X
# NAME PORT KEYCHECK(0|1) COMMAND...
keygate        18090 1 $BIN serve --config $WORK/auth.yaml
keygate-noauth 18091 0 $BIN serve --config $WORK/open.yaml
X
# oha is optional; the harness's version probe needs something that answers --version.
export OHA_BIN=${OHA_BIN:-$(type -P true)}
KEY=$KEY EXTRA_PEERS_FILE=$WORK/extra-peers \
  PEERS=${PEERS:-"direct nginx-plain nginx-key haproxy-plain haproxy-key"} \
  bash ${TRACE:+-x} "$WORK/harness/run-peers.sh"
