#!/usr/bin/env bash
# Entrypoint of runner-test/postgres, modelled on the official image's docker-entrypoint.sh.
#
# As root: make PGDATA exist and belong to postgres (a bind-mounted host folder arrives
# owned by root), then re-run this script as postgres. As postgres: create the cluster
# only when PGDATA holds none (an existing one is reused untouched, which is what keeps
# the data across `docker compose down`/`up`), then exec the server so it is PID 1 and
# receives `docker stop`'s signal itself.
#
# Environment: POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust),
# POSTGRES_USER (postgres), POSTGRES_DB ($POSTGRES_USER), PGDATA, POSTGRES_INITDB_ARGS,
# POSTGRES_HOST_AUTH_METHOD (scram-sha-256). Files in /docker-entrypoint-initdb.d
# (*.sh, *.sql, *.sql.gz) run once, after the cluster is created.
set -Eeuo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }

# `docker run IMAGE -c shared_buffers=256MB` means: run postgres with these options.
if [[ "${1:-}" == -* ]]; then
  set -- postgres "$@"
fi

if [[ "${1:-}" != postgres ]]; then
  exec "$@"
fi

if [[ "$(id -u)" == 0 ]]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  # Only what is not already postgres's is changed, so a large existing cluster starts fast.
  find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
  # Some host file systems (Docker Desktop's Windows shares) refuse chmod; postgres then
  # says what is wrong itself.
  chmod 700 "$PGDATA" || :
  chown postgres:postgres /var/run/postgresql
  chmod 2777 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

create_cluster() {
  local user="${POSTGRES_USER:-postgres}"
  local db="${POSTGRES_DB:-$user}"
  local auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"

  if [[ -z "${POSTGRES_PASSWORD:-}" && "$auth" != trust ]]; then
    log "error: the database is uninitialized and POSTGRES_PASSWORD is not set."
    log "Set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust to allow anyone in without one)."
    exit 1
  fi

  log "creating a new cluster in $PGDATA (user '$user', database '$db')"
  # The password travels through a pipe, never through the command line or a file.
  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words on purpose
  initdb --username="$user" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
    ${POSTGRES_INITDB_ARGS:-} >&2

  # Remote hosts must give the password; local socket connections stay trusted, as in
  # the official image.
  printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
  printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"

  # A temporary server on the socket only: nothing outside (and no TCP health check)
  # sees it before the database exists.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >&2
  local psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$user" --no-password)
  if [[ "$db" != postgres ]]; then
    "${psql[@]}" --dbname postgres --set db="$db" <<<'CREATE DATABASE :"db";' >&2
  fi
  local f
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) log "running $f"; bash "$f" ;;
      *.sql) log "running $f"; "${psql[@]}" --dbname "$db" -f "$f" >&2 ;;
      *.sql.gz) log "running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$db" >&2 ;;
      *) if [[ -e "$f" ]]; then log "ignoring $f"; fi ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >&2
  log "cluster ready"
}

if [[ -s "$PGDATA/PG_VERSION" ]]; then
  log "reusing the cluster in $PGDATA (PostgreSQL $(cat "$PGDATA/PG_VERSION"))"
else
  create_cluster
fi

exec "$@"
