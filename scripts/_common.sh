# shellcheck shell=bash
# Shared by dev.sh and test.sh (sourced, not run): the repository root and its virtualenv.
#
# PYTHON picks the interpreter that creates .venv (default: python3.11, else python3 when it is
# 3.11 or newer). The requirements are installed again only when requirements.txt or
# requirements-dev.txt changed since the last install (their hash is kept in .venv).

JF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$JF_ROOT"

jf_section() {
    printf '\n==> %s\n' "$*"
}

jf_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

jf_python() {
    local candidate candidates=(python3.11 python3)
    if [[ -n "${PYTHON:-}" ]]; then
        candidates=("$PYTHON")
    fi
    for candidate in "${candidates[@]}"; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

jf_requirements_hash() {
    # The Python version counts too: a venv rebuilt for another interpreter needs a reinstall.
    { cat requirements.txt requirements-dev.txt; .venv/bin/python -VV; } | sha256sum | cut -d' ' -f1
}

jf_ensure_venv() {
    local python stamp wanted
    # A venv whose interpreter has gone (an uninstalled pyenv version, a moved checkout) is rebuilt.
    if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c '' 2>/dev/null; then
        python="$(jf_python)" || jf_die "Python 3.11 or newer is needed: install it or set PYTHON=/path/to/python3.11"
        jf_section "Creating .venv with $python"
        "$python" -m venv --clear .venv
    fi
    stamp=.venv/.jobfleet-requirements.sha256
    wanted="$(jf_requirements_hash)"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
        jf_section "Installing requirements-dev.txt into .venv"
        .venv/bin/python -m pip install --quiet -r requirements-dev.txt
        printf '%s\n' "$wanted" >"$stamp"
    fi
}
