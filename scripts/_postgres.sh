# shellcheck shell=bash
# Shared by backup.sh and restore.sh (sourced, not run): which Postgres to talk to, and how to
# run its client tools against it, on this machine or inside the compose stack.
#
# Two ways to reach the server:
# - a URL (--url, else MIGRATION_DATABASE_URL, else DATABASE_URL, each also as *_FILE): the
#   client tools of this machine connect to it. The password is handed over in PGPASSWORD,
#   never on a command line that `ps` would show.
# - --compose: the tools run inside the stack's postgres service (`docker compose exec`), as the
#   service's POSTGRES_USER over its local socket; they are the server's own version.

JF_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC2034 # used by the scripts that source this file
JF_ROOT="$(cd "$JF_SCRIPTS/.." && pwd)"

jf_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Filled by jf_pg_target:
JF_MODE=""          # url | compose
JF_CONNINFO=""      # url: libpq keywords without dbname and password
JF_SERVER=""        # url: host:port, for messages
JF_PASSWORD=""      # url: the password, or empty
JF_DATABASE=""      # the database the dump comes from or goes to
JF_URL=""           # url: the URL
JF_URL_SOURCE=""    # url: where the URL came from (--url, or the variable's name)
JF_COMPOSE=()       # compose: the compose command with its -f option
JF_SERVICE=postgres # compose: the Postgres service

# The value of setting NAME as the app reads it: $NAME, or the contents of the file named by
# $NAME_FILE (trailing newline stripped). Both at once is an error, as in the app.
jf_setting() {
    local name="$1" file_var="${1}_FILE"
    if [[ -n "${!name:-}" && -n "${!file_var:-}" ]]; then
        jf_die "both $name and $file_var are set: give one"
    fi
    if [[ -n "${!file_var:-}" ]]; then
        [[ -r "${!file_var}" ]] || jf_die "$file_var=${!file_var}: cannot read the file"
        local value
        value="$(<"${!file_var}")"
        printf '%s' "${value%$'\n'}"
    else
        printf '%s' "${!name:-}"
    fi
}

# JF_URL: the URL to use when none was given: the owner's (migrations) first, since a dump and a
# restore read and create every table. Status 1 when neither is set.
jf_configured_url() {
    local name value
    for name in MIGRATION_DATABASE_URL DATABASE_URL; do
        # jf_die in the substitution ends only that subshell: end here too.
        value="$(jf_setting "$name")" || exit 1
        if [[ -n "$value" ]]; then
            JF_URL_SOURCE="$name"
            JF_URL="$value"
            return 0
        fi
    done
    return 1
}

# Split a SQLAlchemy or libpq URL into JF_CONNINFO, JF_SERVER, JF_DATABASE and JF_PASSWORD.
jf_parse_url() {
    local parsed
    parsed="$(python3 "$JF_SCRIPTS/_pgurl.py" split <<<"$1")" ||
        jf_die "cannot use the database URL${JF_URL_SOURCE:+ from $JF_URL_SOURCE}"
    {
        IFS= read -r JF_CONNINFO
        IFS= read -r JF_SERVER
        IFS= read -r JF_DATABASE
        IFS= read -r JF_PASSWORD || true # empty: the command substitution dropped its line
    } <<<"$parsed"
}

# The URL $1 with its database replaced by $2 (everything else kept), for the app's settings.
jf_url_with_database() {
    python3 "$JF_SCRIPTS/_pgurl.py" with-database <<<"$1"$'\n'"$2"
}

# Settle where the server is. $1 url|compose, $2 the URL (url) or the compose file (compose).
jf_pg_target() {
    JF_MODE="$1"
    if [[ "$JF_MODE" == compose ]]; then
        local file="$2"
        [[ -f "$file" ]] || jf_die "no compose file at $file"
        if [[ -n "${COMPOSE:-}" ]]; then
            read -r -a JF_COMPOSE <<<"$COMPOSE"
        elif docker compose version >/dev/null 2>&1; then
            JF_COMPOSE=(docker compose)
        elif command -v docker-compose >/dev/null 2>&1; then
            JF_COMPOSE=(docker-compose)
        else
            jf_die "neither 'docker compose' nor docker-compose is available (or set COMPOSE)"
        fi
        JF_COMPOSE+=(-f "$file")
        return 0
    fi
    jf_parse_url "$2"
    [[ -n "$JF_DATABASE" ]] || jf_die "the database URL names no database"
    jf_check_database_name "$JF_DATABASE"
}

# Full path of a client tool on this machine: $PG_BIN/<tool> when PG_BIN is set, else the
# newest /usr/lib/postgresql/<version>/bin (Debian keeps every installed version there; a newer
# pg_dump reads older servers, never the reverse), else the PATH.
jf_pg_tool_path() {
    local tool="$1" dir
    if [[ -n "${PG_BIN:-}" ]]; then
        [[ -x "$PG_BIN/$tool" ]] || jf_die "PG_BIN=$PG_BIN has no $tool"
        printf '%s' "$PG_BIN/$tool"
        return 0
    fi
    dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)"
    if [[ -n "$dir" && -x "$dir/$tool" ]]; then
        printf '%s' "$dir/$tool"
    elif command -v "$tool" >/dev/null 2>&1; then
        command -v "$tool"
    else
        jf_die "$tool not found: install the PostgreSQL client tools (Debian: postgresql-client) or set PG_BIN"
    fi
}

# Run a client tool without connecting (pg_restore --list): stdin and stdout pass through.
jf_pg() {
    local tool="$1"
    shift
    if [[ "$JF_MODE" == compose ]]; then
        "${JF_COMPOSE[@]}" exec -T "$JF_SERVICE" "$tool" "$@"
    else
        "$(jf_pg_tool_path "$tool")" "$@"
    fi
}

# Database names these scripts handle: plain ones, safe in a conninfo string unquoted.
jf_check_database_name() {
    [[ "$1" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] ||
        jf_die "database name '$1': only letters, digits, _ . and - are supported here"
}

# Run a client tool connected to database $1: stdin and stdout pass through; never prompts.
jf_pg_on() {
    local database="$1" tool="$2"
    shift 2
    if [[ "$JF_MODE" == compose ]]; then
        # -U first: the tools of an Alpine image do not look for options after arguments.
        # shellcheck disable=SC2016 # expanded by the service's shell, from its environment
        "${JF_COMPOSE[@]}" exec -T "$JF_SERVICE" sh -c \
            'tool="$1"; shift; exec "$tool" -U "${POSTGRES_USER:-postgres}" "$@"' \
            sh "$tool" --no-password -d "dbname=$database" "$@"
    else
        local -a password=()
        if [[ -n "$JF_PASSWORD" ]]; then
            password=(PGPASSWORD="$JF_PASSWORD")
        fi
        env "${password[@]}" "$(jf_pg_tool_path "$tool")" --no-password \
            -d "$JF_CONNINFO dbname=$database" "$@"
    fi
}

# One value from SQL read on stdin, run in database $1 with psql variables from "name=value"
# arguments ($2...), e.g. :'name' in the SQL.
jf_psql() {
    local database="$1" variable
    shift
    local -a variables=()
    for variable in "$@"; do
        variables+=(-v "$variable")
    done
    jf_pg_on "$database" psql -X -q -A -t -v ON_ERROR_STOP=1 "${variables[@]}"
}

# Where the target is, for messages: never a password.
jf_where() {
    if [[ "$JF_MODE" == compose ]]; then
        printf 'database %s of the compose service %s' "$JF_DATABASE" "$JF_SERVICE"
    else
        printf 'database %s on %s' "$JF_DATABASE" "$JF_SERVER"
    fi
}

# An absolute path, so that later cd's change nothing.
jf_absolute() {
    case "$1" in
        /*) printf '%s' "$1" ;;
        *) printf '%s/%s' "$PWD" "$1" ;;
    esac
}
