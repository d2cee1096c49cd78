#!/usr/bin/env bash
# Regenerate requirements.lock from requirements.txt with pip-tools: every runtime package,
# direct and indirect, pinned to one version with the hashes of its files. The image installs
# the lock alone (docker/Dockerfile), and so does .venv before the development tools.
#
#   ./scripts/lock.sh                             after editing requirements.txt: keeps every
#                                                 other pin, adds and drops what the edit changed
#   ./scripts/lock.sh --upgrade-package anyio     moves one indirect dependency to its newest
#   ./scripts/lock.sh --upgrade                   moves every indirect dependency
#
# Other arguments go to pip-compile. tests/test_image.py fails while the lock and
# requirements.txt disagree.
#
# Markers (python_version, sys_platform) are decided for the interpreter that runs pip-compile,
# so it must be the image's: CPython 3.11 on Linux. .venv is used (made or updated first);
# LOCK_PYTHON names another interpreter with pip-tools installed, e.g. in the base image:
#   docker run --rm -v "$PWD:/src" -w /src python:3.11-slim sh -c \
#     'pip install pip-tools==7.6.2 && LOCK_PYTHON=python ./scripts/lock.sh'
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

if [[ -n "${LOCK_PYTHON:-}" ]]; then
    python="$LOCK_PYTHON"
else
    jf_ensure_venv
    python=.venv/bin/python
fi
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) or sys.platform != "linux")' ||
    jf_die "the lock is made with CPython 3.11 on Linux, as the image runs; $("$python" -V 2>&1) on $(uname -s) is not (see the top of $0)"

jf_section "pip-compile requirements.txt -> requirements.lock"
# No index or find-links lines in the file: where a developer's pip looks is not the lock's
# business, and the hashes hold wherever the files come from.
CUSTOM_COMPILE_COMMAND="./scripts/lock.sh" "$python" -m piptools compile --quiet \
    --generate-hashes --allow-unsafe --strip-extras \
    --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
    --output-file requirements.lock "$@" requirements.txt

if [[ -z "${LOCK_PYTHON:-}" ]]; then
    # .venv follows the new lock at once (its stamp changed with the file).
    jf_ensure_venv
fi
