#!/usr/bin/env bash
# The embedded default against the shared backend (records in PostgreSQL, bytes in
# S3-compatible object storage), one node each, then two nodes of the shared backend behind
# nginx, side by side in one run. Each phase starts on empty stores and measures:
#   - uploads: COUNT distinct 12 MP JPEGs (about 4.6 MB each), 4 at a time, MB/s;
#   - cold renders: RENDERS unique URLs of one image, 4 at a time, renders/s: widths 100 to
#     299 px, each at JPEG qualities 80, 81, ... as RENDERS asks (all start from the image's
#     1/8 mezzanine, so the figure is the per-render cost of the store and the round trips);
#   - warm hits: one render URL asked again, `wrk -t2 -c32 -d10s --latency`, req/s and p99,
#     directly on a node and through nginx, and directly on the URL naming the image by a
#     6-character hash prefix;
#   - bytes stored per source byte: the data folders, plus the database schema and the objects
#     under the bucket prefix for the shared backend (also without each node's 16 MiB reserve
#     file, a fixed cost).
# In the one-node phases uploads and cold renders go to the node; nginx (an `upstream` holding
# that one node) is only used for the second warm-hit figure. In the two-node phase two
# `darkroom serve` (own ports and data folders, same schema, same bucket prefix) sit behind one
# nginx with an `upstream` block for both API ports and one for both render ports; uploads, cold
# renders and warm hits go through nginx, and warm hits also directly on one node. nginx only
# proxies (no cache, no access log): the figures are the nodes' throughput. Everything runs on
# this machine, so nginx, the nodes, PostgreSQL and Garage share its cores.
#
# The shared backend comes from DATABASE_URL (`bash .ci/postgres` prints one) and
# DARKROOM_TEST_S3_* (`bash .ci/garage` prints them); each phase gets a fresh schema and prefix.
# Without DARKROOM_TEST_S3_* the shared one-node phase keeps its bytes in its data folder and
# the two-node phase is skipped. The listing forms at scale are benches/scale.sh.
#
# The photo: PHOTO, else target/bench-backends/photo.jpg; when that is missing it is made
# here with ImageMagick (4000x3000, seeded plasma and noise, q94: about 4.6 MB).
#
# Usage: DATABASE_URL=... bash benches/backends.sh   (env: DARKROOM_BIN, SKIP_BUILD=1, COUNT=100,
#        RENDERS=1000, PHOTO=path/to/a.jpg)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
COUNT=${COUNT:-100}
RENDERS=${RENDERS:-1000}
KEY=backends-root-key-0123456789
# Node A, node B, nginx: API and render ports.
A_API=18591
A_RENDER=18592
B_API=18593
B_RENDER=18594
NG_API=18595
NG_RENDER=18596
[[ -n ${DATABASE_URL:-} ]] || { echo "DATABASE_URL is not set (bash .ci/postgres)" >&2; exit 2; }
command -v psql >/dev/null || { echo "psql is needed" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 2; }
NGINX=/usr/sbin/nginx
[[ -x $NGINX ]] || NGINX=$(command -v nginx) || { echo "nginx is needed (apt-get install nginx-light)" >&2; exit 2; }
if [[ -z "${DARKROOM_BIN:-}" ]]; then
    [[ "${SKIP_BUILD:-0}" == 1 ]] || (cd "$REPO" && cargo build --release --quiet)
    DARKROOM_BIN=$REPO/target/release/darkroom
fi
if [[ -z ${PHOTO:-} ]]; then
    PHOTO=$REPO/target/bench-backends/photo.jpg
    if [[ ! -f $PHOTO ]]; then
        mkdir -p "$(dirname "$PHOTO")"
        convert -seed 7 -size 4000x3000 plasma:fractal -blur 0x2 -attenuate 0.4 +noise Gaussian \
            -quality 94 -sampling-factor 4:2:0 "jpg:$PHOTO.part" && mv "$PHOTO.part" "$PHOTO"
    fi
fi
[[ -f $PHOTO ]] || { echo "no photo at $PHOTO" >&2; exit 2; }

WORK=$(mktemp -d -t darkroom-backends.XXXXXX)
PIDS=()
stop() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
SCHEMAS=()
cleanup() {
    stop
    local s
    for s in "${SCHEMAS[@]}"; do psql "$DATABASE_URL" -qc "DROP SCHEMA IF EXISTS $s CASCADE" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
RESULTS=$WORK/results
: >"$RESULTS"
result() { echo "$1 $2 $3" >>"$RESULTS"; }   # phase key value

echo "machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), shared with other work"
echo "load at start: $(uptime)"
echo "photo: $PHOTO, $(stat -c %s "$PHOTO") bytes, $(identify -format '%wx%h' "$PHOTO" 2>/dev/null || echo '?')"
echo "darkroom: $DARKROOM_BIN; nginx: $($NGINX -v 2>&1 | sed 's/.*: //'), proxying only (no proxy_cache, no access log)"

# node NAME API RENDER [ENV=VALUE...]: starts a node over the data folder $WORK/NAME.
node() {
    local name=$1 api=$2 render=$3
    shift 3
    mkdir -p "$WORK/$name"
    env "$@" DARKROOM__STORAGE__PATH="$WORK/$name" DARKROOM__AUTH__ROOT_KEY=$KEY \
        DARKROOM__SERVER__API_BIND=127.0.0.1:$api DARKROOM__SERVER__RENDER_BIND=127.0.0.1:$render \
        DARKROOM__GC__INTERVAL_SECS=0 RUST_LOG=warn "$DARKROOM_BIN" serve >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 400); do curl -sf -o /dev/null "http://127.0.0.1:$api/readyz" && return; sleep 0.05; done
    echo "$name did not become ready:" >&2
    cat "$WORK/$name.log" >&2
    exit 1
}

# proxy NAME "API_PORT..." "RENDER_PORT...": nginx on NG_API/NG_RENDER with one upstream block
# for the API ports and one for the render ports; plain proxying, shaped like the example site
# (systemd/nginx-darkroom.conf) without its cache.
proxy() {
    local name=$1 dir=$WORK/nginx-$1 p api_servers="" render_servers="" user=""
    for p in $2; do api_servers+="server 127.0.0.1:$p; "; done
    for p in $3; do render_servers+="server 127.0.0.1:$p; "; done
    ((EUID == 0)) && user="user root;"   # workers as nobody could not enter the 0700 folder
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes auto;
$user
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    access_log off;
    upstream darkroom_api    { $api_servers}
    upstream darkroom_render { $render_servers keepalive 32; }
    server {
        listen 127.0.0.1:$NG_API;
        client_max_body_size 100m;
        location / {
            proxy_pass http://darkroom_api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
            proxy_cache off;
        }
    }
    server {
        listen 127.0.0.1:$NG_RENDER;
        location / {
            proxy_pass http://darkroom_render;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_cache off;
        }
    }
}
EOF
    "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stderr.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 200); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NG_API/readyz") == 200 ]] && return
        sleep 0.05
    done
    echo "nginx ($name) did not start:" >&2
    cat "$dir/stderr.log" "$dir/error.log" >&2
    exit 1
}

# load NAME API RENDER: creates the organization and a stack, uploads COUNT distinct copies of
# the photo 4 at a time, renders RENDERS unique URLs of the first one 4 at a time, asks the warm
# URL once; writes $WORK/NAME.url and $WORK/NAME.bytes.
load() {
    API=$2 RENDER=$3 KEY=$KEY COUNT=$COUNT RENDERS=$RENDERS PHOTO=$PHOTO NAME=$1 WORK=$WORK \
        python3 - <<'EOF'
import concurrent.futures as cf, http.client, json, os, struct, time
api, render, key = int(os.environ["API"]), int(os.environ["RENDER"]), os.environ["KEY"]
name, work = os.environ["NAME"], os.environ["WORK"]
def call(port, method, path, body=b"", ctype="application/json"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    c.request(method, path, body, {"Api-Key": key, "Content-Type": ctype})
    r = c.getresponse(); data = r.read(); c.close()
    assert r.status < 300, (path, r.status, data[:200])
    return data
call(api, "PUT", "/organizations/acme", b'{"billing_email":"b@example.com"}')
call(api, "PUT", "/stacks/acme/thumb", json.dumps([{"name": "resize", "options": {"width": 300}}]).encode())
photo = open(os.environ["PHOTO"], "rb").read()
def upload(i):
    # A distinct COM segment per upload: every upload is new content.
    b = photo[:2] + b"\xff\xfe" + struct.pack(">H", 12) + b"%010d" % i + photo[2:]
    boundary = "benchboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"filedata\"; filename=\"p.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + b + f"\r\n--{boundary}--\r\n".encode()
    data = call(api, "POST", "/sourceimages/acme", body, f"multipart/form-data; boundary={boundary}")
    return json.loads(data)["items"][0]["hash"], len(b)
t0 = time.time()
with cf.ThreadPoolExecutor(4) as pool:
    done = list(pool.map(upload, range(int(os.environ["COUNT"]))))
upload_s = time.time() - t0
total = sum(n for _, n in done)
assert len({h for h, _ in done}) == len(done), "uploads were not distinct"
first = done[0][0]
# 200 widths, then the same widths at the next JPEG quality: every URL is new, every render
# starts from the 1/8 mezzanine, and the phase lasts about a second rather than a fifth.
widths = [(100 + i % 200, 80 + i // 200) for i in range(int(os.environ["RENDERS"]))]
def cold(wq):
    w, q = wq
    call(render, "GET", f"/acme/dynamic/resize-width-{w}--options-jpg.quality-{q}/{first}.jpg")
t0 = time.time()
with cf.ThreadPoolExecutor(4) as pool:
    list(pool.map(cold, widths))
cold_s = time.time() - t0
call(render, "GET", f"/acme/thumb/{first}.jpg")
mbs, rps = total / upload_s / 1e6, len(widths) / cold_s
print(f"{name}: uploads {mbs:.1f} MB/s ({len(done)} x {total // len(done)} B, 4 at a time, port {api}); "
      f"cold renders {rps:.1f}/s ({len(widths)} unique URLs, concurrency 4, port {render})")
with open(os.path.join(work, "results"), "a") as f:
    f.write(f"{name} upload {mbs:.1f}\n{name} cold {rps:.1f}\n")
open(os.path.join(work, name + ".url"), "w").write(f"/acme/thumb/{first}.jpg")
# The same render by a six-character prefix of the hash.
call(render, "GET", f"/acme/thumb/{first[:6]}.jpg")
open(os.path.join(work, name + ".short"), "w").write(f"/acme/thumb/{first[:6]}.jpg")
open(os.path.join(work, name + ".bytes"), "w").write(str(total))
EOF
}

# warm NAME KIND PORT: wrk on the phase's warm URL at that port (KIND: direct or nginx; short:
# direct, on the URL naming its image by a six-character hash prefix).
warm() {
    local name=$1 kind=$2 port=$3 out url=$WORK/$1.url
    [[ $kind == short ]] && url=$WORK/$name.short
    out=$(wrk -t2 -c32 -d10s --latency "http://127.0.0.1:$port$(cat "$url")")
    local rps p99 errors
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    # wrk prints 99% as 812.00us, 1.23ms or 1.05s: in ms.
    p99=$(awk '/^ +99%/ {v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        m = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v; printf "%.2f", m}' <<<"$out")
    errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    echo "$name: warm hits $kind (port $port) $rps req/s, p99 $p99 ms${errors:+; $errors}"
    result "$name" "warm_$kind" "$rps"
    result "$name" "p99_$kind" "$p99"
}

# bucket_bytes PREFIX: the bytes of the objects under PREFIX/ in the bucket (signed
# ListObjectsV2, path style, as the nodes address the bucket).
bucket_bytes() {
    S3_PREFIX=$1 python3 - <<'EOF'
import datetime, hashlib, hmac, os, urllib.parse, urllib.request, xml.etree.ElementTree as ET
e = os.environ
endpoint, region, bucket = e["DARKROOM_TEST_S3_ENDPOINT"].rstrip("/"), e["DARKROOM_TEST_S3_REGION"], e["DARKROOM_TEST_S3_BUCKET"]
key_id, secret = e["DARKROOM_TEST_S3_ACCESS_KEY_ID"], e["DARKROOM_TEST_S3_SECRET_ACCESS_KEY"]
host = urllib.parse.urlsplit(endpoint).netloc
ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
def sign(k, m): return hmac.new(k, m.encode(), hashlib.sha256).digest()
total, token = 0, None
while True:
    q = {"list-type": "2", "prefix": e["S3_PREFIX"].strip("/") + "/"}
    if token: q["continuation-token"] = token
    query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in sorted(q.items()))
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    empty = hashlib.sha256(b"").hexdigest()
    headers = f"host:{host}\nx-amz-content-sha256:{empty}\nx-amz-date:{amz_date}\n"
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = f"GET\n/{bucket}\n{query}\n{headers}\n{signed}\n{empty}"
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    k = sign(sign(sign(sign(("AWS4" + secret).encode(), day), region), "s3"), "aws4_request")
    auth = f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed}, Signature={hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()}"
    req = urllib.request.Request(f"{endpoint}/{bucket}?{query}", headers={
        "x-amz-content-sha256": empty, "x-amz-date": amz_date, "Authorization": auth})
    root = ET.fromstring(urllib.request.urlopen(req, timeout=60).read())
    total += sum(int(c.find(ns + "Size").text) for c in root.iter(ns + "Contents"))
    if root.findtext(ns + "IsTruncated") != "true":
        break
    token = root.findtext(ns + "NextContinuationToken")
print(total)
EOF
}

# stored NAME "FOLDER..." [SCHEMA PREFIX]: bytes stored per source byte.
stored() {
    local name=$1 folders=0 reserve=0 f db=0 bucket=0 parts
    for f in $2; do
        folders=$((folders + $(du -sb "$WORK/$f" | cut -f1)))
        [[ -f $WORK/$f/reserve ]] && reserve=$((reserve + $(stat -c %s "$WORK/$f/reserve")))
    done
    parts="data folders ($2) $folders (of which reserve files $reserve)"
    if [[ -n ${3:-} ]]; then
        db=$(psql "$DATABASE_URL" -Atc "SELECT coalesce(sum(pg_total_relation_size(quote_ident(schemaname) || '.' || quote_ident(tablename))), 0) FROM pg_tables WHERE schemaname = '$3'")
        parts+=" + database schema $db"
        if [[ -n ${4:-} ]]; then
            bucket=$(bucket_bytes "$4")
            parts+=" + bucket objects under $4/ $bucket"
        fi
    fi
    local source total
    source=$(cat "$WORK/$name.bytes")
    total=$((folders + db + bucket))
    local ratio bare
    ratio=$(awk -v t="$total" -v s="$source" 'BEGIN {printf "%.3f", t / s}')
    bare=$(awk -v t="$((total - reserve))" -v s="$source" 'BEGIN {printf "%.3f", t / s}')
    echo "$name: stored $parts = $total bytes for $source source bytes: $ratio per source byte ($bare without the reserve files, a fixed 16 MiB per node)"
    result "$name" stored "$ratio"
    result "$name" stored_bare "$bare"
}

# logs NAME FILE...: the warnings and errors the nodes and nginx logged in this phase.
logs() {
    local name=$1 n
    shift
    n=$(cat "$@" 2>/dev/null | grep -c . || true)
    if ((n == 0)); then
        echo "$name: nothing in the node and nginx logs (warnings and errors)"
    else
        echo "$name: $n log lines (warnings and errors), the first ones:"
        cat "$@" 2>/dev/null | grep . | head -5 | cut -c1-300 | sed 's/^/    /'
    fi
}

# shared_env SCHEMA: the settings of a node of the shared backend on SCHEMA (and prefix).
shared_env() {
    local sep='?'
    [[ $DATABASE_URL == *\?* ]] && sep='&'
    SHARED=(DARKROOM__STORAGE__DATABASE_URL="${DATABASE_URL}${sep}options=-csearch_path%3D$1")
    if [[ -n ${DARKROOM_TEST_S3_ENDPOINT:-} ]]; then
        SHARED+=(DARKROOM__STORAGE__OBJECT_STORE_URL="s3://$DARKROOM_TEST_S3_BUCKET"
            DARKROOM__STORAGE__S3_ENDPOINT="$DARKROOM_TEST_S3_ENDPOINT"
            DARKROOM__STORAGE__S3_REGION="$DARKROOM_TEST_S3_REGION"
            DARKROOM__STORAGE__S3_ACCESS_KEY_ID="$DARKROOM_TEST_S3_ACCESS_KEY_ID"
            DARKROOM__STORAGE__S3_SECRET_ACCESS_KEY="$DARKROOM_TEST_S3_SECRET_ACCESS_KEY"
            DARKROOM__STORAGE__S3_PREFIX="bench/$1")
    fi
}
# new_schema NAME: a fresh schema in $schema (dropped on exit).
new_schema() {
    schema=bench_$(date +%s)_$1
    psql "$DATABASE_URL" -qc "CREATE SCHEMA $schema"
    SCHEMAS+=("$schema")
}

# ---- embedded, one node
echo "== embedded, one node (nginx in front only for the second warm-hit figure); load $(cut -d" " -f1-3 /proc/loadavg)"
node embedded $A_API $A_RENDER
load embedded $A_API $A_RENDER
proxy embedded "$A_API" "$A_RENDER"
warm embedded direct $A_RENDER
warm embedded short $A_RENDER
warm embedded nginx $NG_RENDER
stop
stored embedded embedded
logs embedded "$WORK/embedded.log" "$WORK/nginx-embedded/error.log"

# ---- shared backend, one node
echo "== PostgreSQL + object storage, one node (nginx in front only for the second warm-hit figure); load $(cut -d" " -f1-3 /proc/loadavg)"
new_schema one
shared_env "$schema"
node shared "$A_API" "$A_RENDER" "${SHARED[@]}"
load shared $A_API $A_RENDER
proxy shared "$A_API" "$A_RENDER"
warm shared direct $A_RENDER
warm shared short $A_RENDER
warm shared nginx $NG_RENDER
stop
prefix=""
[[ -n ${DARKROOM_TEST_S3_ENDPOINT:-} ]] && prefix=bench/$schema
stored shared shared "$schema" "$prefix"
[[ -n $prefix ]] || echo "shared: no DARKROOM_TEST_S3_*: the bytes are in the data folder"
logs shared "$WORK/shared.log" "$WORK/nginx-shared/error.log"

# ---- shared backend, two nodes behind nginx
phases="embedded shared"
if [[ -n ${DARKROOM_TEST_S3_ENDPOINT:-} ]]; then
    echo "== PostgreSQL + object storage, two nodes behind nginx (uploads, cold renders and warm hits through nginx); load $(cut -d" " -f1-3 /proc/loadavg)"
    new_schema two
    shared_env "$schema"
    node two-a $A_API $A_RENDER "${SHARED[@]}"
    node two-b $B_API $B_RENDER "${SHARED[@]}"
    proxy two "$A_API $B_API" "$A_RENDER $B_RENDER"
    load two $NG_API $NG_RENDER
    # The warm URL once on each node, so that wrk starts on warm nodes.
    for p in $A_RENDER $B_RENDER; do curl -sf -o /dev/null "http://127.0.0.1:$p$(cat "$WORK/two.url")"; done
    warm two direct $A_RENDER
    warm two short $A_RENDER
    warm two nginx $NG_RENDER
    stop
    stored two "two-a two-b" "$schema" "bench/$schema"
    logs two "$WORK/two-a.log" "$WORK/two-b.log" "$WORK/nginx-two/error.log"
    phases+=" two"
else
    echo "== two nodes: skipped (they need the object storage: DARKROOM_TEST_S3_*)"
fi
echo "load at end: $(uptime)"

# ---- summary
echo
PHASES=$phases python3 - "$RESULTS" <<'EOF'
import os, sys
r = {}
for line in open(sys.argv[1]):
    phase, key, value = line.split()
    r[(phase, key)] = float(value)
phases = os.environ["PHASES"].split()
title = {"embedded": "embedded, one node", "shared": "PostgreSQL + Garage, one node",
         "two": "PostgreSQL + Garage, two nodes behind nginx"}
rows = [("uploads, 4 at a time (MB/s)", "upload", None, "{:.1f}"),
        ("cold renders, unique URLs, concurrency 4 (/s)", "cold", None, "{:.1f}"),
        ("warm hits direct on a node (req/s, p99)", "warm_direct", "p99_direct", "{:,.0f}"),
        ("warm hits direct, URL by a 6-character hash prefix (req/s, p99)", "warm_short", "p99_short", "{:,.0f}"),
        ("warm hits through nginx (req/s, p99)", "warm_nginx", "p99_nginx", "{:,.0f}"),
        ("bytes stored per source byte (without the reserve files)", "stored", "stored_bare", "{:.3f}")]
others = [p for p in phases if p != "embedded"]
ratio = {"shared": "ratio, one node shared / embedded", "two": "ratio, two nodes / embedded"}
head = [""] + [title[p] for p in phases] + [ratio[p] for p in others]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for label, key, p99, fmt in rows:
    cells = [label]
    for p in phases:
        v = r.get((p, key))
        c = fmt.format(v) if v is not None else "-"
        if p99 == "stored_bare" and (p, p99) in r:
            c += f" ({r[(p, p99)]:.3f})"
        elif p99 and (p, p99) in r:
            c += f", p99 {r[(p, p99)]:.2f} ms"
        cells.append(c)
    for p in others:
        a, b = r.get(("embedded", key)), r.get((p, key))
        cells.append(f"{b / a:.2f}" if a and b is not None else "-")
    print("| " + " | ".join(cells) + " |")
EOF
