#!/usr/bin/env bash
# The whole test suite with its quality gates: the venv, Postgres and Redis (the ones at
# DATABASE_URL / REDIS_URL when they answer, else private ones under .local/, stopped again on
# exit), the test tools from Debian's packages (promtool, prometheus, amtool, alertmanager,
# docker-compose, pg_dump, pg_restore, psql, and chromium, which the browser tests of tests/ui/
# drive through Playwright; installed when missing), ruff format, ruff check, mypy (the product,
# strict, and the tooling beside it; the client package on its own, strict), then pytest with
# coverage of the product, in one process per CPU (pytest-xdist). Arguments go to pytest (`-n 0`:
# one process).
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

jf_ensure_venv
jf_ensure_test_tools

services_env=.local/test-services.env

stop_services() {
    local status=$?
    # Stops only what `ensure` below started (recorded under .local/), never a shared server.
    .venv/bin/python -m devtools stop --local-dir .local || true
    exit "$status"
}
# Set before `ensure`: if it fails half-way, what it did start is still stopped.
trap stop_services EXIT

jf_section "Postgres and Redis"
.venv/bin/python -m devtools ensure --fast --env-file "$services_env" --local-dir .local
# shellcheck source=/dev/null
source "$services_env"

failed=()
jf_section "ruff format --check ."
.venv/bin/ruff format --check . || failed+=("ruff format")
jf_section "ruff check ."
.venv/bin/ruff check . || failed+=("ruff check")
jf_section "mypy app devtools bench"
.venv/bin/mypy app devtools bench || failed+=("mypy")
# The client package on its own, with its own strict configuration (client/pyproject.toml).
jf_section "mypy --strict client (client/pyproject.toml)"
.venv/bin/mypy --strict --config-file client/pyproject.toml client/src || failed+=("mypy client")
if ((${#failed[@]})); then
    jf_section "FAILED quality gates: $(IFS=,; echo "${failed[*]}") (pytest not run)"
    exit 1
fi

jf_section "pytest"
status=0
# One test process per CPU, each with a database and key prefix of its own (tests/conftest.py).
# loadgroup: each process takes the next test when it is almost out of work, except for the
# tests marked HEAVY (tests/helpers.py), which one process runs one after another.
# --durations: the slowest tests are named at the end, where the suite's time is to be kept.
.venv/bin/python -m pytest -n auto --dist loadgroup --durations=25 --cov=app --cov-report=term \
    "$@" || status=$?
case "$status" in
    0) jf_section "All gates and tests passed" ;;
    5) jf_section "FAILED: pytest collected no tests" ;;
    *) jf_section "FAILED: pytest exited with status $status" ;;
esac
exit "$status"
