#!/usr/bin/env bash
# Import benchmark: `darkroom admin import-rokka` copying an organization of N images (default
# 2,000 tiny distinct PNGs with user metadata, loaded with benches/scale.py's loader) from one
# appliance, which plays the rokka host, into
#   1. a stopped data folder (the command opens it itself),
#   2. the same folder again (nothing new: every image is found already there),
#   3. a running appliance (through its control socket and API).
# Each run is timed and its summary line printed. Both appliances run here on loopback and are
# stopped on exit.
#
# Usage: bash benches/import.sh   (env: N=2000, SKIP_BUILD=1, DARKROOM_BIN)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-2000}
KEY=import-root-key-0123456789

if [[ -z "${DARKROOM_BIN:-}" ]]; then
    [[ "${SKIP_BUILD:-0}" == 1 ]] || (cd "$REPO" && cargo build --release --quiet)
    DARKROOM_BIN=$REPO/target/release/darkroom
fi
[[ -x $DARKROOM_BIN ]] || { echo "no Darkroom binary at $DARKROOM_BIN" >&2; exit 2; }

WORK=$(mktemp -d -t darkroom-import.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

serve() { # folder api-port render-port
    DARKROOM__STORAGE__PATH=$1 DARKROOM__SERVER__API_BIND=127.0.0.1:$2 \
        DARKROOM__SERVER__RENDER_BIND=127.0.0.1:$3 DARKROOM__AUTH__ROOT_KEY=$KEY \
        DARKROOM__GC__INTERVAL_SECS=0 DARKROOM__LOG__LEVEL=warn \
        "$DARKROOM_BIN" serve >"$1.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && return 0
        sleep 0.1
    done
    echo "the appliance on $1 did not start" >&2
    exit 1
}
import() { # folder api-bind
    local t0=$SECONDS started
    started=$(date +%s.%N)
    (cd "$WORK" && DARKROOM__STORAGE__PATH=$1 DARKROOM__SERVER__API_BIND=$2 \
        DARKROOM__SERVER__RENDER_BIND=127.0.0.1:0 DARKROOM__LOG__LEVEL=warn \
        ROKKA_API_KEY=$KEY "$DARKROOM_BIN" admin import-rokka \
        --api-host http://127.0.0.1:18581 --organization acme | grep -E "^import-rokka: acme|^verify")
    printf '  wall %.2fs\n' "$(echo "$(date +%s.%N) - $started" | bc)"
}

serve "$WORK/source" 18581 18582
curl -sf -X PUT -H "Api-Key: $KEY" -d '{}' http://127.0.0.1:18581/organizations/acme >/dev/null
echo "loading $N images into the source"
API=127.0.0.1:18581 KEY=$KEY N=$N REPEAT=1 DARKROOM_PID=${PIDS[0]} \
    python3 "$REPO/benches/scale.py" load-and-measure | grep -E "^upload|images/s" | head -3 || true

echo "1. into a stopped folder"
import "$WORK/copy" 127.0.0.1:0
echo "2. the same folder again"
import "$WORK/copy" 127.0.0.1:0
echo "3. into a running appliance"
serve "$WORK/live" 18583 18584
import "$WORK/live" 127.0.0.1:18583
