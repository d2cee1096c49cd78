# shellcheck shell=bash
# Shared by dev.sh and test.sh (sourced, not run): the repository root and its virtualenv.
#
# PYTHON picks the interpreter that creates .venv (default: python3.11, else python3 when it is
# 3.11 or newer). The runtime packages come from requirements.lock, as in the image (the same
# versions, checked against their hashes), then the tools of requirements-dev.txt. They are
# installed again only when a requirements file changed since the last install (their hash is
# kept in .venv).

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
    { cat requirements.txt requirements.lock requirements-dev.txt; .venv/bin/python -VV; } | sha256sum | cut -d' ' -f1
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
        jf_section "Installing requirements.lock and requirements-dev.txt into .venv"
        # The lock first: the tests run the versions the image ships. requirements-dev.txt then
        # adds the tools; the runtime pins it repeats are already satisfied.
        .venv/bin/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
        .venv/bin/python -m pip install --quiet -r requirements-dev.txt
        printf '%s\n' "$wanted" >"$stamp"
    fi
}

jf_service_pids() {
    # Process ids of a Debian package's own service (started by its install), one a line: the
    # processes named $1 that do not run a --config.file of their own, as the tests' servers do.
    local name=$1 pid args
    for pid in $(pgrep -x "${name:0:15}" 2>/dev/null || true); do
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
        if [[ "$args" != *--config.file* || "$args" == *--config.file=/etc/* ]]; then
            printf '%s\n' "$pid"
        fi
    done
}

jf_ensure_debian_package() {
    # jf_ensure_debian_package PACKAGE "WHO NEEDS IT" COMMAND... : installs Debian's PACKAGE
    # (without recommends) when one of the COMMANDs is missing, as root or through
    # non-interactive sudo, and stops the service the package may start, so that the tests'
    # own servers find their ports free. Without the commands the tests that need them cannot
    # run, so this fails rather than letting them be skipped.
    local package=$1 purpose=$2
    shift 2
    local command missing=0 before pid
    for command in "$@"; do
        command -v "$command" >/dev/null 2>&1 || missing=1
    done
    ((missing)) || return 0
    local -a sudo=()
    local hint="install Debian's $package package (apt-get install --no-install-recommends $package)"
    command -v apt-get >/dev/null 2>&1 || jf_die "$* missing ($purpose) and there is no apt-get: $hint or put them on the PATH"
    if ((EUID != 0)); then
        sudo -n true 2>/dev/null || jf_die "$* missing ($purpose) and installing them needs root: $hint"
        sudo=(sudo -n)
    fi
    jf_section "Installing Debian's $package package ($*)"
    before="$(jf_service_pids "$package")"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null 2>&1; then
        "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || true
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null ||
            jf_die "could not install Debian's $package package: $hint"
    fi
    if [[ -d /run/systemd/system ]]; then
        "${sudo[@]}" systemctl disable --now "$package" >/dev/null 2>&1 || true
    elif [[ -x "/etc/init.d/$package" ]]; then
        "${sudo[@]}" "/etc/init.d/$package" stop >/dev/null 2>&1 || true
    fi
    for pid in $(jf_service_pids "$package"); do
        if ! grep -qx "$pid" <<<"$before"; then
            "${sudo[@]}" kill "$pid" 2>/dev/null || true
        fi
    done
    for command in "$@"; do
        command -v "$command" >/dev/null 2>&1 || jf_die "the $package package is installed but $command is not on the PATH"
    done
}

jf_ensure_test_tools() {
    # Without recommends, prometheus brings no node exporter (it would take port 9100, the
    # fleet's metrics port).
    jf_ensure_debian_package prometheus "tests/test_dashboards.py, test_prometheus.py, test_alerts.py" promtool prometheus
    jf_ensure_debian_package prometheus-alertmanager "tests/test_alerts.py, test_prometheus.py" amtool prometheus-alertmanager
    jf_ensure_debian_package docker-compose "tests/test_compose.py renders the compose file" docker-compose
    # Their version must be at least the test server's major version (pg_dump refuses a newer
    # server).
    jf_ensure_debian_package postgresql-client "tests/test_backup.py runs scripts/backup.sh and restore.sh" pg_dump pg_restore psql
    # The browser tests drive the distribution's Chromium through Playwright (pinned in
    # requirements-dev.txt, its driver inside the pip package); Playwright's own browser
    # downloads are never used.
    jf_ensure_debian_package chromium "tests/ui/ drives a headless Chromium" chromium
}
