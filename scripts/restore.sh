#!/usr/bin/env bash
# Restore a scripts/backup.sh dump into a fresh database, then migrate it to this release.
# See docs/OPERATIONS.md, "Backups and restores".
set -euo pipefail
# shellcheck source=scripts/_postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/_postgres.sh"

usage() {
    cat <<'EOF'
Usage: scripts/restore.sh [--url URL | --compose [--compose-file FILE]] [--database NAME]
                          [--replace] [--no-owner] [--no-migrate] DUMP

Restore DUMP (made by scripts/backup.sh) into a database that does not exist yet (it is
created, which needs a role allowed to create databases) or holds no tables, in one
transaction: all of it or nothing. Then `python -m app migrate`, with the configured
MIGRATION_DATABASE_URL and DATABASE_URL pointed at that database (or the URL given when none
is configured), brings it to this release's schema when the dump is older, and grants the
app's role its rights again.

Where the database is (one of):
  --url URL            a SQLAlchemy or libpq URL, restored with this machine's pg_restore.
                       Default: MIGRATION_DATABASE_URL, else DATABASE_URL (or their *_FILE).
  --compose            the compose stack's Postgres: pg_restore runs inside its postgres
                       service, as its superuser; then the stack's roles script
                       (docker/postgres/jobfleet-roles.sh) and its migrate service run.
  --compose-file FILE  that stack's compose file (default docker/docker-compose.yml).

  --database NAME      restore into NAME on the same server instead of the URL's database
                       (with --compose, default jobfleet).
  --replace            the database exists and holds tables: drop it and create it again.
                       Stop every API, fleet and maintenance process using it first.
  --no-owner           objects belong to the restoring role and the dump's grants are left
                       out: for a server without the roles of the dumped one.
  --no-migrate         leave the schema as the dump had it.

Without --compose, migrate runs from this checkout with APP_PYTHON, else .venv/bin/python.
  -h, --help           this text
EOF
}

mode=url url="" compose_file="$JF_ROOT/docker/docker-compose.yml" database=""
replace=false migrate=true
restore_options=()
dump=""
while (($#)); do
    case "$1" in
        --url) url="${2:?--url needs a URL}"; shift 2 ;;
        --compose) mode=compose; shift ;;
        --compose-file) mode=compose; compose_file="${2:?--compose-file needs a file}"; shift 2 ;;
        --database) database="${2:?--database needs a name}"; shift 2 ;;
        --replace) replace=true; shift ;;
        --no-owner) restore_options+=(--no-owner --no-acl); shift ;;
        --no-migrate) migrate=false; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; jf_die "unknown option: $1" ;;
        *) [[ -z "$dump" ]] || jf_die "one dump at a time"; dump="$1"; shift ;;
    esac
done
[[ -n "$dump" ]] || { usage >&2; jf_die "which dump? (a file made by scripts/backup.sh)"; }
[[ -f "$dump" && -r "$dump" ]] || jf_die "cannot read $dump"
dump="$(jf_absolute "$dump")"

if [[ "$mode" == compose ]]; then
    [[ -z "$url" ]] || jf_die "--url and --compose exclude each other"
    jf_pg_target compose "$compose_file"
    JF_DATABASE="${database:-jobfleet}"
else
    if [[ -n "$url" ]]; then
        JF_URL_SOURCE=--url
    else
        jf_configured_url || jf_die "no database: give --url URL (or --compose), or set MIGRATION_DATABASE_URL or DATABASE_URL"
        url="$JF_URL"
    fi
    jf_pg_target url "$url"
    JF_DATABASE="${database:-$JF_DATABASE}"
fi
jf_check_database_name "$JF_DATABASE"
case "$JF_DATABASE" in
    postgres | template0 | template1) jf_die "$JF_DATABASE is a database of the server itself: restore into a database of Jobfleet's" ;;
esac

# The archive must be readable by this pg_restore (an archive from a newer pg_dump is not).
jf_pg pg_restore --list <"$dump" >/dev/null ||
    jf_die "$dump cannot be read by this pg_restore: not a backup.sh dump, or made by a newer pg_dump (PG_BIN, or --compose)"

# Fresh means: no such database, or one without a single table, view or sequence.
exists="$(jf_psql postgres "name=$JF_DATABASE" <<<"SELECT count(*) FROM pg_database WHERE datname = :'name';")"
owner=""
if [[ "$exists" == 1 ]]; then
    relations="$(jf_psql "$JF_DATABASE" <<<"SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%';")"
    if [[ "$relations" != 0 ]]; then
        "$replace" || jf_die "$(jf_where) is not empty ($relations tables, indexes and sequences): restore into a new database (--database NAME), or give --replace to drop and recreate it"
        may_create="$(jf_psql postgres <<<"SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user;")"
        [[ "$may_create" == t ]] ||
            jf_die "--replace drops $(jf_where) and creates it again, and this role may not create databases: give the URL of one that may (a superuser) with --url"
        owner="$(jf_psql postgres "name=$JF_DATABASE" <<<"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'name';")"
        printf 'dropping %s (owner %s)\n' "$(jf_where)" "$owner"
        # No FORCE: a process still connected makes this fail, rather than lose its work.
        jf_psql postgres "name=$JF_DATABASE" <<<'DROP DATABASE :"name";' ||
            jf_die "could not drop $(jf_where): stop the API, the fleets and maintenance first"
        exists=0
    fi
fi
if [[ "$exists" != 1 ]]; then
    may_create="$(jf_psql postgres <<<"SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user;")"
    [[ "$may_create" == t ]] ||
        jf_die "$(jf_where) must be created, and this role may not create databases: give the URL of one that may (a superuser) with --url"
    # From template0: nothing that was added to template1 can collide with the dump. The owner
    # of a replaced database stays its owner.
    if [[ -n "$owner" ]]; then
        jf_psql postgres "name=$JF_DATABASE" "owner=$owner" <<<'CREATE DATABASE :"name" OWNER :"owner" TEMPLATE template0;'
    else
        jf_psql postgres "name=$JF_DATABASE" <<<'CREATE DATABASE :"name" TEMPLATE template0;'
    fi
    printf 'created %s\n' "$(jf_where)"
fi

jf_pg_on "$JF_DATABASE" pg_restore --exit-on-error --single-transaction "${restore_options[@]}" <"$dump" ||
    jf_die "pg_restore into $(jf_where) failed; nothing of the dump was kept (one transaction)"
revision="$(jf_psql "$JF_DATABASE" <<<"SELECT string_agg(version_num, ',') FROM alembic_version;")"
counts="$(jf_psql "$JF_DATABASE" <<<"SELECT (SELECT count(*) FROM jobs) || ' jobs, ' || (SELECT count(*) FROM job_attempts) || ' attempts';")"
printf 'restored %s into %s: %s, schema revision %s\n' "$dump" "$(jf_where)" "$counts" "$revision"

# The database belongs to the owner of its tables, as migrate expects (on Postgres 15 and later
# only the database's owner may create tables in its public schema).
tables_owner="$(jf_psql "$JF_DATABASE" <<<"SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'jobs';")"
database_owner="$(jf_psql postgres "name=$JF_DATABASE" <<<"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'name';")"
if [[ -n "$tables_owner" && "$tables_owner" != "$database_owner" ]]; then
    if jf_psql postgres "name=$JF_DATABASE" "owner=$tables_owner" <<<'ALTER DATABASE :"name" OWNER TO :"owner";'; then
        printf 'the database now belongs to %s, the owner of its tables\n' "$tables_owner"
    else
        printf 'warning: %s belongs to %s, its tables to %s: make them agree as a superuser\n' \
            "$(jf_where)" "$database_owner" "$tables_owner" >&2
    fi
fi
# Grants on the database itself are not in a dump: in the Compose stack its roles script makes
# them again (only the two roles may connect), and gives any table of another owner to the owner.
if [[ "$mode" == compose && "$JF_DATABASE" == jobfleet ]]; then
    # shellcheck disable=SC2016 # expanded by the service's shell
    "${JF_COMPOSE[@]}" exec -T "$JF_SERVICE" sh -c 'if [ -f "$0" ]; then exec bash "$0"; fi' \
        /docker-entrypoint-initdb.d/jobfleet-roles.sh || jf_die "the roles script of the stack failed on $(jf_where)"
fi

if ! "$migrate"; then
    printf 'not migrated (--no-migrate): run "python -m app migrate" before starting this release on it\n'
    exit 0
fi

# Migrations: a no-op when the dump is of this release; otherwise the steps it lacks. Either way
# the app's role gets its grants again.
if [[ "$mode" == compose ]]; then
    if [[ "$JF_DATABASE" != jobfleet ]]; then
        printf 'not migrated: the migrate service of the stack works on jobfleet, not %s\n' "$JF_DATABASE"
        exit 0
    fi
    "${JF_COMPOSE[@]}" run --rm --no-deps migrate || jf_die "the migrate service failed on $(jf_where)"
else
    # The interpreter with the app's dependencies: APP_PYTHON, else the checkout's .venv.
    python="${APP_PYTHON:-}"
    if [[ -z "$python" ]]; then
        python=python3
        [[ -x "$JF_ROOT/.venv/bin/python" ]] && python="$JF_ROOT/.venv/bin/python"
    fi
    # migrate runs as the app is configured (MIGRATION_DATABASE_URL and DATABASE_URL, or their
    # *_FILE), pointed at the restored database, so that tables a migration adds belong to the
    # owner and the app's role is granted; with nothing configured, as the restoring URL.
    migration_url="$(jf_setting MIGRATION_DATABASE_URL)" || exit 1
    app_url="$(jf_setting DATABASE_URL)" || exit 1
    [[ -n "$migration_url" ]] || migration_url="${app_url:-$url}"
    [[ -n "$app_url" ]] || app_url="$migration_url"
    migration_url="$(jf_url_with_database "$migration_url" "$JF_DATABASE")"
    app_url="$(jf_url_with_database "$app_url" "$JF_DATABASE")"
    (
        cd "$JF_ROOT"
        unset DATABASE_URL_FILE MIGRATION_DATABASE_URL_FILE
        export MIGRATION_DATABASE_URL="$migration_url" DATABASE_URL="$app_url"
        "$python" -m app migrate
    ) || jf_die "python -m app migrate failed on $(jf_where)"
fi
printf 'done. Start the API and the fleets on %s; Redis needs nothing (see docs/OPERATIONS.md)\n' "$JF_DATABASE"
