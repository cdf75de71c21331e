#!/usr/bin/env bash
# Entrypoint of runner-test/dind: start dockerd on tcp://0.0.0.0:2375 (no TLS) and on
# /var/run/docker.sock, and stop it cleanly on `docker stop`. See the Dockerfile for the
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

args=(
  --host=unix:///var/run/docker.sock
  --host=tcp://0.0.0.0:2375
  --tls=false
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
