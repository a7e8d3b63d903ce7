#!/usr/bin/env bash
# Soak benchmark: SOAK_SECS (default 1800) of mixed load against the release binary, on
# loopback, over a fresh temporary data folder: uploads, listings, cold and warm renders,
# deletes, purges and hostile requests (huge dynamic resizes, composition with another image,
# long operation chains, multipart bodies without a closing boundary, slow bodies, a 1 GB
# Content-Length, broken images, bad JSON, hostile URLs), driven by benches/soak.py (Python 3,
# standard library only) with THREADS workers. Prints RSS every 10 s, then a table of status
# counts and p50/p99 latency per request kind, checks that every acknowledged upload that was
# not deleted still downloads with its bytes, stops the server and runs `darkroom admin verify`.
#
# Exits non-zero on a 5xx other than 503 with Retry-After or 507, a lost upload, or a failed
# verify. The server is started here and stopped by its PID on exit.
#
# Usage: bash benches/soak.sh   (env: SOAK_SECS=1800, THREADS=4, SKIP_BUILD=1, DARKROOM_BIN,
#        SOAK_API_PORT=18391, SOAK_RENDER_PORT=18392, SEED=1, KEEP_DATA=1)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SOAK_SECS=${SOAK_SECS:-1800}
THREADS=${THREADS:-4}
API_PORT=${SOAK_API_PORT:-18391}
RENDER_PORT=${SOAK_RENDER_PORT:-18392}
KEY=soak-root-key-0123456789
ORG=soak

if [[ -z "${DARKROOM_BIN:-}" ]]; then
    [[ "${SKIP_BUILD:-0}" == 1 ]] || (cd "$REPO" && cargo build --release --quiet)
    DARKROOM_BIN=$REPO/target/release/darkroom
fi
[[ -x $DARKROOM_BIN ]] || { echo "no Darkroom binary at $DARKROOM_BIN" >&2; exit 2; }

WORK=$(mktemp -d -t darkroom-soak.XXXXXX)
DPID=""
cleanup() {
    if [[ -n $DPID ]] && kill -0 "$DPID" 2>/dev/null; then
        kill "$DPID" 2>/dev/null || true
        wait "$DPID" 2>/dev/null || true
    fi
    if [[ "${KEEP_DATA:-0}" == 1 ]]; then echo "data and log kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

export DARKROOM__SERVER__API_BIND=127.0.0.1:$API_PORT
export DARKROOM__SERVER__RENDER_BIND=127.0.0.1:$RENDER_PORT
export DARKROOM__STORAGE__PATH=$WORK/data
export DARKROOM__AUTH__ROOT_KEY=$KEY
export DARKROOM__LOG__LEVEL=warn
mkdir -p "$WORK/data"
"$DARKROOM_BIN" serve >"$WORK/darkroom.log" 2>&1 &
DPID=$!

api="http://127.0.0.1:$API_PORT"
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "$api/healthz" && break
    sleep 0.1
done
curl -sf -o /dev/null "$api/healthz" || { echo "the appliance did not start:" >&2; cat "$WORK/darkroom.log" >&2; exit 2; }

curl -sf -o /dev/null -X PUT -H "Api-Key: $KEY" "$api/organizations/$ORG" -d '{"billing_email":"soak@example.com"}'
curl -sf -o /dev/null -X PUT -H "Api-Key: $KEY" "$api/stacks/$ORG/thumb" \
    -d '[{"name":"resize","options":{"width":200,"height":200}}]'

echo "soak: $SOAK_SECS s, $THREADS workers, $("$DARKROOM_BIN" --version | head -1), data in $WORK/data"
status=0
API=127.0.0.1:$API_PORT RENDER=127.0.0.1:$RENDER_PORT KEY=$KEY ORG=$ORG SOAK_SECS=$SOAK_SECS \
    THREADS=$THREADS DARKROOM_PID=$DPID SEED=${SEED:-1} python3 "$REPO/benches/soak.py" || status=$?

echo
echo "temporary files left in tmp/ while running: $(find "$WORK/data/tmp" -type f 2>/dev/null | wc -l)"
kill "$DPID"
wait "$DPID" 2>/dev/null || true
DPID=""
echo "errors and warnings in the log: $(grep -c -E ' (ERROR|WARN) ' "$WORK/darkroom.log" || true)"
grep -E ' ERROR ' "$WORK/darkroom.log" | sed -E 's/^\[[^]]*\] //' | sort | uniq -c | sort -rn | head -10 || true

echo "darkroom admin verify:"
if ! "$DARKROOM_BIN" admin verify; then
    status=1
fi
if ((status == 0)); then echo "soak: passed"; else echo "soak: FAILED"; fi
exit "$status"
