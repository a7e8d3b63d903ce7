#!/usr/bin/env bash
# What a responsive set costs with and without mezzanines, side by side in one run.
#
# Two appliances run at once from the same release binary, one with `render.mezzanine = true`
# (the default) and one with it off, each with its own data folder and the same 12 MP JPEG
# uploaded. A round asks each, in turn, for the 24 URLs of a responsive set: widths 320, 640,
# 960, 1280, 1600 and 1920 × jpg and webp × dpr 1 and 2, six at a time as a browser loading a
# page with a srcset does; before each round the image's stored renders (and its mezzanines)
# are purged, so every round is cold. Measured per round: the server's CPU time (utime +
# stime of its process, from /proc) and the wall time of the set. Printed: medians with
# min..max of each side and their ratio. Loopback only; both servers are stopped by PID.
#
# Usage: bash benches/mezzanine.sh
# Environment (defaults in brackets):
#   DARKROOM_BIN  binary [target/release/darkroom, built with cargo build --release unless
#                 SKIP_BUILD=1]
#   SOURCE        the JPEG to render [a 4000x3000 q90 JPEG made with ImageMagick]
#   CONVERT       ImageMagick's convert [convert]
#   ROUNDS [7]    cold rounds per side; PARALLEL [6] requests at once
#   BENCH_WORK    where the source and the results go [target/bench-mezzanine]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_WORK:-$REPO/target/bench-mezzanine}
ROUNDS=${ROUNDS:-7}; PARALLEL=${PARALLEL:-6}
HOST=127.0.0.1; KEY=bench-root-key
PORTS_ON=(18381 18382); PORTS_OFF=(18391 18392)
mkdir -p "$WORK"

if [[ -z ${DARKROOM_BIN:-} ]]; then
  DARKROOM_BIN=$REPO/target/release/darkroom
  [[ ${SKIP_BUILD:-0} == 1 ]] || (cd "$REPO" && cargo build --release --quiet)
fi
SOURCE=${SOURCE:-$WORK/photo-12mp.jpg}
if [[ ! -f $SOURCE ]]; then
  # Fractal plasma with sensor-like noise: about as costly to decode as a real photo.
  timeout 300 "${CONVERT:-convert}" -seed 7 -size 4000x3000 plasma:fractal -attenuate 0.4 +noise Gaussian \
    -sampling-factor 2x2 -quality 90 "$SOURCE"
fi

TMP=$(mktemp -d -t darkroom-mezzanine.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

start() {  # $1 name, $2 api port, $3 render port, $4 mezzanine on/off
  mkdir -p "$TMP/$1"
  if curl -s -o /dev/null "http://$HOST:$2/"; then echo "port $2 is taken" >&2; exit 1; fi
  env DARKROOM__SERVER__API_BIND=$HOST:$2 DARKROOM__SERVER__RENDER_BIND=$HOST:$3 \
    DARKROOM__STORAGE__PATH="$TMP/$1" DARKROOM__AUTH__ROOT_KEY=$KEY DARKROOM__RENDER__THREADS=0 \
    DARKROOM__RENDER__MEZZANINE="$4" DARKROOM__LOG__LEVEL=warn \
    "$DARKROOM_BIN" serve > "$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -s -o /dev/null "http://$HOST:$2/" && break; sleep 0.1; done
  curl -sf -o /dev/null -X PUT -H "Api-Key: $KEY" "http://$HOST:$2/organizations/bench" -d '{}'
  curl -sf -H "Api-Key: $KEY" -F "filedata=@$SOURCE" "http://$HOST:$2/sourceimages/bench" \
    | jq -r '.items[0].hash' > "$TMP/$1.hash"
}

start on "${PORTS_ON[@]}" true; PID_ON=${PIDS[0]}; HASH_ON=$(cat "$TMP/on.hash")
start off "${PORTS_OFF[@]}" false; PID_OFF=${PIDS[1]}; HASH_OFF=$(cat "$TMP/off.hash")
[[ $HASH_ON == "$HASH_OFF" ]] || { echo "the two uploads differ" >&2; exit 1; }

urls() {  # $1 render port
  local w f d
  for w in 320 640 960 1280 1600 1920; do
    for f in jpg webp; do
      for d in 1 2; do
        echo "url = \"http://$HOST:$1/bench/dynamic/resize-width-$w--options-dpr-$d/$HASH_ON.$f\""
        echo "output = /dev/null"
      done
    done
  done
}
urls "${PORTS_ON[1]}" > "$TMP/on.curl"; urls "${PORTS_OFF[1]}" > "$TMP/off.curl"

round() {  # $1 name, $2 api port, $3 pid: prints "cpu_seconds wall_seconds"
  curl -sf -o /dev/null -X DELETE -H "Api-Key: $KEY" "http://$HOST:$2/sourceimages/bench/$HASH_ON/cache"
  sleep 0.5
  local t0 c0 c1 t1 codes
  c0=$(ticks "$3"); t0=$(date +%s.%N)
  codes=$(curl -s --no-progress-meter --parallel --parallel-max "$PARALLEL" -K "$TMP/$1.curl" -w '%{http_code}\n' | sort | uniq -c)
  t1=$(date +%s.%N); c1=$(ticks "$3")
  [[ $codes == *" 24 200" ]] || { echo "$1: not every render succeeded: $codes" >&2; exit 1; }
  awk -v c="$((c1 - c0))" -v hz="$HZ" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f %.3f\n", c / hz, b - a }'
}

# Same bytes from both sides, and a warm-up of each (page cache, allocator).
round on "${PORTS_ON[0]}" "$PID_ON" > /dev/null; round off "${PORTS_OFF[0]}" "$PID_OFF" > /dev/null
for u in "resize-width-640--options-dpr-2/$HASH_ON.webp" "resize-width-320/$HASH_ON.jpg"; do
  a=$(curl -sf "http://$HOST:${PORTS_ON[1]}/bench/dynamic/$u" | sha1sum)
  b=$(curl -sf "http://$HOST:${PORTS_OFF[1]}/bench/dynamic/$u" | sha1sum)
  [[ $a == "$b" ]] || { echo "$u differs with and without the mezzanine" >&2; exit 1; }
done

: > "$WORK/on.txt"; : > "$WORK/off.txt"
for _ in $(seq "$ROUNDS"); do
  round on "${PORTS_ON[0]}" "$PID_ON" >> "$WORK/on.txt"
  round off "${PORTS_OFF[0]}" "$PID_OFF" >> "$WORK/off.txt"
done

summary() {  # $1 file, $2 column: "median min max"
  sort -g -k"$2,$2" "$1" | awk -v k="$2" '{ v[NR] = $k } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f %.2f %.2f", m, v[1], v[NR] }'
}
read -r con mon xon <<< "$(summary "$WORK/on.txt" 1)"; read -r coff moff xoff <<< "$(summary "$WORK/off.txt" 1)"
read -r won nwon xwon <<< "$(summary "$WORK/on.txt" 2)"; read -r woff nwoff xwoff <<< "$(summary "$WORK/off.txt" 2)"
echo "responsive set: 24 renders (6 widths x jpg/webp x dpr 1/2) of $(basename "$SOURCE"), cold, $PARALLEL at once, $ROUNDS rounds, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
printf '%-18s %22s %22s\n' "" "CPU s (min..max)" "wall s (min..max)"
printf '%-18s %8s (%s..%s) %12s (%s..%s)\n' "mezzanine on" "$con" "$mon" "$xon" "$won" "$nwon" "$xwon"
printf '%-18s %8s (%s..%s) %12s (%s..%s)\n' "mezzanine off" "$coff" "$moff" "$xoff" "$woff" "$nwoff" "$xwoff"
awk -v a="$con" -v b="$coff" -v c="$won" -v d="$woff" 'BEGIN { printf "%-18s %8.2f %28.2f\n", "on / off", a / b, c / d }'
