#!/usr/bin/env bash
# Back up the Jobfleet database: one pg_dump archive (custom format, compressed) that
# scripts/restore.sh restores. See docs/OPERATIONS.md, "Backups and restores".
set -euo pipefail
# shellcheck source=scripts/_postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/_postgres.sh"

usage() {
    cat <<'EOF'
Usage: scripts/backup.sh [--url URL | --compose [--compose-file FILE] [--database NAME]]
                         [--output FILE]

Dump the Jobfleet database into FILE (pg_dump's custom format). The dump is one consistent
snapshot, taken while the API and the fleet keep running.

Where the database is (one of):
  --url URL            a SQLAlchemy or libpq URL, dumped with this machine's pg_dump (the
                       newest under /usr/lib/postgresql, else the PATH; PG_BIN overrides).
                       Default: MIGRATION_DATABASE_URL, else DATABASE_URL (or their *_FILE).
  --compose            the database of the compose stack: pg_dump runs inside its postgres
                       service (docker compose exec), the same version as the server.
  --compose-file FILE  that stack's compose file (default docker/docker-compose.yml).
  --database NAME      with --compose: the database (default jobfleet).

  --output FILE        where to write (default ./jobfleet-<UTC date and time>.dump). The file
                       is readable by its owner only: it holds every payload and key hash.
  -h, --help           this text
EOF
}

mode=url url="" compose_file="$JF_ROOT/docker/docker-compose.yml" database="" output=""
while (($#)); do
    case "$1" in
        --url) url="${2:?--url needs a URL}"; shift 2 ;;
        --compose) mode=compose; shift ;;
        --compose-file) mode=compose; compose_file="${2:?--compose-file needs a file}"; shift 2 ;;
        --database) database="${2:?--database needs a name}"; shift 2 ;;
        --output | -o) output="${2:?--output needs a file}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; jf_die "unknown argument: $1" ;;
    esac
done

if [[ "$mode" == compose ]]; then
    [[ -z "$url" ]] || jf_die "--url and --compose exclude each other"
    jf_pg_target compose "$compose_file"
    JF_DATABASE="${database:-jobfleet}"
    jf_check_database_name "$JF_DATABASE"
else
    [[ -z "$database" ]] || jf_die "--database goes with --compose; with a URL, name the database in it"
    if [[ -n "$url" ]]; then
        JF_URL_SOURCE=--url
    else
        jf_configured_url || jf_die "no database: give --url URL (or --compose), or set MIGRATION_DATABASE_URL or DATABASE_URL"
        url="$JF_URL"
    fi
    jf_pg_target url "$url"
fi

output="$(jf_absolute "${output:-jobfleet-$(date -u +%Y%m%dT%H%M%SZ).dump}")"
[[ ! -e "$output" ]] || jf_die "$output exists: give another --output"
partial="$output.partial"
umask 077
# A dump that failed half-way is never left where a restore would take it for a good one.
trap 'rm -f "$partial"' EXIT

# One transaction at REPEATABLE READ: every table as of the same instant, whatever commits
# meanwhile. A table lock held by a migration (ALTER TABLE, DROP INDEX) makes the dump fail
# after a minute instead of queueing every query of the system behind it.
jf_pg_on "$JF_DATABASE" pg_dump --format=custom --lock-wait-timeout=60s >"$partial" ||
    jf_die "pg_dump of $(jf_where) failed (a newer server needs a pg_dump as new: PG_BIN, or --compose)"

# Read back the archive's table of contents: a truncated or unreadable file fails here, and a
# database without Jobfleet's tables (a wrong name in the URL) is refused.
contents="$(jf_pg pg_restore --list <"$partial")" || jf_die "the dump of $(jf_where) cannot be read back"
grep -Eq '^[0-9]+; [0-9]+ [0-9]+ TABLE DATA [^ ]+ jobs ' <<<"$contents" ||
    jf_die "$(jf_where) has no jobs table: is it the Jobfleet database?"

mv "$partial" "$output"
trap - EXIT
tables="$(grep -Ec '^[0-9]+; [0-9]+ [0-9]+ TABLE DATA ' <<<"$contents" || true)"
printf 'wrote %s (%s bytes, %s tables) from %s\n' \
    "$output" "$(wc -c <"$output" | tr -d ' ')" "$tables" "$(jf_where)"
