#!/usr/bin/env bash
# Upload throughput of the appliance: 100 uploads of a ~5 MB 12 MP JPEG through
# `POST /sourceimages/{org}` (multipart), one at a time and with 4 in flight; $RUNS runs each.
# Prints MB/s (median, min..max) and Darkroom's peak RSS (VmHWM) for each concurrency.
#
# The JPEG is a photo of the compare.sh data set (run `SETUP_ONLY=1 bash benches/compare.sh`
# first, or point DATA at a folder with jpeg/imgNN.jpg) re-encoded by ImageMagick at q98. Each
# upload carries a different JPEG comment, so every upload is new content, as real uploads are
# (identical bytes would be de-duplicated by the content-addressed store). Every upload is
# probed by a full decode, so this measures receive + probe + store, not just I/O.
# Loopback only; Darkroom is started here on a fresh data folder and stopped by PID on exit.
#
# Usage: bash benches/upload.sh   (env: PEERS, BENCH_WORK, DATA, DARKROOM_BIN, SKIP_BUILD=1,
#        RUNS=3, COUNT=100, CONCURRENCY="1 4")
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=$(cd "${PEERS:-$REPO/../shared/peers}" && pwd)
WORK=${BENCH_WORK:-$REPO/target/bench-peers}
DATA=${DATA:-$WORK/data}
# shellcheck source=/dev/null
. "$PEERS/lib.sh"   # HOST, die, port_free, wait_http, stop_tree
RUNS=${RUNS:-3}; COUNT=${COUNT:-100}; CONCURRENCY=${CONCURRENCY:-1 4}
DR_API=${DR_API:-18291}; DR_RENDER=${DR_RENDER:-18292}
KEY=bench-root-key
CONVERT=/usr/bin/convert; [[ -x $CONVERT ]] || CONVERT=convert

if [[ -z "${DARKROOM_BIN:-}" ]]; then
  [[ "${SKIP_BUILD:-0}" == 1 ]] || (cd "$REPO" && timeout 1800 cargo build --release --quiet)
  DARKROOM_BIN=$REPO/target/release/darkroom
fi
[[ -x $DARKROOM_BIN ]] || die "no Darkroom binary at $DARKROOM_BIN"
[[ -f $DATA/jpeg/img01.jpg ]] || die "no data set in $DATA (run SETUP_ONLY=1 bash benches/compare.sh)"

TMP=$(mktemp -d -t darkroom-upload.XXXXXX)
DPID=""
cleanup() { stop_tree "$DPID"; rm -rf "$TMP"; }
trap cleanup EXIT

# The photo whose q98 re-encode is closest to 5 MB.
best=""; best_d=999999999
for f in "$DATA"/jpeg/img*.jpg; do
  timeout 60 "$CONVERT" "$f" -quality 98 "$TMP/try.jpg"
  s=$(stat -c %s "$TMP/try.jpg"); d=$(( s > 5000000 ? s - 5000000 : 5000000 - s ))
  if (( d < best_d )); then best=$f; best_d=$d; mv "$TMP/try.jpg" "$TMP/big.jpg"; fi
  (( d < 500000 )) && break
done
rm -f "$TMP/try.jpg"
SIZE=$(stat -c %s "$TMP/big.jpg")
echo "upload source: $(basename "$best") re-encoded at q98: $SIZE bytes, $(identify -format '%wx%h' "$TMP/big.jpg" 2>/dev/null || true)"

# COUNT copies, each with a distinct COM segment right after the APP0/JFIF segment.
make_copies() {  # $1 = dir, $2 = run tag
  python3 - "$TMP/big.jpg" "$1" "$COUNT" "$2" <<'EOF'
import os, struct, sys
src, out, n, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
b = open(src, "rb").read()
assert b[:2] == b"\xff\xd8"
at = 2
if b[2:4] == b"\xff\xe0":  # keep APP0 first, as JFIF wants
    at = 4 + struct.unpack(">H", b[4:6])[0]
os.makedirs(out, exist_ok=True)
for i in range(n):
    text = f"darkroom upload bench {tag} {i}".encode()
    com = b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text
    open(os.path.join(out, f"u{i:03d}.jpg"), "wb").write(b[:at] + com + b[at:])
EOF
}

start_darkroom() {
  rm -rf "$TMP/data"; mkdir -p "$TMP/data"
  port_free "$DR_API"; port_free "$DR_RENDER"
  (cd "$TMP" && exec env DARKROOM__SERVER__API_BIND=$HOST:$DR_API DARKROOM__SERVER__RENDER_BIND=$HOST:$DR_RENDER \
    DARKROOM__STORAGE__PATH="$TMP/data" DARKROOM__AUTH__ROOT_KEY=$KEY DARKROOM__LOG__LEVEL=warn \
    "$DARKROOM_BIN" serve) >> "$TMP/darkroom.log" 2>&1 &
  DPID=$!
  wait_http "http://$HOST:$DR_API/" 30
  timeout 10 curl -sf -o /dev/null -X PUT -H "Api-Key: $KEY" "http://$HOST:$DR_API/organizations/bench" -d '{}' \
    || die "cannot create the organization"
}

echo "loadavg at start: $(cat /proc/loadavg)"
for conc in $CONCURRENCY; do
  rates=(); peaks=(); loads=()
  for r in $(seq "$RUNS"); do
    rm -rf "$TMP/up"; make_copies "$TMP/up" "c$conc-r$r"
    start_darkroom
    l0=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(date +%s.%N)
    (cd "$TMP/up" && ls u*.jpg) | timeout 900 xargs -P"$conc" -I{} curl -s -o /dev/null --max-time 120 \
      -w "%{http_code}\n" -H "Api-Key: $KEY" -F "filedata=@$TMP/up/{}" "http://$HOST:$DR_API/sourceimages/bench" \
      > "$TMP/codes.txt"
    t1=$(date +%s.%N)
    bad=$(grep -vc '^20[01]$' "$TMP/codes.txt" || true)
    [[ $bad == 0 ]] || echo "WARNING: $bad of $COUNT uploads failed: $(sort "$TMP/codes.txt" | uniq -c | tr '\n' ' ')"
    rates+=("$(awk -v n="$COUNT" -v s="$SIZE" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", n*s/1e6/(b-a)}')")
    peaks+=("$(awk '/^VmHWM:/{printf "%.1f", $2/1024}' "/proc/$DPID/status")")
    loads+=("$l0->$(cut -d' ' -f1 /proc/loadavg)")
    stop_tree "$DPID"; DPID=""
  done
  python3 "$PEERS/stats.py" values "upload ${SIZE}B x$COUNT, concurrency $conc" "MB/s" "${rates[@]}"
  python3 "$PEERS/stats.py" values "  Darkroom peak RSS (VmHWM), concurrency $conc" "MB" "${peaks[@]}"
  echo "  runs: MB/s ${rates[*]}; loadavg before->after ${loads[*]}"
done
echo "loadavg at end: $(cat /proc/loadavg)"
