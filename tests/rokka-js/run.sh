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
label=compat
# shellcheck source=../serve.sh
source "$here/../serve.sh"

start_appliance

cd "$here"
status=0
DARKROOM_API="$api_url" \
    DARKROOM_ROOT_KEY="$root_key" \
    DARKROOM_RENDER="http://127.0.0.1:$render_port" \
    node --test compat.test.mjs || status=$?
exit "$status"
