#!/usr/bin/env bash
# One node on the embedded default against one node on the shared backend (records in
# PostgreSQL, bytes in S3-compatible object storage), side by side in one run:
#   - uploads: COUNT distinct 12 MP JPEGs (about 4.6 MB each), 4 at a time, MB/s;
#   - cold renders: unique URLs (one image, RENDERS widths), 4 at a time, renders/s;
#   - warm hits: one render URL asked again, `wrk -t2 -c32 -d10s`, req/s and p99;
#   - bytes on disk per source byte (data folder; and the database's size on the shared one).
# The shared backend comes from DATABASE_URL (`bash .ci/postgres` prints one) and, when set,
# DARKROOM_TEST_S3_* (`bash .ci/garage` prints them); each run gets a fresh schema and prefix.
# The listing forms at scale are benches/scale.sh (run it with DARKROOM__STORAGE__DATABASE_URL
# set for the shared backend).
#
# Usage: DATABASE_URL=... bash benches/backends.sh   (env: DARKROOM_BIN, SKIP_BUILD=1, COUNT=40,
#        RENDERS=200, PHOTO=path/to/a.jpg)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
COUNT=${COUNT:-40}
RENDERS=${RENDERS:-200}
KEY=backends-root-key-0123456789
API=18591
RENDER=18592
[[ -n ${DATABASE_URL:-} ]] || { echo "DATABASE_URL is not set (bash .ci/postgres)" >&2; exit 2; }
if [[ -z "${DARKROOM_BIN:-}" ]]; then
    [[ "${SKIP_BUILD:-0}" == 1 ]] || (cd "$REPO" && cargo build --release --quiet)
    DARKROOM_BIN=$REPO/target/release/darkroom
fi
PHOTO=${PHOTO:-$REPO/target/bench-peers/data/jpeg/img01.jpg}
[[ -f $PHOTO ]] || { echo "no photo at $PHOTO (SETUP_ONLY=1 bash benches/compare.sh)" >&2; exit 2; }

WORK=$(mktemp -d -t darkroom-backends.XXXXXX)
DPID=""
stop() {
    if [[ -n $DPID ]]; then kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
    DPID=""
}
trap 'stop; rm -rf "$WORK"' EXIT

# measure NAME [ENV=VALUE...]: one node over a fresh data folder with these settings.
measure() {
    local name=$1
    shift
    local data=$WORK/$name
    mkdir -p "$data"
    env "$@" DARKROOM__STORAGE__PATH="$data" DARKROOM__AUTH__ROOT_KEY=$KEY \
        DARKROOM__SERVER__API_BIND=127.0.0.1:$API DARKROOM__SERVER__RENDER_BIND=127.0.0.1:$RENDER \
        DARKROOM__GC__INTERVAL_SECS=0 RUST_LOG=warn "$DARKROOM_BIN" serve >"$WORK/$name.log" 2>&1 &
    DPID=$!
    for _ in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$API/readyz" && break; sleep 0.05; done
    API=$API RENDER=$RENDER KEY=$KEY COUNT=$COUNT RENDERS=$RENDERS PHOTO=$PHOTO NAME=$name \
        DATA=$data python3 - <<'EOF'
import concurrent.futures as cf, http.client, json, os, struct, time
api, render, key = int(os.environ["API"]), int(os.environ["RENDER"]), os.environ["KEY"]
def call(port, method, path, body=b"", ctype="application/json"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request(method, path, body, {"Api-Key": key, "Content-Type": ctype})
    r = c.getresponse(); data = r.read(); c.close()
    assert r.status < 300, (path, r.status, data[:200])
    return data
call(api, "PUT", "/organizations/acme", b'{"billing_email":"b@example.com"}')
call(api, "PUT", "/stacks/acme/thumb", json.dumps([{"name": "resize", "options": {"width": 300}}]).encode())
photo = open(os.environ["PHOTO"], "rb").read()
def upload(i):
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
first = done[0][0]
widths = range(100, 100 + int(os.environ["RENDERS"]))
def cold(w):
    call(render, "GET", f"/acme/dynamic/resize-width-{w}/{first}.jpg")
t0 = time.time()
with cf.ThreadPoolExecutor(4) as pool:
    list(pool.map(cold, widths))
cold_s = time.time() - t0
call(render, "GET", f"/acme/thumb/{first}.jpg")
print(f"{os.environ['NAME']}: uploads {total / upload_s / 1e6:.1f} MB/s ({len(done)} x {total // len(done)} B, 4 at a time); "
      f"cold renders {len(widths) / cold_s:.1f}/s (concurrency 4)")
open(os.path.join(os.environ["DATA"], "..", os.environ["NAME"] + ".url"), "w").write(f"/acme/thumb/{first}.jpg")
open(os.path.join(os.environ["DATA"], "..", os.environ["NAME"] + ".bytes"), "w").write(str(total))
EOF
    local url
    url=$(cat "$WORK/$name.url")
    wrk -t2 -c32 -d10s --latency "http://127.0.0.1:$RENDER$url" |
        awk -v n="$name" '/Requests\/sec/ {r=$2} /^ +99%/ {p=$2} END {print n ": warm hits " r " req/s, p99 " p}'
    stop
    echo "$name: data folder $(du -sb "$data" | cut -f1) bytes for $(cat "$WORK/$name.bytes") source bytes"
}

measure embedded
schema=bench_$(date +%s)
psql "$DATABASE_URL" -qc "CREATE SCHEMA $schema" || { echo "psql is needed" >&2; exit 2; }
sep='?'; [[ $DATABASE_URL == *\?* ]] && sep='&'
shared=(DARKROOM__STORAGE__DATABASE_URL="${DATABASE_URL}${sep}options=-csearch_path%3D$schema")
if [[ -n ${DARKROOM_TEST_S3_ENDPOINT:-} ]]; then
    shared+=(DARKROOM__STORAGE__OBJECT_STORE_URL="s3://$DARKROOM_TEST_S3_BUCKET"
        DARKROOM__STORAGE__S3_ENDPOINT="$DARKROOM_TEST_S3_ENDPOINT"
        DARKROOM__STORAGE__S3_REGION="$DARKROOM_TEST_S3_REGION"
        DARKROOM__STORAGE__S3_ACCESS_KEY_ID="$DARKROOM_TEST_S3_ACCESS_KEY_ID"
        DARKROOM__STORAGE__S3_SECRET_ACCESS_KEY="$DARKROOM_TEST_S3_SECRET_ACCESS_KEY"
        DARKROOM__STORAGE__S3_PREFIX="bench/$schema")
fi
measure shared "${shared[@]}"
echo "shared: database schema $(psql "$DATABASE_URL" -Atc "SELECT pg_size_pretty(sum(pg_total_relation_size(quote_ident(schemaname) || '.' || quote_ident(tablename)))::bigint) FROM pg_tables WHERE schemaname = '$schema'")"
