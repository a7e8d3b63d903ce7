#!/usr/bin/env bash
# Darkroom side by side with the tools a team would otherwise use, on this machine, in one run,
# printing ONE table of ratios Darkroom/peer (medians, with min..max spread):
#   cold       12 MP JPEG (4000x3000 q90) -> 300 px JPEG q80, one request at a time through
#              HTTP: Darkroom vs thumbor 7.8 (2 processes), vs pyvips in-process and
#              `vipsthumbnail` (libvips, one thread each; same files, same size and quality)
#   throughput unique cold URLs with both cores busy, concurrency 2 and 4: Darkroom vs thumbor
#              with 2 processes (images/s); one `curl --parallel` client process, so that
#              spawning a client per request does not take the cores being measured
#   warm       `wrk -t2 -c32 -d15s` on one cached render: Darkroom vs nginx serving the same
#              bytes as a static file (req/s and p99)
#   bytes      output size at the same nominal quality, JPEG q80 and WebP q80: Darkroom vs
#              libvips (`vipsthumbnail`) for the same 20 renders
#   memory     Darkroom's peak RSS (VmHWM) during the cold-throughput runs
#   formats    per format, one render at a time, Darkroom through HTTP against pyvips in-process
#              (one thread, the same sizes and quality 80): 12 MP JPEG -> 1200 px WebP, -> 300 px
#              AVIF, -> 1920 px JPEG; 2000x1500 RGBA PNG -> 300 px PNG, -> 300 px WebP (the
#              -> 300 px JPEG row is the cold row above)
#   responsive a responsive set: server CPU seconds from the upload of the 20 sources to every
#              render of widths 320, 640, 960, 1280, 1600, 1920 x jpg, webp x dpr 1, 2 (480
#              URLs, six at a time as a page with a srcset asks), on a fresh Darkroom with
#              mezzanines, one without (render.mezzanine = false), and thumbor asked for the
#              same sizes and formats; the throughput rows also give server CPU per image
# Every row also carries the 1-minute load average before and after its measurement: on a
# shared machine compare ratios from one run, never absolute numbers across runs.
#
# Loopback only: every server binds 127.0.0.1 and is started here and stopped by PID in the
# EXIT trap; every step runs under `timeout`. Installs what it needs (Debian packages as root,
# PyPI into a venv) and builds the data set with the peer tools' make_dataset.py (20 photos
# from scikit-image's bundled samples, upscaled to 12 MP with sensor-like noise, JPEG q90).
#
# Usage: bash benches/compare.sh
# Environment (defaults in brackets):
#   PEERS       the shared peer tools (lib.sh, stats.py, py_thumb.py, make_dataset.py)
#               [../shared/peers relative to the repository]
#   BENCH_WORK  venv, data set and results [target/bench-peers]
#   DARKROOM_BIN  binary to measure [target/release/darkroom, built with cargo build --release
#               unless SKIP_BUILD=1]
#   SKIP_APT=1  skip apt-get; SETUP_ONLY=1 stop after installing and building the data set
#   RESP_ROUNDS [1] responsive-set rounds per side (each on fresh servers);
#   ROUNDS [3] passes per cold measurement; FMT_ROUNDS [2] passes per per-format row (Darkroom);
#   FMT_RUNS [2] timed runs per image and per-format row for pyvips; RUNS [3] timed runs per image for pyvips and
#   vipsthumbnail; REPS [3] unique URLs per image per throughput round; WRK_RUNS [3]; DUR [15s];
#   WAIT_QUIET [0] seconds to wait for a 1-minute load average below 0.5 before starting
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=$(cd "${PEERS:-$REPO/../shared/peers}" && pwd)
WORK=${BENCH_WORK:-$REPO/target/bench-peers}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
# shellcheck source=/dev/null
. "$PEERS/lib.sh"   # HOST, die, port_free, wait_http, children, cpu_ticks, stop_tree, run_wrk, cpu_snap, cpu_report, wait_quiet

ROUNDS=${ROUNDS:-3}; RUNS=${RUNS:-3}; FMT_ROUNDS=${FMT_ROUNDS:-2}; FMT_RUNS=${FMT_RUNS:-2}; REPS=${REPS:-3}; WRK_RUNS=${WRK_RUNS:-3}; DUR=${DUR:-15s}
DR_API=${DR_API:-18281}; DR_RENDER=${DR_RENDER:-18282}; DR2_API=${DR2_API:-18283}; DR2_RENDER=${DR2_RENDER:-18284};
RESP_ROUNDS=${RESP_ROUNDS:-1}; TH_PORT=${TH_PORT:-18888}; NG_PORT=${NG_PORT:-18080}
KEY=bench-root-key
PY=$WORK/.venv/bin/python
DATA=$WORK/data
export VIPS_CONCURRENCY=1   # libvips peers single-threaded, as in the peer measurements

# ---------------------------------------------------------------- setup (as peers/setup.sh)
if [[ "${SKIP_APT:-0}" != 1 ]]; then
  timeout 900 apt-get -o DPkg::Lock::Timeout=600 update > /dev/null
  DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get -o DPkg::Lock::Timeout=600 \
    install -y --no-install-recommends wrk hyperfine libvips-tools imagemagick nginx-light curl > /dev/null
fi
[[ -x $PY ]] || python3 -m venv "$WORK/.venv"
timeout 900 "$PY" -m pip install -q \
  'thumbor==7.8.0' 'pillow==12.3.0' 'tornado==6.6.1' 'scikit-image==0.26.0' \
  'pyvips==3.2.0' 'pyvips-binary==8.18.7'
if [[ ! -f $DATA/jpeg/img20.jpg || ! -f $DATA/png/img20.png ]]; then
  timeout 900 "$PY" "$PEERS/make_dataset.py" "$DATA"
fi
[[ "${SETUP_ONLY:-0}" == 1 ]] && { echo "setup done: $WORK"; exit 0; }

if [[ -z "${DARKROOM_BIN:-}" ]]; then
  if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$REPO" && timeout 1800 cargo build --release --quiet)
  fi
  DARKROOM_BIN=$REPO/target/release/darkroom
fi
[[ -x $DARKROOM_BIN ]] || die "no Darkroom binary at $DARKROOM_BIN"

[[ -n "${WAIT_QUIET:-}" && "${WAIT_QUIET}" != 0 ]] && wait_quiet "$WAIT_QUIET"
RES=$WORK/results/compare-$(date +%Y%m%dT%H%M%S); mkdir -p "$RES"
TMP=$(mktemp -d -t darkroom-compare.XXXXXX); chmod 755 "$TMP"
DPID=""; TPID=""; NPID=""; D2PID=""
cleanup() {
  stop_tree "$DPID"; stop_tree "$TPID"; stop_tree "$NPID"; stop_tree "$D2PID"
  rm -rf "$TMP"
}
trap cleanup EXIT

LOAD=$RES/load.txt; : > "$LOAD"
load1() { cut -d' ' -f1 /proc/loadavg; }
phase_start() { PHASE=$1; PHASE_LOAD=$(load1); echo "== $1 (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"; }
phase_end() { echo "$PHASE $PHASE_LOAD $(load1)" >> "$LOAD"; }
ids() { seq -f '%02g' 1 20; }
elapsed_rate() {  # N T0 T1 -> N/(T1-T0)
  awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN{printf "%.3f\n", n/(b-a)}'
}
rss_kb() { awk -v k="$1:" '$1==k{print $2}' "/proc/$2/status"; }
ms_per() {  # TICKS N -> milliseconds of CPU per item
  awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f\n", 1000*t/hz/n}'
}

{
  echo "darkroom:    $DARKROOM_BIN ($(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO" && git diff --quiet 2>/dev/null || echo '+dirty'))"
  echo "vips:        $(vips --version)"
  echo "wrk:         $(wrk -v 2>&1 | head -1)"
  echo "nginx:       $(nginx -v 2>&1)"
  "$PY" -c 'import thumbor, pyvips; print("thumbor:    ", thumbor.__version__); print("pyvips:     ", pyvips.__version__, "libvips", ".".join(str(pyvips.version(i)) for i in range(3)))'
  echo "machine:     $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
} | tee "$RES/versions.txt"

# ---------------------------------------------------------------- Darkroom
port_free "$DR_API"; port_free "$DR_RENDER"
mkdir -p "$TMP/dr-data"
(cd "$TMP" && exec env DARKROOM__SERVER__API_BIND=$HOST:$DR_API DARKROOM__SERVER__RENDER_BIND=$HOST:$DR_RENDER \
  DARKROOM__STORAGE__PATH="$TMP/dr-data" DARKROOM__AUTH__ROOT_KEY=$KEY DARKROOM__RENDER__THREADS=0 \
  DARKROOM__LOG__LEVEL=warn "$DARKROOM_BIN" serve) > "$RES/darkroom.log" 2>&1 &
DPID=$!
API=http://$HOST:$DR_API; RENDER=http://$HOST:$DR_RENDER
wait_http "$API/" 30
timeout 10 curl -sf -o /dev/null -X PUT -H "Api-Key: $KEY" "$API/organizations/bench" -d '{}' \
  || die "cannot create the organization"
declare -A H
for i in $(ids); do
  H[$i]=$(timeout 60 curl -sf -H "Api-Key: $KEY" -F "filedata=@$DATA/jpeg/img$i.jpg" "$API/sourceimages/bench" \
    | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["hash"])') || die "upload of img$i failed"
done
declare -A HP
for i in $(ids); do
  HP[$i]=$(timeout 60 curl -sf -H "Api-Key: $KEY" -F "filedata=@$DATA/png/img$i.png" "$API/sourceimages/bench" \
    | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["hash"])') || die "upload of img$i.png failed"
done
echo "darkroom pid $DPID: 20 JPEG and 20 PNG sources uploaded"
dr_url() {  # $1 image id, $2 operations and options, $3 version, $4 extension
  echo "$RENDER/bench/dynamic/$2/${H[$1]}/img$1-v$3.$4"
}
# warm-up: every source read once (page cache, allocator), on a size not measured below
for i in $(ids); do
  timeout 60 curl -s -o /dev/null "$(dr_url "$i" resize-width-200 0 jpg)"
done
# The cold rows must decode: the renders and mezzanines (decoded sources shared by the renders
# of an image) that earlier requests left are purged before each round.
dr_purge() {
  timeout 60 curl -sf -o /dev/null -X DELETE -H "Api-Key: $KEY" "$API/organizations/bench/cache" \
    || die "cannot purge Darkroom's render store"
}

# ---------------------------------------------------------------- thumbor (2 processes)
port_free "$TH_PORT"
cat > "$TMP/thumbor.conf" <<EOF
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = '$DATA/jpeg'
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = 'thumbor.result_storages.file_storage'
RESULT_STORAGE_FILE_STORAGE_ROOT_PATH = '$TMP/thumbor-result'
RESULT_STORAGE_STORES_UNSAFE = True
ALLOW_UNSAFE_URL = True
QUALITY = 80
EOF
"$WORK/.venv/bin/thumbor" --ip="$HOST" --port="$TH_PORT" --conf="$TMP/thumbor.conf" \
  --processes=2 -l warning > "$RES/thumbor.log" 2>&1 &
TPID=$!
TH=http://$HOST:$TH_PORT
wait_http "$TH/healthcheck" 60
sleep 1
TH_PIDS="$TPID $(children "$TPID")"
for _ in 1 2; do
  ids | timeout 300 xargs -P2 -I{} curl -s -o /dev/null --max-time 60 "$TH/unsafe/200x0/img{}.jpg"
done
th_wipe() { rm -rf "$TMP/thumbor-result"; }
# Distinct thumbor URLs for the same work (QUALITY is 80 in the config: the filters change nothing).
TH_VARIANT=("" "filters:quality(80)/" "filters:quality(80):strip_icc()/")
(( REPS >= 1 && REPS <= ${#TH_VARIANT[@]} )) || die "REPS must be 1..${#TH_VARIANT[@]}"
echo "thumbor pids $TH_PIDS"

# ---------------------------------------------------------------- 1. cold, one at a time
mkdir -p "$TMP/dr-jpg" "$TMP/dr-webp" "$TMP/vt" "$TMP/pv"
HZ=$(getconf CLK_TCK)
phase_start cold_seq
c=$(cpu_snap); t0=$(cpu_ticks "$DPID"); : > "$RES/dr_seq.txt"
for r in $(seq "$ROUNDS"); do
  dr_purge
  for i in $(ids); do
    out=/dev/null; [[ $r == 1 ]] && out=$TMP/dr-jpg/img$i.jpg
    timeout 60 curl -s -o "$out" -w "img$i %{time_total} %{http_code} %header{x-darkroom-render}\n" \
      "$(dr_url "$i" resize-width-300--o-jpg.quality-80 "$r" jpg)" >> "$RES/dr_seq.txt"
  done
done
t1=$(cpu_ticks "$DPID")
echo "$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n=$((20 * ROUNDS)) 'BEGIN{printf "%.1f", 1000*t/hz/n}')" > "$RES/dr_seq_cpu.txt"
echo "   darkroom: $(cpu_report "$c")"
c=$(cpu_snap); t0=$(cpu_ticks $TH_PIDS); : > "$RES/th_seq.txt"
for r in $(seq "$ROUNDS"); do
  th_wipe
  for i in $(ids); do
    timeout 60 curl -s -o /dev/null -w "img$i %{time_total} %{http_code} rendered\n" \
      "$TH/unsafe/300x0/img$i.jpg" >> "$RES/th_seq.txt"
  done
done
t1=$(cpu_ticks $TH_PIDS)
echo "$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n=$((20 * ROUNDS)) 'BEGIN{printf "%.1f", 1000*t/hz/n}')" > "$RES/th_seq_cpu.txt"
echo "   thumbor: $(cpu_report "$c")"
c=$(cpu_snap)
timeout 900 "$PY" "$PEERS/py_thumb.py" --mode pyvips --out "$TMP/pv" --bench "$RUNS" "$DATA"/jpeg/img*.jpg \
  > "$RES/pyvips.jsonl"
echo "   pyvips: $(cpu_report "$c")"
c=$(cpu_snap)
timeout 900 hyperfine -N --style none --warmup 1 --runs "$RUNS" -L i "$(ids | paste -sd, -)" \
  --export-json "$RES/vipsthumbnail.json" \
  "vipsthumbnail $DATA/jpeg/img{i}.jpg -s 300x -o $TMP/vt/img{i}.jpg[Q=80]" > "$RES/vipsthumbnail.log" 2>&1
echo "   vipsthumbnail: $(cpu_report "$c")"
phase_end

# ---------------------------------------------------------------- 1b. per format, one at a time
# Darkroom through HTTP (render store purged before each pass, so every render decodes) against
# pyvips in-process on one thread: thumbnail (shrink-on-load) to the same width, then the
# format's save at quality 80 (libvips' default effort for WebP and AVIF; PNG at zlib level 7,
# Darkroom's default). Each row: the median over the 20 images of each image's median.
FMT_ROWS=(  # name  source-dir  width  extension
  "jpeg_webp1200 jpeg 1200 webp" "jpeg_avif300 jpeg 300 avif" "jpeg_jpeg1920 jpeg 1920 jpg"
  "png_png300 png 300 png" "png_webp300 png 300 webp")
phase_start formats
for spec in "${FMT_ROWS[@]}"; do
  read -r name dir w ext <<< "$spec"
  : > "$RES/fmt_dr_$name.txt"
  for r in $(seq "$FMT_ROUNDS"); do
    dr_purge
    for i in $(ids); do
      if [[ $dir == png ]]; then h=${HP[$i]}; else h=${H[$i]}; fi
      timeout 120 curl -s -o /dev/null -w "img$i %{time_total} %{http_code} %header{x-darkroom-render}\n" \
        "$RENDER/bench/dynamic/resize-width-$w/$h/img$i-f$r.$ext" >> "$RES/fmt_dr_$name.txt"
    done
  done
  ext_in=jpg; [[ $dir == png ]] && ext_in=png
  timeout 1200 "$PY" - "$name" "$w" "$ext" "$FMT_RUNS" "$TMP/pv" "$DATA/$dir"/img*."$ext_in" \
    > "$RES/fmt_pv_$name.jsonl" <<'EOF'
import json, os, sys, time
import pyvips
pyvips.cache_set_max(0)  # every run decodes again
name, width, ext, runs, out_dir, files = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6:]
def one(path):
    im = pyvips.Image.thumbnail(path, width)
    out = os.path.join(out_dir, f"{name}-{os.path.basename(path)}.{ext}")
    if ext == "webp":
        im.webpsave(out, Q=80)
    elif ext == "avif":
        im.heifsave(out, Q=80, compression="av1")
    elif ext == "png":
        im.pngsave(out, compression=7)
    else:
        im.jpegsave(out, Q=80)
for f in files:
    one(f)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter(); one(f); times.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({"file": os.path.basename(f), "times_ms": times}), flush=True)
EOF
  echo "   $name done"
done
phase_end

# ---------------------------------------------------------------- 2. cold throughput, both cores
# Darkroom's peak RSS is reset (clear_refs 5) so VmHWM covers these runs only.
echo "$(rss_kb VmRSS "$DPID")" > "$RES/dr_rss_idle.txt"
echo 5 > "/proc/$DPID/clear_refs" || echo "note: cannot reset VmHWM; the peak covers the whole run"
# URLs (one per line) as a curl config: each fetched to /dev/null.
as_curl_config() { while read -r u; do printf 'url = "%s"\noutput = /dev/null\n' "$u"; done; }
for conc in 2 4; do
  phase_start "throughput_c$conc"
  : > "$RES/dr_c$conc.txt"; : > "$RES/th_c$conc.txt"
  for r in $(seq "$ROUNDS"); do
    for i in $(ids); do for k in $(seq "$REPS"); do
      dr_url "$i" resize-width-300--o-jpg.quality-80 "$((conc * 1000 + r * 10 + k))" jpg
    done; done | as_curl_config > "$TMP/dr-urls.cfg"
    dr_purge
    t0=$(date +%s.%N); k0=$(cpu_ticks "$DPID")
    timeout 600 curl -s --no-progress-meter -Z --parallel-max "$conc" --max-time 120 -K "$TMP/dr-urls.cfg" \
      -w "%{http_code} %header{x-darkroom-render}\n" >> "$RES/dr_c${conc}_codes.txt"
    t1=$(date +%s.%N); k1=$(cpu_ticks "$DPID")
    elapsed_rate $((20 * REPS)) "$t0" "$t1" >> "$RES/dr_c$conc.txt"
    ms_per $((k1 - k0)) $((20 * REPS)) >> "$RES/dr_c${conc}_cpu.txt"
    th_wipe
    for i in $(ids); do for k in $(seq "$REPS"); do
      echo "$TH/unsafe/300x0/${TH_VARIANT[k - 1]}img$i.jpg"
    done; done | as_curl_config > "$TMP/th-urls.cfg"
    t0=$(date +%s.%N); k0=$(cpu_ticks $TH_PIDS)
    timeout 600 curl -s --no-progress-meter -Z --parallel-max "$conc" --max-time 120 -K "$TMP/th-urls.cfg" \
      -w "%{http_code} rendered\n" >> "$RES/th_c${conc}_codes.txt"
    t1=$(date +%s.%N); k1=$(cpu_ticks $TH_PIDS)
    elapsed_rate $((20 * REPS)) "$t0" "$t1" >> "$RES/th_c$conc.txt"
    ms_per $((k1 - k0)) $((20 * REPS)) >> "$RES/th_c${conc}_cpu.txt"
  done
  phase_end
done
echo "$(rss_kb VmHWM "$DPID")" > "$RES/dr_rss_peak.txt"
th_rss=0; for p in $TH_PIDS; do th_rss=$((th_rss + $(rss_kb VmHWM "$p"))); done
echo "$th_rss" > "$RES/th_rss_peak.txt"

# ---------------------------------------------------------------- 2b. a responsive set
# Each Darkroom side runs on a fresh server and data folder: its CPU covers the 20 uploads
# (the upload check decodes each source) and the 480 renders. thumbor reads the files from
# disk (no upload) with its result storage wiped; it has no dpr, so it is asked for the pixel
# width (width x dpr), WebP through filters:format(webp).
SRCSET_W=(320 640 960 1280 1600 1920)
responsive_dr() {  # $1 mezzanine true/false -> CPU seconds of one round
  port_free "$DR2_API"; port_free "$DR2_RENDER"
  rm -rf "$TMP/dr2-data"; mkdir -p "$TMP/dr2-data"
  (cd "$TMP" && exec env DARKROOM__SERVER__API_BIND=$HOST:$DR2_API DARKROOM__SERVER__RENDER_BIND=$HOST:$DR2_RENDER \
    DARKROOM__STORAGE__PATH="$TMP/dr2-data" DARKROOM__AUTH__ROOT_KEY=$KEY DARKROOM__RENDER__THREADS=0 \
    DARKROOM__RENDER__MEZZANINE="$1" DARKROOM__LOG__LEVEL=warn "$DARKROOM_BIN" serve) >> "$RES/darkroom-srcset.log" 2>&1 &
  D2PID=$!
  wait_http "http://$HOST:$DR2_API/" 30
  timeout 10 curl -sf -o /dev/null -X PUT -H "Api-Key: $KEY" "http://$HOST:$DR2_API/organizations/bench" -d '{}' \
    || die "cannot create the organization"
  local k0 k1 i h w f d
  k0=$(cpu_ticks "$D2PID")
  for i in $(ids); do
    h=$(timeout 60 curl -sf -H "Api-Key: $KEY" -F "filedata=@$DATA/jpeg/img$i.jpg" "http://$HOST:$DR2_API/sourceimages/bench" \
      | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["hash"])') || die "upload of img$i failed"
    for w in "${SRCSET_W[@]}"; do for f in jpg webp; do for d in 1 2; do
      echo "http://$HOST:$DR2_RENDER/bench/dynamic/resize-width-$w--options-dpr-$d/$h.$f"
    done; done; done
  done | as_curl_config > "$TMP/dr2-urls.cfg"
  timeout 1200 curl -s --no-progress-meter -Z --parallel-max 6 --max-time 300 -K "$TMP/dr2-urls.cfg" \
    -w "%{http_code} %header{x-darkroom-render}\n" >> "$RES/srcset_dr_$1_codes.txt"
  k1=$(cpu_ticks "$D2PID")
  rss_kb VmHWM "$D2PID" >> "$RES/srcset_dr_$1_rss.txt"
  stop_tree "$D2PID"; D2PID=""
  awk -v t=$((k1 - k0)) -v hz="$HZ" 'BEGIN{printf "%.2f\n", t/hz}'
}
responsive_th() {
  th_wipe
  local k0 k1 i w f d
  for i in $(ids); do for w in "${SRCSET_W[@]}"; do for f in jpg webp; do for d in 1 2; do
    if [[ $f == webp ]]; then echo "$TH/unsafe/$((w * d))x0/filters:format(webp)/img$i.jpg"
    else echo "$TH/unsafe/$((w * d))x0/img$i.jpg"; fi
  done; done; done; done | as_curl_config > "$TMP/th-srcset.cfg"
  k0=$(cpu_ticks $TH_PIDS)
  timeout 1200 curl -s --no-progress-meter -Z --parallel-max 6 --max-time 300 -K "$TMP/th-srcset.cfg" \
    -w "%{http_code} rendered\n" >> "$RES/srcset_th_codes.txt"
  k1=$(cpu_ticks $TH_PIDS)
  awk -v t=$((k1 - k0)) -v hz="$HZ" 'BEGIN{printf "%.2f\n", t/hz}'
}
phase_start responsive
: > "$RES/srcset_dr_true.txt"; : > "$RES/srcset_dr_false.txt"; : > "$RES/srcset_dr_true_rss.txt"; : > "$RES/srcset_dr_false_rss.txt"; : > "$RES/srcset_th.txt"
for _ in $(seq "$RESP_ROUNDS"); do   # interleaved, so drift in the machine's load hits all alike
  responsive_dr true >> "$RES/srcset_dr_true.txt"
  responsive_dr false >> "$RES/srcset_dr_false.txt"
  responsive_th >> "$RES/srcset_th.txt"
done
phase_end
stop_tree "$TPID"; TPID=""

# ---------------------------------------------------------------- 3. output bytes (same 20 renders)
phase_start bytes
for i in $(ids); do
  timeout 60 curl -s -o "$TMP/dr-webp/img$i.webp" "$(dr_url "$i" resize-width-300--o-webp.quality-80 1 webp)"
  timeout 60 vipsthumbnail "$DATA/jpeg/img$i.jpg" -s 300x -o "$TMP/vt/img$i.webp[Q=80]"
done
for f in jpg webp; do
  for i in $(ids); do
    echo "img$i $(stat -c %s "$TMP/dr-$f/img$i.$f") $(stat -c %s "$TMP/vt/img$i.$f")"
  done > "$RES/bytes_$f.txt"
done
"$PY" - "$TMP/dr-jpg/img01.jpg" "$TMP/vt/img01.jpg" "$TMP/dr-webp/img01.webp" <<'EOF' | tee "$RES/dims.txt"
import sys, pyvips
for p in sys.argv[1:]:
    im = pyvips.Image.new_from_file(p)
    print(f"{p.rsplit('/', 2)[-2]}/{p.rsplit('/', 1)[-1]}: {im.width}x{im.height}")
EOF
phase_end

# ---------------------------------------------------------------- 4. warm hits: Darkroom vs nginx static
WARM=$(dr_url 01 resize-width-300--o-jpg.quality-80 1 jpg)
timeout 60 curl -s -o /dev/null "$WARM"   # stored again if a purge above removed it
timeout 10 curl -s -D "$RES/dr_headers.txt" -o "$TMP/warm.jpg" "$WARM"
grep -qi '^x-darkroom-render: hit' "$RES/dr_headers.txt" || die "the warm URL is not a cache hit"
mkdir -p "$TMP/www/r" "$TMP/ngtmp"
cp "$TMP/warm.jpg" "$TMP/www/r/img01.jpg"; chmod -R a+rX "$TMP/www"
cat > "$TMP/nginx.conf" <<EOF
worker_processes 2;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  open_file_cache max=1000 inactive=60s;
  client_body_temp_path $TMP/ngtmp/body;
  proxy_temp_path $TMP/ngtmp/proxy;
  fastcgi_temp_path $TMP/ngtmp/fastcgi;
  uwsgi_temp_path $TMP/ngtmp/uwsgi;
  scgi_temp_path $TMP/ngtmp/scgi;
  types { image/jpeg jpg; }
  server {
    listen $HOST:$NG_PORT;
    root $TMP/www;
    location /r/ { etag on; add_header Cache-Control "public, max-age=31536000, immutable"; }
  }
}
EOF
port_free "$NG_PORT"
nginx -p "$TMP" -c "$TMP/nginx.conf" -g 'daemon off;' > "$RES/nginx.out" 2>&1 &
NPID=$!
NG=http://$HOST:$NG_PORT/r/img01.jpg
wait_http "$NG" 30
sleep 0.5
NG_PIDS="$NPID $(children "$NPID")"
cmp -s "$TMP/warm.jpg" <(curl -s "$NG") || die "nginx does not serve the same bytes"
phase_start warm
for r in $(seq "$WRK_RUNS"); do   # interleaved, so drift in the machine's load hits both alike
  SERVER_PIDS=$DPID run_wrk "$RES/dr_wrk$r.txt" "$WARM"
  SERVER_PIDS=$NG_PIDS run_wrk "$RES/ng_wrk$r.txt" "$NG"
done
phase_end
"$PY" "$PEERS/stats.py" wrk "darkroom warm wrk -t2 -c32 -d$DUR" "$RES"/dr_wrk*.txt | tee "$RES/warm_detail.txt"
"$PY" "$PEERS/stats.py" wrk "nginx static wrk -t2 -c32 -d$DUR" "$RES"/ng_wrk*.txt | tee -a "$RES/warm_detail.txt"

# ---------------------------------------------------------------- the table
"$PY" - "$RES" "$PEERS" <<'EOF' | tee "$RES/table.txt"
import json, os, re, statistics as st, sys
res, peers = sys.argv[1], sys.argv[2]
sys.path.insert(0, peers)
import stats  # lat_ms

def lines(name):
    with open(os.path.join(res, name)) as f:
        return [l.split() for l in f if l.strip()]

def per_image_ms(name):
    """'imgNN seconds code verdict' lines -> median ms per image; also counts bad answers."""
    per, bad = {}, 0
    for img, t, code, *verdict in lines(name):
        per.setdefault(img, []).append(float(t) * 1000)
        bad += code != "200" or (verdict and verdict[0] not in ("miss", "rendered"))
    return [st.median(v) for v in per.values()], bad

def floats(name):
    return [float(l[0]) for l in lines(name)]

def bad_codes(name):
    return sum(1 for l in lines(name) if l[0] != "200" or l[1:2] not in (["miss"], ["rendered"]))

def wrk(prefix):
    rps, p99 = [], []
    for n in sorted(os.listdir(res)):
        if n.startswith(prefix) and n.endswith(".txt"):
            txt = open(os.path.join(res, n)).read()
            rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", txt).group(1)))
            p99.append(stats.lat_ms(re.search(r"\s99%\s+(\S+)", txt).group(1)))
    return rps, p99

load = {l[0]: (l[1], l[2]) for l in lines("load.txt")}
rows, notes = [], []

def row(label, unit, dr, peer_name, peer, phase, better):
    s = lambda xs: f"{st.median(xs):>9.1f} ({min(xs):.1f}..{max(xs):.1f})"
    ratio = st.median(dr) / st.median(peer)
    lb = load.get(phase, ("?", "?"))
    rows.append((label, unit, s(dr), peer_name, s(peer), f"{ratio:.2f}", better, f"{lb[0]}->{lb[1]}"))

dr_seq, b1 = per_image_ms("dr_seq.txt")
th_seq, b2 = per_image_ms("th_seq.txt")
pv = [st.median(json.loads(l)["times_ms"]) for l in open(os.path.join(res, "pyvips.jsonl")) if l.strip()]
vt = [r["median"] * 1000 for r in json.load(open(os.path.join(res, "vipsthumbnail.json")))["results"]]
L = "cold 12MP->300 JPEG q80, 1 at a time"
row(L, "ms/img", dr_seq, "thumbor p2 (HTTP)", th_seq, "cold_seq", "lower")
row(L, "ms/img", dr_seq, "pyvips in-process 1T", pv, "cold_seq", "lower")
row(L, "ms/img", dr_seq, "vipsthumbnail CLI 1T", vt, "cold_seq", "lower")
FMT = [("jpeg_webp1200", "12MP JPEG->1200 WebP q80, 1 at a time"),
       ("jpeg_avif300", "12MP JPEG->300 AVIF q80, 1 at a time"),
       ("jpeg_jpeg1920", "12MP JPEG->1920 JPEG q80, 1 at a time"),
       ("png_png300", "2000x1500 RGBA PNG->300 PNG, 1 at a time"),
       ("png_webp300", "2000x1500 RGBA PNG->300 WebP q80, 1 at a time")]
for name, label in FMT:
    dr, bad = per_image_ms(f"fmt_dr_{name}.txt")
    b1 += bad
    pvx = [st.median(json.loads(l)["times_ms"]) for l in open(os.path.join(res, f"fmt_pv_{name}.jsonl")) if l.strip()]
    row(label, "ms/img", dr, "pyvips in-process 1T", pvx, "formats", "lower")
for c in (2, 4):
    row(f"cold throughput, concurrency {c}", "img/s", floats(f"dr_c{c}.txt"), "thumbor p2",
        floats(f"th_c{c}.txt"), f"throughput_c{c}", "higher")
    b1 += bad_codes(f"dr_c{c}_codes.txt"); b2 += bad_codes(f"th_c{c}_codes.txt")
    row(f"cold throughput, concurrency {c}, server CPU", "ms/img", floats(f"dr_c{c}_cpu.txt"),
        "thumbor p2", floats(f"th_c{c}_cpu.txt"), f"throughput_c{c}", "lower")
S = "responsive set: 20 uploads, 480 renders"
dr_on = floats("srcset_dr_true.txt")
row(S, "CPU s", dr_on, "thumbor p2", floats("srcset_th.txt"), "responsive", "lower")
row(S, "CPU s", dr_on, "Darkroom, mezzanine off", floats("srcset_dr_false.txt"), "responsive", "lower")
for name in ("srcset_dr_true_codes.txt", "srcset_dr_false_codes.txt"):
    b1 += sum(1 for l in lines(name) if l[0] != "200")
b2 += sum(1 for l in lines("srcset_th_codes.txt") if l[0] != "200")
dr_rps, dr_p99 = wrk("dr_wrk"); ng_rps, ng_p99 = wrk("ng_wrk")
row("warm hit, wrk -t2 -c32 (one URL)", "req/s", dr_rps, "nginx static file", ng_rps, "warm", "higher")
row("warm hit, wrk -t2 -c32, p99 latency", "ms", dr_p99, "nginx static file", ng_p99, "warm", "lower")
for f in ("jpg", "webp"):
    b = lines(f"bytes_{f}.txt")
    row(f"output bytes, 300 px {f.upper()} q80 (20 imgs)", "KB", [int(x[1]) / 1024 for x in b],
        "libvips 8.14 (vipsthumbnail)", [int(x[2]) / 1024 for x in b], "bytes", "smaller")
peak = int(open(os.path.join(res, "dr_rss_peak.txt")).read()) / 1024
idle = int(open(os.path.join(res, "dr_rss_idle.txt")).read()) / 1024
thr = int(open(os.path.join(res, "th_rss_peak.txt")).read()) / 1024
rows.append(("peak RSS during cold throughput", "MB", f"{peak:>9.1f}", "thumbor p2 (3 procs)",
             f"{thr:>9.1f}", f"{peak / thr:.2f}", "lower", f"idle {idle:.0f} MB"))
srcset_rss = [int(l[0]) / 1024 for l in lines("srcset_dr_true_rss.txt")]
srcset_rss_off = [int(l[0]) / 1024 for l in lines("srcset_dr_false_rss.txt")]
rows.append(("peak RSS, responsive set (6 at a time)", "MB", f"{max(srcset_rss):>9.1f}",
             "Darkroom, mezzanine off", f"{max(srcset_rss_off):>9.1f}",
             f"{max(srcset_rss) / max(srcset_rss_off):.2f}", "lower", ""))

hdr = ("measurement", "unit", "Darkroom median (min..max)", "peer", "peer median (min..max)",
       "DR/peer", "better", "load1 before->after")
w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
fmt = lambda r: " | ".join(str(v).ljust(w[i]) for i, v in enumerate(r))
print(fmt(hdr)); print("-+-".join("-" * x for x in w))
for r in rows:
    print(fmt(r))
print(f"server CPU per cold sequential render: Darkroom {open(os.path.join(res, 'dr_seq_cpu.txt')).read().strip()} ms,"
      f" thumbor {open(os.path.join(res, 'th_seq_cpu.txt')).read().strip()} ms (both cores may be used by one render)")
print("spread: cold rows = per-image medians over the 20 images; throughput and wrk = per round;"
      " bytes = per image")
if b1 or b2:
    print(f"WARNING: unexpected answers: Darkroom {b1}, thumbor {b2} (non-200 or not a fresh render)")
EOF
echo "raw results: $RES"
