#!/usr/bin/env bash
# Entrypoint of runner-test/dind: start dockerd on tcp://0.0.0.0:2375 (no TLS), or with
# DOCKER_TLS_CERTDIR on tcp://0.0.0.0:2376 with TLS, and on /var/run/docker.sock, and stop it cleanly on `docker stop`. See the Dockerfile for the
# ways to run it and the environment it reads.
#
# dockerd runs as a child, not exec'd, so that after it stopped (and stopped its
# containers) this script can remove the now empty cgroups under DIND_CGROUP_PARENT: with
# the host's cgroup tree mounted (the non-privileged fallback) they would otherwise stay
# behind on the host.
set -Eeuo pipefail

log() { printf '%s [dind] %s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$*" >&2; }

# `docker run IMAGE --debug` adds flags to dockerd; `docker run IMAGE sh` runs sh.
if [[ $# -gt 0 && "$1" != -* ]]; then
  exec "$@"
fi

: "${DIND_CGROUP_PARENT:=/dind}"
: "${DIND_STORAGE_DRIVER:=}"

# A restarted container keeps /run: stale pid files would stop dockerd and containerd.
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid

# Debian's iptables uses the nf_tables backend; a kernel without it still has the legacy one.
if ! iptables -w -nL >/dev/null 2>&1 && iptables-legacy -w -nL >/dev/null 2>&1; then
  log "iptables: nf_tables unusable, switching to iptables-legacy"
  update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
  update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null
fi

# overlay2 needs a real filesystem under it; on overlayfs (no volume at /var/lib/docker)
# only vfs works, slowly: every layer is a full copy.
if [[ -z $DIND_STORAGE_DRIVER ]]; then
  if [[ "$(stat -fc %T /var/lib/docker)" == overlayfs ]]; then
    log "/var/lib/docker is on overlayfs (not a volume?): using the vfs storage driver"
    DIND_STORAGE_DRIVER=vfs
  else
    DIND_STORAGE_DRIVER=overlay2
  fi
fi

# cgroup v2 with a private cgroup namespace (--privileged on a v2 host): processes may not
# stay in the root of the namespace once controllers are enabled for child cgroups, so move
# them to /init first, as the official docker:dind does. Only when this container's cgroup
# is the namespace's root: with the host's tree mounted, it would move the host's processes.
if [[ -f /sys/fs/cgroup/cgroup.controllers && "$(cat /proc/self/cgroup)" == "0::/" ]]; then
  mkdir -p /sys/fs/cgroup/init
  xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true
  sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers \
    >/sys/fs/cgroup/cgroup.subtree_control
fi

remove_cgroups() {
  local dir
  # Deepest first; rmdir only removes empty cgroups, so one still in use is left alone.
  for dir in /sys/fs/cgroup/*"${DIND_CGROUP_PARENT}" /sys/fs/cgroup"${DIND_CGROUP_PARENT}"; do
    [[ -d $dir ]] || continue
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

# TLS as the official docker:dind does it, when DOCKER_TLS_CERTDIR is set (GitLab CI's
# `docker:dind` service with DOCKER_TLS_CERTDIR=/certs): a CA in $DIR/ca, the server's
# certificate in $DIR/server, a client's in $DIR/client (ca.pem, cert.pem, key.pem: what a
# job mounts as DOCKER_CERT_PATH), each made only when missing; then dockerd listens on
# 2376 with --tlsverify instead of on 2375.
: "${DOCKER_TLS_CERTDIR:=}"
: "${DOCKER_TLS_SAN:=}"

make_cert() { # make_cert DIR CN EXTFILE: a key and a certificate signed by the CA
  # Made in DIR/.new and renamed into DIR, key.pem last: a job polling for the files (the
  # runner waits for them) never reads a half-written one.
  local dir=$1 cn=$2 ext=$3 new="$1/.new"
  mkdir -p "$new"
  openssl genrsa -out "${new}/key.pem" 4096 2>/dev/null
  openssl req -new -key "${new}/key.pem" -out "${new}/csr.pem" -subj "/CN=${cn}"
  openssl x509 -req -in "${new}/csr.pem" -CA "${DOCKER_TLS_CERTDIR}/ca/cert.pem" \
    -CAkey "${DOCKER_TLS_CERTDIR}/ca/key.pem" -CAcreateserial -days 825 -sha256 \
    -extfile "$ext" -out "${new}/cert.pem" 2>/dev/null
  cp "${DOCKER_TLS_CERTDIR}/ca/cert.pem" "${new}/ca.pem"
  chmod 0644 "${new}/"*.pem
  mv "${new}/ca.pem" "${new}/cert.pem" "$dir/"
  mv "${new}/key.pem" "$dir/"
  rm -rf "$new" "$ext"
}

generate_certs() {
  local dir=$DOCKER_TLS_CERTDIR san ext
  mkdir -p "${dir}/ca" "${dir}/server" "${dir}/client"
  if [[ ! -s ${dir}/ca/cert.pem ]]; then
    log "TLS: making a CA in ${dir}/ca"
    openssl genrsa -out "${dir}/ca/key.pem" 4096 2>/dev/null
    openssl req -new -x509 -days 825 -sha256 -key "${dir}/ca/key.pem" \
      -out "${dir}/ca/cert.pem" -subj "/CN=docker:dind CA"
  fi
  if [[ ! -s ${dir}/server/cert.pem ]]; then
    san="DNS:docker,DNS:localhost,DNS:$(hostname),IP:127.0.0.1"
    for ip in $(hostname -i 2>/dev/null); do san+=",IP:${ip}"; done
    [[ -n $DOCKER_TLS_SAN ]] && san+=",${DOCKER_TLS_SAN}"
    log "TLS: making the server certificate in ${dir}/server (${san})"
    ext=$(mktemp)
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" >"$ext"
    make_cert "${dir}/server" docker:dind "$ext"
  fi
  if [[ ! -s ${dir}/client/cert.pem ]]; then
    log "TLS: making a client certificate in ${dir}/client"
    ext=$(mktemp)
    printf 'extendedKeyUsage=clientAuth\n' >"$ext"
    make_cert "${dir}/client" docker:dind-client "$ext"
  fi
  # The client files are readable by the job whatever its user, as in docker:dind (and
  # so is the server's key here: test engines only); the CA's key stays private.
  chmod 0600 "${dir}/ca/key.pem"
}

if [[ -n $DOCKER_TLS_CERTDIR ]]; then
  generate_certs
  listen=(
    --host=tcp://0.0.0.0:2376
    --tlsverify
    --tlscacert="${DOCKER_TLS_CERTDIR}/server/ca.pem"
    --tlscert="${DOCKER_TLS_CERTDIR}/server/cert.pem"
    --tlskey="${DOCKER_TLS_CERTDIR}/server/key.pem"
  )
else
  listen=(--host=tcp://0.0.0.0:2375 --tls=false)
fi

args=(
  --host=unix:///var/run/docker.sock
  "${listen[@]}"
  --storage-driver="${DIND_STORAGE_DRIVER}"
  --cgroup-parent="${DIND_CGROUP_PARENT}"
  "$@"
)
log "dockerd ${args[*]}"
dockerd "${args[@]}" &
dockerd_pid=$!
trap 'kill -TERM "$dockerd_pid" 2>/dev/null || true' TERM INT

status=0
while kill -0 "$dockerd_pid" 2>/dev/null; do
  wait "$dockerd_pid" && status=0 || status=$?
done
remove_cgroups
log "dockerd exited with status ${status}"
exit "$status"
