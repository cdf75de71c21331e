#!/bin/sh
# Entrypoint of the runner image: run `runner "$@"` as a non-root user where the Docker
# socket's group allows it, else as root.
#
# Started as root (the image's default), it picks the user to become:
#   - the owner of the working folder when that is not root: files the runner writes into
#     a mounted checkout (.runner/runner.db, artifacts) stay the host user's;
#   - else `runner` (uid 10001);
# with the socket's group (the gid of /var/run/docker.sock, or of the unix:// socket in
# DOCKER_HOST) as a supplementary group. It becomes that user only when that user may
# both use the socket and write the working folder; otherwise it stays root, as the
# Docker CLI in a container would need (e.g. a socket owned by root:root).
#
# Started as another user (docker run --user UID:GID --group-add SOCKET_GID), or with
# RUNNER_STAY_ROOT=1, it runs runner as it is.
set -eu

if [ "$(id -u)" != 0 ] || [ "${RUNNER_STAY_ROOT:-}" = 1 ]; then
  exec runner "$@"
fi

socket=
case "${DOCKER_HOST:-}" in
  unix://*) socket=${DOCKER_HOST#unix://} ;;
  "") socket=/var/run/docker.sock ;;
esac

uid=$(stat -c %u .)
gid=$(stat -c %g .)
if [ "$uid" = 0 ]; then
  uid=10001
  gid=10001
fi

groups=--clear-groups
if [ -n "$socket" ] && [ -S "$socket" ]; then
  groups=--groups=$(stat -c %g "$socket")
fi

# shellcheck disable=SC2016 # $1 is expanded by the inner sh
if setpriv --reuid="$uid" --regid="$gid" "$groups" \
  sh -c 'test -w . && { [ -z "$1" ] || [ ! -S "$1" ] || test -w "$1"; }' - "$socket" 2>/dev/null; then
  if [ "$uid" != 10001 ]; then
    export HOME=/tmp
  fi
  exec setpriv --reuid="$uid" --regid="$gid" "$groups" runner "$@"
fi
exec runner "$@"
