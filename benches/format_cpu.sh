#!/usr/bin/env bash
# CPU per render rather than wall time, for the per-format rows of benches/compare.sh: on a
# loaded machine a server that hands each request from its HTTP thread to a render thread and
# back waits for the scheduler at each step, so its wall time says more about the load than
# about the work. Darkroom's server CPU (utime+stime from /proc) for 20 renders of each size,
# one at a time, on a fresh server and data folder, against pyvips' process CPU
# (time.process_time) for the same thumbnails and saves (one thread, quality 80).
# The rows run in this order on the same images, so with mezzanines on the 1200 px WebP row
# starts from the 1/2 mezzanine the 1920 px JPEG row kept.
#
# Loopback only; the server is started here and stopped by PID in the EXIT trap.
# Usage: bash benches/format_cpu.sh   (after benches/compare.sh has built the data set)
# Environment: BENCH_WORK [target/bench-peers], PEERS [../shared/peers], DARKROOM_BIN
#   [target/release/darkroom], MEZZANINE [true]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=$(cd "${PEERS:-$REPO/../shared/peers}" && pwd)
WORK=$(cd "${BENCH_WORK:-$REPO/target/bench-peers}" && pwd)
# shellcheck source=/dev/null
. "$PEERS/lib.sh"
DATA=$WORK/data; PY=$WORK/.venv/bin/python; KEY=bench-root-key
DARKROOM_BIN=${DARKROOM_BIN:-$REPO/target/release/darkroom}; MEZZANINE=${MEZZANINE:-true}
API_PORT=${API_PORT:-18301}; RENDER_PORT=${RENDER_PORT:-18302}
[[ -x $DARKROOM_BIN ]] || die "no Darkroom binary at $DARKROOM_BIN"
[[ -f $DATA/jpeg/img20.jpg ]] || die "no data set in $DATA (run benches/compare.sh first)"
TMP=$(mktemp -d -t darkroom-fmtcpu.XXXXXX); DPID=""
cleanup() { stop_tree "$DPID"; rm -rf "$TMP"; }
trap cleanup EXIT
port_free "$API_PORT"; port_free "$RENDER_PORT"
(cd "$TMP" && exec env DARKROOM__SERVER__API_BIND=$HOST:$API_PORT DARKROOM__SERVER__RENDER_BIND=$HOST:$RENDER_PORT \
  DARKROOM__STORAGE__PATH="$TMP" DARKROOM__AUTH__ROOT_KEY=$KEY DARKROOM__RENDER__THREADS=1 \
  DARKROOM__RENDER__MEZZANINE="$MEZZANINE" DARKROOM__LOG__LEVEL=warn "$DARKROOM_BIN" serve) > /dev/null 2>&1 &
DPID=$!
API=http://$HOST:$API_PORT; RENDER=http://$HOST:$RENDER_PORT
wait_http "$API/" 30
timeout 10 curl -sf -o /dev/null -X PUT -H "Api-Key: $KEY" "$API/organizations/bench" -d '{}' \
  || die "cannot create the organization"
declare -A H
for i in $(seq -f %02g 1 20); do
  H[$i]=$(timeout 60 curl -sf -H "Api-Key: $KEY" -F "filedata=@$DATA/jpeg/img$i.jpg" "$API/sourceimages/bench" \
    | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["hash"])') || die "upload of img$i failed"
done
HZ=$(getconf CLK_TCK)
for spec in "1920 jpg" "1200 webp" "300 jpg"; do
  read -r w e <<< "$spec"
  k0=$(cpu_ticks "$DPID")
  for i in $(seq -f %02g 1 20); do
    timeout 120 curl -s -o /dev/null "$RENDER/bench/dynamic/resize-width-$w/${H[$i]}/img$i.$e"
  done
  k1=$(cpu_ticks "$DPID")
  dr=$(awk -v t=$((k1 - k0)) -v hz="$HZ" 'BEGIN{printf "%.1f", 1000*t/hz/20}')
  pv=$(VIPS_CONCURRENCY=1 timeout 600 "$PY" - "$w" "$e" "$DATA"/jpeg/img*.jpg <<'PYEOF'
import sys, time
import pyvips
pyvips.cache_set_max(0)
width, ext, files = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
t = time.process_time()
for f in files:
    im = pyvips.Image.thumbnail(f, width)
    im.webpsave_buffer(Q=80) if ext == "webp" else im.jpegsave_buffer(Q=80)
print("%.1f" % ((time.process_time() - t) * 1000 / len(files)))
PYEOF
)
  echo "12 MP JPEG -> $w px $e: Darkroom ${dr} ms CPU per render (mezzanines $MEZZANINE), pyvips ${pv} ms"
done
