#!/usr/bin/env bash
# Runs the rokka.js compatibility test against a Darkroom binary.
#
#   tests/rokka-js/run.sh path/to/darkroom
#
# Starts the binary on a fresh temporary data folder with a random root key, listening on
# loopback ports (DARKROOM_COMPAT_API_PORT / DARKROOM_COMPAT_RENDER_PORT, default 18480/18481),
# waits until the API answers, runs `node --test compat.test.mjs`, stops the appliance and exits
# with the test's status. Needs `npm ci` in this folder first.
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
if [[ ! -d $here/node_modules/rokka ]]; then
    echo "run.sh: rokka.js is not installed; run 'npm ci' in $here first" >&2
    exit 2
fi

api_port=${DARKROOM_COMPAT_API_PORT:-18480}
render_port=${DARKROOM_COMPAT_RENDER_PORT:-18481}
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

data=$(mktemp -d "${TMPDIR:-/tmp}/darkroom-compat.XXXXXX")
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
    DARKROOM_RENDER="http://127.0.0.1:$render_port" \
    node --test compat.test.mjs || status=$?
exit "$status"
