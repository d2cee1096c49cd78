#!/usr/bin/env bash
# The benchmark of docs/BENCHMARKS.md: the venv, then `python -m app bench` (which uses the
# Postgres and Redis at DATABASE_URL / REDIS_URL, or starts private ones under .local/); its code
# is the bench/ package.
# Arguments go to the bench command, e.g. ./scripts/bench.sh --runs 1 --only drain-2x2
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

jf_ensure_venv
exec .venv/bin/python -m app bench "$@"
