#!/usr/bin/env bash
# Scale benchmark: a library of N images (default 100,000; N=1000000 for a million) loaded
# through the API into a fresh temporary data folder, then measured (benches/scale.py, Python 3,
# standard library only):
#   1. upload rate per decile of N (tiny distinct PNGs with user metadata, 4 client threads);
#   2. p50/p99 of REPEAT (50) sequential requests for every listing form (sorts, offsets up to
#      N/2, exact, prefix, range, array and combined filters, facets, limit=0), GET by hash,
#      short hash and binaryHash, /readyz and /stats; a full cursor walk, checked for
#      duplicates and gaps; RSS after loading and after the listings;
#   3. the data folder's bytes (sled part and per image), start-up time on the loaded folder
#      (until /readyz answers) and RSS after it, then the listings of 2. once more on that
#      restarted process (RESTART_REPEAT requests per form, 10 by default) and its RSS after;
#   4. 10 % of the images deleted, then `darkroom admin gc` (retention 0), `darkroom admin
#      verify` and `darkroom admin compact`, each timed, with the sled part's size after each.
# The server is started here on loopback and stopped by its PID on exit.
#
# With DARKROOM__STORAGE__DATABASE_URL in the environment the appliance keeps its records in
# that PostgreSQL (give it a fresh schema: ...?options=-csearch_path%3Dname); compaction is
# then skipped.
#
# Usage: bash benches/scale.sh   (env: N=100000, REPEAT=50, SKIP_BUILD=1, DARKROOM_BIN,
#        SCALE_API_PORT=18491, SCALE_RENDER_PORT=18492, KEEP_DATA=1, RESTART_REPEAT=10)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-100000}
API_PORT=${SCALE_API_PORT:-18491}
RENDER_PORT=${SCALE_RENDER_PORT:-18492}
KEY=scale-root-key-0123456789

if [[ -z "${DARKROOM_BIN:-}" ]]; then
    [[ "${SKIP_BUILD:-0}" == 1 ]] || (cd "$REPO" && cargo build --release --quiet)
    DARKROOM_BIN=$REPO/target/release/darkroom
fi
[[ -x $DARKROOM_BIN ]] || { echo "no Darkroom binary at $DARKROOM_BIN" >&2; exit 2; }

WORK=$(mktemp -d -t darkroom-scale.XXXXXX)
DPID=""
stop() {
    if [[ -n $DPID ]] && kill -0 "$DPID" 2>/dev/null; then
        kill "$DPID" 2>/dev/null || true
        wait "$DPID" 2>/dev/null || true
    fi
    DPID=""
}
cleanup() {
    stop
    if [[ "${KEEP_DATA:-0}" == 1 ]]; then echo "data kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

export DARKROOM__SERVER__API_BIND=127.0.0.1:$API_PORT
export DARKROOM__SERVER__RENDER_BIND=127.0.0.1:$RENDER_PORT
export DARKROOM__STORAGE__PATH=$WORK/data
export DARKROOM__AUTH__ROOT_KEY=$KEY
export DARKROOM__GC__INTERVAL_SECS=0
export DARKROOM__IMAGES__RETENTION_DAYS=0
export DARKROOM__LOG__LEVEL=warn
api="http://127.0.0.1:$API_PORT"

# Starts the server; STARTUP is the seconds until /readyz answered.
STARTUP=""
start() {
    local t0
    t0=$(date +%s.%N)
    "$DARKROOM_BIN" serve >>"$WORK/darkroom.log" 2>&1 &
    DPID=$!
    for _ in $(seq 1 600); do
        curl -sf -o /dev/null "$api/readyz" && break
        sleep 0.05
    done
    curl -sf -o /dev/null "$api/readyz" || { echo "the appliance did not start:" >&2; cat "$WORK/darkroom.log" >&2; exit 2; }
    STARTUP=$(echo "$(date +%s.%N) - $t0" | bc)
}
# The records' part of the data folder: sled's, or nothing with the records in PostgreSQL
# (DARKROOM__STORAGE__DATABASE_URL set; measure the database with psql there).
sled_bytes() { if [[ -d $WORK/data/sled ]]; then du -sb "$WORK/data/sled" | cut -f1; else echo 0; fi; }
rss() { grep -E '^VmRSS' "/proc/$DPID/status" | awk '{print int($2/1024) " MB"}'; }

mkdir -p "$WORK/data"
start
curl -sf -o /dev/null -X PUT -H "Api-Key: $KEY" "$api/organizations/acme" -d '{"billing_email":"scale@example.com"}'
echo "scale: N=$N, $("$DARKROOM_BIN" --version | head -1), $(nproc) cores, data in $WORK/data"
API=127.0.0.1:$API_PORT KEY=$KEY N=$N REPEAT=${REPEAT:-50} DARKROOM_PID=$DPID \
    python3 "$REPO/benches/scale.py" load-and-measure
stop
echo "data folder: $(du -sb "$WORK/data" | cut -f1) bytes; sled part $(sled_bytes) bytes ($(( $(sled_bytes) / N )) per image)"
start
echo "start-up on the loaded folder: $STARTUP s, RSS $(rss)"
# The listings once more on the restarted process (its caches cold, nothing of the load left
# in memory): the memory a running appliance holds at this size.
echo "after the restart, each form ${RESTART_REPEAT:-10} times:"
API=127.0.0.1:$API_PORT KEY=$KEY N=$N START=$N REPEAT=${RESTART_REPEAT:-10} DARKROOM_PID=$DPID \
    python3 "$REPO/benches/scale.py" load-and-measure | sed 's/^rss after load/rss after the start/'
API=127.0.0.1:$API_PORT KEY=$KEY N=$N python3 "$REPO/benches/scale.py" delete
stop
sleep 1.1  # deletes of this second are not yet past a retention of 0 days
timed() { local t0; t0=$(date +%s.%N); "$@"; echo "  ($(echo "$(date +%s.%N) - $t0" | bc) s; sled part $(sled_bytes) bytes)"; }
timed "$DARKROOM_BIN" admin gc
timed "$DARKROOM_BIN" admin verify
if [[ -z ${DARKROOM__STORAGE__DATABASE_URL:-} ]]; then
    timed "$DARKROOM_BIN" admin compact
fi
