#!/usr/bin/env bash
# Run Jobfleet for development: the venv (made or updated when needed), then `python -m app dev`,
# which uses the Postgres and Redis at DATABASE_URL / REDIS_URL or starts private ones under
# .local/, migrates, prints the URLs and a demo key, and runs everything until Ctrl-C (or
# SIGTERM, or SIGHUP: each stops what it started). Its code is in devtools/dev.py.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

jf_ensure_venv
exec .venv/bin/python -m app dev "$@"
