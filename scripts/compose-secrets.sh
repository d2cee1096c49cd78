#!/usr/bin/env bash
# The secrets of docker/docker-compose.yml, made once: a random value in a file for each, and the
# variables naming those files in docker/.env, which Compose reads.
#
#   ./scripts/compose-secrets.sh [--env-file FILE] [DIR]
#
# DIR (default docker/secrets) is made with mode 0700, so only its owner can enter it; the files
# in it are 0644, because the containers read them as their own users (postgres, grafana,
# jobfleet) through Docker's bind mounts. A file that exists is kept, never replaced: running the
# script again changes nothing, and a value of your own (the API_KEY_SECRET of an earlier
# deployment, a database URL with a password you chose) goes in its file before the first run.
# FILE (default docker/.env) gets each NAME_FILE=... line it lacks; its other lines are left
# alone. Paths given are relative to the current directory; the defaults, to the repository.
# No secret is printed.
set -euo pipefail

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
env_file=$root/docker/.env
if [[ ${1:-} == --env-file ]]; then
    [[ -n ${2:-} ]] || die "--env-file needs a file"
    env_file=$2
    shift 2
fi
[[ $# -le 1 && ${1:-} != -* ]] || die "usage: $0 [--env-file FILE] [DIR]"
dir=${1:-$root/docker/secrets}

random_hex() {
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

mkdir -p "$dir"
chmod 0700 "$dir"
dir=$(cd "$dir" && pwd)

# variable naming the file, file name, value when the file is missing
secrets=(
    "POSTGRES_PASSWORD_FILE postgres_password $(random_hex)"
    "MIGRATION_DATABASE_URL_FILE migration_database_url postgresql+psycopg2://jobfleet_owner:$(random_hex)@postgres:5432/jobfleet"
    "DATABASE_URL_FILE database_url postgresql+psycopg2://jobfleet_app:$(random_hex)@postgres:5432/jobfleet"
    "API_KEY_SECRET_FILE api_key_secret $(random_hex)"
    "GRAFANA_ADMIN_PASSWORD_FILE grafana_admin_password $(random_hex)"
)

touch "$env_file"
for entry in "${secrets[@]}"; do
    read -r variable name value <<<"$entry"
    path=$dir/$name
    if [[ -e $path ]]; then
        printf 'kept    %s\n' "$path"
    else
        (umask 022 && printf '%s' "$value" >"$path")
        printf 'made    %s\n' "$path"
    fi
    chmod 0644 "$path"
    named=$(sed -n "s/^$variable=//p" "$env_file")
    if [[ -z $named ]]; then
        printf '%s=%s\n' "$variable" "$path" >>"$env_file"
        printf 'named   %s in %s\n' "$variable" "$env_file"
    elif [[ $named != "$path" ]]; then
        printf 'note    %s in %s names %s, not %s: left as it is\n' "$variable" "$env_file" "$named" "$path"
    fi
done
printf 'Grafana: user admin, password in %s\n' "$dir/grafana_admin_password"
