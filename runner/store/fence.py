"""A store that stops writing once its owner lost the lease of the execution it runs.

An owner that could not renew its lease within the lease time, or found it taken over,
must stop: another runner may be recovering the execution and writing its outcome, and
two writers of one execution's history would leave it in whatever state wrote last. The
heartbeat fences the run's store (`fence`); from then on every write of that run raises
`LeaseLostError` instead of reaching the database, while reads go on. The run kills its
containers (the heartbeat cancels it) and ends with that error.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from runner.errors import StoreError
from runner.execution import ExecutionState
from runner.store.base import Store
from runner.store.records import (
    ArtifactRecord,
    Beat,
    ExecutionFilter,
    ExecutionRecord,
    FlowState,
    Lease,
    LeaseOwner,
    LogRecord,
    Page,
    SchemaRevision,
)
from runner.tokens import ApiToken


class LeaseLostError(StoreError):
    """This process lost an execution's lease: what it would write is not written."""


class FencedStore:
    """`store` for one execution's run, until `fence(reason)`; then its writes raise."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._reason: str | None = None
        self._lock = threading.Lock()

    def fence(self, reason: str) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason

    @property
    def fenced(self) -> bool:
        return self._reason is not None

    def _write(self) -> Store:
        if self._reason is not None:
            raise LeaseLostError(f"not recorded: {self._reason}")
        return self._store

    # -- the store itself -----------------------------------------------------------

    @property
    def url(self) -> str:
        return self._store.url

    @property
    def description(self) -> str:
        return self._store.description

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> FencedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def schema_revision(self) -> SchemaRevision:
        return self._store.schema_revision()

    def upgrade_schema(self) -> SchemaRevision:
        return self._write().upgrade_schema()

    # -- reads ------------------------------------------------------------------------

    def get_execution(self, execution_id_or_prefix: str) -> ExecutionRecord:
        return self._store.get_execution(execution_id_or_prefix)

    def get_execution_source(self, execution_id: str) -> str:
        return self._store.get_execution_source(execution_id)

    def execution_flow_path(self, execution_id: str) -> str | None:
        return self._store.execution_flow_path(execution_id)

    def list_executions(
        self, where: ExecutionFilter | None = None, *, after: str | None = None, limit: int = 20
    ) -> Page[ExecutionRecord]:
        return self._store.list_executions(where, after=after, limit=limit)

    def execution_states(self, execution_ids: Sequence[str]) -> dict[str, ExecutionState]:
        return self._store.execution_states(execution_ids)

    def active_leases(self, execution_id: str | None = None, *, lease_s: float) -> list[Lease]:
        return self._store.active_leases(execution_id, lease_s=lease_s)

    def count_task_run_logs(self, task_run_id: int) -> int:
        return self._store.count_task_run_logs(task_run_id)

    def get_logs(
        self,
        execution_id: str,
        *,
        task_id: str | None = None,
        after: int | None = None,
        limit: int | None = None,
        tail: int | None = None,
    ) -> list[LogRecord]:
        return self._store.get_logs(
            execution_id, task_id=task_id, after=after, limit=limit, tail=tail
        )

    def count_logs(self, execution_id: str) -> int:
        return self._store.count_logs(execution_id)

    def list_artifacts(
        self, execution_id: str, *, task_id: str | None = None
    ) -> list[ArtifactRecord]:
        return self._store.list_artifacts(execution_id, task_id=task_id)

    def get_artifact(self, artifact_id: int) -> ArtifactRecord:
        return self._store.get_artifact(artifact_id)

    def ping(self) -> None:
        self._store.ping()

    def find_token(self, digest: str) -> ApiToken | None:
        return self._store.find_token(digest)

    def list_tokens(self) -> list[ApiToken]:
        return self._store.list_tokens()

    def flow_states(
        self, *, namespace: str | None = None, flow_id: str | None = None
    ) -> dict[tuple[str, str], FlowState]:
        return self._store.flow_states(namespace=namespace, flow_id=flow_id)

    def fired_times(
        self, namespace: str, flow_id: str, trigger_id: str, *, start: datetime, end: datetime
    ) -> dict[datetime, str]:
        return self._store.fired_times(namespace, flow_id, trigger_id, start=start, end=end)

    def ended_executions(
        self, namespace: str, flow_id: str, *, since: datetime, limit: int = 1000
    ) -> list[ExecutionRecord]:
        return self._store.ended_executions(namespace, flow_id, since=since, limit=limit)

    # -- the heartbeat's own round trip (it is how the loss is found) --------------------

    def heartbeat(self, execution_id: str, token: str) -> Beat:
        return self._store.heartbeat(execution_id, token)

    def heartbeat_many(self, token: str, execution_ids: Sequence[str]) -> dict[str, Beat]:
        return self._store.heartbeat_many(token, execution_ids)

    # -- writes -----------------------------------------------------------------------

    def create_execution(self, **values: Any) -> None:
        self._write().create_execution(**values)

    def set_execution_state(
        self, execution_id: str, state: ExecutionState, *, error: str | None = None
    ) -> None:
        self._write().set_execution_state(execution_id, state, error=error)

    def request_kill(self, execution_id: str) -> ExecutionState:
        return self._write().request_kill(execution_id)

    def take_lease(self, lease: Lease, owner: LeaseOwner) -> bool:
        return self._write().take_lease(lease, owner)

    def reopen_execution(self, execution_id: str, owner: LeaseOwner) -> None:
        self._write().reopen_execution(execution_id, owner)

    def try_start(self, execution_id: str, **values: Any) -> list[str]:
        return self._write().try_start(execution_id, **values)

    def create_task_run(self, **values: Any) -> int:
        return self._write().create_task_run(**values)

    def task_run_started(self, task_run_id: int, **values: Any) -> None:
        self._write().task_run_started(task_run_id, **values)

    def finish_task_run(self, task_run_id: int, **values: Any) -> None:
        self._write().finish_task_run(task_run_id, **values)

    def record_skipped(self, **values: Any) -> int:
        return self._write().record_skipped(**values)

    def append_logs(self, lines: Sequence[Any]) -> None:
        self._write().append_logs(lines)

    def append_log_batches(self, batches: Sequence[Any]) -> None:
        self._write().append_log_batches(batches)

    def record_artifacts(self, **values: Any) -> None:
        self._write().record_artifacts(**values)

    def pause_task_run(self, task_run_id: int, *, started_at: datetime) -> None:
        self._write().pause_task_run(task_run_id, started_at=started_at)

    def take_paused(self, execution_id: str, owner: LeaseOwner) -> bool:
        return self._write().take_paused(execution_id, owner)

    def add_token(self, token: ApiToken) -> None:
        self._write().add_token(token)

    def remove_token(self, name: str) -> bool:
        return self._write().remove_token(name)

    def record_flow_revision(self, **values: Any) -> bool:
        return self._write().record_flow_revision(**values)

    def set_flow_paused(self, namespace: str, flow_id: str, *, paused: bool, at: datetime) -> None:
        self._write().set_flow_paused(namespace, flow_id, paused=paused, at=at)

    def init_trigger(self, namespace: str, flow_id: str, trigger_id: str, *, at: datetime) -> None:
        self._write().init_trigger(namespace, flow_id, trigger_id, at=at)

    def advance_trigger(self, namespace: str, flow_id: str, trigger_id: str, **values: Any) -> None:
        self._write().advance_trigger(namespace, flow_id, trigger_id, **values)

    def disable_trigger(
        self, namespace: str, flow_id: str, trigger_id: str, *, reason: str, at: datetime
    ) -> None:
        self._write().disable_trigger(namespace, flow_id, trigger_id, reason=reason, at=at)


def _check(store: FencedStore) -> Store:  # mypy: a FencedStore is a Store
    return store


__all__ = ["FencedStore", "LeaseLostError"]
