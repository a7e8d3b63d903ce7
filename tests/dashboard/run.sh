#!/usr/bin/env bash
# Runs the dashboard's browser tests against a Darkroom binary.
#
#   tests/dashboard/run.sh path/to/darkroom
#
# Starts the binary on a fresh temporary data folder with a random root key on loopback ports
# (DARKROOM_DASHBOARD_API_PORT / DARKROOM_DASHBOARD_RENDER_PORT, default 18490/18491), waits
# until the API answers, creates organizations and keys with `darkroom admin` while it runs,
# runs `node --test dashboard.test.mjs` (Debian's chromium through puppeteer-core, axe-core), stops
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
label=dashboard
# shellcheck source=../serve.sh
source "$here/../serve.sh"

start_appliance

# Organizations and keys come from the operator's own tool, through the control socket of the
# running appliance.
for org in demo big empty; do
    admin org create "$org" >/dev/null
done
admin_key=$(admin key create demo --roles admin --comment "browser test admin")
read_key=$(admin key create demo --roles read --comment "browser test reader")
big_key=$(admin key create big --roles admin --comment "browser test, 100 images")
empty_key=$(admin key create empty --roles admin --comment "browser test, empty")

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
