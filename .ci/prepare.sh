#!/usr/bin/env bash
# .ci/prepare.sh — prepare a Debian bookworm machine to develop and test `runner`.
#
# Installs the system packages, starts the Docker engine, makes sure the base image
# debian:bookworm-slim exists (pulled, or built with debootstrap when no registry is
# reachable), starts PostgreSQL with the test role/database, builds the task images
# in images/ (and runner-test/dind for the remote-engine tests) and installs the package
# with its dev extra. Every step is idempotent and cheap when the machine is already
# prepared. Needs root (or sudo).
#
#   bash .ci/prepare.sh                 # prepare this machine (what .ci/run does first)
#   source .ci/prepare.sh               # only defines the functions and settings below
#
# Settings (environment variables, all optional):
#   RUNNER_BASE_IMAGE        base image tag to ensure         (debian:bookworm-slim)
#   RUNNER_ROOTFS_DIR        debootstrap cache directory      (/var/cache/runner/rootfs-bookworm)
#   RUNNER_DEBIAN_MIRROR     mirror for debootstrap           (http://deb.debian.org/debian)
#   RUNNER_PULL_TIMEOUT      seconds allowed for docker pull  (60)
#   RUNNER_DOCKERD_LOG       log file of a dockerd we start   (/var/log/dockerd.log)
#   RUNNER_PG_VERSION / RUNNER_PG_CLUSTER                     (15 / main)
#   RUNNER_TASK_IMAGES       task images to build from images/ (python node shell)
#   RUNNER_CACHE_DIR         where the pip-install stamp lives (/var/cache/runner)
#
# After preparation RUNNER_TEST_POSTGRES_URL is exported (when sourced) and printed.

RUNNER_REPO_ROOT="${RUNNER_REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
RUNNER_BASE_IMAGE="${RUNNER_BASE_IMAGE:-debian:bookworm-slim}"
RUNNER_DEBIAN_SUITE="${RUNNER_DEBIAN_SUITE:-bookworm}"
RUNNER_ROOTFS_DIR="${RUNNER_ROOTFS_DIR:-/var/cache/runner/rootfs-bookworm}"
RUNNER_DEBIAN_MIRROR="${RUNNER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
RUNNER_PULL_TIMEOUT="${RUNNER_PULL_TIMEOUT:-60}"
RUNNER_DOCKERD_LOG="${RUNNER_DOCKERD_LOG:-/var/log/dockerd.log}"
RUNNER_DOCKERD_WAIT="${RUNNER_DOCKERD_WAIT:-60}"
RUNNER_PG_VERSION="${RUNNER_PG_VERSION:-15}"
RUNNER_PG_CLUSTER="${RUNNER_PG_CLUSTER:-main}"
RUNNER_PG_USER="${RUNNER_PG_USER:-runner}"
RUNNER_PG_PASSWORD="${RUNNER_PG_PASSWORD:-runner}"
RUNNER_PG_DATABASE="${RUNNER_PG_DATABASE:-runner_test}"
RUNNER_TASK_IMAGES="${RUNNER_TASK_IMAGES:-python node shell}"
RUNNER_APT_PACKAGES="${RUNNER_APT_PACKAGES:-docker.io iptables debootstrap postgresql docker-compose faketime}"

# The legacy builder is what the Docker SDK (docker-py) uses, so images built here share
# their layer cache with images the tests build; BuildKit would also try to resolve the
# locally imported base image against a registry.
export DOCKER_BUILDKIT=0

declare -a RUNNER_STEP_TIMES=()

say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run as root: directly when we are root, else through sudo.
as_root() {
  if [[ ${EUID} -eq 0 ]]; then "$@"; else sudo -- "$@"; fi
}

as_postgres() {
  if [[ ${EUID} -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && sudo -u postgres -- "$@")
  fi
}

now() { date +%s.%N; }

# run_step NAME FUNCTION [ARGS...] — print "==> NAME", run it, record its duration.
run_step() {
  local name=$1 t0 t1 dt
  shift
  say "==> ${name}"
  t0=$(now)
  "$@"
  t1=$(now)
  dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  say "    (${name}: ${dt}s)"
  RUNNER_STEP_TIMES+=("$(printf '%-44s %7ss' "${name}" "${dt}")")
}

print_step_times() {
  local line
  say "==> step durations"
  for line in "${RUNNER_STEP_TIMES[@]}"; do say "    ${line}"; done
}

pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# 1. System packages --------------------------------------------------------------------
prepare_packages() {
  local pkg packages missing=()
  read -ra packages <<<"${RUNNER_APT_PACKAGES}"
  for pkg in "${packages[@]}"; do
    pkg_installed "$pkg" || missing+=("$pkg")
  done
  # pip itself: a bare Debian python3 has no pip.
  if ! python3 -m pip --version >/dev/null 2>&1; then
    missing+=(python3-pip)
  fi
  if [[ ${#missing[@]} -eq 0 ]]; then
    say "    all packages present (${RUNNER_APT_PACKAGES})"
    return 0
  fi
  say "    missing: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
    install -y "${packages[@]}" "${missing[@]}"
}

# 2. Docker engine ----------------------------------------------------------------------
prepare_docker() {
  if docker info >/dev/null 2>&1; then
    say "    Docker engine already running ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    return 0
  fi
  command -v dockerd >/dev/null || die "dockerd not found (is docker.io installed?)"
  # A dockerd that died uncleanly leaves its pid file behind and refuses to start again.
  local pidfile=/var/run/docker.pid
  if [[ -f $pidfile ]] && [[ ! -d /proc/$(cat "$pidfile" 2>/dev/null || echo none) ]]; then
    warn "removing stale ${pidfile}"
    as_root rm -f "$pidfile"
  fi
  say "    starting dockerd (log: ${RUNNER_DOCKERD_LOG})"
  # No stdin/stdout inherited: a CI that waits for our pipes must not wait for dockerd.
  local pid i
  pid=$(as_root sh -c "nohup dockerd >'${RUNNER_DOCKERD_LOG}' 2>&1 </dev/null & echo \$!")
  for ((i = 0; i < RUNNER_DOCKERD_WAIT; i++)); do
    if docker info >/dev/null 2>&1; then
      say "    Docker engine up after ~${i}s (dockerd pid ${pid}, $(docker version --format '{{.Server.Version}}' 2>/dev/null))"
      return 0
    fi
    [[ -d /proc/${pid} ]] || break # dockerd exited: no point in waiting
    sleep 1
  done
  if [[ -d /proc/${pid} ]]; then
    printf 'error: Docker engine did not come up within %ss; tail of %s:\n' \
      "${RUNNER_DOCKERD_WAIT}" "${RUNNER_DOCKERD_LOG}" >&2
  else
    printf 'error: dockerd exited during startup; tail of %s:\n' "${RUNNER_DOCKERD_LOG}" >&2
  fi
  as_root tail -n 50 "${RUNNER_DOCKERD_LOG}" >&2 || true
  exit 1
}

# 3. Base image -------------------------------------------------------------------------
# Make the rootfs look like the official slim image: no docs/man/locales, no apt caches,
# and the same apt sources (main + updates + security).
slim_rootfs() {
  local dir=$1
  as_root rm -rf "${dir}"/var/cache/apt/archives/*.deb "${dir}"/var/cache/apt/*.bin \
    "${dir}"/var/lib/apt/lists/* \
    "${dir}"/usr/share/man/* "${dir}"/usr/share/info/* "${dir}"/usr/share/groff/* \
    "${dir}"/usr/share/lintian/overrides/*
  as_root find "${dir}/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
    -exec rm -rf {} + 2>/dev/null || true
  as_root find "${dir}/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
  as_root mkdir -p "${dir}/etc/dpkg/dpkg.cfg.d" "${dir}/etc/apt/apt.conf.d" "${dir}/etc/apt/sources.list.d"
  as_root tee "${dir}/etc/dpkg/dpkg.cfg.d/docker" >/dev/null <<'EOF'
# like the official debian:*-slim images: keep images small
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  as_root tee "${dir}/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  as_root tee "${dir}/etc/apt/apt.conf.d/docker-no-languages" >/dev/null <<'EOF'
Acquire::Languages "none";
EOF
  as_root rm -f "${dir}/etc/apt/sources.list"
  as_root tee "${dir}/etc/apt/sources.list.d/debian.sources" >/dev/null <<EOF
Types: deb
URIs: ${RUNNER_DEBIAN_MIRROR}
Suites: ${RUNNER_DEBIAN_SUITE} ${RUNNER_DEBIAN_SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${RUNNER_DEBIAN_MIRROR%/debian}/debian-security
Suites: ${RUNNER_DEBIAN_SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

# Unmount anything a failed debootstrap left mounted below $1, then delete it.
remove_rootfs() {
  local dir=$1 mnt
  [[ -n $dir && $dir != / && -e $dir ]] || return 0
  while read -r mnt; do
    [[ -n $mnt ]] && as_root umount -l "$mnt" 2>/dev/null || true
  done < <(awk -v d="${dir}/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
  as_root rm -rf --one-file-system "$dir"
}

# The cache dir only ever holds a complete rootfs: debootstrap runs in DIR.partial, which
# is renamed to DIR once it succeeded (and was slimmed).
build_rootfs() {
  local dir=$RUNNER_ROOTFS_DIR partial="${RUNNER_ROOTFS_DIR}.partial"
  if [[ -x ${dir}/usr/bin/apt-get && -f ${dir}/etc/os-release ]]; then
    say "    reusing debootstrap rootfs ${dir}"
    return 0
  fi
  command -v debootstrap >/dev/null || die "debootstrap not found"
  remove_rootfs "$partial"
  as_root mkdir -p "$(dirname "$dir")"
  say "    debootstrap --variant=minbase ${RUNNER_DEBIAN_SUITE} ${partial} ${RUNNER_DEBIAN_MIRROR}"
  if ! as_root debootstrap --variant=minbase "${RUNNER_DEBIAN_SUITE}" "$partial" \
    "${RUNNER_DEBIAN_MIRROR}" >"${partial}.log" 2>&1; then
    tail -n 40 "${partial}.log" >&2
    remove_rootfs "$partial"
    die "debootstrap failed (full log: ${partial}.log)"
  fi
  slim_rootfs "$partial"
  remove_rootfs "$dir"
  as_root mv "$partial" "$dir"
  as_root rm -f "${partial}.log"
}

import_rootfs() {
  local dir=$RUNNER_ROOTFS_DIR
  say "    docker import ${dir} -> ${RUNNER_BASE_IMAGE}"
  as_root tar -C "$dir" --numeric-owner --one-file-system \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./debootstrap' \
    -c . |
    docker import \
      --change 'CMD ["bash"]' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --message "debootstrap --variant=minbase ${RUNNER_DEBIAN_SUITE} (runner .ci/prepare.sh)" \
      - "${RUNNER_BASE_IMAGE}" >/dev/null
}

prepare_base_image() {
  if docker image inspect "${RUNNER_BASE_IMAGE}" >/dev/null 2>&1; then
    say "    ${RUNNER_BASE_IMAGE} present ($(docker image inspect -f '{{.Id}}' "${RUNNER_BASE_IMAGE}" | cut -c1-19))"
    return 0
  fi
  say "    trying docker pull ${RUNNER_BASE_IMAGE} (timeout ${RUNNER_PULL_TIMEOUT}s)"
  if timeout "${RUNNER_PULL_TIMEOUT}" docker pull -q "${RUNNER_BASE_IMAGE}" >/dev/null 2>&1 &&
    docker image inspect "${RUNNER_BASE_IMAGE}" >/dev/null 2>&1; then
    say "    pulled ${RUNNER_BASE_IMAGE}"
    return 0
  fi
  say "    pull failed (no registry reachable?); building it with debootstrap"
  build_rootfs
  import_rootfs
  docker run --rm "${RUNNER_BASE_IMAGE}" sh -c '. /etc/os-release && echo "    imported: $PRETTY_NAME"'
}

# 4. PostgreSQL -------------------------------------------------------------------------
pg_cluster_field() { # FIELD-NUMBER of our cluster's pg_lsclusters line (empty: no cluster)
  pg_lsclusters -h 2>/dev/null |
    awk -v v="${RUNNER_PG_VERSION}" -v c="${RUNNER_PG_CLUSTER}" -v f="$1" '$1 == v && $2 == c { print $f }'
}

pg_sql() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -tA "$@"; }

prepare_postgres() {
  local ver=$RUNNER_PG_VERSION cl=$RUNNER_PG_CLUSTER status port i
  command -v pg_lsclusters >/dev/null || die "pg_lsclusters not found (is postgresql installed?)"
  if [[ -z $(pg_cluster_field 1) ]]; then
    say "    creating cluster ${ver}/${cl}"
    as_root pg_createcluster "$ver" "$cl"
  fi
  status=$(pg_cluster_field 4)
  if [[ $status == online* ]]; then
    say "    cluster ${ver}/${cl} already ${status}"
  else
    say "    starting cluster ${ver}/${cl} (was ${status})"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$cl" start
  fi
  port=$(pg_cluster_field 3)
  for ((i = 0; i < 30; i++)); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 1
  done
  pg_isready -h 127.0.0.1 -p "$port" >/dev/null ||
    die "PostgreSQL ${ver}/${cl} not accepting connections on 127.0.0.1:${port}"

  pg_sql -d postgres -p "$port" <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${RUNNER_PG_USER}') THEN
    CREATE ROLE "${RUNNER_PG_USER}" LOGIN CREATEDB PASSWORD '${RUNNER_PG_PASSWORD}';
  ELSE
    ALTER ROLE "${RUNNER_PG_USER}" LOGIN CREATEDB PASSWORD '${RUNNER_PG_PASSWORD}';
  END IF;
END
\$\$;
SQL
  if [[ -z $(pg_sql -d postgres -p "$port" -c "SELECT 1 FROM pg_database WHERE datname = '${RUNNER_PG_DATABASE}'") ]]; then
    as_postgres createdb -p "$port" -O "${RUNNER_PG_USER}" "${RUNNER_PG_DATABASE}"
  else
    pg_sql -d postgres -p "$port" -c "ALTER DATABASE \"${RUNNER_PG_DATABASE}\" OWNER TO \"${RUNNER_PG_USER}\""
  fi
  PGPASSWORD="${RUNNER_PG_PASSWORD}" psql -X -q -h 127.0.0.1 -p "$port" -U "${RUNNER_PG_USER}" \
    -d "${RUNNER_PG_DATABASE}" -tAc 'SELECT 1' >/dev/null ||
    die "cannot log in as ${RUNNER_PG_USER} to ${RUNNER_PG_DATABASE} on 127.0.0.1:${port}"
  export RUNNER_TEST_POSTGRES_URL="postgresql+psycopg://${RUNNER_PG_USER}:${RUNNER_PG_PASSWORD}@127.0.0.1:${port}/${RUNNER_PG_DATABASE}"
  say "    RUNNER_TEST_POSTGRES_URL=${RUNNER_TEST_POSTGRES_URL}"
}

# 5. Task images ------------------------------------------------------------------------
# build_image TAG NAME LOG — docker build images/NAME as TAG, its output in LOG.
build_image() {
  local tag=$1 name=$2 log=$3 dir t0
  dir="${RUNNER_REPO_ROOT}/images/${name}"
  [[ -f ${dir}/Dockerfile ]] || die "missing ${dir}/Dockerfile"
  t0=$SECONDS
  if ! docker build -t "$tag" "$dir" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    rm -f "$log"
    die "docker build of images/${name} failed"
  fi
  say "    ${tag} $(docker image inspect -f '{{.Id}}' "$tag" | cut -c1-19)" \
    "($((SECONDS - t0))s, $(grep -c 'Using cache' "$log" || true) cached steps)"
}

prepare_task_images() {
  local name log
  log=$(mktemp)
  for name in ${RUNNER_TASK_IMAGES}; do
    build_image "runner/${name}:latest" "$name" "$log"
  done
  # The Docker-in-Docker engine of tests/integration/test_remote_daemon.py: built here so
  # the tests find it warm (they rebuild it, from this cache, when images/dind changed).
  build_image runner-test/dind:latest dind "$log"
  rm -f "$log"
}

# 6. Python package ---------------------------------------------------------------------
# Skipped when nothing changed since the last install: same pyproject.toml, interpreter and
# checkout, and `runner` still imports from this checkout (the editable install maps the
# package directory, so new modules need no reinstall).
python_install_stamp() {
  {
    cat "${RUNNER_REPO_ROOT}/pyproject.toml"
    python3 -c 'import sys; print(sys.executable, sys.version)'
    printf '%s\n' "${RUNNER_REPO_ROOT}"
  } | sha256sum | cut -d' ' -f1
}

python_install_ok() {
  (cd / && python3 - "${RUNNER_REPO_ROOT}" <<'PY'
import importlib.metadata, os, sys
import runner, pytest  # noqa: F401
importlib.metadata.version("runner")
sys.exit(0 if os.path.realpath(runner.__file__).startswith(os.path.realpath(sys.argv[1]) + os.sep) else 1)
PY
  ) >/dev/null 2>&1
}

prepare_python() {
  local args=(install --disable-pip-version-check --progress-bar off -q -e ".[dev]") stdlib
  local stampfile="${RUNNER_CACHE_DIR:-/var/cache/runner}/pip-install.stamp" stamp
  stamp=$(python_install_stamp)
  if [[ -f $stampfile && $(cat "$stampfile") == "$stamp" ]] && python_install_ok; then
    say "    runner[dev] already installed (editable) for $(python3 --version) at $(command -v python3)"
    return 0
  fi
  stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
  if [[ -f ${stdlib}/EXTERNALLY-MANAGED && ${EUID} -eq 0 ]]; then
    args+=(--break-system-packages) # a throwaway CI machine: no venv needed
  fi
  say "    $(python3 --version) at $(command -v python3): pip ${args[*]}"
  (cd "${RUNNER_REPO_ROOT}" && PIP_ROOT_USER_ACTION=ignore python3 -m pip "${args[@]}")
  python_install_ok || die "runner does not import from ${RUNNER_REPO_ROOT} after pip install"
  as_root mkdir -p "$(dirname "$stampfile")"
  printf '%s\n' "$stamp" | as_root tee "$stampfile" >/dev/null
}

prepare_all() {
  run_step "install system packages" prepare_packages
  run_step "start Docker engine" prepare_docker
  run_step "ensure base image ${RUNNER_BASE_IMAGE}" prepare_base_image
  run_step "start PostgreSQL and test database" prepare_postgres
  run_step "build task images" prepare_task_images
  run_step "install runner[dev]" prepare_python
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  prepare_all
  print_step_times
  say "export RUNNER_TEST_POSTGRES_URL='${RUNNER_TEST_POSTGRES_URL}'"
fi
