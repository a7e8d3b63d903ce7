#!/usr/bin/env bash
# First renders of two Darkroom binaries side by side, one request at a time, interleaved
# (A then B for one image, B then A for the next), against pyvips in-process on one thread:
# 12 MP JPEG -> 1920 px JPEG, -> 1200 px WebP and -> 300 px JPEG, quality 80, the render
# store of both purged before each round so that every render decodes. Prints the median
# wall time per row and side, each side's ratio to pyvips, and each server's memory at the end.
#
# Loopback only; both servers are started here and stopped by PID on exit.
# Usage: A=old-binary B=new-binary bash benches/first_renders_ab.sh   (after benches/compare.sh
#        has built the data set; env: ROUNDS [3], BENCH_WORK [target/bench-peers])
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(cd "${BENCH_WORK:-$REPO/target/bench-peers}" && pwd)
DATA=$WORK/data; PY=$WORK/.venv/bin/python; KEY=bench-root-key; ROUNDS=${ROUNDS:-3}
A=${A:?binary A}; B=${B:?binary B}
[[ -f $DATA/jpeg/img20.jpg ]] || { echo "no data set in $DATA (run benches/compare.sh first)" >&2; exit 2; }
T=$(mktemp -d -t darkroom-ab.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
declare -A PORT=([a]=18701 [b]=18711) BIN=([a]=$A [b]=$B)
declare -A HASH
for s in a b; do
  mkdir -p "$T/$s"
  (cd "$T" && exec env DARKROOM__SERVER__API_BIND=127.0.0.1:${PORT[$s]} \
    DARKROOM__SERVER__RENDER_BIND=127.0.0.1:$(( PORT[$s] + 1 )) DARKROOM__STORAGE__PATH="$T/$s" \
    DARKROOM__AUTH__ROOT_KEY=$KEY DARKROOM__LOG__LEVEL=warn "${BIN[$s]}" serve) > "$T/$s.log" 2>&1 &
  PIDS+=($!)
done
for s in a b; do
  api=http://127.0.0.1:${PORT[$s]}
  for _ in $(seq 100); do curl -sf -o /dev/null "$api/readyz" && break; sleep 0.1; done
  curl -sf -o /dev/null -X PUT -H "Api-Key: $KEY" "$api/organizations/bench" -d '{}'
  for i in $(seq -f '%02g' 1 20); do
    HASH[$s$i]=$(curl -sf -H "Api-Key: $KEY" -F "filedata=@$DATA/jpeg/img$i.jpg" "$api/sourceimages/bench" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["hash"])')
  done
done
median_ms() { sort -n "$1" | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]*1000}'; }
echo "A: $A"; echo "B: $B"; echo "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for row in "1920 jpg" "1200 webp" "300 jpg"; do
  read -r w ext <<< "$row"
  : > "$T/ta"; : > "$T/tb"
  for r in $(seq "$ROUNDS"); do
    for s in a b; do
      curl -sf -o /dev/null -X DELETE -H "Api-Key: $KEY" "http://127.0.0.1:${PORT[$s]}/organizations/bench/cache"
    done
    sleep 0.5
    for i in $(seq -f '%02g' 1 20); do
      order="a b"; (( (10#$i + r) % 2 )) || order="b a"
      for s in $order; do
        curl -s -o /dev/null -w "%{time_total}\n" \
          "http://127.0.0.1:$(( PORT[$s] + 1 ))/bench/dynamic/resize-width-$w/${HASH[$s$i]}/img$i-r$r.$ext" >> "$T/t$s"
        sleep 0.05
      done
    done
  done
  pv=$("$PY" - "$w" "$ext" "$DATA"/jpeg/img*.jpg <<'PY'
import os, statistics, sys, tempfile, time
import pyvips
pyvips.cache_set_max(0)
width, ext, files = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
out = os.path.join(tempfile.mkdtemp(), "out." + ext)
times = []
for f in files:
    for run in range(3):
        t0 = time.perf_counter()
        im = pyvips.Image.thumbnail(f, width)
        im.webpsave(out, Q=80) if ext == "webp" else im.jpegsave(out, Q=80)
        if run:  # the first run of each file warms up
            times.append((time.perf_counter() - t0) * 1000)
print(f"{statistics.median(times):.1f}")
PY
)
  a=$(median_ms "$T/ta"); b=$(median_ms "$T/tb")
  awk -v w="$w" -v e="$ext" -v a="$a" -v b="$b" -v p="$pv" \
    'BEGIN {printf "-> %s px %s: A %s ms, B %s ms, pyvips %s ms; A/pyvips %.2f, B/pyvips %.2f\n", w, e, a, b, p, a/p, b/p}'
done
rss() { awk -v k="$1:" '$1==k {printf "%d MB", $2/1024}' "/proc/$2/status"; }
echo "memory after the rows: A $(rss VmRSS "${PIDS[0]}") (peak $(rss VmHWM "${PIDS[0]}")), B $(rss VmRSS "${PIDS[1]}") (peak $(rss VmHWM "${PIDS[1]}"))"
