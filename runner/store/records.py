"""What goes into the store and what comes out: frozen records, the lease values, the
filter and page of `list_executions`, and the store's own errors.

No database here (no SQLAlchemy import): the CLI, the scheduler and an in-memory store
use these without loading a driver.

    StoreError (runner.errors)
    ├── TransientStoreError     a write failed on a connection-level error; may work again
    └── StoreUnavailableError   the database stayed unreachable for the whole retry limit
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from runner.errors import StoreError, UsageError
from runner.execution import ExecutionState, TaskState

T = TypeVar("T")

MIN_PREFIX = 4
"""Shortest id prefix `Store.get_execution` looks up (shorter ones must match a whole id)."""

MAX_PAGE = 10_000
"""The most executions one `list_executions` call returns."""

NUL_SHOWN = "\u2400"
"""What a NUL character in task output is stored as ('␀'): Postgres text and JSONB cannot
hold NUL, and a visible mark beats a silently dropped character."""


class TransientStoreError(StoreError):
    """A write failed on a connection-level error (the connection dropped, the server is
    restarting, SQLite stayed locked): trying it again may succeed. Any other StoreError
    of a write is permanent (a constraint, bad data) and fails at once."""


class StoreUnavailableError(StoreError):
    """The database stayed unreachable for the whole retry limit: writing is given up."""


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# -- what goes in ---------------------------------------------------------------------------


class NewLogLine(NamedTuple):
    """A log line on its way into the store (see `Store.append_logs` and `LogWriter`).

    A NamedTuple rather than a frozen dataclass: one is made per line of task output, and
    a frozen dataclass's __init__ costs three times as much (1.8 us against 0.6 us).
    """

    execution_id: str
    task_run_id: int
    task_id: str
    stream: str
    line: str
    time: datetime


class NewLogBatch(NamedTuple):
    """Consecutive lines of one stream of one task run, sharing one time, on their way
    into the store (`Store.append_log_batches`, `LogWriter.add_batch`): how a task's output
    arrives (`runner.execution.LogBatch`), stored without a tuple per line on the way."""

    execution_id: str
    task_run_id: int
    task_id: str
    stream: str
    time: datetime
    lines: tuple[str, ...]


class ArtifactFile(Protocol):
    """What `Store.record_artifacts` needs of each file (`runner.archives.Artifact` is one)."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def local_path(self) -> Path | str: ...


# -- what comes out ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRunRecord:
    """One attempt of one task, as stored."""

    id: int
    execution_id: str
    task_id: str
    attempt: int
    state: TaskState
    exit_code: int | None
    image: str | None
    container_id: str | None
    error: str | None
    outputs: Mapping[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    node: str | None = None  # the machine it ran on (a Swarm node); None on one engine

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end; None until the attempt has both."""
        return _seconds_between(self.started_at, self.ended_at)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 strings, the state as its name."""
        data = asdict(self)
        data.update(
            state=self.state.value,
            outputs=None if self.outputs is None else dict(self.outputs),
            created_at=_iso(self.created_at),
            started_at=_iso(self.started_at),
            ended_at=_iso(self.ended_at),
            duration_s=self.duration_s,
        )
        return data


@dataclass(frozen=True)
class ExecutionRecord:
    """One execution of a flow with all its task runs (in the order they were created)."""

    id: str
    flow_id: str
    namespace: str
    revision: str
    inputs: Mapping[str, Any]
    labels: Mapping[str, Any]
    state: ExecutionState
    error: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    task_runs: tuple[TaskRunRecord, ...] = ()
    trigger: Mapping[str, Any] | None = None
    """What started it, if a trigger did (`runner.triggers.events.TriggerEvent.to_json`)."""

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end; None until the execution has both."""
        return _seconds_between(self.started_at, self.ended_at)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 strings, states as their names."""
        return {
            "id": self.id,
            "flow_id": self.flow_id,
            "namespace": self.namespace,
            "revision": self.revision,
            "inputs": dict(self.inputs),
            "labels": dict(self.labels),
            "state": self.state.value,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "duration_s": self.duration_s,
            "trigger": None if self.trigger is None else dict(self.trigger),
            "task_runs": [run.to_dict() for run in self.task_runs],
        }


@dataclass(frozen=True)
class TriggerFire:
    """A trigger firing, recorded with the execution it starts (`Store.create_execution`).
    `key` is unique per (namespace, flow, trigger): the scheduled time in UTC for a
    schedule or a backfill, the upstream execution's id for a flow trigger."""

    trigger_id: str
    key: str
    scheduled_at: datetime | None = None
    backfill: bool = False


@dataclass(frozen=True)
class TriggerState:
    """Where one trigger of a flow stands (see `Store.advance_trigger`)."""

    namespace: str
    flow_id: str
    trigger_id: str
    created_at: datetime
    """When a server first saw it: nothing from before is owed."""
    last_at: datetime | None
    """The latest scheduled time fired or passed over (a schedule), or the latest end of
    an upstream execution seen (a flow trigger)."""
    execution_id: str | None
    """The last execution it started."""
    fired_at: datetime | None
    disabled_at: datetime | None
    """Set when `stop_after` disabled it; cleared when its flow is unpaused."""
    disabled_reason: str | None


@dataclass(frozen=True)
class FlowState:
    """Whether a flow is paused, and where its triggers stand."""

    namespace: str
    flow_id: str
    paused_at: datetime | None
    triggers: Mapping[str, TriggerState] = field(default_factory=dict)


class LogRecord(NamedTuple):
    """One stored log line. `id` grows with every line stored: it is the cursor of
    `Store.get_logs(after=...)`.

    A NamedTuple (immutable, as the other records): a page of 1,000 lines is built on
    every read of a log viewer, and a tuple is made three times faster than a frozen
    dataclass (0.9 us against 2.5)."""

    id: int
    task_run_id: int
    task_id: str
    time: datetime
    stream: str
    line: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the time as an ISO 8601 string."""
        return {
            "id": self.id,
            "task_run_id": self.task_run_id,
            "task_id": self.task_id,
            "time": self.time.isoformat(),
            "stream": self.stream,
            "line": self.line,
        }


@dataclass(frozen=True)
class ArtifactRecord:
    """One stored artifact: a file a task run copied out of the workspace.

    `path` is where it was, relative to /workspace; `local_path` where the copy was
    written (on the machine that ran the task, which may not be this one).
    """

    id: int
    execution_id: str
    task_run_id: int
    task_id: str
    path: str
    size: int
    sha256: str
    local_path: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the time as an ISO 8601 string."""
        data = asdict(self)
        data["created_at"] = _iso(self.created_at)
        return data


@dataclass(frozen=True)
class SchemaRevision:
    """Where a database's schema stands: its Alembic revision and the newest one this
    runner ships (`head`). `current` is None for a database without runner's tables."""

    current: str | None
    head: str
    known: bool  # False: a revision of a newer runner

    @property
    def is_head(self) -> bool:
        return self.current == self.head


# -- listing executions -------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutionFilter:
    """Which executions `Store.list_executions` returns; every field given must match.

    `states` matches any of them (names, any case); `labels` every key with exactly that
    value; `created_after` / `created_before` bound the creation time (inclusive /
    exclusive, timezone-aware or taken as UTC).
    """

    namespace: str | None = None
    flow_id: str | None = None
    states: Sequence[ExecutionState | str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None

    def state_names(self) -> tuple[str, ...]:
        """The states as stored (upper-case names), checked: an unknown one is a UsageError."""
        names = []
        for state in self.states:
            name = str(state.value if isinstance(state, ExecutionState) else state).upper()
            if name not in ExecutionState.__members__:
                known = ", ".join(ExecutionState.__members__)
                raise UsageError(f"unknown execution state {state!r} (one of {known})")
            names.append(name)
        return tuple(dict.fromkeys(names))

    def matches(self, record: ExecutionRecord) -> bool:
        """Whether `record` passes this filter (the in-memory store's check; the SQL store
        asks the same in its WHERE clause)."""
        states = self.state_names()
        return (
            (self.namespace is None or record.namespace == self.namespace)
            and (self.flow_id is None or record.flow_id == self.flow_id)
            and (not states or record.state.value in states)
            and all(record.labels.get(key) == value for key, value in self.labels.items())
            and (self.created_after is None or record.created_at >= _utc(self.created_after))
            and (self.created_before is None or record.created_at < _utc(self.created_before))
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing: its items, and the cursor of the next page (None: this is
    the last). Pass `next_cursor` as `after=` to get the next page."""

    items: tuple[T, ...]
    next_cursor: str | None = None


def check_limit(limit: int) -> int:
    """`limit` if it is a page size the store accepts, else a UsageError."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise UsageError(f"limit must be a whole number from 1 to {MAX_PAGE}, not {limit!r}")
    return limit


_CURSOR_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def encode_cursor(created_at: datetime, execution_id: str) -> str:
    """The opaque cursor after an execution: base64url (no padding) of
    `<created_at, ISO 8601 in UTC with microseconds>|<execution id>`."""
    raw = f"{_utc(created_at).isoformat(timespec='microseconds')}|{execution_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, execution id) of a cursor from `encode_cursor`; anything else is a
    UsageError naming the cursor."""
    shown = cursor if len(cursor) <= 60 else cursor[:57] + "..."
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, execution_id = raw.partition("|")
        created_at = datetime.fromisoformat(when)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        created_at, execution_id = None, ""
    if created_at is None or created_at.tzinfo is None or not _CURSOR_ID.fullmatch(execution_id):
        raise UsageError(
            f"invalid cursor {shown!r}: pass the next_cursor of an earlier page unchanged"
        )
    return created_at.astimezone(UTC), execution_id


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- checks and words both stores use ----------------------------------------------------------

_MAX_ID = 2**63 - 1


def check_row_id(value: int) -> int:
    """A row id given by a caller (`after=`, an artifact id): a whole number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ID:
        raise UsageError(f"a line or artifact id is a whole number >= 0, not {value!r}")
    return value


def check_log_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_ID:
        raise UsageError(f"limit must be a whole number >= 1, not {limit!r}")
    return limit


def no_match(wanted: str) -> str:
    hint = f" (give at least {MIN_PREFIX} characters of the id)" if len(wanted) < MIN_PREFIX else ""
    return f"no execution matches '{wanted}'{hint}"


def ambiguous_prefix(wanted: str, newest_first: Sequence[str]) -> str:
    shown = ", ".join(newest_first[:10])
    more = ", ..." if len(newest_first) > 10 else ""
    return f"execution id '{wanted}' is ambiguous: it matches {shown}{more}"


def not_restartable(execution_id: str, state: ExecutionState) -> str:
    return (
        f"execution {execution_id} is {state.value}: only a FAILED or KILLED"
        " execution can be restarted"
    )


# -- leases ---------------------------------------------------------------------------------------


class Beat(Enum):
    """What renewing a lease (`Store.heartbeat`) found."""

    KEPT = "kept"
    KILL = "kill"  # `runner kill` asked for this execution
    LOST = "lost"  # another process took the lease over: this one must stop


class LeaseOwner(Protocol):
    """Who holds a lease, as the store records it (`runner.lease.Owner` is one): the host
    and its boot id, the pid, and the random token that changes hands on a take-over."""

    @property
    def host(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def token(self) -> str: ...
    @property
    def boot_id(self) -> str | None: ...


@dataclass(frozen=True)
class Lease:
    """An execution that is not final, with who holds it, as the database says.

    `expired` is the database's verdict by its own clock: no heartbeat within the lease
    time (or none at all). Whether the holder's process is gone is for `runner.lease`
    to tell (`is_expired`), on the holder's own machine.
    """

    execution_id: str
    state: str
    owner_host: str | None
    owner_pid: int | None
    token: str | None
    heartbeat_at: datetime | None
    kill_requested: bool = False
    owner_boot_id: str | None = None
    expired: bool = False

    @property
    def holder(self) -> str:
        if self.owner_pid is None:
            return "an older runner"
        return f"pid {self.owner_pid} on {self.owner_host}"


# -- cleaning what comes from containers ------------------------------------------------------------


def clean_text(text: str) -> str:
    """`text` with every NUL shown as '␀' (see NUL_SHOWN)."""
    return text.replace("\x00", NUL_SHOWN) if "\x00" in text else text


def clean_json(value: Any, what: str) -> Any:
    """A JSON value both databases can store: NULs in strings (and keys) shown as '␀'.
    A number that is not finite (NaN, Infinity: JSON has none) is a StoreError naming
    `what` and where in the value it is."""
    return _clean_json(value, what, "")


def _clean_json(value: Any, what: str, where: str) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            at = f" at {where}" if where else ""
            raise StoreError(f"{what} hold a number that is not finite ({value}){at}")
        return value
    if isinstance(value, Mapping):
        return {
            clean_text(str(key)): _clean_json(item, what, f"{where}.{key}" if where else str(key))
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean_json(item, what, f"{where}[{n}]") for n, item in enumerate(value)]
    return value
