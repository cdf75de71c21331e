"""How runner reaches its Docker engine: which engine, waiting for one that is coming up,
TLS files, and whether the runner itself runs in a container of that engine.

Besides backends/docker.py, the only module that imports `docker`.

Which engine: the Docker CLI's rule (`choose_engine`), implemented here rather than left
to docker-py so that it is the same on docker 7.1 (whose `from_env` reads no context) and
7.2 (whose `from_env` follows the current context but silently falls back to the local
socket when a named context does not exist):

1. DOCKER_HOST, with DOCKER_TLS_VERIFY / DOCKER_CERT_PATH; it wins over DOCKER_CONTEXT;
2. DOCKER_CONTEXT, a context name (`default` is the local engine);
3. `currentContext` of DOCKER_CONFIG/config.json (default ~/.docker/config.json);
4. the local engine: unix:///var/run/docker.sock, or npipe:////./pipe/docker_engine on
   Windows.

A context is ~/.docker/contexts/meta/SHA256(NAME)/meta.json (its `Endpoints.docker.Host`
and `SkipTLSVerify`) with TLS files in ~/.docker/contexts/tls/SHA256(NAME)/docker/. A
context named by DOCKER_CONTEXT or config.json that does not exist is an error, as in the
CLI, never a silent fall back to another engine.

Waiting (`connect`): a TCP engine that refuses connections, resets them or whose name does
not resolve yet, and TLS files that do not exist yet, are an engine coming up (a CI
service starting next to the job while it writes its certificates: gitlab-runner#27384).
runner retries for RUNNER_ENGINE_WAIT_SECONDS (default `DEFAULT_ENGINE_WAIT_SECONDS`),
then fails with one line saying what it waited for. A local socket is not waited for.

TLS: the certificate files are checked before connecting, so that a missing or broken
file is one line naming the file and the variable (DOCKER_CERT_PATH, or the context).
The engine's CA wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, which requests would
otherwise let replace the client's `verify` (psf/requests#3829): a CI machine behind a
TLS-inspecting proxy sets them for its proxy's CA, not for the engine's.

Which container the runner runs in (`find_own_container`): /proc/self/mountinfo (the
engine bind-mounts .../containers/ID/hostname, hosts and resolv.conf), /proc/self/cgroup
(cgroup v1 paths end with the id) and the hostname (the short id unless --hostname was
given) give candidate ids; one the engine knows with our hostname is us. Its mounts say
which host folder each of our folders is (runner/hostpaths.py translates with them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import requests
import urllib3.exceptions
from docker.tls import TLSConfig
from docker.transport import UnixHTTPAdapter
from structlog.typing import FilteringBoundLogger

from runner.errors import BackendError
from runner.hostpaths import BindSourceTranslator, EngineFacts, Platform, runner_place
from runner.logs import module_logger
from runner.settings import (
    DEFAULT_ENGINE_WAIT_SECONDS,
    ENGINE_WAIT_SECONDS_ENV,
    engine_wait_seconds,
    host_path_map,
)

WAIT_PAUSE_S = 0.5
MAX_POOL_SIZE = 64
"""Connections kept per engine: every running task holds one for its log stream and one for
wait, and docker-py's default of 10 makes urllib3 discard (and warn about) the rest."""
DEFAULT_UNIX_HOST = "unix:///var/run/docker.sock"
DEFAULT_NPIPE_HOST = "npipe:////./pipe/docker_engine"
DEFAULT_CONTEXT = "default"

Translate = Callable[[BaseException, str, str], BackendError]
"""backends/docker.py's translation of an engine error: (error, action, host) -> BackendError."""

_CONTAINER_ID = re.compile(r"containers/([0-9a-f]{64})/")
_CGROUP_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?$")
_SHORT_ID = re.compile(r"^[0-9a-f]{12}$")


# -- which engine -------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    """The client's TLS material and where it came from, for messages."""

    folder: Path
    verify: bool
    origin: str  # "DOCKER_CERT_PATH=/certs/client", "the TLS files of context 'ci'", ...
    client_cert: bool = True  # cert.pem + key.pem expected (always, from DOCKER_CERT_PATH)

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.folder / "cert.pem"

    @property
    def key(self) -> Path:
        return self.folder / "key.pem"

    def needed(self) -> tuple[Path, ...]:
        files = (self.cert, self.key) if self.client_cert else ()
        return (self.ca, *files) if self.verify else files


@dataclass(frozen=True)
class EngineChoice:
    """The engine to use and why: `runner info` prints `host` and `reason`."""

    host: str
    reason: str
    tls: TLSFiles | None = None
    context: str | None = None


def choose_engine(
    environ: Mapping[str, str] | None = None, platform: Platform | None = None
) -> EngineChoice:
    """Apply the Docker CLI's rule (module docstring) to `environ` (default os.environ)."""
    env = os.environ if environ is None else environ
    system = platform if platform is not None else _platform()
    host = env.get("DOCKER_HOST", "").strip()
    named = env.get("DOCKER_CONTEXT", "").strip()
    if host:
        reason = "DOCKER_HOST is set"
        if named:
            reason += f" (it wins over DOCKER_CONTEXT={named})"
        return EngineChoice(host, reason, _tls_from_env(env, host))
    config_dir = _config_dir(env)
    if named:
        return _from_context(named, config_dir, system, f"DOCKER_CONTEXT={named}")
    config_file = config_dir / "config.json"
    current = _current_context(config_file)
    if current:
        return _from_context(current, config_dir, system, f"the current context of {config_file}")
    return EngineChoice(
        _default_host(system),
        "the local engine: DOCKER_HOST and DOCKER_CONTEXT are unset and "
        f"{config_file} names no current context",
    )


def _platform() -> Platform:
    return "windows" if os.name == "nt" else "posix"


def _default_host(platform: Platform) -> str:
    return DEFAULT_NPIPE_HOST if platform == "windows" else DEFAULT_UNIX_HOST


def _tls_from_env(env: Mapping[str, str], host: str) -> TLSFiles | None:
    """docker-py's and the CLI's reading: TLS when DOCKER_TLS_VERIFY is non-empty (then
    verified) or DOCKER_CERT_PATH is set; the files default to ~/.docker."""
    verify = env.get("DOCKER_TLS_VERIFY", "") != ""
    cert_path = env.get("DOCKER_CERT_PATH", "").strip()
    if not (verify or cert_path) or not host.startswith(("tcp://", "https://", "http://")):
        return None
    if cert_path:
        return TLSFiles(Path(cert_path), verify, f"DOCKER_CERT_PATH={cert_path}")
    folder = _home(env) / ".docker"
    return TLSFiles(folder, verify, f"DOCKER_CERT_PATH (unset, so {folder})")


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME") or env.get("USERPROFILE")
    return Path(home) if home else Path.home()


def _config_dir(env: Mapping[str, str]) -> Path:
    given = env.get("DOCKER_CONFIG", "").strip()
    return Path(given) if given else _home(env) / ".docker"


def _current_context(config_file: Path) -> str | None:
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read the Docker CLI's config {config_file}: {exc}") from exc
    name = data.get("currentContext") if isinstance(data, dict) else None
    return (str(name).strip() or None) if name else None


def context_id(name: str) -> str:
    """The folder name of a context under contexts/meta and contexts/tls (as the CLI)."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def _from_context(name: str, config_dir: Path, platform: Platform, why: str) -> EngineChoice:
    if name == DEFAULT_CONTEXT:
        return EngineChoice(
            _default_host(platform), f"{why} names the 'default' context: the local engine"
        )
    meta_file = config_dir / "contexts" / "meta" / context_id(name) / "meta.json"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        endpoint = meta["Endpoints"]["docker"]
        host = str(endpoint["Host"]).strip()
    except FileNotFoundError:
        raise BackendError(
            f"Docker context '{name}' ({why}) does not exist: no {meta_file}. "
            "List contexts with 'docker context ls', or unset the variable"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackendError(
            f"Docker context '{name}' ({why}): cannot read {meta_file}: "
            f"{exc if not isinstance(exc, KeyError) else f'no Endpoints.docker.{exc.args[0]}'}"
        ) from exc
    if not host:
        raise BackendError(f"Docker context '{name}' ({why}) has no Endpoints.docker.Host")
    tls = None
    tls_dir = config_dir / "contexts" / "tls" / context_id(name) / "docker"
    if tls_dir.is_dir() and host.startswith("tcp://"):
        verify = not bool(endpoint.get("SkipTLSVerify", False))
        has_client_cert = (tls_dir / "cert.pem").exists() or (tls_dir / "key.pem").exists()
        tls = TLSFiles(
            tls_dir, verify, f"the TLS files of context '{name}' ({tls_dir})", has_client_cert
        )
    return EngineChoice(host, f"{why} names context '{name}'", tls, name)


# -- connecting -----------------------------------------------------------------------------


class _EngineAPI(docker.APIClient):
    """docker-py's APIClient, with three changes:

    - its `verify` (the engine's CA, or False) cannot be replaced by REQUESTS_CA_BUNDLE /
      CURL_CA_BUNDLE: requests applies those to every request that does not pass `verify`
      itself, over the session's own (psf/requests#3829). Proxies and the rest of the
      environment still apply, as with the Docker CLI;
    - the environment is read once per engine address, not on every request (requests
      walks all of os.environ for proxy variables each time: a tenth of the client's CPU
      per container);
    - on a Unix socket, one connection pool: docker-py keys its pools by each request's
      full URL, so every new container id or query opened a new pool and connection and
      closed one of the 25 kept, and connections were hardly ever reused.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._environment: dict[tuple[str, str, Any, Any, Any], Any] = {}
        super().__init__(**kwargs)  # asks the engine its version: set up what that uses first
        adapter = getattr(self, "_custom_adapter", None)
        if type(adapter) is UnixHTTPAdapter:
            single = _OneUnixPool(
                f"http+unix://{adapter.socket_path}",
                timeout=adapter.timeout,
                max_pool_size=adapter.max_pool_size,
            )
            self._custom_adapter = single
            self.mount("http+docker://", single)
            adapter.close()

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:  # Any: the stubs' return type (_Settings) is private to them
        if proxies:  # a request's own proxies (never given by docker-py): as requests does
            return self._merged(url, proxies, stream, verify, cert)
        parts = urlsplit(str(url))
        key = (parts.scheme, parts.netloc, stream, verify, cert)
        settings = self._environment.get(key)
        if settings is None:
            settings = self._environment[key] = self._merged(url, proxies, stream, verify, cert)
        return dict(settings)

    def _merged(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None:  # no per-request choice: the session's (the engine's) wins
            settings["verify"] = self.verify
        return settings


class _OneUnixPool(UnixHTTPAdapter):
    """docker-py's Unix socket adapter with all requests in one pool (see `_EngineAPI`)."""

    def get_connection(self, url: Any, proxies: Any = None) -> Any:
        return super().get_connection(_UNIX_POOL_KEY, proxies)


_UNIX_POOL_KEY = "http+docker://localhost"


class EngineClient(docker.DockerClient):
    """docker.DockerClient whose TLS verification uses the engine's CA whatever
    REQUESTS_CA_BUNDLE says (see `_EngineAPI`). Same arguments as DockerClient; its
    __init__ only makes the APIClient."""

    def __init__(self, **kwargs: Any) -> None:
        self.api = _EngineAPI(**kwargs)


class _NotYet(Exception):
    """Something an engine that is coming up explains; its message says what is missing."""


def client_from_env(
    translate: Translate,
    *,
    environ: Mapping[str, str] | None = None,
    log: FilteringBoundLogger | None = None,
) -> docker.DockerClient:
    """A client of the engine `choose_engine` picks, once it answers (see `connect`)."""
    env = os.environ if environ is None else environ
    return connect(choose_engine(env), translate, wait_s=engine_wait_seconds(env), log=log)


def connect(
    choice: EngineChoice,
    translate: Translate,
    *,
    wait_s: float = DEFAULT_ENGINE_WAIT_SECONDS,
    log: FilteringBoundLogger | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> docker.DockerClient:
    """Connect to `choice` (docker-py asks the engine for its API version on connecting).

    A TCP engine that is not there yet, or TLS files not written yet, are retried until
    `wait_s` has passed; anything else fails at once. Errors are BackendError, one line."""
    waits = choice.host.startswith(("tcp://", "http://", "https://"))
    deadline = clock() + wait_s
    logger = log if log is not None else module_logger("runner.backends.docker")
    announced = False
    while True:
        try:
            return _connect_once(choice)
        except _NotYet as exc:
            reason: str = str(exc)
            error: BaseException = exc
        except (docker.errors.DockerException, *_CONNECTION_ERRORS) as exc:
            final = _tls_failure(exc, choice)
            if final is not None:
                raise final from exc
            if not (waits and _coming_up(exc)):
                raise translate(exc, "reach the Docker engine", _display(choice.host)) from exc
            reason, error = _short_reason(exc), exc
        if clock() >= deadline:
            raise _gave_up(choice, reason, wait_s, error, translate) from error
        if not announced:
            logger.info(
                "engine_waiting",
                host=_display(choice.host),
                reason=reason,
                wait_s=wait_s,
                hint=f"{ENGINE_WAIT_SECONDS_ENV}=0 not to wait",
            )
            announced = True
        sleep(min(WAIT_PAUSE_S, max(0.0, deadline - clock())))


_CONNECTION_ERRORS = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    OSError,
)


def _connect_once(choice: EngineChoice) -> docker.DockerClient:
    tls: TLSConfig | bool = False
    if choice.tls is not None:
        tls = _tls_config(choice.tls)
    return EngineClient(base_url=choice.host, tls=tls, max_pool_size=MAX_POOL_SIZE)


def _tls_config(files: TLSFiles) -> TLSConfig:
    """Check the files before docker-py and OpenSSL get to say it their way (docker-py:
    "Path to a certificate and key files must be provided through the client_cert
    param"): a missing one is _NotYet (being written by a service that is starting), a
    broken one a BackendError naming it."""
    for path in files.needed():
        if not path.is_file():
            raise _NotYet(f"{path.name} is missing ({path}; from {files.origin})")
    context = ssl.create_default_context()
    if files.verify:
        try:
            context.load_verify_locations(cafile=str(files.ca))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise BackendError(
                f"cannot use {files.ca} as the engine's CA ({files.origin}): "
                f"{_short_reason(exc)}. It must be the PEM ca.pem the engine's certificates "
                "were made with"
            ) from exc
    if files.client_cert:
        try:
            context.load_cert_chain(str(files.cert), str(files.key))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise BackendError(
                f"cannot use {files.cert} with {files.key} ({files.origin}): "
                f"{_short_reason(exc)}. They must be PEM files, and key.pem the key of "
                "cert.pem"
            ) from exc
    return TLSConfig(
        client_cert=(str(files.cert), str(files.key)) if files.client_cert else None,
        ca_cert=str(files.ca) if files.verify else None,
        verify=files.verify,
    )


def _walk(exc: BaseException) -> list[BaseException]:
    """`exc` and every error it wraps (causes, contexts, urllib3 `reason`s, args)."""
    seen: set[int] = set()
    found: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        inner = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        inner += list(current.args)
        pending.extend(e for e in inner if isinstance(e, BaseException))
    return found


def _coming_up(exc: BaseException) -> bool:
    """Errors of an engine that is not listening yet: refused, reset, a name not in DNS
    yet (a CI service container is registered as it starts), a connect timeout."""
    for error in _walk(exc):
        if isinstance(error, ConnectionRefusedError | ConnectionResetError | socket.gaierror):
            return True
        if isinstance(
            error, urllib3.exceptions.NameResolutionError | urllib3.exceptions.ConnectTimeoutError
        ):
            return True
        if isinstance(error, urllib3.exceptions.ProtocolError) and "aborted" in str(error):
            return True
    return False


def _tls_failure(exc: BaseException, choice: EngineChoice) -> BackendError | None:
    """A TLS handshake that failed for a reason waiting will not cure, as one line naming
    the file and where it came from."""
    errors = _walk(exc)
    ssl_errors = [e for e in errors if isinstance(e, ssl.SSLError)]
    text = " ".join(str(e) for e in ssl_errors) or " ".join(
        str(e) for e in errors if isinstance(e, requests.exceptions.SSLError)
    )
    if not text:
        return None
    host = _display(choice.host)
    files = choice.tls
    origin = files.origin if files is not None else "no TLS files: DOCKER_CERT_PATH is unset"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        ca = files.ca if files is not None and files.verify else "the system's CAs"
        detail = _verify_detail(text)
        return BackendError(
            f"cannot reach the Docker engine at {host}: its certificate is not trusted by "
            f"{ca} ({origin}){detail}. Point DOCKER_CERT_PATH at the client files the "
            "engine generated (ca.pem, cert.pem, key.pem)"
        )
    if any(word in text for word in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_REQUIRED")):
        cert = files.cert if files is not None else "no client certificate"
        return BackendError(
            f"cannot reach the Docker engine at {host}: it refused the client certificate "
            f"{cert} ({origin}): {_ssl_reason(text)}. Use the cert.pem and key.pem made with "
            "the engine's CA"
        )
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return BackendError(
            f"cannot reach the Docker engine at {host}: it does not speak TLS there "
            f"({_ssl_reason(text)}); unset DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, or use "
            "its TLS port (2376)"
        )
    return BackendError(
        f"cannot reach the Docker engine at {host}: TLS failed ({_ssl_reason(text)}; "
        f"{origin}). Check DOCKER_CERT_PATH and DOCKER_TLS_VERIFY"
    )


def _verify_detail(text: str) -> str:
    match = re.search(r"certificate verify failed: ([^(\]\)]+)", text)
    return f" ({match.group(1).strip()})" if match else ""


def _ssl_reason(text: str) -> str:
    match = re.search(r"\[SSL: ([A-Z_]+)\]", text) or re.search(r"\] ([^()]+)\(_ssl", text)
    return match.group(1).strip() if match else " ".join(text.split())[:200]


def _short_reason(exc: BaseException) -> str:
    for error in _walk(exc):
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, ConnectionResetError):
            return "connection reset"
        if isinstance(error, socket.gaierror | urllib3.exceptions.NameResolutionError):
            return "its name does not resolve (yet)"
    return " ".join(str(exc).split())[:300]


def _gave_up(
    choice: EngineChoice, reason: str, wait_s: float, error: BaseException, translate: Translate
) -> BackendError:
    waited = f"after waiting {wait_s:g} s ({ENGINE_WAIT_SECONDS_ENV})" if wait_s > 0 else ""
    host = _display(choice.host)
    if isinstance(error, _NotYet):
        files = choice.tls
        assert files is not None
        missing = next((p for p in files.needed() if not p.is_file()), files.key)
        return BackendError(
            f"cannot reach the Docker engine at {host}: the TLS file {missing.name} is "
            f"missing: no {missing} ({files.origin})"
            + (f", still {waited}" if waited else "")
            + ". Set DOCKER_CERT_PATH to the folder with ca.pem, cert.pem and key.pem"
        )
    translated = str(translate(error, "reach the Docker engine", host))
    return BackendError(translated + (f" (still {reason} {waited})" if waited else ""))


def _display(host: str) -> str:
    return host.replace("http+unix://", "unix://")


# -- the engine and the runner's place ---------------------------------------------------


def engine_facts(client: docker.DockerClient, translate: Translate, host: str = "") -> EngineFacts:
    """What /info says that matters for bind sources (Docker Desktop? Windows containers?)."""
    try:
        info = client.api.info()
    except (docker.errors.DockerException, *_CONNECTION_ERRORS) as exc:
        raise translate(exc, "ask the Docker engine about itself", host) from exc
    return EngineFacts(
        operating_system=str(info.get("OperatingSystem") or ""),
        os_type=str(info.get("OSType") or "linux"),
        host=host,
    )


@dataclass(frozen=True)
class OwnContainer:
    """The container of the engine the runner runs in, as its inspect reports it."""

    id: str
    name: str
    mounts: tuple[Mapping[str, Any], ...]


def container_id_candidates(mountinfo: str, cgroup: str, hostname: str) -> tuple[str, ...]:
    """Ids (full, or the 12-digit hostname) that may be this process's container, most
    reliable first. Pure: the caller reads /proc/self/mountinfo and /proc/self/cgroup."""
    found: list[str] = []
    for line in mountinfo.splitlines():
        found += _CONTAINER_ID.findall(line)
    for line in cgroup.splitlines():
        match = _CGROUP_ID.search(line.strip())
        if match:
            found.append(match.group(1))
    if _SHORT_ID.match(hostname):
        found.append(hostname)
    return tuple(dict.fromkeys(found))


def find_own_container(
    client: docker.DockerClient,
    translate: Translate,
    *,
    proc: Path = Path("/proc/self"),
    hostname: str | None = None,
) -> OwnContainer | None:
    """The container of this engine that the runner runs in, or None: not in a container,
    or in one of another engine (a CI job talking to a dind service)."""
    me = hostname if hostname is not None else socket.gethostname()
    candidates = container_id_candidates(_read(proc / "mountinfo"), _read(proc / "cgroup"), me)
    for candidate in candidates:
        try:
            info = client.api.inspect_container(candidate)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as exc:
            if exc.status_code in (400, 404):  # an ambiguous or unknown prefix
                continue
            raise translate(exc, "inspect the runner's own container", "") from exc
        except (docker.errors.DockerException, *_CONNECTION_ERRORS) as exc:
            raise translate(exc, "inspect the runner's own container", "") from exc
        # The same id on another engine is all but impossible; the same hostname too.
        if str((info.get("Config") or {}).get("Hostname", "")) == me:
            return OwnContainer(
                id=str(info["Id"]),
                name=str(info.get("Name", "")).lstrip("/"),
                mounts=tuple(info.get("Mounts") or ()),
            )
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def host_path_translator(
    client: docker.DockerClient,
    translate: Translate,
    *,
    host: str = "",
    environ: Mapping[str, str] | None = None,
    platform: Platform | None = None,
    proc: Path = Path("/proc/self"),
) -> BindSourceTranslator:
    """Everything `translate_bind_source` needs, found once per backend: the engine's
    facts, and the runner's own container and mounts (not looked up when
    RUNNER_HOST_PATH_MAP is set, which replaces them)."""
    env = os.environ if environ is None else environ
    system = platform if platform is not None else _platform()
    facts = engine_facts(client, translate, host)
    own = None
    if not host_path_map(env) and system == "posix":
        own = find_own_container(client, translate, proc=proc)
    place = runner_place(
        platform=system,
        environ=env,
        container=own.id[:12] if own is not None else None,
        mounts=own.mounts if own is not None else None,
    )
    return BindSourceTranslator(facts, place)
