# Shared by the run.sh scripts of tests/rokka-js and tests/dashboard: runs a Darkroom binary on
# loopback over a temporary data folder for the length of a test run. Source it after setting
#   bin          the darkroom binary
#   api_port     the API listener's port
#   render_port  the render listener's port
#   label        a word for the temporary folder's name
# It then provides $data, $log, $root_key, `admin …` (darkroom admin on that folder, before or
# while the appliance runs), `start_appliance` (starts it and waits until the API answers) and
# an EXIT trap that stops it (TERM, then KILL), prints the end of its log on failure and removes
# the folder.

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

data=$(mktemp -d "${TMPDIR:-/tmp}/darkroom-$label.XXXXXX")
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

# The operator's own tool on this folder: through the running appliance's control socket, or
# on the folder itself before it starts.
admin() { (cd "$data" && DARKROOM__STORAGE__PATH="$data/store" "$bin" admin "$@" </dev/null); }

start_appliance() {
    echo "run.sh: starting $bin (API $api_url, renders on port $render_port, data in $data)"
    # Run from the data folder so that no appliance.toml from the caller's directory is used.
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
    local deadline=$((SECONDS + startup_timeout_secs))
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
}
