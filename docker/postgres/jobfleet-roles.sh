#!/usr/bin/env bash
# Jobfleet's two database roles, made from the URLs the app connects with:
#
# - the owner, the user of MIGRATION_DATABASE_URL: owns the database and its tables, and is the
#   only role that changes the schema (`python -m app migrate` connects as it);
# - the app role, the user of DATABASE_URL: the API and the fleet. It may connect and use the
#   tables (migrate grants it SELECT, INSERT, UPDATE and DELETE), but not create, alter or drop
#   them, nor make temporary tables.
#
# Each role's password is the one in its URL: the URL files are the only place a database
# password is written, so the roles and the app cannot disagree.
#
# The Postgres image runs this script once, when it initialises a new data directory (mounted in
# /docker-entrypoint-initdb.d). Run it again at any time: after changing a password in a URL
# file, or to bring a database made by an earlier stack (tables owned by the superuser) under the
# two roles. It sets both passwords again and changes nothing else that is already right.
#
#   docker compose -f docker/docker-compose.yml exec postgres /docker-entrypoint-initdb.d/jobfleet-roles.sh
#
# Reads: MIGRATION_DATABASE_URL_FILE and DATABASE_URL_FILE (Docker secrets), POSTGRES_USER (the
# superuser it connects as, default postgres). Connects with psql's own environment (PGHOST,
# PGPORT; by default the local socket, where the image trusts its superuser).

jobfleet_roles() (
    set -euo pipefail

    die() {
        printf 'jobfleet-roles: %s\n' "$*" >&2
        exit 1
    }

    # Sets the variable $1 to the contents of the file named by the variable $2, without
    # trailing newlines (or a CR).
    read_secret() {
        local path=${!2:-} value
        [[ -n $path ]] || die "$2 is not set: it names the file holding that URL"
        [[ -r $path ]] || die "$2: cannot read $path"
        value=$(<"$path")
        value=${value%$'\r'}
        [[ -n $value ]] || die "$2: $path is empty"
        printf -v "$1" '%s' "$value"
    }

    # Sets the variable $1 to $2 percent-decoded (RFC 3986: %40 is @, %3A is :, %2F is /).
    decode() {
        [[ $2 != *\\* ]] || die "$3: a backslash in the URL must be written %5C"
        [[ ${2//%[0-9A-Fa-f][0-9A-Fa-f]/} != *%* ]] || die "$3: a % in the URL must be written %25"
        printf -v "$1" '%b' "${2//%/\\x}"
    }

    # Sets <prefix>_user, <prefix>_password and <prefix>_database from the URL in the file
    # named by the variable $2, of the form scheme://user:password@host:port/database?options.
    # Messages never show the password.
    split_url() {
        local prefix=$1 name=$2 url rest userinfo location path
        local form="postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE"
        read_secret url "$name"
        [[ $url == *://*@* ]] || die "$name: the URL is not of the form $form"
        rest=${url#*://}
        userinfo=${rest%@*} # up to the last @: a host has none
        location=${rest##*@}
        [[ $userinfo == ?*:?* ]] || die "$name: the URL has no USER:PASSWORD ($form)"
        path=${location#*/}
        path=${path%%\?*}
        [[ $location == */* && -n $path ]] || die "$name: the URL names no database ($form)"
        decode "${prefix}_user" "${userinfo%%:*}" "$name"
        decode "${prefix}_password" "${userinfo#*:}" "$name"
        decode "${prefix}_database" "$path" "$name"
    }

    local owner_user owner_password owner_database app_user app_password app_database user
    local superuser=${POSTGRES_USER:-postgres}
    split_url owner MIGRATION_DATABASE_URL_FILE
    split_url app DATABASE_URL_FILE
    [[ $owner_database == "$app_database" ]] ||
        die "MIGRATION_DATABASE_URL names database $owner_database, DATABASE_URL $app_database: they must be the same"
    [[ $owner_user != "$app_user" ]] ||
        die "MIGRATION_DATABASE_URL and DATABASE_URL both name role $app_user: the app needs a role of its own"
    for user in "$owner_user" "$app_user"; do
        [[ $user != "$superuser" ]] || die "role $user is the superuser: give the app and the migrations roles of their own"
    done

    psql_as_superuser() {
        psql --no-psqlrc --quiet --set ON_ERROR_STOP=1 --username "$superuser" --dbname "$1" \
            --set owner="$owner_user" --set app="$app_user" --set database="$owner_database"
    }

    # The passwords reach psql through its environment (\getenv), never its command line.
    JOBFLEET_OWNER_PASSWORD=$owner_password JOBFLEET_APP_PASSWORD=$app_password \
        psql_as_superuser postgres <<'SQL'
\getenv owner_password JOBFLEET_OWNER_PASSWORD
\getenv app_password JOBFLEET_APP_PASSWORD
SET password_encryption = 'scram-sha-256';
SELECT format('CREATE ROLE %I', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('CREATE ROLE %I', :'app')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') \gexec
ALTER ROLE :"owner" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
ALTER ROLE :"app" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
ALTER DATABASE :"database" OWNER TO :"owner";
-- PUBLIC may connect to a new database and make temporary tables in it: only the two roles may
-- connect, and the app role may not make tables of any kind.
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO :"app";
SQL

    psql_as_superuser "$owner_database" <<'SQL'
-- Postgres 15 and later already keep CREATE on the public schema from PUBLIC; older data
-- directories (upgraded) do not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"owner";
GRANT USAGE ON SCHEMA public TO :"app";
-- Tables made before the owner existed (by the superuser, in an earlier stack) go to the owner,
-- so that migrations can change them and the app's grants come from one role. Sequences that
-- belong to a column follow their table.
SELECT format('ALTER TABLE public.%I OWNER TO %I', c.relname, :'owner')
  FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
   AND c.relowner <> :'owner'::regrole \gexec
SELECT format('ALTER SEQUENCE public.%I OWNER TO %I', c.relname, :'owner')
  FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S'
   AND c.relowner <> :'owner'::regrole
   AND NOT EXISTS (SELECT FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                      AND d.deptype IN ('a', 'i')) \gexec
SQL
    printf 'jobfleet-roles: owner role %s and app role %s ready on database %s\n' \
        "$owner_user" "$app_user" "$owner_database"
)

# The image runs an executable script and sources one that is not (a checkout that lost its
# modes): the function's body runs in a subshell either way, so nothing here leaks into the
# image's entrypoint, and a failure stops the initialisation.
jobfleet_roles
