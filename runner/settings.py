"""Every setting of runner in one place: its environment variable, its default, and one
rule for a bad value.

Settings are read from the environment when they are needed (not once at import), so a
test or a server may change them between runs. A value that is set but cannot be used
is an error naming the variable and what it accepts (`SettingError`, exit code 2): a
typo in `RUNNER_LEASE_SECONDS` must not silently become the default. An empty value
counts as unset.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from runner.errors import UsageError


class SettingError(UsageError):
    """An environment variable of runner holds a value it cannot use."""


# -- where things are ----------------------------------------------------------------------

DATABASE_URL_ENV = "RUNNER_DATABASE_URL"
"""Any SQLAlchemy URL; unset means SQLite in `.runner/runner.db` under the current folder."""

DEFAULT_SQLITE_PATH = Path(".runner") / "runner.db"

ARTIFACTS_DIR_ENV = "RUNNER_ARTIFACTS_DIR"
DEFAULT_ARTIFACTS_DIR = ".runner/artifacts"
"""Where `artifacts:` of tasks are copied, as ARTIFACTS_DIR/EXECUTION/TASK/ (`--artifacts-dir`)."""

HOST_PATH_MAP_ENV = "RUNNER_HOST_PATH_MAP"
"""`CONTAINER_PATH=HOST_PATH` pairs (comma-separated) that translate bind sources when the
runner runs in a container; replaces what it finds by inspecting itself (runner.hostpaths)."""

ENGINE_WAIT_SECONDS_ENV = "RUNNER_ENGINE_WAIT_SECONDS"
DEFAULT_ENGINE_WAIT_SECONDS = 60.0
"""How long a TCP engine that is coming up (Docker-in-Docker generating its certificates)
is waited for before the run fails; 0 does not wait."""

BACKEND_ENV = "RUNNER_BACKEND"
DEFAULT_BACKEND = "docker"
"""Which backend runs the containers (see `runner.backends.BACKENDS`)."""

# -- the Swarm backend ---------------------------------------------------------------------

REGISTRY_ENV = "RUNNER_REGISTRY"
"""Where the Swarm backend pushes the images of `build:` tasks (`HOST[:PORT]`, e.g. the
swarm's own `registry` service as `127.0.0.1:5000`); its nodes pull them from there by
digest. Unset: a flow with `build:` fails on Swarm, naming this variable."""

SWARM_CONSTRAINTS_ENV = "RUNNER_SWARM_CONSTRAINTS"
"""Swarm placement constraints every task obeys, comma-separated, in Swarm's own syntax:
`node.labels.pool==etl,node.role!=manager`. Also decides where workspaces go."""

SWARM_HELPER_IMAGE_ENV = "RUNNER_SWARM_HELPER_IMAGE"
DEFAULT_SWARM_HELPER_IMAGE = "debian:bookworm-slim"
"""The image of the Swarm backend's helper tasks (they fill, read and remove workspaces on
a node): it needs sh, bash, tar, base64, cp and perl; every node must be able to get it."""

SWARM_PENDING_SECONDS_ENV = "RUNNER_SWARM_PENDING_SECONDS"
DEFAULT_SWARM_PENDING_SECONDS = 60.0
"""How long a Swarm task may stay pending because no node fits it (a constraint nobody
meets, every eligible node down) before it fails with Swarm's reason."""

# -- output ---------------------------------------------------------------------------------

LOG_FORMAT_ENV = "RUNNER_LOG_FORMAT"
"""`console` (default, for people) or `json` (one JSON object a line, for machines)."""

LOG_FORMATS = ("console", "json")

DEBUG_ENV = "RUNNER_DEBUG"
"""Set to 1 to see the Python traceback of an internal error instead of one line."""

# -- executions -----------------------------------------------------------------------------

DEFAULT_CONCURRENCY = 8
"""Tasks of one execution running at once when neither the flow nor `--concurrency` says."""

QUEUE_POLL_SECONDS = 1.0
"""How often a QUEUED execution checks whether its flow has a free slot."""

# -- the database ----------------------------------------------------------------------------

DB_RETRY_SECONDS_ENV = "RUNNER_DB_RETRY_SECONDS"
"""How long a write keeps being retried while the database is unreachable (its connection
dropped, the server restarts, SQLite stays locked) before the run ends with an error;
`0` turns retrying off. Default `DEFAULT_DB_RETRY_SECONDS`."""

DEFAULT_DB_RETRY_SECONDS = 60.0
"""Seconds of one database outage that runs survive (see `DB_RETRY_SECONDS_ENV`)."""

DB_RETRY_FIRST_S = 0.2
DB_RETRY_MAX_S = 5.0
"""Pause before the first retry of a failed write, doubling up to `DB_RETRY_MAX_S`."""

# -- leases ------------------------------------------------------------------------------------

HEARTBEAT_SECONDS_ENV = "RUNNER_HEARTBEAT_SECONDS"
"""How often the process running an execution renews its lease and looks for a kill
request from another process (`runner kill`). Default `DEFAULT_HEARTBEAT_SECONDS`."""

DEFAULT_HEARTBEAT_SECONDS = 2.0

LEASE_SECONDS_ENV = "RUNNER_LEASE_SECONDS"
"""How long an execution's lease lasts without a heartbeat before another `runner`
command takes it to be orphaned (its runner died on another machine) and recovers it.
A runner on the same machine whose process is gone is noticed at once. Default
`DEFAULT_LEASE_SECONDS`; never less than three heartbeats."""

DEFAULT_LEASE_SECONDS = 30.0

# -- templates ---------------------------------------------------------------------------------

TEMPLATE_MAX_BYTES_ENV = "RUNNER_TEMPLATE_MAX_BYTES"
"""The most one rendered template field may produce (a task's `script`, `command`, one `env`
value, ...), and the largest string or list a template may build on the way: bytes, or a
size like `512k`, `4m` (powers of 1024). Default `DEFAULT_TEMPLATE_MAX_BYTES`."""

DEFAULT_TEMPLATE_MAX_BYTES = 1 << 20

TEMPLATE_TIMEOUT_ENV = "RUNNER_TEMPLATE_TIMEOUT"
"""How long the templates of one task attempt may take to render, in seconds. Default
`DEFAULT_TEMPLATE_TIMEOUT`."""

DEFAULT_TEMPLATE_TIMEOUT = 2.0


# -- the server ----------------------------------------------------------------------------

SERVE_HOST_ENV = "RUNNER_SERVE_HOST"
DEFAULT_SERVE_HOST = "127.0.0.1"
"""The address `runner serve` listens on (`--host`); 0.0.0.0 for every interface."""

SERVE_PORT_ENV = "RUNNER_SERVE_PORT"
DEFAULT_SERVE_PORT = 8080
"""The TCP port of `runner serve` (`--port`); 0 picks a free one (logged at start)."""

FLOWS_DIR_ENV = "RUNNER_FLOWS_DIR"
DEFAULT_FLOWS_DIR = "flows"
"""The folder `runner serve` loads flow files from and watches (`--flows`)."""

API_TOKEN_ENV = "RUNNER_API_TOKEN"
"""A token (`runner token create`) that clients send as `Authorization: Bearer TOKEN`."""

DEFAULT_SERVE_WORKERS = 4
"""Executions a server runs at once (`--workers`), on top of each flow's own limits."""

DEFAULT_SERVE_GRACE = "30s"
"""How long running executions may go on after SIGTERM before they are killed (`--grace`)."""

FLOWS_POLL_SECONDS = 1.0
"""How often `runner serve` looks for changed, added and removed flow files."""

TRIGGER_TICK_SECONDS = 0.25
"""How often `runner serve` looks for schedules that are due (a due time fires within
about this much, and well within a second)."""


# -- what flows may do to the host (see runner.policy, runner.secrets) ------------------------

ALLOWED_MOUNTS_ENV = "RUNNER_ALLOWED_MOUNTS"
"""Host paths a flow may bind-mount besides its own folder: absolute path prefixes
separated by `,` (`/data,C:/Users/me/Data Engg`), or `*` for any host path. The Docker
socket is never covered by `*` or by a folder holding it: it must be named itself."""

ALLOW_HOST_NETWORK_ENV = "RUNNER_ALLOW_HOST_NETWORK"
"""Set to 1 to let flows use `network: host` and `network: container:NAME`."""

ALLOWED_ENV_ENV = "RUNNER_ALLOWED_ENV"
"""Names of this process's environment that a flow may read when it declares them in
`allowed_env`, separated by `,`; globs like `AWS_*` work (but never match `RUNNER_*`
names, which must be named exactly). `--env NAME` adds names for one run."""

SECRETS_FILE_ENV = "RUNNER_SECRETS_FILE"
"""A dotenv file (`NAME=value` lines) of secrets for `{{ secret('NAME') }}`."""

SECRET_ENV_PREFIX = "RUNNER_SECRET_"
"""`{{ secret('NAME') }}` reads `RUNNER_SECRET_NAME` first, then the secrets file."""

MAX_FLOW_BYTES_ENV = "RUNNER_MAX_FLOW_BYTES"
DEFAULT_MAX_FLOW_BYTES = 10 * 1024**2
"""The largest flow file read (bytes, or with a unit: `20MiB`): a file is read whole."""

MAX_ENV_BYTES_ENV = "RUNNER_MAX_ENV_BYTES"
DEFAULT_MAX_ENV_BYTES = 1024**2
"""The largest environment of one task's container once rendered (names and values added
up): Linux refuses to start a process with more than about 2 MiB of arguments and
environment, and YAML aliases make a small file hold a big environment."""


# -- reading them ------------------------------------------------------------------------------


def _raw(name: str, environ: Mapping[str, str] | None) -> str:
    return (os.environ if environ is None else environ).get(name, "").strip()


def seconds(
    name: str,
    default: float,
    *,
    minimum: float = 0.0,
    allow_zero: bool = True,
    environ: Mapping[str, str] | None = None,
) -> float:
    """A number of seconds from `name`, or `default` when unset. Raises SettingError for
    text that is not a finite number, or one below `minimum` (or zero, unless allowed)."""
    raw = _raw(name, environ)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or (value == 0 and not allow_zero):
        least = f">= {minimum:g}" if allow_zero else f"> {minimum:g}"
        raise SettingError(f"{name} must be a number of seconds {least}, not {_shown(raw)}")
    return value


def integer(
    name: str,
    default: int,
    *,
    minimum: int,
    maximum: int,
    environ: Mapping[str, str] | None = None,
) -> int:
    """A whole number from `name` in [minimum, maximum], or `default` when unset."""
    raw = _raw(name, environ)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise SettingError(
            f"{name} must be a whole number from {minimum} to {maximum}, not {_shown(raw)}"
        )
    return value


_SIZE = re.compile(r"^(\d{1,15})\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)$")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size(
    name: str, default: int, *, minimum: int = 1, environ: Mapping[str, str] | None = None
) -> int:
    """A number of bytes from `name` (`1048576`, `512k`, `4m`, `1g`: powers of 1024), or
    `default` when unset. Raises SettingError for anything else, or a size below `minimum`."""
    raw = _raw(name, environ)
    if not raw:
        return default
    match = _SIZE.match(raw.lower())
    value = int(match[1]) * _SIZE_UNITS[match[2][:1]] if match is not None else -1
    if value < minimum:
        raise SettingError(
            f"{name} must be a size in bytes of at least {minimum} (like 1048576, 512k or 4m), "
            f"not {_shown(raw)}"
        )
    return value


def choice(
    name: str, default: str, choices: tuple[str, ...], *, environ: Mapping[str, str] | None = None
) -> str:
    """One of `choices` from `name` (case-insensitive), or `default` when unset."""
    raw = _raw(name, environ)
    if not raw:
        return default
    if raw.lower() not in choices:
        raise SettingError(f"{name} must be one of {', '.join(choices)}, not {_shown(raw)}")
    return raw.lower()


def flag(name: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `name` is set to a true value (1, true, yes, on); unset is false."""
    raw = _raw(name, environ).lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), not {_shown(raw)}")


def text(name: str, default: str = "", *, environ: Mapping[str, str] | None = None) -> str:
    """The value of `name`, stripped, or `default` when unset."""
    return _raw(name, environ) or default


def names(name: str, *, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The comma-separated entries of `name`, each stripped, empty ones left out."""
    return tuple(part.strip() for part in _raw(name, environ).split(",") if part.strip())


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:37] + "...")


# -- the settings ------------------------------------------------------------------------------


def database_url(environ: Mapping[str, str] | None = None) -> str:
    """`RUNNER_DATABASE_URL`, else SQLite in `.runner/runner.db` under the current folder."""
    return text(DATABASE_URL_ENV, environ=environ) or "sqlite:///" + str(
        DEFAULT_SQLITE_PATH.absolute()
    )


def db_retry_seconds(environ: Mapping[str, str] | None = None) -> float:
    return seconds(DB_RETRY_SECONDS_ENV, DEFAULT_DB_RETRY_SECONDS, environ=environ)


def heartbeat_seconds(environ: Mapping[str, str] | None = None) -> float:
    return seconds(
        HEARTBEAT_SECONDS_ENV, DEFAULT_HEARTBEAT_SECONDS, allow_zero=False, environ=environ
    )


def lease_seconds(environ: Mapping[str, str] | None = None) -> float:
    # A lease shorter than three heartbeats would expire under a live owner.
    lease = seconds(LEASE_SECONDS_ENV, DEFAULT_LEASE_SECONDS, allow_zero=False, environ=environ)
    return max(lease, 3 * heartbeat_seconds(environ))


def template_max_bytes(environ: Mapping[str, str] | None = None) -> int:
    # Below 1 KiB a script with a few lines of shell would not fit.
    return size(TEMPLATE_MAX_BYTES_ENV, DEFAULT_TEMPLATE_MAX_BYTES, minimum=1024, environ=environ)


def template_timeout(environ: Mapping[str, str] | None = None) -> float:
    return seconds(
        TEMPLATE_TIMEOUT_ENV, DEFAULT_TEMPLATE_TIMEOUT, allow_zero=False, environ=environ
    )


def log_format(environ: Mapping[str, str] | None = None) -> str:
    return choice(LOG_FORMAT_ENV, "console", LOG_FORMATS, environ=environ)


def artifacts_dir(environ: Mapping[str, str] | None = None) -> Path:
    return Path(text(ARTIFACTS_DIR_ENV, DEFAULT_ARTIFACTS_DIR, environ=environ))


def backend_name(environ: Mapping[str, str] | None = None) -> str:
    return text(BACKEND_ENV, DEFAULT_BACKEND, environ=environ).lower()


def engine_wait_seconds(environ: Mapping[str, str] | None = None) -> float:
    return seconds(ENGINE_WAIT_SECONDS_ENV, DEFAULT_ENGINE_WAIT_SECONDS, environ=environ)


def host_path_map(environ: Mapping[str, str] | None = None) -> str:
    return text(HOST_PATH_MAP_ENV, environ=environ)


def serve_host(environ: Mapping[str, str] | None = None) -> str:
    return text(SERVE_HOST_ENV, DEFAULT_SERVE_HOST, environ=environ)


def serve_port(environ: Mapping[str, str] | None = None) -> int:
    return integer(SERVE_PORT_ENV, DEFAULT_SERVE_PORT, minimum=0, maximum=65535, environ=environ)


def flows_dir(environ: Mapping[str, str] | None = None) -> Path:
    return Path(text(FLOWS_DIR_ENV, DEFAULT_FLOWS_DIR, environ=environ))


def api_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The token a client sends to a server, or None when unset."""
    return text(API_TOKEN_ENV, environ=environ) or None


def registry(environ: Mapping[str, str] | None = None) -> str:
    """RUNNER_REGISTRY without a scheme or a trailing slash ("" when unset)."""
    raw = text(REGISTRY_ENV, environ=environ)
    for scheme in ("https://", "http://"):
        raw = raw.removeprefix(scheme)
    if raw and (any(c.isspace() for c in raw) or not raw.strip("/")):
        raise SettingError(
            f"{REGISTRY_ENV} must be a registry address like registry.example.com:5000, "
            f"not {_shown(raw)}"
        )
    return raw.rstrip("/")


def swarm_constraints(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """RUNNER_SWARM_CONSTRAINTS as a tuple of constraints (checked by the Swarm backend)."""
    raw = text(SWARM_CONSTRAINTS_ENV, environ=environ)
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def swarm_helper_image(environ: Mapping[str, str] | None = None) -> str:
    return text(SWARM_HELPER_IMAGE_ENV, DEFAULT_SWARM_HELPER_IMAGE, environ=environ)


def swarm_pending_seconds(environ: Mapping[str, str] | None = None) -> float:
    return seconds(
        SWARM_PENDING_SECONDS_ENV, DEFAULT_SWARM_PENDING_SECONDS, allow_zero=False, environ=environ
    )


def debug(environ: Mapping[str, str] | None = None) -> bool:
    """Whether to print tracebacks of internal errors; never raises (it is read while
    reporting another error)."""
    return _raw(DEBUG_ENV, environ).lower() not in ("", "0", "false", "no", "off")


def allowed_mounts(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The entries of `RUNNER_ALLOWED_MOUNTS` as written (`runner.policy` checks them)."""
    return names(ALLOWED_MOUNTS_ENV, environ=environ)


def allow_host_network(environ: Mapping[str, str] | None = None) -> bool:
    return flag(ALLOW_HOST_NETWORK_ENV, environ=environ)


def allowed_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The names and globs of `RUNNER_ALLOWED_ENV`."""
    return names(ALLOWED_ENV_ENV, environ=environ)


def secrets_file(environ: Mapping[str, str] | None = None) -> Path | None:
    raw = text(SECRETS_FILE_ENV, environ=environ)
    return Path(raw) if raw else None


def max_flow_bytes(environ: Mapping[str, str] | None = None) -> int:
    return size(MAX_FLOW_BYTES_ENV, DEFAULT_MAX_FLOW_BYTES, environ=environ)


def max_env_bytes(environ: Mapping[str, str] | None = None) -> int:
    return size(MAX_ENV_BYTES_ENV, DEFAULT_MAX_ENV_BYTES, environ=environ)
