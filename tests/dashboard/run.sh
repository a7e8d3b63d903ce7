#!/usr/bin/env bash
# Runs the dashboard's browser tests against a Darkroom binary.
#
#   tests/dashboard/run.sh path/to/darkroom
#
# Creates organizations and keys on a fresh temporary data folder with `darkroom admin`, starts
# the binary there with a random root key on loopback ports (DARKROOM_DASHBOARD_API_PORT /
# DARKROOM_DASHBOARD_RENDER_PORT, default 18490/18491), waits until the API answers, runs
# `node --test dashboard.test.mjs` (Debian's chromium through puppeteer-core, axe-core), stops
# the appliance and exits with the test's status. Needs `npm ci` in this folder first and
# chromium (CHROMIUM names another binary). DARKROOM_SCREENSHOTS=folder keeps screenshots.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 path/to/darkroom" >&2
    exit 2
fi
bin=$(realpath -- "$1")
if [[ ! -x $bin ]]; then
    echo "run.sh: $bin is not an executable file" >&2
    exit 2
fi
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
if [[ ! -d $here/node_modules/puppeteer-core || ! -d $here/node_modules/axe-core ]]; then
    echo "run.sh: puppeteer-core and axe-core are not installed; run 'npm ci' in $here first" >&2
    exit 2
fi
chromium=${CHROMIUM:-$(command -v chromium || true)}
if [[ -z $chromium || ! -x $chromium ]]; then
    echo "run.sh: chromium is not installed (apt-get install chromium), or set CHROMIUM" >&2
    exit 2
fi

api_port=${DARKROOM_DASHBOARD_API_PORT:-18490}
render_port=${DARKROOM_DASHBOARD_RENDER_PORT:-18491}
api_url="http://127.0.0.1:$api_port"
startup_timeout_secs=30
stop_timeout_secs=10

# A port that already answers would make us test some other process.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$api_port" "$render_port"; do
    if port_in_use "$port"; then
        echo "run.sh: port $port is already in use" >&2
        exit 2
    fi
done

data=$(mktemp -d "${TMPDIR:-/tmp}/darkroom-dashboard.XXXXXX")
log="$data/darkroom.log"
root_key=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
pid=""

stop() {
    local status=$?
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local waited=0
        while kill -0 "$pid" 2>/dev/null && ((waited < stop_timeout_secs * 10)); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "run.sh: darkroom (pid $pid) ignored TERM for ${stop_timeout_secs}s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    fi
    if ((status != 0)) && [[ -s $log ]]; then
        echo "---- last lines of the darkroom log ----" >&2
        tail -n 40 "$log" >&2
    fi
    rm -rf -- "$data"
    exit "$status"
}
trap stop EXIT

# Organizations and keys come from the operator's own tool, before the service holds the store.
admin() { (cd "$data" && DARKROOM__STORAGE__PATH="$data/store" "$bin" admin "$@" </dev/null); }
for org in demo big empty; do
    admin org create "$org" >/dev/null
done
admin_key=$(admin key create demo --roles admin --comment "browser test admin")
read_key=$(admin key create demo --roles read --comment "browser test reader")
big_key=$(admin key create big --roles admin --comment "browser test, 100 images")
empty_key=$(admin key create empty --roles admin --comment "browser test, empty")

echo "run.sh: starting $bin (API $api_url, renders on port $render_port, data in $data)"
# Run from the data folder so that no appliance.toml from the caller's directory is picked up.
(
    cd "$data"
    export DARKROOM__STORAGE__PATH="$data/store"
    export DARKROOM__SERVER__API_BIND="127.0.0.1:$api_port"
    export DARKROOM__SERVER__RENDER_BIND="127.0.0.1:$render_port"
    export DARKROOM__AUTH__ROOT_KEY="$root_key"
    exec "$bin" serve
) </dev/null >"$log" 2>&1 &
pid=$!

# Wait until the API answers an authenticated request, or give up.
deadline=$((SECONDS + startup_timeout_secs))
until DARKROOM_ROOT_KEY="$root_key" node -e '
    fetch(process.argv[1], { headers: { "Api-Key": process.env.DARKROOM_ROOT_KEY } })
      .then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$api_url/"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "run.sh: darkroom exited during start-up" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "run.sh: darkroom did not answer on $api_url within ${startup_timeout_secs}s" >&2
        exit 1
    fi
    sleep 0.2
done
echo "run.sh: darkroom is up (pid $pid)"

cd "$here"
status=0
DARKROOM_API="$api_url" \
    DARKROOM_ROOT_KEY="$root_key" \
    DARKROOM_ADMIN_KEY="$admin_key" \
    DARKROOM_READ_KEY="$read_key" \
    DARKROOM_BIG_KEY="$big_key" \
    DARKROOM_EMPTY_KEY="$empty_key" \
    CHROMIUM="$chromium" \
    node --test --test-concurrency=1 dashboard.test.mjs || status=$?
exit "$status"
