#!/usr/bin/env bash
# Where the CPU goes, with `perf record -g` on the Darkroom process:
#   srcset  the responsive set of benches/compare.sh (20 uploads of the peer data set's 12 MP
#           photos, then widths 320, 640, 960, 1280, 1600, 1920 x jpg, webp x dpr 1, 2, six at a
#           time), on a fresh server and data folder
#   warm    `wrk -t2 -c32` on one stored render (a cache hit)
# For each: `perf report --no-children --percent-limit 2` (self time per symbol), the share
# of samples per shared object, and the server CPU seconds from /proc.
#
# Loopback only; the server is started here and stopped by PID in the EXIT trap.
# Usage: bash benches/profile.sh   (after `bash benches/compare.sh` has built the data set)
# Environment: BENCH_WORK [target/bench-peers], PEERS [../shared/peers], DARKROOM_BIN
#   [target/release/darkroom], MEZZANINE [true], DUR [10s], PERF_FREQ [499]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=$(cd "${PEERS:-$REPO/../shared/peers}" && pwd)
WORK=$(cd "${BENCH_WORK:-$REPO/target/bench-peers}" && pwd)
# shellcheck source=/dev/null
. "$PEERS/lib.sh"
DATA=$WORK/data; PY=$WORK/.venv/bin/python
DARKROOM_BIN=${DARKROOM_BIN:-$REPO/target/release/darkroom}
MEZZANINE=${MEZZANINE:-true}; DUR=${DUR:-10s}; FREQ=${PERF_FREQ:-499}
API_PORT=${API_PORT:-18291}; RENDER_PORT=${RENDER_PORT:-18292}; KEY=bench-root-key
[[ -x $DARKROOM_BIN ]] || die "no Darkroom binary at $DARKROOM_BIN"
[[ -f $DATA/jpeg/img20.jpg ]] || die "no data set in $DATA (run benches/compare.sh first)"
command -v perf > /dev/null || die "perf is not installed"
RES=$WORK/results/profile-$(date +%Y%m%dT%H%M%S); mkdir -p "$RES"
TMP=$(mktemp -d -t darkroom-profile.XXXXXX)
DPID=""; PPID_PERF=""
cleanup() {
  [[ -n $PPID_PERF ]] && kill -INT "$PPID_PERF" 2> /dev/null
  stop_tree "$DPID"; rm -rf "$TMP"
}
trap cleanup EXIT
HZ=$(getconf CLK_TCK)

port_free "$API_PORT"; port_free "$RENDER_PORT"
mkdir -p "$TMP/data"
(cd "$TMP" && exec env DARKROOM__SERVER__API_BIND=$HOST:$API_PORT DARKROOM__SERVER__RENDER_BIND=$HOST:$RENDER_PORT \
  DARKROOM__STORAGE__PATH="$TMP/data" DARKROOM__AUTH__ROOT_KEY=$KEY DARKROOM__RENDER__THREADS=0 \
  DARKROOM__RENDER__MEZZANINE="$MEZZANINE" DARKROOM__LOG__LEVEL=warn "$DARKROOM_BIN" serve) > "$RES/darkroom.log" 2>&1 &
DPID=$!
API=http://$HOST:$API_PORT; RENDER=http://$HOST:$RENDER_PORT
wait_http "$API/" 30
timeout 10 curl -sf -o /dev/null -X PUT -H "Api-Key: $KEY" "$API/organizations/bench" -d '{}' \
  || die "cannot create the organization"

perf_start() {  # $1 output file
  perf record -q -g -F "$FREQ" -p "$DPID" -o "$1" > /dev/null 2>&1 &
  PPID_PERF=$!
  sleep 0.5
}
perf_stop() {  # $1 data file, $2 report prefix
  kill -INT "$PPID_PERF"; wait "$PPID_PERF" 2> /dev/null || true; PPID_PERF=""
  perf report -i "$1" --no-children --sort dso,sym --percent-limit 2 --stdio -g none 2> /dev/null \
    | grep -v '^#' | grep -v '^$' > "$2_symbols.txt"
  perf report -i "$1" --no-children --sort dso --stdio -g none 2> /dev/null \
    | grep -v '^#' | grep -v '^$' | head -12 > "$2_dso.txt"
}

# ---------------------------------------------------------------- the responsive set
ids() { seq -f '%02g' 1 20; }
perf_start "$RES/srcset.data"
k0=$(cpu_ticks "$DPID"); t0=$(date +%s.%N)
for i in $(ids); do
  h=$(timeout 60 curl -sf -H "Api-Key: $KEY" -F "filedata=@$DATA/jpeg/img$i.jpg" "$API/sourceimages/bench" \
    | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["hash"])') || die "upload of img$i failed"
  echo "$h" >> "$TMP/hashes"
  for w in 320 640 960 1280 1600 1920; do for f in jpg webp; do for d in 1 2; do
    printf 'url = "%s"\noutput = /dev/null\n' "$RENDER/bench/dynamic/resize-width-$w--options-dpr-$d/$h.$f"
  done; done; done
done > "$TMP/srcset.cfg"
timeout 1200 curl -s --no-progress-meter -Z --parallel-max 6 --max-time 300 -K "$TMP/srcset.cfg" \
  -w "%{http_code} %header{x-darkroom-render}\n" > "$RES/srcset_codes.txt"
k1=$(cpu_ticks "$DPID"); t1=$(date +%s.%N)
perf_stop "$RES/srcset.data" "$RES/srcset"
awk -v t=$((k1 - k0)) -v hz="$HZ" -v a="$t0" -v b="$t1" \
  'BEGIN{printf "responsive set: server CPU %.2f s, wall %.1f s\n", t/hz, b-a}' | tee "$RES/srcset_cpu.txt"
echo "answers: $(sort "$RES/srcset_codes.txt" | uniq -c | tr -s ' \n' ' ')"

# ---------------------------------------------------------------- warm hits
WARM="$RENDER/bench/dynamic/resize-width-300--o-jpg.quality-80/$(head -1 "$TMP/hashes")/img01-v1.jpg"
timeout 60 curl -s -o /dev/null "$WARM"
timeout 10 curl -s -D "$RES/warm_headers.txt" -o /dev/null "$WARM"
grep -qi '^x-darkroom-render: hit' "$RES/warm_headers.txt" || die "the warm URL is not a cache hit"
perf_start "$RES/warm.data"
SERVER_PIDS=$DPID run_wrk "$RES/warm_wrk.txt" "$WARM"
perf_stop "$RES/warm.data" "$RES/warm"
grep -E 'Requests/sec|99%|server cpu|client cpu' "$RES/warm_wrk.txt"

for p in srcset warm; do
  echo "== $p: shared objects"; cat "$RES/${p}_dso.txt"
  echo "== $p: symbols (self, >= 2%)"; cat "$RES/${p}_symbols.txt"
done
echo "raw results: $RES"
