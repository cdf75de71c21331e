"""Secrets: values a task needs that nobody may read back, neither from the store nor
from the screen.

Where a task gets one:

    an input of `type: secret`      given at run time (`-i db_password=...`); a flow file
                                    cannot give it a default, since the file is stored
    {{ secret('NAME') }}            `RUNNER_SECRET_NAME` in the runner's environment, else
                                    `NAME` in the dotenv file `RUNNER_SECRETS_FILE` names

What keeps them secret: the stored inputs hold `******` for a secret input, and a
`Masker` made of every secret value (every `RUNNER_SECRET_*`, every entry of the secrets
file, every secret input) replaces each occurrence in a task's output lines, its
outputs and error messages by `******` before they are stored, logged or printed. A
value is also masked in its JSON-escaped form (as it appears inside `::{"outputs"...}::`)
and, for a value of several lines (a PEM key), line by line.

Also here: the private folder for logs that hold task output (a background
`runner recover`'s), created 0700 with files 0600.

Not masked: a value a task transforms (base64, reversed, split across lines of output)
and anything a task writes to a volume or an artifact.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from runner import settings
from runner.errors import RunnerError
from runner.messages import did_you_mean, shorten

if TYPE_CHECKING:
    from runner.flow import FlowInput

__all__ = [
    "MASK",
    "Masker",
    "SecretError",
    "load_secrets",
    "lookup",
    "open_private_log",
    "private_folder",
    "secret_input_ids",
    "stored_inputs",
    "template_secret",
]

MASK = "******"
"""What a secret value is replaced by, wherever it would be shown or stored."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MIN_LINE = 4
"""Lines of a multi-line secret shorter than this are not masked on their own: a line
`}` or `--` would mask every brace and dash of every log."""


class SecretError(RunnerError):
    """A secret that is not set, or a secrets file that cannot be read."""

    exit_code = 2


# -- where secrets come from ------------------------------------------------------------------

_file_cache: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}
_file_lock = threading.Lock()


def _read_file(path: Path) -> dict[str, str]:
    """The entries of a dotenv file, read again only when it changes. Values are taken
    as written: no `${VAR}` expansion (a password may hold a `$`)."""
    from dotenv import dotenv_values  # imported here: only a run with secrets needs it

    where = settings.SECRETS_FILE_ENV
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"{where} names {shorten(str(path))}, which is not a file")
        stamp = (info.st_mtime_ns, info.st_size)
        key = os.path.abspath(path)
        with _file_lock:
            cached = _file_cache.get(key)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SecretError(
            f"{where} names {shorten(str(path))}, which cannot be read: {reason}"
        ) from exc
    values = {
        name: value
        for name, value in dotenv_values(stream=io.StringIO(text), interpolate=False).items()
        if value is not None
    }
    with _file_lock:
        _file_cache[key] = (stamp, values)
    return values


def load_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every secret the runner holds, name -> value: the entries of `RUNNER_SECRETS_FILE`,
    then `RUNNER_SECRET_NAME` variables (which win). Raises SecretError if the file is
    named but cannot be read."""
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    path = settings.secrets_file(env)
    if path is not None:
        found.update(_read_file(path))
    prefix = settings.SECRET_ENV_PREFIX
    found.update(
        {name[len(prefix) :]: value for name, value in env.items() if name.startswith(prefix)}
    )
    return found


def lookup(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The secret `name`; SecretError naming where it may be set if it is not."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise SecretError(
            f"secret({shorten(repr(name))}): a secret's name is letters, digits and '_'"
        )
    known = load_secrets(environ)
    if name in known:
        return known[name]
    file = settings.secrets_file(environ)
    where = (
        f"add {name}=... to {shorten(str(file))}"
        if file
        else f"name a dotenv file holding it in {settings.SECRETS_FILE_ENV}"
    )
    raise SecretError(
        f"secret {name!r} is not set{did_you_mean(name, known)}: set"
        f" {settings.SECRET_ENV_PREFIX}{name} in the runner's environment, or {where}"
    )


def template_secret(name: Any) -> str:
    """`secret('NAME')` in a template: the value, or Jinja's UndefinedError (which the
    templating module reports with the field and the expression, like an undefined name)."""
    from jinja2.exceptions import UndefinedError

    try:
        return lookup(name)
    except SecretError as exc:
        raise UndefinedError(str(exc)) from None


# -- secret inputs ---------------------------------------------------------------------------


def secret_input_ids(inputs: Iterable[FlowInput]) -> frozenset[str]:
    """The ids of a flow's inputs of type secret."""
    return frozenset(spec.id for spec in inputs if spec.type == "secret")


def stored_inputs(
    values: Mapping[str, Any], secret_ids: Collection[str], masker: Masker
) -> dict[str, Any]:
    """Input values as they may be stored and shown: `******` for a secret input that has
    a value, and every other secret masked inside the others."""
    return {
        name: (MASK if name in secret_ids and value is not None else masker.mask_value(value))
        for name, value in values.items()
    }


# -- masking ----------------------------------------------------------------------------------


# Characters by how often they appear in log lines, most common first (letter frequencies
# of English text, then digits, punctuation and capitals as they show in logs); a
# character not listed counts as rarer than all of these.
_COMMON = " etaoinsrhldcumfpgwybvkxjqz0123456789-.:/=,_'\"()[]{}TSAEIONRHLDCUMFPGWYBVKXJQZ"
_RANK = {char: rank for rank, char in enumerate(_COMMON)}


def _rarest(text: str) -> str:
    return max(text, key=lambda char: _RANK.get(char, len(_COMMON)))


class Masker:
    """Replaces every occurrence of every secret value in a text by `******`.

    One compiled alternation of the escaped values, longest first (so that a secret
    containing another is masked whole), run only on a line that could hold one. Each
    value is filed under its rarest character; a line shorter than the shortest value,
    or holding none of those characters (one character-class search, in C), is returned
    as it is, and one holding some is searched only for the values filed under those
    before the whole alternation replaces them. Empty (no secrets): `mask` returns its
    argument at once. `bench/masking.py` measures it.
    """

    __slots__ = ("_buckets", "_gate", "_pattern", "_shortest", "values")

    def __init__(self, values: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for value in values:
            if not isinstance(value, str) or not value:
                continue
            forms.add(value)
            # As it appears inside a JSON string (`::{"outputs": ...}::`, a JSON log).
            forms.add(json.dumps(value)[1:-1])
            forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
            if "\n" in value or "\r" in value:
                forms.update(
                    line.strip() for line in value.splitlines() if len(line.strip()) >= _MIN_LINE
                )
        forms.discard("")
        self.values: frozenset[str] = frozenset(v for v in values if isinstance(v, str) and v)
        ordered = sorted(forms, key=lambda form: (-len(form), form))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._shortest = min(map(len, ordered)) if ordered else 0
        filed: dict[str, list[str]] = {}
        for form in ordered:
            filed.setdefault(_rarest(form), []).append(form)
        self._buckets = {
            char: re.compile("|".join(map(re.escape, forms))) for char, forms in filed.items()
        }
        members = "".join(map(_class_member, sorted(filed)))
        self._gate = re.compile(f"[{members}]") if filed else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __repr__(self) -> str:  # never the values themselves
        return f"Masker({len(self.values)} secret(s))"

    @classmethod
    def from_env(
        cls, extra: Iterable[str] = (), environ: Mapping[str, str] | None = None
    ) -> Masker:
        """A masker of every secret the runner holds (`load_secrets`) and `extra`."""
        return cls([*load_secrets(environ).values(), *extra])

    def with_values(self, values: Iterable[str]) -> Masker:
        more = [v for v in values if isinstance(v, str) and v and v not in self.values]
        return Masker([*self.values, *more]) if more else self

    def mask(self, text: str) -> str:
        """`text` with every secret replaced by `******`."""
        pattern = self._pattern
        if pattern is None or not self._may_hold(text):
            return text
        return pattern.sub(MASK, text)

    def mask_lines(self, lines: tuple[str, ...]) -> tuple[str, ...]:
        """Each of `lines` masked as by `mask`: the same tuple when none can hold a secret,
        found by one search of the lines joined (a secret in one line is in them all)."""
        if self._pattern is None or not self._may_hold("\n".join(lines)):
            return lines
        mask = self.mask
        return tuple([mask(line) for line in lines])

    def _may_hold(self, text: str) -> bool:
        """Whether `text` may hold a secret: False only when none can be in it."""
        if len(text) < self._shortest:
            return False
        assert self._gate is not None  # made with the pattern
        found = self._gate.findall(text)
        if not found:
            return False
        buckets = self._buckets
        return any(buckets[char].search(text) is not None for char in set(found))

    def mask_value(self, value: Any) -> Any:
        """JSON data with every secret masked in its strings (keys too); a number that
        is, or holds, a secret becomes the masked text."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            text = str(value)
            masked = self.mask(text)
            return value if masked == text else masked
        if isinstance(value, Mapping):
            return {self.mask(str(k)): self.mask_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_value(item) for item in value]
        return value


def _class_member(char: str) -> str:
    """`char` as a member of a regex character class."""
    return "\\" + char if char in "\\]^-[" else char


# -- private files ----------------------------------------------------------------------------


def private_folder() -> Path:
    """A folder only this user can enter, for files holding task output: `runner` in
    `$XDG_RUNTIME_DIR`, else `runner-UID` in the temporary folder, created 0700. One that
    exists but is not a folder of this user's, closed to others, is not used: a fresh
    `mkdtemp` folder is."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime):
        folder = Path(runtime) / "runner"
    else:
        uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
        folder = Path(tempfile.gettempdir()) / f"runner-{uid}"
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return Path(tempfile.mkdtemp(prefix="runner-"))
    if sys.platform == "win32":
        return folder
    info = os.lstat(folder)
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or stat.S_IMODE(info.st_mode) & 0o077
    ):
        return Path(tempfile.mkdtemp(prefix="runner-"))
    return folder


def open_private_log(name: str) -> tuple[Path, IO[bytes]]:
    """A log file `name` in `private_folder()`, opened to append, mode 0600 (also when it
    was there already), never through a symbolic link."""
    path = private_folder() / name
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
        return path, os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise
