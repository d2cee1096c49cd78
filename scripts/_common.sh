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

jf_service_prometheus_pids() {
    # Process ids of Prometheus servers running the package's own configuration (the service),
    # one a line: not the tests' servers, which are given a --config.file of their own.
    local pid args
    for pid in $(pgrep -x prometheus 2>/dev/null || true); do
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
        if [[ "$args" != *--config.file* || "$args" == *--config.file=/etc/prometheus/* ]]; then
            printf '%s\n' "$pid"
        fi
    done
}

jf_ensure_prometheus() {
    # tests/test_dashboards.py and tests/test_prometheus.py need promtool and a real Prometheus
    # server: Debian's `prometheus` package. Installed when missing (as root, or through
    # non-interactive sudo); without them the tests cannot run, so this fails rather than
    # letting them be skipped.
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        return 0
    fi
    local -a sudo=()
    local before pid
    local hint="install Debian's prometheus package (apt-get install --no-install-recommends prometheus)"
    command -v apt-get >/dev/null 2>&1 || jf_die "promtool and prometheus are missing and there is no apt-get: $hint or put both on the PATH"
    if ((EUID != 0)); then
        sudo -n true 2>/dev/null || jf_die "promtool and prometheus are missing and installing them needs root: $hint"
        sudo=(sudo -n)
    fi
    jf_section "Installing Debian's prometheus package (promtool, prometheus)"
    before="$(jf_service_prometheus_pids)"
    # Without recommends: no node exporter (it would take port 9100, the fleet's metrics port).
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; then
        "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || true
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null ||
            jf_die "could not install Debian's prometheus package: $hint"
    fi
    # The package may start its service (port 9090); the tests run their own on free ports.
    if [[ -d /run/systemd/system ]]; then
        "${sudo[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/prometheus ]]; then
        "${sudo[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    fi
    for pid in $(jf_service_prometheus_pids); do
        if ! grep -qx "$pid" <<<"$before"; then
            "${sudo[@]}" kill "$pid" 2>/dev/null || true
        fi
    done
    if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
        jf_die "the prometheus package is installed but promtool or prometheus is not on the PATH"
    fi
}

jf_ensure_docker_compose() {
    # tests/test_compose.py renders docker/docker-compose.yml with `docker-compose config`
    # (Debian's package, Compose 1.29: no Docker engine needed). Installed when missing, as
    # root or through non-interactive sudo; without it those tests cannot run, so this fails.
    if command -v docker-compose >/dev/null 2>&1; then
        return 0
    fi
    local -a sudo=()
    local hint="install Debian's docker-compose package (apt-get install --no-install-recommends docker-compose)"
    command -v apt-get >/dev/null 2>&1 || jf_die "docker-compose is missing and there is no apt-get: $hint or put docker-compose 1.29 on the PATH"
    if ((EUID != 0)); then
        sudo -n true 2>/dev/null || jf_die "docker-compose is missing and installing it needs root: $hint"
        sudo=(sudo -n)
    fi
    jf_section "Installing Debian's docker-compose package"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1; then
        "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || true
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null ||
            jf_die "could not install Debian's docker-compose package: $hint"
    fi
    command -v docker-compose >/dev/null 2>&1 || jf_die "the docker-compose package is installed but docker-compose is not on the PATH"
}
