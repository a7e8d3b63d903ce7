#!/usr/bin/env bash
# Space reclamation after deleting source images: does the data folder shrink, not only the
# counters? On a fresh data folder:
#   1. upload $IMAGES (500) distinct 640x480 JPEGs (ImageMagick noise, ~55 KB each);
#   2. define $STACKS (20) stacks `w060`..`w630` (resize to width 60..630 px, JPEG q80) and
#      render every image through every stack: 10,000 stored renders (one curl, 4 in flight);
#   3. check that GET /stats/{org} counts them (`renders`, `render_cache_bytes`);
#   4. delete $DELETE (250) images through DELETE /sourceimages/{org}/{hash}, one at a time
#      (wall time of the loop, per-request latency), and time until the stats' render bytes drop
#      (stats and folder size sampled every $SAMPLE s meanwhile);
#   5. watch the data folder's size every second for up to $RECLAIM_WAIT s (background GC
#      every $GC_INTERVAL s; sled reclaims its log segments on its own schedule);
#   6. stop the server (size), run `darkroom admin verify` on the folder (result), start it
#      again and stop it (size after a reopen: sled may only give space back on recovery).
# Sizes are given twice: apparent bytes (du -sb) and allocated bytes (du -s -B1, what the disk
# loses), for the whole folder and its parts (sled/ = the database with the renders; blobs/ =
# the source files, which deleted images keep for images.retention_days, 30 by default, so
# that they can be restored: set RETENTION_DAYS=0 to let the background GC remove them too).
#
# Loopback only; Darkroom is started here (log level warn, GC passes logged at info) and stopped
# by PID on exit; the data folder is a temp dir removed on exit unless KEEP_DATA=1. The summary,
# the size series, the raw samples and the server log go to $BENCH_WORK/results/gc-<time>/.
#
# Usage: bash benches/gc.sh
# Environment (defaults in brackets):
#   DARKROOM      binary [target/release/darkroom; built with cargo build --release if missing]
#   PEERS         shared bench helpers (lib.sh) [../shared/peers relative to the repository]
#   BENCH_WORK    results [target/bench-peers]
#   DR_API, DR_RENDER  ports [free ones]
#   IMAGES [500] STACKS [20] DELETE [250] CONCURRENCY [4] renders in flight
#   GC_INTERVAL [5] s   RETENTION_DAYS [30]   RECLAIM_WAIT [120] s of size polling after the
#   deletes, ending early once the size has not changed for STABLE [30] s   SAMPLE [0.5] s
#   between stats/size samples during the deletes   KEEP_DATA [0]
set -euo pipefail
START=$SECONDS
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=$(cd "${PEERS:-$REPO/../shared/peers}" && pwd)
# shellcheck source=/dev/null
. "$PEERS/lib.sh"   # HOST, die, port_free, wait_http, stop_tree
WORK=${BENCH_WORK:-$REPO/target/bench-peers}
mkdir -p "$WORK"; WORK=$(cd "$WORK" && pwd)
IMAGES=${IMAGES:-500}; STACKS=${STACKS:-20}; DELETE=${DELETE:-250}; CONCURRENCY=${CONCURRENCY:-4}
GC_INTERVAL=${GC_INTERVAL:-5}; RETENTION_DAYS=${RETENTION_DAYS:-30}
RECLAIM_WAIT=${RECLAIM_WAIT:-120}; STABLE=${STABLE:-30}; SAMPLE=${SAMPLE:-0.5}
(( DELETE <= IMAGES )) || die "DELETE ($DELETE) must not exceed IMAGES ($IMAGES)"
ROOT_KEY=bench-root-key
ORG=bench
CONVERT=/usr/bin/convert; [[ -x $CONVERT ]] || CONVERT=convert

DARKROOM=${DARKROOM:-$REPO/target/release/darkroom}
if [[ ! -x $DARKROOM && $DARKROOM == "$REPO/target/release/darkroom" ]]; then
  (cd "$REPO" && timeout 1800 cargo build --release --quiet)
fi
[[ -x $DARKROOM ]] || die "no Darkroom binary at $DARKROOM"
command -v "$CONVERT" > /dev/null || die "ImageMagick's convert is needed to make the sources"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
DR_API=${DR_API:-$(free_port)}
DR_RENDER=${DR_RENDER:-$(free_port)}
while [[ $DR_RENDER == "$DR_API" ]]; do DR_RENDER=$(free_port); done
API=http://$HOST:$DR_API; RENDER=http://$HOST:$DR_RENDER

RES=$WORK/results/gc-$(date +%Y%m%dT%H%M%S); mkdir -p "$RES"
TMP=$(mktemp -d -t darkroom-gc.XXXXXX)
DDIR=$TMP/data
DPID=""; SPID=""
cleanup() {
  stop_tree "$SPID"; stop_tree "$DPID"
  if [[ "${KEEP_DATA:-0}" == 1 ]]; then echo "data folder kept: $DDIR"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- helpers
load1() { cut -d' ' -f1 /proc/loadavg; }
LOADS=$RES/load.txt; : > "$LOADS"
phase() { echo "== $1 (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"; echo "$1 $(cut -d' ' -f1-3 /proc/loadavg)" >> "$LOADS"; }
now() { date +%s.%N; }
# Apparent and allocated bytes of a folder; files vanishing during the walk are not errors.
apparent() { { du -sb "$1" 2> /dev/null || true; } | cut -f1 | grep . || echo 0; }
allocated() { { du -s -B1 "$1" 2> /dev/null || true; } | cut -f1 | grep . || echo 0; }
count_files() { { find "$1" -type f 2> /dev/null || true; } | wc -l; }
# One line per point: label, the folder's apparent and allocated bytes, then allocated bytes of
# sled's log file (sled/db: it is reused, but only truncated when its free segments are at the
# end), of sled's blob files (sled/blobs/: log items over a quarter of a segment, here tree
# pages full of render bytes; deleted once nothing points at them) and their number, of the
# source files (blobs/), and the number of files in the folder.
SIZES=$RES/sizes.txt; : > "$SIZES"
record_size() {
  echo "$1 $(apparent "$DDIR") $(allocated "$DDIR") $(allocated "$DDIR/sled/db")" \
    "$(allocated "$DDIR/sled/blobs") $(count_files "$DDIR/sled/blobs") $(allocated "$DDIR/blobs")" \
    "$(count_files "$DDIR")" >> "$SIZES"
}
stats_raw() { curl -s --max-time 10 -H "Api-Key: $AKEY" "$API/stats/$ORG"; }
# "renders render_cache_bytes number_of_files space_in_bytes" of today, from GET /stats/{org}
stats_now() {
  stats_raw | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(*(s[k][0]["value"] for k in ("renders", "render_cache_bytes", "number_of_files", "space_in_bytes")))'
}
start_darkroom() {
  port_free "$DR_API"; port_free "$DR_RENDER"
  (cd "$TMP" && exec env DARKROOM__SERVER__API_BIND=$HOST:$DR_API DARKROOM__SERVER__RENDER_BIND=$HOST:$DR_RENDER \
    DARKROOM__STORAGE__PATH="$DDIR" DARKROOM__AUTH__ROOT_KEY=$ROOT_KEY \
    DARKROOM__GC__INTERVAL_SECS="$GC_INTERVAL" DARKROOM__IMAGES__RETENTION_DAYS="$RETENTION_DAYS" \
    DARKROOM__LOG__LEVEL=warn,darkroom::gc=info "$DARKROOM" serve) >> "$RES/darkroom.log" 2>&1 &
  DPID=$!
  wait_http "$API/" 60
}
stop_darkroom() { stop_tree "$DPID"; DPID=""; sync; }

{
  echo "darkroom:  $DARKROOM ($("$DARKROOM" --version | head -1), built $(date -r "$DARKROOM" '+%F %T'))"
  echo "source:    $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "machine:   $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uptime)"
  echo "settings:  IMAGES=$IMAGES STACKS=$STACKS DELETE=$DELETE CONCURRENCY=$CONCURRENCY GC_INTERVAL=$GC_INTERVAL" \
    "RETENTION_DAYS=$RETENTION_DAYS RECLAIM_WAIT=$RECLAIM_WAIT STABLE=$STABLE"
} | tee "$RES/versions.txt"

# ---------------------------------------------------------------- 1. sources
phase sources
mkdir -p "$TMP/src"
# Blurred random colour fields plus grain: every image different, ~55 KB at q85.
seq 1 "$IMAGES" | timeout 900 xargs -P2 -I{} "$CONVERT" -seed {} -size 32x24 'xc:rgb(128,128,128)' \
  +noise Random -filter Gaussian -resize '640x480!' -attenuate 0.3 +noise Gaussian -quality 85 \
  "$TMP/src/s{}.jpg"
SRC_BYTES=$(cat "$TMP"/src/s*.jpg | wc -c)
echo "   $IMAGES sources, $SRC_BYTES bytes"

# ---------------------------------------------------------------- 2. server, organization, key
phase start
start_darkroom
timeout 10 curl -sf -o /dev/null -X PUT -H "Api-Key: $ROOT_KEY" "$API/organizations/$ORG" -d '{}' \
  || die "cannot create the organization"
AKEY=$(timeout 10 curl -sf -X POST -H "Api-Key: $ROOT_KEY" "$API/organizations/$ORG/memberships" \
  -d '{"roles":["admin"]}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])') \
  || die "cannot create an admin key"
echo "   darkroom pid $DPID, API $API, renders $RENDER, data $DDIR"

phase upload
t0=$(now)
mkdir -p "$TMP/up"   # one answer file per upload: parallel writers to one pipe would interleave
(cd "$TMP/src" && ls) | timeout 1800 xargs -P4 -I{} curl -s --max-time 120 -o "$TMP/up/{}.json" \
  -H "Api-Key: $AKEY" -F "filedata=@$TMP/src/{}" "$API/sourceimages/$ORG"
t1=$(now)
python3 - "$TMP/up" > "$TMP/hashes.txt" <<'EOF'
import json, os, sys
hashes = set()
for name in os.listdir(sys.argv[1]):
    text = open(os.path.join(sys.argv[1], name)).read()
    try:
        hashes.add(json.loads(text)["items"][0]["hash"])
    except (ValueError, KeyError, IndexError):
        print(f"bad upload answer for {name}: {text[:200]}", file=sys.stderr)
print("\n".join(sorted(hashes)))
EOF
N_UP=$(grep -c . "$TMP/hashes.txt" || true)
[[ $N_UP == "$IMAGES" ]] || die "$N_UP distinct images stored, $IMAGES expected"
UPLOAD_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
echo "   $N_UP distinct images in $UPLOAD_S s"

# ---------------------------------------------------------------- 3. stacks and renders
phase render
WIDTHS=$(seq 60 30 $((60 + 30 * (STACKS - 1))))
for w in $WIDTHS; do
  code=$(timeout 10 curl -s -o "$TMP/stack.json" -w '%{http_code}' -X PUT -H "Api-Key: $AKEY" \
    "$API/stacks/$ORG/w$(printf %03d "$w")" \
    -d "{\"operations\":[{\"name\":\"resize\",\"options\":{\"width\":$w}}],\"options\":{\"jpg.quality\":80}}")
  [[ $code == 20[01] ]] || die "stack w$w: HTTP $code $(cat "$TMP/stack.json")"
done
while read -r h; do
  for w in $WIDTHS; do
    printf 'url = "%s/%s/w%03d/%s.jpg"\noutput = "/dev/null"\n' "$RENDER" "$ORG" "$w" "$h"
  done
done < "$TMP/hashes.txt" > "$TMP/render.cfg"
N_RENDER=$((IMAGES * STACKS))
t0=$(now)
timeout 3600 curl -s --no-progress-meter -Z --parallel-max "$CONCURRENCY" --max-time 120 -K "$TMP/render.cfg" \
  -w '%{http_code} %header{x-darkroom-render} %{size_download}\n' > "$RES/render_codes.txt" 2> "$RES/render_curl.err" || true
t1=$(now)
RENDER_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
read -r R_OK R_MISS R_SERVED <<< "$(awk '$1==200{ok++} $2=="miss"{m++} {b+=$3} END{print ok+0, m+0, b+0}' "$RES/render_codes.txt")"
echo "   $R_OK of $N_RENDER renders 200 ($R_MISS fresh) in $RENDER_S s, $R_SERVED bytes served"
[[ $R_OK == "$N_RENDER" ]] || echo "WARNING: answers: $(cut -d' ' -f1-2 "$RES/render_codes.txt" | sort | uniq -c | tr '\n' ' ')"

# The stats are written with the renders; allow a moment for the last ones anyway.
for _ in $(seq 50); do
  read -r RN0 RB0 NF0 SP0 <<< "$(stats_now)"
  (( RN0 >= R_OK )) && break
  sleep 0.2
done
echo "   stats: renders $RN0, render_cache_bytes $RB0, number_of_files $NF0, space_in_bytes $SP0"
sleep $((GC_INTERVAL + 2)); sync   # one idle GC pass and a sled flush before the baseline
record_size before
read -r RN0 RB0 NF0 SP0 <<< "$(stats_now)"

# ---------------------------------------------------------------- 4. deletes
phase delete
head -n "$DELETE" "$TMP/hashes.txt" > "$TMP/deleted.txt"
tail -n +$((DELETE + 1)) "$TMP/hashes.txt" > "$TMP/kept.txt"
while read -r h; do
  printf 'url = "%s/sourceimages/%s/%s"\noutput = "/dev/null"\n' "$API" "$ORG" "$h"
done < "$TMP/deleted.txt" > "$TMP/delete.cfg"
# Background sampler: time, folder sizes and the stats answer, every $SAMPLE s.
(
  while :; do
    echo "$(now) $(apparent "$DDIR") $(allocated "$DDIR") $(stats_raw | tr -d '\n')"
    sleep "$SAMPLE"
  done
) > "$RES/samples_delete.txt" 2> /dev/null &
SPID=$!
sleep 1
TD0=$(now)
timeout 1800 curl -s -X DELETE -H "Api-Key: $AKEY" --max-time 60 -K "$TMP/delete.cfg" \
  -w '%{http_code} %{time_total}\n' > "$RES/delete_codes.txt" || true
TD1=$(now)
DELETE_S=$(awk -v a="$TD0" -v b="$TD1" 'BEGIN{printf "%.2f", b-a}')
D_OK=$(grep -c '^204 ' "$RES/delete_codes.txt" || true)
echo "   $D_OK of $DELETE deletes answered 204 in $DELETE_S s"
# All renders of the deleted images gone from the counters?
RN_EXPECT=$((RN0 - DELETE * STACKS))
TDROP=""
for _ in $(seq 600); do
  t=$(now)   # the state seen was reached by the time the request was sent
  read -r RN1 RB1 NF1 SP1 <<< "$(stats_now)"
  if (( RN1 <= RN_EXPECT )); then TDROP=$t; break; fi
  sleep 0.1
done
sleep 2
stop_tree "$SPID"; SPID=""
record_size after_deletes
echo "   stats: renders $RN1 (expected $RN_EXPECT), render_cache_bytes $RB1"

# Deleted images' renders answer 404, kept ones are still hits.
code_del=$(curl -s -o /dev/null -w '%{http_code}' "$RENDER/$ORG/w060/$(head -1 "$TMP/deleted.txt").jpg")
code_kept=$(curl -s -o /dev/null -w '%{http_code} %header{x-darkroom-render}' "$RENDER/$ORG/w060/$(head -1 "$TMP/kept.txt").jpg")
echo "   a deleted image's render: $code_del; a kept one: $code_kept"

# ---------------------------------------------------------------- 5. reclaim (server running)
phase reclaim
: > "$RES/reclaim_series.txt"
TR0=$(now); last=""; same_since=0
for ((i = 0; i <= RECLAIM_WAIT; i++)); do
  a=$(apparent "$DDIR"); b=$(allocated "$DDIR")
  echo "$i $a $b" >> "$RES/reclaim_series.txt"
  if [[ "$a $b" != "$last" ]]; then last="$a $b"; same_since=$i; fi
  (( i - same_since >= STABLE && i >= 2 * GC_INTERVAL )) && break
  sleep 1
done
RECLAIM_S=$(( i > RECLAIM_WAIT ? RECLAIM_WAIT : i ))
record_size after_wait
read -r RN2 RB2 NF2 SP2 <<< "$(stats_now)"
GC_PASSES=$(grep -c 'gc: GcReport' "$RES/darkroom.log" || true)

# ---------------------------------------------------------------- 6. stop, verify, reopen
phase stop
stop_darkroom
record_size after_stop
set +e
(cd "$TMP" && timeout 600 env DARKROOM__STORAGE__PATH="$DDIR" DARKROOM__LOG__LEVEL=warn "$DARKROOM" admin verify) \
  > "$RES/verify.txt" 2>&1
VERIFY_RC=$?
set -e
echo "   admin verify: exit $VERIFY_RC: $(tr '\n' ' ' < "$RES/verify.txt" | cut -c1-300)"
record_size after_verify
phase reopen
start_darkroom
sleep $((GC_INTERVAL + 2))
record_size after_restart
read -r RN3 RB3 NF3 SP3 <<< "$(stats_now)"
code_kept2=$(curl -s -o /dev/null -w '%{http_code} %header{x-darkroom-render}' "$RENDER/$ORG/w060/$(head -1 "$TMP/kept.txt").jpg")
stop_darkroom
record_size after_restart_stop
phase done

# ---------------------------------------------------------------- summary
export RN0 RB0 NF0 SP0 RN1 RB1 NF1 SP1 RN2 RB2 NF2 SP2 RN3 RB3 NF3 SP3 RN_EXPECT
export IMAGES STACKS DELETE N_RENDER R_OK R_MISS R_SERVED RENDER_S UPLOAD_S SRC_BYTES D_OK DELETE_S
export TD0 TD1 TDROP RECLAIM_S GC_PASSES VERIFY_RC GC_INTERVAL RETENTION_DAYS code_del code_kept code_kept2
export TOTAL_S=$((SECONDS - START))
python3 - "$RES" <<'EOF' | tee "$RES/summary.txt"
import json, os, statistics as st, sys
res = sys.argv[1]
E = os.environ
I = lambda k: int(E[k]) if E.get(k, "") != "" else None
F = lambda k: float(E[k]) if E.get(k, "") != "" else None
mb = lambda b: f"{b / 1e6:,.1f} MB"

# deletion latency
lat = [float(l.split()[1]) * 1000 for l in open(os.path.join(res, "delete_codes.txt")) if l.strip()]
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
# render bytes over time during the deletes (sampler)
td0, td1 = F("TD0"), F("TD1")
first_drop = None
rb0 = I("RB0")
for line in open(os.path.join(res, "samples_delete.txt")):
    parts = line.split(" ", 3)
    if len(parts) < 4 or not parts[3].strip():
        continue
    try:
        rb = json.loads(parts[3])["render_cache_bytes"][0]["value"]
    except (ValueError, KeyError, IndexError):
        continue
    if first_drop is None and rb < rb0:
        first_drop = float(parts[0]) - td0
sizes = {}
for line in open(os.path.join(res, "sizes.txt")):
    label, *v = line.split()
    sizes[label] = [int(x) for x in v]

print()
print(f"GC bench: {I('IMAGES')} images x {I('STACKS')} stacks, delete {I('DELETE')} images "
      f"(gc.interval_secs={E['GC_INTERVAL']}, images.retention_days={E['RETENTION_DAYS']})")
w0 = len("stats render_cache_bytes")
rows = [
    ("uploads", f"{I('IMAGES')} JPEGs, {mb(I('SRC_BYTES'))}, in {E['UPLOAD_S']} s"),
    ("renders made", f"{I('R_OK')}/{I('N_RENDER')} answered 200 ({I('R_MISS')} fresh) in {E['RENDER_S']} s"
                     f" = {I('R_OK') / float(E['RENDER_S']):.0f}/s; {mb(I('R_SERVED'))} served"),
    ("stats renders", f"before {I('RN0'):,} -> after deletes {I('RN1'):,} (expected {I('RN_EXPECT'):,})"
                      f" -> after wait {I('RN2'):,} -> after restart {I('RN3'):,}"),
    ("stats render_cache_bytes", f"before {mb(I('RB0'))} -> after deletes {mb(I('RB1'))} ({I('RB1') / I('RB0'):.1%})"
                                 f" -> after wait {mb(I('RB2'))} -> after restart {mb(I('RB3'))}"),
    ("stats files / space", f"before {I('NF0')} / {mb(I('SP0'))} -> after {I('NF2')} / {mb(I('SP2'))}"),
    ("deletion loop", f"{I('D_OK')}/{I('DELETE')} answered 204 in {float(E['DELETE_S']):.2f} s, one at a time;"
                      f" per delete median {st.median(lat):.1f} ms, p90 {pct(0.9):.1f} ms, max {lat[-1]:.1f} ms"),
    ("render bytes drop", (f"first drop seen {first_drop:.1f} s after the first DELETE; " if first_drop is not None else "")
     + (f"all {I('DELETE') * I('STACKS'):,} renders gone {F('TDROP') - td0:.2f} s after the first DELETE"
        f" ({max(0.0, F('TDROP') - td1):.2f} s after the last)" if E.get("TDROP") else "NOT all gone within 60 s")),
    ("render URLs after", f"deleted image {E['code_del']}; kept image {E['code_kept']}; after restart {E['code_kept2']}"),
    ("background GC", f"passes that removed something: {I('GC_PASSES')}" + "".join(
        f"\n{'':{w0}}    {l.split('gc: ', 1)[1].strip()}" for l in open(os.path.join(res, "darkroom.log"))
        if "gc: GcReport" in l)),
    ("admin verify", "ok (exit 0)" if I("VERIFY_RC") == 0 else f"FAILED (exit {I('VERIFY_RC')}), see verify.txt"),
]
w = max(len(r[0]) for r in rows)
for k, v in rows:
    print(f"  {k:<{w}}  {v}")
print()
hdr = ("data folder", "apparent", "allocated", "allocated vs before", "sled/db", "sled/blobs/ (files)",
       "sources blobs/", "files")
base = sizes["before"][1]
labels = [("before", "before deletes (running)"), ("after_deletes", "right after deletes"),
          ("after_wait", f"after {E['RECLAIM_S']} s wait"), ("after_stop", "server stopped"),
          ("after_verify", "after admin verify"), ("after_restart", "restarted (running)"),
          ("after_restart_stop", "stopped again")]
table = [hdr] + [(name, mb(s[0]), mb(s[1]), f"{(s[1] - base) / 1e6:+,.1f} MB ({(s[1] - base) / base:+.1%})",
                  mb(s[2]), f"{mb(s[3])} ({s[4]})", mb(s[5]), str(s[6]))
                 for key, name in labels if (s := sizes.get(key))]
cw = [max(len(r[i]) for r in table) for i in range(len(hdr))]
for n, r in enumerate(table):
    print("  " + " | ".join(c.rjust(cw[i]) if i else c.ljust(cw[i]) for i, c in enumerate(r)))
    if n == 0:
        print("  " + "-+-".join("-" * x for x in cw))
freed = I("RB0") - I("RB1")
final = sizes.get("after_restart_stop", sizes["after_wait"])[1]
print(f"\n  render bytes freed by the counters: {mb(freed)}; allocated space given back by the folder: "
      f"{mb(base - final)} ({(base - final) / freed:.0%} of it)" if freed else "")
series = [l.split() for l in open(os.path.join(res, "reclaim_series.txt")) if l.strip()]
pick = [r for r in series if int(r[0]) in (0, 1, 2, 5, 10, 20, 30, 60, 90, 120) or r is series[-1]]
print(f"  folder allocated during the {E['RECLAIM_S']} s wait (s: MB): "
      + ", ".join(f"{r[0]}: {int(r[2]) / 1e6:,.1f}" for r in pick))
print(f"  loadavg by phase: " + "; ".join(" ".join(l.split()[:2]) for l in open(os.path.join(res, "load.txt"))))
print(f"  total wall time {int(E['TOTAL_S'])} s")
EOF
echo "results: $RES"
