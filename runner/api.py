"""The library API: the one door the CLI, a server and tests go through.

Running: `run_flow` (to its end, in this thread), `submit` (in a background worker; the
id comes back at once), `restart_execution`, `kill_execution`, `recover`,
`collect_garbage`. Reading: `list_executions` (filters, keyset pagination),
`get_execution`, `get_logs` (after a line id, with a limit), `list_artifacts`, `info`.
The database: `open_store` (which also ends the executions whose runner died: the
recovery policy lives here, not in the CLI), `schema_revision`, `upgrade_schema`.

It wires the stages together:

    load_flow -> resolve_inputs -> store.create_execution -> (a concurrency slot) ->
    Scheduler(backend, store).run, with the execution's lease renewed meanwhile.

The heavy libraries (the engine's SDK, SQLAlchemy, structlog) and the engine's own
modules (scheduler, attempts, leases, recovery) are imported by the functions that run
or read executions, not with this module: `runner validate` and the CLI's `--help` pay
only for loading flows.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from runner import dag
from runner.archives import pack_files
from runner.errors import (
    BackendError,
    ConflictError,
    NotFoundError,
    RunnerError,
    UnavailableError,
    UsageError,
)
from runner.execution import LABEL_EXECUTION, ExecutionResult, ExecutionState, TaskState
from runner.flow import ConcurrencyBehavior
from runner.inputs import file_inputs, resolve_inputs
from runner.loader import LoadedFlow, load_flow, parse_flow
from runner.logs import module_logger
from runner.policy import visible_env
from runner.secrets import Masker, open_private_log, secret_input_ids, stored_inputs
from runner.settings import (
    DATABASE_URL_ENV,
    DEFAULT_CONCURRENCY,
    QUEUE_POLL_SECONDS,
    artifacts_dir,
    backend_name,
    database_url,
    heartbeat_seconds,
    lease_seconds,
)
from runner.specs import execution_labels
from runner.template_limits import Limits
from runner.triggers.events import TriggerEvent
from runner.values import InputType, parse_input_args

if TYPE_CHECKING:
    from runner.attempt import Control
    from runner.backends.base import Backend, EngineInfo
    from runner.lease import Heartbeat, KeptLease, Lease, LeaseKeeper, Owner
    from runner.recovery import Garbage, Recovered
    from runner.restart import RestartPlan
    from runner.scheduler import Resume, RunOptions
    from runner.store import (
        ArtifactRecord,
        ExecutionRecord,
        FlowState,
        LogRecord,
        SchemaRevision,
        Store,
    )
    from runner.store.fence import FencedStore
    from runner.tokens import ApiToken
    from runner.triggers.firing import BackfillTime

__all__ = [
    "Backfill",
    "ExecutionPage",
    "HealthReport",
    "Info",
    "Worker",
    "backfill",
    "check_health",
    "collect_garbage",
    "create_token",
    "default_backend",
    "describe_recovery",
    "describe_triggers",
    "execution_flow",
    "expire_pauses",
    "find_flow",
    "fire_due",
    "fire_webhook",
    "flow_states",
    "get_artifact",
    "get_execution",
    "get_execution_state",
    "get_logs",
    "info",
    "kill_execution",
    "latest_executions",
    "list_artifacts",
    "list_executions",
    "list_tokens",
    "load_flow",
    "open_store",
    "parse_input_args",
    "parse_seconds",
    "pause_flow",
    "record_flow_revision",
    "recover",
    "restart_execution",
    "resume_execution",
    "revoke_token",
    "run_flow",
    "run_in_background",
    "schema_revision",
    "submit",
    "task_run_names",
    "unpause_flow",
    "upgrade_schema",
    "validate_flow_text",
    "verify_token",
]

log = module_logger("runner")

Notify = Callable[[str], None]
"""Receives one line for a person (the CLI prints it on stderr; a server logs it)."""


# -- flows -------------------------------------------------------------------------------------


def task_run_names(flow: LoadedFlow) -> tuple[str, ...]:
    """The names of the task runs a flow plans, in order (a matrix task gives one each:
    `process[year=2019]`); the CLI sizes its columns by them."""
    return tuple(dag.build_plan(flow.flow).order)


# -- the database ----------------------------------------------------------------------------


def open_store(
    url: str | None = None, *, recover: bool = True, notify: Notify | None = None
) -> Store:
    """Open (and migrate) the database at `url`, or the default one (`RUNNER_DATABASE_URL`,
    else SQLite in `.runner/runner.db`).

    With `recover`, executions whose runner died are ended now (see `runner.recovery`);
    one whose task still runs is handed to a detached `runner recover EXECUTION`, so that
    opening the database never waits for a container. `notify` hears about each.
    """
    from runner.store import open_store as open_database

    the_url = url or database_url()
    store = open_database(the_url)
    if not recover:
        return store
    try:
        for recovered in _recover_now(store, follow=_follow_in_background(the_url, notify)):
            if notify is not None:
                notify(f"recovered {recovered}")
    except BaseException:
        store.close()
        raise
    return store


def schema_revision(url: str | None = None) -> tuple[str, SchemaRevision]:
    """The database's description and its schema revision, without upgrading it."""
    from runner.store import open_store as open_database

    store = open_database(url or database_url(), upgrade=False)
    try:
        return store.description, store.schema_revision()
    finally:
        store.close()


def upgrade_schema(url: str | None = None) -> tuple[str, SchemaRevision, SchemaRevision]:
    """Run the migrations up to the newest; the description, and the revisions before and
    after."""
    from runner.store import open_store as open_database

    store = open_database(url or database_url(), upgrade=False)
    try:
        before = store.schema_revision()
        return store.description, before, store.upgrade_schema()
    finally:
        store.close()


def default_backend() -> Backend:
    """The backend `RUNNER_BACKEND` names (default: the Docker engine of DOCKER_HOST)."""
    from runner.backends import create_backend

    return create_backend()


# -- running ------------------------------------------------------------------------------------


def run_flow(
    flow: str | Path | LoadedFlow,
    inputs: Mapping[str, str] | None = None,
    *,
    store: Store | None = None,
    backend: Backend | None = None,
    concurrency: int | None = None,
    keep_workspace: bool = False,
    allow_env: Iterable[str] = (),
    artifacts_dir: str | Path | None = None,
    handle_signals: bool = False,
    on_created: Callable[[str], None] | None = None,
) -> ExecutionResult:
    """Run a flow to its end and return how it went; every step is recorded in `store`.

    `allow_env` names (or globs) variables of this process's environment the operator
    allows for this run, besides `RUNNER_ALLOWED_ENV`: each name the flow declares in
    `allowed_env` must be allowed (PolicyError, exit 2, before anything is recorded), and
    an exact name here is readable as `{{ env.NAME }}` even if undeclared. Secret inputs
    are stored as `******`; every secret is masked in what the run stores and prints
    (see `runner.secrets`). `handle_signals` turns SIGINT and
    SIGTERM into a clean kill of the execution (the CLI sets it). `on_created` receives the
    execution id as soon as it is recorded. A flow with `concurrency.limit` waits in state
    QUEUED for a slot (or ends CANCELLED / FAILED, as its `behavior` says).
    """
    from runner.attempt import Control
    from runner.lease import Owner

    prepared = _prepare(flow, inputs, concurrency, keep_workspace, allow_env, artifacts_dir)
    with _store_and_backend(store, backend) as (the_store, the_backend):
        owner = Owner.here()
        execution_id = _create(the_store, prepared, owner)
        if on_created is not None:
            on_created(execution_id)
        return _execute(
            the_store,
            the_backend,
            prepared.loaded,
            execution_id,
            prepared.values,
            prepared.options,
            owner=owner,
            control=Control(),
            handle_signals=handle_signals,
        )


def submit(
    flow: str | Path | LoadedFlow,
    inputs: Mapping[str, str] | None = None,
    *,
    store: Store,
    backend: Backend | None = None,
    worker: Worker | None = None,
    concurrency: int | None = None,
    keep_workspace: bool = False,
    allow_env: Iterable[str] = (),
    artifacts_dir: str | Path | None = None,
    labels: Mapping[str, str] | None = None,
    trigger: TriggerEvent | None = None,
) -> str:
    """Record a new execution and run it in a background worker; return its id at once.

    Bad input (flow, inputs, files) raises here, before anything is recorded. `worker`
    (default: one shared by the callers of this function with this store, running 4
    executions at once) decides how many run together; the others wait, CREATED and
    leased. `store` must stay open until the execution ends (`Worker.wait`).

    `labels` are added to the flow's own. `trigger` is what fired it (its templates see
    `trigger.*`; it gets the labels `trigger` and `scheduled_at`); a scheduled time that
    already ran for that trigger raises `AlreadyFiredError` and records nothing."""
    the_worker = worker if worker is not None else _default_worker(store, backend)
    return the_worker.submit(
        flow,
        inputs,
        concurrency=concurrency,
        keep_workspace=keep_workspace,
        allow_env=allow_env,
        artifacts_dir=artifacts_dir,
        labels=labels,
        trigger=trigger,
    )


class Worker:
    """Runs executions in background threads of this process, `max_running` at a time (on
    top of each flow's own concurrency limit): new ones (`submit`), restarted ones
    (`restart`) and resumed ones (`resume`). A server holds one; `submit` uses a shared
    one. With `keep_results=False` (a server) an ended execution is forgotten at once:
    `wait` is then only for executions that have not ended."""

    def __init__(
        self,
        store: Store,
        *,
        backend: Backend | None = None,
        max_running: int = 4,
        keep_results: bool = True,
    ) -> None:
        from runner.lease import LeaseKeeper, Owner

        if max_running < 1:
            raise UsageError(f"a worker runs at least 1 execution at once, not {max_running}")
        self._store = store
        self._backend = backend
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="execution")
        self._lock = threading.Lock()
        self._futures: dict[str, Future[ExecutionResult]] = {}
        self._controls: dict[str, Control] = {}
        self._leases: dict[str, _Lease] = {}
        self._closed = False
        self._keep_results = keep_results
        # One owner for every execution of this worker, so that one statement renews all
        # their leases (a server may hold hundreds, most of them waiting for a thread).
        self._owner = Owner.here()
        self._keeper = LeaseKeeper(store, self._owner)

    def submit(
        self,
        flow: str | Path | LoadedFlow,
        inputs: Mapping[str, str] | None = None,
        *,
        concurrency: int | None = None,
        keep_workspace: bool = False,
        allow_env: Iterable[str] = (),
        artifacts_dir: str | Path | None = None,
        labels: Mapping[str, str] | None = None,
        trigger: TriggerEvent | None = None,
    ) -> str:
        """See `runner.api.submit`."""

        prepared = _prepare(
            flow,
            inputs,
            concurrency,
            keep_workspace,
            allow_env,
            artifacts_dir,
            labels=labels,
            trigger=trigger,
        )
        owner = self._owner
        with self._lock:
            self._refuse_if_closed()
            execution_id = _create(self._store, prepared, owner)

            def job(
                store: Store, backend: Backend, control: Control, lease: _Lease
            ) -> ExecutionResult:
                return _execute(
                    store,
                    backend,
                    prepared.loaded,
                    execution_id,
                    prepared.values,
                    prepared.options,
                    owner=owner,
                    control=control,
                    handle_signals=False,
                    lease=lease,
                )

            self._start(execution_id, owner, job)
        return execution_id

    def restart(self, execution: str, *, from_task: str | None = None) -> str:
        """Restart a FAILED or KILLED execution (see `restart_execution`) in the
        background; its id once it is CREATED again. ConflictError for another state."""

        with self._lock:
            self._refuse_if_closed()
        owner = self._owner
        with _store_and_backend(self._store, self._backend) as (store, backend):
            restarted = _prepare_restart(store, backend, execution, from_task, owner)

            def job(
                store: Store, backend: Backend, control: Control, lease: _Lease
            ) -> ExecutionResult:
                return restarted.run(store, backend, owner, control, lease=lease)

            with self._lock:
                self._start(restarted.execution_id, owner, job)
        return restarted.execution_id

    def resume(
        self,
        execution: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        task: str | None = None,
        timed_out: bool = False,
    ) -> str:
        """Resume a PAUSED execution (see `resume_execution`) in the background; its id
        once it is CREATED again. ConflictError if it is not paused (any more). With
        `timed_out`, the pause task ends as its `on_timeout` says."""

        with self._lock:
            self._refuse_if_closed()
        owner = self._owner
        with _store_and_backend(self._store, self._backend) as (store, backend):
            resumed = _prepare_resume(
                store, backend, execution, inputs or {}, task, owner, timed_out=timed_out
            )

            def job(
                store: Store, backend: Backend, control: Control, lease: _Lease
            ) -> ExecutionResult:
                return resumed.run(store, backend, owner, control, lease=lease)

            with self._lock:
                self._start(resumed.execution_id, owner, job)
        return resumed.execution_id

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise UnavailableError("this worker is shut down: it takes no more executions")

    def _start(self, execution_id: str, owner: Owner, job: _Job) -> None:
        """Lease the execution and queue `job` for a thread (the caller holds the lock)."""
        from runner.attempt import Control

        control = Control()
        queued: list[Future[ExecutionResult]] = []

        def stop(reason: str) -> None:
            control.cancel(reason)
            if queued and queued[0].cancel():  # still waiting for a thread: it never runs
                self._never_ran(execution_id, control, lease)

        # Leased from now on, also while it waits for a thread: another process must
        # not take it for orphaned.
        lease = _Lease.of(
            self._store, execution_id, owner, control, keeper=self._keeper, on_stop=stop
        )
        lease.heartbeat.__enter__()
        self._controls[execution_id] = control
        self._leases[execution_id] = lease
        future = self._pool.submit(self._run, job, execution_id, control, lease)
        queued.append(future)
        self._futures[execution_id] = future
        if not self._keep_results:
            future.add_done_callback(lambda _: self._forget(execution_id, future))

    def _never_ran(self, execution_id: str, control: Control, lease: _Lease) -> None:
        """An execution killed while it waited for a thread: recorded KILLED now."""
        lease.heartbeat.__exit__(None, None, None)
        try:
            lease.store.set_execution_state(
                execution_id, ExecutionState.KILLED, error=control.kill_reason
            )
        except RunnerError as exc:
            log.warning("kill_not_recorded", execution_id=execution_id, error=str(exc))
        log.info("execution_killed", execution_id=execution_id, was="waiting for a thread")

    def _forget(self, execution_id: str, future: Future[ExecutionResult]) -> None:
        with self._lock:
            if self._futures.get(execution_id) is future:
                del self._futures[execution_id]
                self._controls.pop(execution_id, None)
                self._leases.pop(execution_id, None)

    def _run(
        self, job: _Job, execution_id: str, control: Control, lease: _Lease
    ) -> ExecutionResult:
        try:
            with _store_and_backend(self._store, self._backend) as (store, backend):
                return job(store, backend, control, lease)
        except RunnerError as exc:
            # Recorded by the scheduler where it could be (an unreachable engine ends the
            # execution FAILED); the caller of `wait` gets the error.
            log.error("execution_failed", execution_id=execution_id, error=str(exc))
            raise
        finally:
            lease.heartbeat.__exit__(None, None, None)

    def wait(self, execution_id: str, timeout: float | None = None) -> ExecutionResult:
        """Block until a submitted execution ends (or pauses); its result (or the error it
        raised)."""
        with self._lock:
            future = self._futures.get(execution_id)
        if future is None:
            raise UsageError(f"execution {execution_id} was not submitted to this worker")
        try:
            return future.result(timeout=timeout)
        except CancelledError:  # killed while it waited for a thread
            record = self._store.get_execution(execution_id)
            flow_id = f"{record.namespace}.{record.flow_id}"
            return ExecutionResult(execution_id, flow_id, record.state)

    def running(self) -> list[str]:
        """The ids of the executions submitted here that have not ended."""
        with self._lock:
            return [eid for eid, future in self._futures.items() if not future.done()]

    def kill(self, execution_id: str, reason: str | None = None) -> bool:
        """Kill an execution submitted here, at once (False if it is not running here)."""
        with self._lock:
            control = self._controls.get(execution_id)
            future = self._futures.get(execution_id)
            lease = self._leases.get(execution_id)
        if control is None or future is None or future.done():
            return False
        control.cancel(reason)
        if future.cancel() and lease is not None:  # it had not started: it never will
            self._never_ran(execution_id, control, lease)
        return True

    def shutdown(
        self, *, grace_s: float = 0.0, reason: str = "killed: the worker running it shut down"
    ) -> list[str]:
        """Take no more executions; let those running go on for `grace_s` seconds, then
        kill them (recorded KILLED, as `runner kill` would) and wait for them to end.
        The ids of those it killed."""
        with self._lock:
            self._closed = True
            pending = [f for f in self._futures.values() if not f.done()]
        deadline = time.monotonic() + grace_s
        for future in pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                future.exception(timeout=left)
            except TimeoutError:
                break
        killed = [
            execution_id for execution_id in self.running() if self.kill(execution_id, reason)
        ]
        self._pool.shutdown(wait=True)
        self._keeper.close()
        return killed


_default_workers: dict[int, Worker] = {}
_default_workers_lock = threading.Lock()


def _default_worker(store: Store, backend: Backend | None) -> Worker:
    with _default_workers_lock:
        worker = _default_workers.get(id(store))
        if worker is None:
            worker = _default_workers[id(store)] = Worker(store, backend=backend)
        return worker


def restart_execution(
    execution: str,
    *,
    from_task: str | None = None,
    store: Store | None = None,
    backend: Backend | None = None,
    concurrency: int | None = None,
    keep_workspace: bool = False,
    allow_env: Iterable[str] = (),
    artifacts_dir: str | Path | None = None,
    handle_signals: bool = False,
    on_restarted: Callable[[str, RestartPlan], None] | None = None,
) -> ExecutionResult:
    """Run a FAILED or KILLED execution again, in place: its task runs that did not
    succeed (and, with `from_task`, that task) and everything downstream get new attempts;
    the others keep their results and outputs, and their files in the kept workspace.

    Without the workspace (a kill removes it, as does `runner gc`) every task runs again.
    The flow is the one recorded with the execution, read next to where its file was.
    ConflictError if the execution is in another state.
    """
    from runner.attempt import Control
    from runner.lease import Owner

    with _store_and_backend(store, backend) as (the_store, the_backend):
        owner = Owner.here()
        restarted = _prepare_restart(
            the_store,
            the_backend,
            execution,
            from_task,
            owner,
            concurrency=concurrency,
            keep_workspace=keep_workspace,
            allow_env=allow_env,
            artifacts_dir=artifacts_dir,
            on_restarted=on_restarted,
        )
        return restarted.run(
            the_store, the_backend, owner, Control(), handle_signals=handle_signals
        )


@dataclass(frozen=True)
class _Continued:
    """An execution made runnable again (restarted or resumed), ready to run."""

    execution_id: str
    loaded: LoadedFlow
    inputs: Mapping[str, Any]
    options: RunOptions
    resume: Resume

    def run(
        self,
        store: Store,
        backend: Backend,
        owner: Owner,
        control: Control,
        *,
        handle_signals: bool = False,
        lease: _Lease | None = None,
    ) -> ExecutionResult:
        return _execute(
            store,
            backend,
            self.loaded,
            self.execution_id,
            self.inputs,
            self.options,
            owner=owner,
            control=control,
            handle_signals=handle_signals,
            resume=self.resume,
            lease=lease,
        )


def _prepare_restart(
    store: Store,
    backend: Backend,
    execution: str,
    from_task: str | None,
    owner: Owner,
    *,
    concurrency: int | None = None,
    keep_workspace: bool = False,
    allow_env: Iterable[str] = (),
    artifacts_dir: str | Path | None = None,
    on_restarted: Callable[[str, RestartPlan], None] | None = None,
) -> _Continued:
    """Check that the execution can be restarted, plan what reruns, and reopen it
    (CREATED, leased by `owner`)."""
    from runner.restart import RestartPlan, plan_restart
    from runner.scheduler import Resume

    record = store.get_execution(execution)
    if record.state not in (ExecutionState.FAILED, ExecutionState.KILLED):
        raise ConflictError(
            f"execution {record.id} is {record.state.value}: only a FAILED or KILLED"
            " execution can be restarted"
        )
    loaded = _stored_flow(store, record.id)
    _refuse_lost_secrets(record, loaded, "restarted")
    env = _visible_env(loaded, allow_env)
    plan = dag.build_plan(loaded.flow)
    restart = plan_restart(plan, record.task_runs, from_task=from_task)
    workspace = backend.workspace(record.id, execution_labels(record.id, loaded.flow))
    kept = workspace.exists()
    workspace_files = None
    if not kept:
        if any(spec.type is InputType.FILE for spec in loaded.flow.inputs):
            raise ConflictError(
                f"execution {record.id} cannot be restarted: its workspace volume is gone"
                " and its file inputs with it; run the flow again with `runner run`"
            )
        # The files the succeeded tasks wrote are gone with it: they run again too.
        restart = RestartPlan(
            reused={},
            rerun=tuple(plan.order),
            first_attempt=restart.first_attempt,
            workspace_gone=True,
        )
        workspace_files = _pack_workspace_files(loaded, {})
    store.reopen_execution(record.id, owner)
    if on_restarted is not None:
        on_restarted(record.id, restart)
    options = _options(
        loaded,
        concurrency,
        keep_workspace,
        env,
        artifacts_dir,
        workspace_files,
        Masker.from_env(),
        trigger=_trigger_values(record),
    )
    resume = Resume(done=restart.reused, first_attempt=restart.first_attempt, workspace_kept=kept)
    return _Continued(record.id, loaded, dict(record.inputs), options, resume)


def _refuse_lost_secrets(record: ExecutionRecord, loaded: LoadedFlow, verb: str) -> None:
    """Secret input values were never stored, so they cannot be given again."""
    lost = sorted(
        i for i in secret_input_ids(loaded.flow.inputs) if record.inputs.get(i) is not None
    )
    if lost:
        raise ConflictError(
            f"execution {record.id} cannot be {verb}: the values of its secret"
            f" input(s) {', '.join(lost)} are not stored; run the flow again with"
            " `runner run`"
        )


def _stored_flow(store: Store, execution_id: str) -> LoadedFlow:
    """The flow as it was when the execution was created, read as if from its file (so
    that `files:` and `build:` are found next to it)."""
    source = store.get_execution_source(execution_id)
    flow_path = store.execution_flow_path(execution_id)
    return parse_flow(source, path=flow_path or f"execution-{execution_id}.yml")


def resume_execution(
    execution: str,
    inputs: Mapping[str, Any] | None = None,
    *,
    task: str | None = None,
    store: Store | None = None,
    backend: Backend | None = None,
    handle_signals: bool = False,
    on_resumed: Callable[[str, str], None] | None = None,
) -> ExecutionResult:
    """Resume a PAUSED execution and run it on to its end (or its next pause), here.

    `inputs` are values for the inputs the paused task declares; they become its outputs
    (checked as flow inputs are: `-i` text or typed values; a declared input without a
    value takes its default). With several tasks paused, `task` says which one. Raises
    ConflictError if the execution is not paused (or another process resumed or killed it
    first), InputError for bad inputs. `on_resumed(execution_id, task_id)` is called once
    it is taken."""
    from runner.attempt import Control
    from runner.lease import Owner

    with _store_and_backend(store, backend) as (the_store, the_backend):
        owner = Owner.here()
        resumed = _prepare_resume(
            the_store, the_backend, execution, inputs or {}, task, owner, on_resumed=on_resumed
        )
        return resumed.run(the_store, the_backend, owner, Control(), handle_signals=handle_signals)


def _prepare_resume(
    store: Store,
    backend: Backend,
    execution: str,
    inputs: Mapping[str, Any],
    task: str | None,
    owner: Owner,
    *,
    on_resumed: Callable[[str, str], None] | None = None,
    timed_out: bool = False,
) -> _Continued:
    """Check the resume, take the execution (PAUSED -> CREATED, leased by `owner`, once
    across processes), record the pause task's outcome, and plan the rest."""
    from runner.restart import latest_attempts, pause_outcome, pick_paused_task, plan_resume
    from runner.scheduler import Paused, Resume

    record = store.get_execution(execution)
    if record.state is not ExecutionState.PAUSED:
        raise ConflictError(
            f"execution {record.id} is {record.state.value}: only a PAUSED execution can be resumed"
        )
    loaded = _stored_flow(store, record.id)
    _refuse_lost_secrets(record, loaded, "resumed")
    latest = latest_attempts(record.task_runs)
    waiting = {node: run for node, run in latest.items() if run.state is TaskState.PAUSED}
    node_id = pick_paused_task(record.id, waiting, task)
    run = waiting[node_id]
    pause_task = loaded.flow.task(dag.task_id_of(node_id))
    outcome = pause_outcome(pause_task, inputs, timed_out=timed_out)
    outcome = dataclasses.replace(outcome, task_id=node_id, attempt=run.attempt)
    if not store.take_paused(record.id, owner):
        state = store.get_execution(record.id).state
        raise ConflictError(
            f"execution {record.id} is {state.value}: another request resumed or killed it first"
        )
    store.finish_task_run(
        run.id, state=outcome.state, error=outcome.error, outputs=dict(outcome.outputs)
    )
    if on_resumed is not None:
        on_resumed(record.id, node_id)
    plan = dag.build_plan(loaded.flow)
    kept = plan_resume(plan, record.task_runs, resolved={node_id: outcome})
    resume = Resume(
        done=kept.done,
        first_attempt=kept.first_attempt,
        workspace_kept=True,
        resolved=kept.resolved,
        held={n: Paused(r.id, r.attempt) for n, r in kept.held.items()},
    )
    options = _options(
        loaded,
        None,
        False,
        _visible_env(loaded, ()),
        None,
        None,
        Masker.from_env(),
        trigger=_trigger_values(record),
    )
    log.info(
        "execution_resumed",
        execution_id=record.id,
        task_id=node_id,
        state=outcome.state.value,
        timed_out=timed_out,
    )
    return _Continued(record.id, loaded, dict(record.inputs), options, resume)


def kill_execution(
    execution: str,
    *,
    store: Store | None = None,
    backend: Backend | None = None,
    wait_s: float | None = None,
    worker: Worker | None = None,
) -> ExecutionState:
    """Ask the process running an execution (here or on any machine sharing the
    database) to kill it, and wait up to `wait_s` seconds for it to end; return the state
    it ended in (a state that is not final if it did not end in time). An execution whose
    runner is gone is killed here: its containers and workspace are removed, as are those
    of a PAUSED execution (which no process runs). With `worker`, one it runs is killed
    at once rather than at its next heartbeat."""
    from runner.recovery import recover_orphans

    with _store_and_backend(store, backend, lazy_backend=True) as (the_store, connect):
        record = the_store.get_execution(execution)
        if record.state.is_final:
            return record.state
        if record.state is ExecutionState.PAUSED and _kill_paused(the_store, connect, record):
            return ExecutionState.KILLED
        the_store.request_kill(record.id)
        if worker is not None:
            worker.kill(record.id, "killed by `runner kill`")
        deadline = time.monotonic() + (default_kill_wait() if wait_s is None else wait_s)
        while True:
            recover_orphans(the_store, connect, execution_id=record.id, kill=True)
            state = the_store.get_execution(record.id).state
            if state.is_final or time.monotonic() >= deadline:
                return state
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


def _kill_paused(store: Store, connect: Callable[[], Backend], record: ExecutionRecord) -> bool:
    """Kill a PAUSED execution here: take it (once across processes), end its paused task
    runs, remove its workspace. False if someone resumed it first (it runs now)."""
    from runner.lease import Owner
    from runner.restart import latest_attempts

    if not store.take_paused(record.id, Owner.here()):
        return False
    reason = "killed by `runner kill`"
    for run in latest_attempts(record.task_runs).values():
        if run.state is TaskState.PAUSED:
            store.finish_task_run(run.id, state=TaskState.KILLED, error=reason)
    try:
        backend = connect()
        loaded = _stored_flow(store, record.id)
        backend.workspace(record.id, execution_labels(record.id, loaded.flow)).remove()
        backend.cleanup({LABEL_EXECUTION: record.id})
    except RunnerError as exc:
        log.warning("cleanup_failed", execution_id=record.id, error=str(exc))
    store.set_execution_state(record.id, ExecutionState.KILLED, error=reason)
    log.info("execution_killed", execution_id=record.id, was="PAUSED")
    return True


def default_kill_wait() -> float:
    """How long `runner kill` waits by default: a live runner answers within a heartbeat;
    one that died on another machine is taken over once its lease expires."""
    return lease_seconds() + 2 * heartbeat_seconds()


def recover(
    store: Store,
    backend: Backend | None = None,
    *,
    execution_id: str | None = None,
) -> list[Recovered]:
    """End the executions whose runner died, in the foreground: an execution whose task
    still runs is followed to the end (`runner recover`). Without a reachable engine
    nothing is done (a warning is logged)."""
    return _recover_now(store, backend, execution_id=execution_id)


def _recover_now(
    store: Store,
    backend: Backend | None = None,
    *,
    execution_id: str | None = None,
    follow: Callable[[Lease], None] | None = None,
) -> list[Recovered]:
    from runner.recovery import recover_orphans

    opened: list[Backend] = []

    def connect_once() -> Backend:
        if backend is not None:
            return backend
        if not opened:
            opened.append(default_backend())
        return opened[0]

    try:
        return recover_orphans(store, connect_once, execution_id=execution_id, follow=follow)
    except BackendError as exc:
        log.warning("recovery_postponed", error=str(exc))
        return []
    finally:
        for made in opened:
            made.close()


def _follow_in_background(db_url: str, notify: Notify | None) -> Callable[[Lease], None]:
    """The policy for an orphan whose task still runs: a detached `runner recover ID`
    follows it (a command that only lists executions must not wait for a container), its
    output in a file only this user can read (task output may be confidential)."""

    def follow(lease: Lease) -> None:
        log_path, out = open_private_log(f"runner-recover-{lease.execution_id}.log")
        # The URL may hold a password: through the environment, not the command line.
        env = {**os.environ, DATABASE_URL_ENV: db_url}
        detach: dict[str, Any] = {"start_new_session": True}  # Ctrl-C here must not stop it
        if sys.platform == "win32":
            detach = {
                "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
            }
        with out:
            child = subprocess.Popen(
                [sys.executable, "-m", "runner", "recover", lease.execution_id],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                **detach,
            )
        if notify is not None:
            notify(
                f"execution {lease.execution_id}: its runner ({lease.holder}) died while a task"
                f" still runs; following it in the background (pid {child.pid}, log {log_path})"
            )

    return follow


def collect_garbage(
    store: Store, backend: Backend | None = None, *, dry_run: bool = False
) -> Garbage:
    """Remove the containers and workspaces of executions that have ended (`runner gc`)."""
    from runner import recovery

    with _store_and_backend(store, backend) as (the_store, the_backend):
        return recovery.collect_garbage(the_store, the_backend, dry_run=dry_run)


# -- flows, triggers and tokens (what a server keeps) ------------------------------------------


def find_flow(flow: str, flows_dir: Path) -> LoadedFlow:
    """The flow `flow` names: a flow file, or NAMESPACE.FLOW_ID of a flow in `flows_dir`
    (NotFoundError naming the folder, with a close name if there is one)."""
    from runner.server.catalog import FlowCatalog

    path = Path(flow)
    if path.suffix in (".yml", ".yaml") or path.is_file():
        return load_flow(path)
    namespace, dot, flow_id = flow.rpartition(".")
    if not dot or not namespace:
        raise UsageError(f"{flow!r} is neither a flow file nor NAMESPACE.FLOW (like default.hello)")
    catalog = FlowCatalog(flows_dir)
    catalog.scan()
    return catalog.get(namespace, flow_id)


def parse_seconds(text: str, *, what: str) -> float:
    """`30s`, `2m`, `1h30m` or a number of seconds, as seconds; UsageError naming `what`."""
    from runner.durations import Duration

    try:
        return Duration.parse(text).seconds
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


def describe_triggers(loaded: LoadedFlow, *, now: datetime | None = None) -> list[str]:
    """One line per trigger of a flow, for `runner validate`: a schedule with its time
    zone (saying so when it is the default, UTC) and its next time; a webhook's URL; a
    flow trigger's upstream."""
    from runner.triggers.models import FlowTrigger, ScheduleTrigger

    moment = now or _utcnow()
    flow = loaded.flow
    lines = []
    for trigger in flow.triggers:
        off = " (disabled)" if trigger.disabled else ""
        if isinstance(trigger, ScheduleTrigger):
            zone = trigger.timezone
            given = "timezone" in trigger.model_fields_set
            where = zone if given else f"{zone} (no timezone given: the default)"
            upcoming = trigger.schedule.next_after(moment)
            nxt = f", next {upcoming.isoformat()}" if upcoming is not None else ""
            lines.append(f"trigger {trigger.id}: schedule {trigger.cron!r} in {where}{nxt}{off}")
        elif isinstance(trigger, FlowTrigger):
            states = ", ".join(s.value for s in trigger.upstream.states)
            lines.append(
                f"trigger {trigger.id}: after flow {trigger.upstream.full_id} ends {states}{off}"
            )
        else:
            lines.append(
                f"trigger {trigger.id}: webhook POST /api/v1/webhooks/{flow.namespace}/"
                f"{flow.id}/KEY{off}"
            )
    return lines


def describe_recovery(
    store: Store, loaded: LoadedFlow, *, now: datetime | None = None
) -> list[str]:
    """What each schedule of a flow will fire for the times it missed, once a server
    looks (`runner unpause` prints it): one line per schedule."""
    from runner.triggers.models import ScheduleTrigger
    from runner.triggers.schedule import due_times

    moment = now or _utcnow()
    flow = loaded.flow
    state = store.flow_states(namespace=flow.namespace, flow_id=flow.id).get(
        (flow.namespace, flow.id)
    )
    lines = []
    for trigger in flow.triggers:
        if not isinstance(trigger, ScheduleTrigger):
            continue
        trigger_state = state.triggers.get(trigger.id) if state is not None else None
        last = trigger_state.last_at if trigger_state is not None else None
        due = due_times(trigger.schedule, last, moment, trigger.recover_missed)
        policy = f"recover_missed: {trigger.recover_missed.value}"
        if not due:
            lines.append(f"{trigger.id} ({policy}): no missed time to run")
            continue
        shown = ", ".join(t.isoformat() for t in due[:3]) + (", ..." if len(due) > 3 else "")
        lines.append(f"{trigger.id} ({policy}): {len(due)} missed time(s) to run: {shown}")
    return lines


def run_in_background(args: Sequence[str], *, db_url: str | None, name: str) -> tuple[int, Path]:
    """Start `runner ARGS...` detached from this process (Ctrl-C here does not stop it),
    its output in a file only this user can read; its pid and that file."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    log_path, out = open_private_log(f"runner-{safe}-{uuid.uuid4().hex[:8]}.log")
    env = dict(os.environ)
    if db_url:
        env[DATABASE_URL_ENV] = db_url  # the URL may hold a password: not on the command line
    detach: dict[str, Any] = {"start_new_session": True}
    if sys.platform == "win32":
        detach = {
            "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
        }
    with out:
        child = subprocess.Popen(
            [sys.executable, "-m", "runner", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            **detach,
        )
    return child.pid, log_path


def validate_flow_text(text: bytes | str, path: str | Path) -> LoadedFlow:
    """Check a flow file's text as if it were the file `path` (its folder is where
    `build:` and `files:` are looked up); FlowError with every problem, file:line."""
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            from runner.errors import FlowError, Problem

            line = raw[: exc.start].count(b"\n") + 1
            message = f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded"
            raise FlowError([Problem(str(path), line, None, "", message)]) from exc
    return parse_flow(text, path=path)


def record_flow_revision(store: Store, loaded: LoadedFlow, *, at: datetime) -> bool:
    """Keep this revision of the flow (source and file) in the store; False if it was
    already kept."""
    return store.record_flow_revision(
        namespace=loaded.flow.namespace,
        flow_id=loaded.flow.id,
        revision=loaded.revision,
        source=loaded.source,
        path=str(loaded.path),
        at=at,
    )


def flow_states(
    store: Store, *, namespace: str | None = None, flow_id: str | None = None
) -> dict[tuple[str, str], FlowState]:
    """Whether each flow is paused (and since when) and where its triggers stand, by
    (namespace, flow id); flows the store knows nothing of are left out."""
    return store.flow_states(namespace=namespace, flow_id=flow_id)


def pause_flow(store: Store, namespace: str, flow_id: str, *, at: datetime | None = None) -> None:
    """Stop the flow's triggers (`runner pause`); its schedules' missed times are owed
    from now on and decided at unpause by each one's `recover_missed`."""
    store.set_flow_paused(namespace, flow_id, paused=True, at=at or _utcnow())


def unpause_flow(store: Store, namespace: str, flow_id: str, *, at: datetime | None = None) -> None:
    """Let the flow's triggers fire again (`runner unpause`), triggers disabled by their
    `stop_after` included."""
    store.set_flow_paused(namespace, flow_id, paused=False, at=at or _utcnow())


def latest_executions(
    store: Store, flows: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], ExecutionRecord]:
    """The newest execution of each flow (namespace, flow id) that has one."""
    from runner.store import ExecutionFilter

    found = {}
    for namespace, flow_id in flows:
        page = store.list_executions(ExecutionFilter(namespace=namespace, flow_id=flow_id), limit=1)
        if page.items:
            found[(namespace, flow_id)] = page.items[0]
    return found


def fire_due(
    store: Store,
    worker: Worker,
    flows: Iterable[LoadedFlow],
    *,
    now: datetime,
    seen: set[str],
) -> list[str]:
    """One tick of a server: fire the schedules and flow triggers of `flows` that are
    due at `now` (see `runner.triggers.firing`); the ids of the executions started.
    A flow whose triggers fail is logged and the others go on."""
    from runner.triggers import firing

    ctx = firing.Firing(store, worker.submit, log)
    states = store.flow_states()
    started: list[str] = []
    for loaded in flows:
        key = (loaded.flow.namespace, loaded.flow.id)
        try:
            started += firing.fire_schedules(ctx, loaded, states.get(key), now)
            started += firing.fire_flow_triggers(ctx, loaded, states.get(key), now, seen)
        except RunnerError as exc:
            log.error("triggers_failed", flow_id=loaded.flow.full_id, error=str(exc))
    return started


def fire_webhook(
    store: Store,
    worker: Worker,
    loaded: LoadedFlow,
    key: str,
    *,
    body: Any,
    headers: Mapping[str, str],
    now: datetime | None = None,
) -> str:
    """Start `loaded` for a call of its webhook with `key`; the execution id.
    NotFoundError for no such (enabled) webhook, ConflictError if the flow is paused."""
    from runner.triggers import firing

    state = store.flow_states(namespace=loaded.flow.namespace, flow_id=loaded.flow.id)
    ctx = firing.Firing(store, worker.submit, log)
    return firing.fire_webhook(
        ctx,
        loaded,
        key,
        state.get((loaded.flow.namespace, loaded.flow.id)),
        body=body,
        headers=headers,
        now=now or _utcnow(),
    )


@dataclass(frozen=True)
class Backfill:
    """What a backfill started (or, dry, would start): one item per scheduled time."""

    flow_id: str
    trigger_id: str
    times: tuple[BackfillTime, ...]

    @property
    def started(self) -> list[str]:
        return [t.execution_id for t in self.times if t.execution_id and not t.already_run]


def backfill(
    store: Store,
    flow: str | Path | LoadedFlow,
    *,
    start: datetime,
    end: datetime,
    trigger: str | None = None,
    worker: Worker | None = None,
    dry_run: bool = False,
    on_time: Callable[[BackfillTime], None] | None = None,
) -> Backfill:
    """One execution of the flow per time of its schedule `trigger` in [start, end),
    oldest first, each with `trigger.date` set to its time, run by `worker` (`Worker.wait`
    for them); a time that already ran (by the schedule or a backfill, here or in another
    process) is not run again. A start or end without a zone is in the trigger's."""
    from runner.triggers import firing

    loaded = flow if isinstance(flow, LoadedFlow) else load_flow(flow)
    schedule = firing.pick_schedule(loaded, trigger)
    times = firing.backfill_times(schedule, start, end)
    if worker is None and not dry_run:
        raise UsageError("a backfill that is not a dry run needs a worker to run it")
    submit = worker.submit if worker is not None else _no_submit
    ctx = firing.Firing(store, submit, log)
    found = firing.backfill(ctx, loaded, schedule, times, dry_run=dry_run, on_time=on_time)
    return Backfill(loaded.flow.full_id, schedule.id, tuple(found))


def _no_submit(*args: Any, **kwargs: Any) -> str:
    raise AssertionError("a dry run starts nothing")


def expire_pauses(store: Store, worker: Worker, *, now: datetime) -> list[str]:
    """Resume (as their `on_timeout` says) the paused executions whose pause task's
    `timeout` has passed; the ids of those this process took (another server may take
    some first)."""
    from runner.restart import latest_attempts
    from runner.store import ExecutionFilter

    taken = []
    page = store.list_executions(ExecutionFilter(states=(ExecutionState.PAUSED,)), limit=1000)
    for record in page.items:
        for node_id, run in latest_attempts(record.task_runs).items():
            if run.state is not TaskState.PAUSED or run.started_at is None:
                continue
            deadline = _pause_deadline(store, record.id, node_id, run.started_at)
            if deadline is None or deadline > now:
                continue
            try:
                taken.append(worker.resume(record.id, task=node_id, timed_out=True))
            except ConflictError:
                continue  # resumed, killed or timed out by someone else meanwhile
            except RunnerError as exc:
                log.error("pause_timeout_failed", execution_id=record.id, error=str(exc))
            break
    return taken


_deadlines: dict[tuple[str, str], datetime | None] = {}


def _pause_deadline(
    store: Store, execution_id: str, node_id: str, started_at: datetime
) -> datetime | None:
    """When a paused task times out (None: it waits for ever), read from the flow as it
    was recorded with the execution; remembered, since the flow of an execution never
    changes."""
    key = (execution_id, node_id)
    if key not in _deadlines:
        task = _stored_flow(store, execution_id).flow.task(dag.task_id_of(node_id))
        if len(_deadlines) > 10_000:
            _deadlines.clear()
        _deadlines[key] = None if task.timeout is None else started_at + task.timeout.delta
    return _deadlines[key]


@dataclass(frozen=True)
class HealthReport:
    """`ok`, or what went wrong, for the database and the engine."""

    database: str
    engine: str

    @property
    def ok(self) -> bool:
        return self.database == "ok" and self.engine == "ok"


def check_health(store: Store, backend: Backend) -> HealthReport:
    """Whether the database and the engine answer now (what `GET /health` reports)."""
    database = engine = "ok"
    try:
        store.ping()
    except RunnerError as exc:
        database = str(exc)
    try:
        backend.check()
    except RunnerError as exc:
        engine = str(exc)
    return HealthReport(database, engine)


def create_token(store: Store, name: str) -> tuple[str, ApiToken]:
    """A new API token named `name`: the secret (shown once, never stored) and what is
    stored of it. ConflictError if a token of that name exists."""
    from runner.tokens import check_token_name, new_token

    try:
        check_token_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    secret, record = new_token(name, now=_utcnow())
    store.add_token(record)
    return secret, record


def list_tokens(store: Store) -> list[ApiToken]:
    """Every token, by name: names, when made, the first characters; never the secret."""
    return store.list_tokens()


def revoke_token(store: Store, name: str) -> None:
    """Delete the token `name`: requests carrying it are refused from now on.
    NotFoundError if there is none."""
    if not store.remove_token(name):
        names = [t.name for t in store.list_tokens()]
        from runner.messages import did_you_mean

        raise NotFoundError(f"no token named {name!r}{did_you_mean(name, names)}")


def verify_token(store: Store, presented: str) -> str | None:
    """The name of the token `presented` is, or None (unknown, revoked, not a token)."""
    from runner.tokens import looks_like_token, token_digest
    from runner.tokens import verify_token as matches

    if not looks_like_token(presented):
        return None
    record = store.find_token(token_digest(presented))
    if record is None or not matches(presented, record):
        return None
    return record.name


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- reading the history ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutionPage:
    """One page of executions, newest first; `next_cursor` fetches the following page."""

    executions: tuple[ExecutionRecord, ...]
    next_cursor: str | None


def list_executions(
    store: Store,
    *,
    namespace: str | None = None,
    flow_id: str | None = None,
    states: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    after: str | None = None,
    limit: int = 20,
) -> ExecutionPage:
    """Executions newest first, filtered; `after` is the cursor of the previous page."""
    from runner.store import ExecutionFilter

    if not 1 <= limit <= 10_000:
        raise UsageError(f"limit must be between 1 and 10000, not {limit}")
    wanted = ExecutionFilter(
        namespace=namespace,
        flow_id=flow_id,
        states=tuple(s.upper() for s in states),
        labels=dict(labels or {}),
        created_after=created_after,
        created_before=created_before,
    )
    page = store.list_executions(wanted, after=after, limit=limit)
    return ExecutionPage(tuple(page.items), page.next_cursor)


def get_execution(store: Store, execution: str) -> ExecutionRecord:
    """One execution with its task runs; `execution` may be a unique id prefix."""
    return store.get_execution(execution)


def execution_flow(store: Store, execution: str) -> LoadedFlow:
    """The flow as the execution ran it (the source of its revision, kept with it): the
    flow file may have changed since. `execution` may be a unique id prefix."""
    record = store.get_execution(execution)
    return _stored_flow(store, record.id)


def get_execution_state(store: Store, execution_id: str) -> ExecutionState:
    """The state of the execution with this (whole) id, read without its task runs."""
    state = store.execution_states([execution_id]).get(execution_id)
    if state is None:
        raise NotFoundError(f"no execution matches '{execution_id}'")
    return state


def get_artifact(store: Store, execution: str, artifact_id: int) -> ArtifactRecord:
    """One artifact of an execution; NotFoundError if it is not one of its."""
    record = store.get_execution(execution)
    try:
        artifact = store.get_artifact(artifact_id)
    except NotFoundError:
        artifact = None
    if artifact is None or artifact.execution_id != record.id:
        raise NotFoundError(f"execution {record.id} has no artifact {artifact_id}")
    return artifact


def get_logs(
    store: Store,
    execution: str,
    *,
    task_id: str | None = None,
    after: int | None = None,
    limit: int | None = None,
    tail: int | None = None,
) -> list[LogRecord]:
    """The stored lines of an execution (or one task run), in order, after the line id
    `after`, at most `limit` of them, or only the last `tail` (`runner logs --tail`: read
    from the end, however long the log)."""
    execution_id = _execution_id(store, execution)
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be at least 1, not {limit}")
    if tail is not None and tail < 1:
        raise UsageError(f"tail must be at least 1, not {tail}")
    return store.get_logs(execution_id, task_id=task_id, after=after, limit=limit, tail=tail)


def _execution_id(store: Store, execution: str) -> str:
    """The id `execution` names (a whole id, or a unique prefix); NotFoundError if none.
    A whole id is checked without reading the execution's task runs (a log viewer asks
    for every page)."""
    if len(execution) == 32 and execution in store.execution_states([execution]):
        return execution
    return store.get_execution(execution).id


def list_artifacts(
    store: Store, execution: str, *, task_id: str | None = None
) -> list[ArtifactRecord]:
    """The files copied out of an execution's task runs."""
    record = store.get_execution(execution)
    return store.list_artifacts(record.id, task_id=task_id)


@dataclass(frozen=True)
class Info:
    """What `runner info` reports: which backend and engine, which database."""

    backend: str
    engine: EngineInfo | None
    engine_error: str | None
    database: str  # the URL without its password
    schema: SchemaRevision | None
    database_error: str | None

    def to_dict(self) -> dict[str, Any]:
        engine: dict[str, Any] | None = None
        if self.engine is not None:
            engine = {
                "name": self.engine.name,
                "version": self.engine.version,
                "os": self.engine.os,
                "address": self.engine.address,
                "chosen_by": self.engine.chosen_by,
            }
            if self.engine.nodes:
                engine["nodes"] = [
                    {
                        "name": n.name,
                        "id": n.id,
                        "role": n.role,
                        "state": n.state,
                        "availability": n.availability,
                        "address": n.address,
                        "task_runs": n.task_runs,
                    }
                    for n in self.engine.nodes
                ]
        schema = None
        if self.schema is not None:
            schema = {
                "revision": self.schema.current,
                "head": self.schema.head,
                "is_head": self.schema.is_head,
            }
        return {
            "backend": self.backend,
            "engine": engine,
            "engine_error": self.engine_error,
            "database": self.database,
            "schema": schema,
            "database_error": self.database_error,
        }


def info(url: str | None = None, backend: Backend | None = None) -> Info:
    """Which backend and engine runner would use, and which database at which revision;
    what cannot be reached is said, not raised."""
    from runner.store import open_store as open_database

    the_url = url or database_url()
    name = backend_name()
    engine: EngineInfo | None = None
    engine_error = None
    try:
        the_backend = backend if backend is not None else default_backend()
        try:
            engine = the_backend.describe()
        finally:
            if backend is None:
                the_backend.close()
    except RunnerError as exc:
        engine_error = str(exc)
    schema: SchemaRevision | None = None
    database_error = None
    try:
        store = open_database(the_url, upgrade=False)
        try:
            schema = store.schema_revision()
            shown = store.url
        finally:
            store.close()
    except RunnerError as exc:
        database_error = str(exc)
        shown = _without_password(the_url)
    return Info(
        engine.backend if engine is not None else name,
        engine,
        engine_error,
        shown,
        schema,
        database_error,
    )


def _without_password(url: str) -> str:
    """A database URL as messages may show it (the password as ***)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


# -- the parts run and restart share ---------------------------------------------------------


_Job = Callable[["Store", "Backend", "Control", "_Lease"], ExecutionResult]
"""What a worker thread runs for one execution: given the store, the backend, the
execution's Control and its lease (started when it was queued)."""


@dataclass(frozen=True)
class _Prepared:
    loaded: LoadedFlow
    values: Mapping[str, Any]  # what the tasks see
    stored: Mapping[str, Any]  # what the store keeps: secret inputs as ******
    options: RunOptions
    labels: Mapping[str, str]
    trigger: TriggerEvent | None


def _prepare(
    flow: str | Path | LoadedFlow,
    inputs: Mapping[str, Any] | None,
    concurrency: int | None,
    keep_workspace: bool,
    allow_env: Iterable[str],
    artifacts_dir_: str | Path | None,
    *,
    labels: Mapping[str, str] | None = None,
    trigger: TriggerEvent | None = None,
) -> _Prepared:
    """Everything that can be refused as bad input, done before anything is recorded: the
    inputs, the environment the operator allows (runner.policy), the local files."""
    loaded = flow if isinstance(flow, LoadedFlow) else load_flow(flow)
    given = inputs or {}
    values = resolve_inputs(loaded, given)
    Limits.from_settings()  # a bad template budget is said now, not at the first task
    env = _visible_env(loaded, allow_env)
    secret_ids = secret_input_ids(loaded.flow.inputs)
    masker = Masker.from_env(extra=[values[i] for i in secret_ids if values.get(i) is not None])
    # Read local files now: a missing file is bad input, not a run.
    workspace_files = _pack_workspace_files(loaded, given)
    options = _options(
        loaded,
        concurrency,
        keep_workspace,
        env,
        artifacts_dir_,
        workspace_files,
        masker,
        trigger=trigger.template_values() if trigger is not None else None,
    )
    all_labels = {**loaded.flow.labels, **(labels or {})}
    if trigger is not None:
        all_labels.update(trigger.labels())
    stored = stored_inputs(values, secret_ids, masker)
    return _Prepared(loaded, values, stored, options, all_labels, trigger)


def _create(store: Store, prepared: _Prepared, owner: Owner) -> str:
    """Record the execution, leased by `owner`; with a scheduled trigger, with the fire
    record that makes its time run once (AlreadyFiredError if it ran)."""
    execution_id = uuid.uuid4().hex
    loaded = prepared.loaded
    from runner.store.records import TriggerFire

    trigger = prepared.trigger
    fire = None
    if trigger is not None and trigger.fire_key is not None:
        fire = TriggerFire(
            trigger_id=trigger.trigger_id,
            key=trigger.fire_key,
            scheduled_at=trigger.scheduled_at,
            backfill=trigger.backfill,
        )
    store.create_execution(
        execution_id=execution_id,
        flow_id=loaded.flow.id,
        namespace=loaded.flow.namespace,
        revision=loaded.revision,
        source=loaded.source,
        inputs=prepared.stored,
        labels=dict(prepared.labels),
        owner=owner,
        flow_path=str(loaded.path),
        trigger=trigger.to_json() if trigger is not None else None,
        fire=fire,
    )
    return execution_id


def _trigger_values(record: ExecutionRecord) -> Mapping[str, Any] | None:
    """`trigger.*` of a recorded execution, for its templates when it runs again."""
    if not record.trigger:
        return None
    return TriggerEvent.from_json(record.trigger).template_values()


def _options(
    loaded: LoadedFlow,
    concurrency: int | None,
    keep_workspace: bool,
    env: Mapping[str, str],
    artifacts_dir_: str | Path | None,
    workspace_files: bytes | None,
    masker: Masker,
    *,
    trigger: Mapping[str, Any] | None = None,
) -> RunOptions:
    from runner.scheduler import RunOptions

    return RunOptions(
        concurrency=concurrency or loaded.flow.concurrency.tasks or DEFAULT_CONCURRENCY,
        keep_workspace=keep_workspace,
        artifacts_dir=Path(artifacts_dir_) if artifacts_dir_ else artifacts_dir(),
        env=env,
        workspace_files=workspace_files,
        masker=masker,
        trigger=trigger,
    )


def _visible_env(loaded: LoadedFlow, allow_env: Iterable[str]) -> dict[str, str]:
    """The environment a run's templates may read; a PolicyError naming the flow file's
    `allowed_env` line if it declares a name the operator has not allowed (`--env`,
    RUNNER_ALLOWED_ENV)."""
    line = loaded.line_of(("allowed_env",)) if loaded.flow.allowed_env else None
    where = f"{loaded.file}:{line}" if line is not None else loaded.file
    return visible_env(loaded.flow.allowed_env, tuple(allow_env), where=where)


def _execute(
    store: Store,
    backend: Backend,
    loaded: LoadedFlow,
    execution_id: str,
    values: Mapping[str, Any],
    options: RunOptions,
    *,
    owner: Owner,
    control: Control,
    handle_signals: bool,
    resume: Resume | None = None,
    lease: _Lease | None = None,
) -> ExecutionResult:
    """Hold the lease, wait for a concurrency slot, run; the part run and restart share.
    A worker passes the `lease` it started when the execution was submitted."""
    from runner.scheduler import Scheduler
    from runner.store import LogWriter

    held = lease if lease is not None else _Lease.of(store, execution_id, owner, control)
    writer = LogWriter(held.store)
    scheduler = Scheduler(backend, held.store, writer, control)
    try:
        with (
            _holding(held.heartbeat, own=lease is None),
            _cancel_on_signals(control.cancel, enabled=handle_signals),
        ):
            refused = _wait_for_slot(held.store, loaded, execution_id, control)
            if refused is not None:
                return ExecutionResult(execution_id, loaded.flow.full_id, refused)
            return scheduler.run(execution_id, loaded, values, options, resume)
    finally:
        writer.close()


@dataclass(frozen=True)
class _Lease:
    """An execution's lease as a run holds it: the heartbeat renewing it, and the store
    the run writes through, fenced by the heartbeat if the lease is lost (runner.store.
    fence): an owner that lost its lease kills its containers and writes nothing more."""

    store: FencedStore
    heartbeat: Heartbeat | KeptLease

    @classmethod
    def of(
        cls,
        store: Store,
        execution_id: str,
        owner: Owner,
        control: Control,
        *,
        keeper: LeaseKeeper | None = None,
        on_stop: Callable[[str], None] | None = None,
    ) -> _Lease:
        """The lease's own heartbeat thread, or (a worker's) a place in `keeper`; a kill
        request or a lost lease calls `on_stop` (default: cancel the run)."""
        from runner.lease import Heartbeat
        from runner.store.fence import FencedStore

        fenced = FencedStore(store)
        stop = on_stop if on_stop is not None else control.cancel
        if keeper is not None:
            return cls(fenced, keeper.hold(execution_id, stop, on_lost=fenced.fence))
        heartbeat = Heartbeat(fenced, execution_id, owner, stop, on_lost=fenced.fence)
        return cls(fenced, heartbeat)


@contextmanager
def _holding(heartbeat: Heartbeat | KeptLease, *, own: bool) -> Iterator[None]:
    """Run `heartbeat` for the block if it is ours to start (a worker starts its own)."""
    if not own:
        yield
        return
    with heartbeat:
        yield


def _wait_for_slot(
    store: Store, loaded: LoadedFlow, execution_id: str, control: Control
) -> ExecutionState | None:
    """Take one of the flow's `concurrency.limit` slots, queueing (state QUEUED) or giving
    up as its `behavior` says. None once the execution may run, else its final state."""
    limit = loaded.flow.concurrency.limit
    if limit is None:
        return None
    behavior = loaded.flow.concurrency.behavior
    elog = log.bind(execution_id=execution_id, flow_id=loaded.flow.full_id)
    queued = False
    while True:
        if control.cancelled:
            store.set_execution_state(
                execution_id, ExecutionState.KILLED, error=control.kill_reason
            )
            return ExecutionState.KILLED
        running = store.try_start(
            execution_id,
            namespace=loaded.flow.namespace,
            flow_id=loaded.flow.id,
            limit=limit,
            lease_s=lease_seconds(),
        )
        if not running:
            if queued:
                elog.info("execution_dequeued")
            return None
        if behavior is not ConcurrencyBehavior.QUEUE:
            state = (
                ExecutionState.CANCELLED
                if behavior is ConcurrencyBehavior.CANCEL
                else ExecutionState.FAILED
            )
            error = (
                f"{'cancelled' if state is ExecutionState.CANCELLED else 'failed'}: flow"
                f" {loaded.flow.full_id} already runs {len(running)} execution(s)"
                f" ({', '.join(running)}), its concurrency limit is {limit}"
            )
            store.set_execution_state(execution_id, state, error=error)
            elog.warning("execution_refused", reason=error)
            return state
        if not queued:
            queued = True
            store.set_execution_state(execution_id, ExecutionState.QUEUED)
            elog.info("execution_queued", limit=limit, running=len(running))
        control.wait(QUEUE_POLL_SECONDS)


@contextmanager
def _store_and_backend(
    store: Store | None, backend: Backend | None, *, lazy_backend: bool = False
) -> Iterator[tuple[Store, Any]]:
    """The given store and backend, or the defaults, closed after if opened here. With
    `lazy_backend`, the second value is a function connecting on first call."""
    the_store = store if store is not None else open_store(recover=False)
    opened: list[Backend] = []

    def connect() -> Backend:
        if backend is not None:
            return backend
        if not opened:
            opened.append(default_backend())
        return opened[0]

    try:
        yield the_store, (connect if lazy_backend else connect())
    finally:
        for made in opened:
            made.close()
        if store is None:
            the_store.close()


def _pack_workspace_files(loaded: LoadedFlow, given: Mapping[str, str]) -> bytes | None:
    """`files:` of the flow and file inputs, as one tar for the workspace (None if neither)."""
    extra = {
        f"inputs/{input_id}/{path.name}": path
        for input_id, path in file_inputs(loaded, given).items()
    }
    if not loaded.flow.files and not extra:
        return None
    return pack_files(loaded.flow.files, loaded.base_dir, extra=extra)


@contextmanager
def _cancel_on_signals(cancel: Callable[[], None], *, enabled: bool) -> Iterator[None]:
    """Route Ctrl-C and SIGTERM to `cancel` for the duration of a run (main thread only).
    A second Ctrl-C while the kill is under way exits at once."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupts = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupts
        interrupts += 1
        if signum == signal.SIGINT and interrupts > 1:
            raise KeyboardInterrupt
        cancel()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
