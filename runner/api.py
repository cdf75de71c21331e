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

The heavy libraries (the engine's SDK, SQLAlchemy) are imported when a store or a
backend is opened, not when this module is.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from runner import dag, recovery
from runner.archives import pack_files
from runner.attempt import Control
from runner.errors import BackendError, RunnerError, UsageError
from runner.execution import ExecutionResult, ExecutionState
from runner.flow import ConcurrencyBehavior
from runner.inputs import file_inputs, resolve_inputs
from runner.lease import Heartbeat, Lease, Owner
from runner.loader import LoadedFlow, load_flow, parse_flow
from runner.logs import get_logger
from runner.policy import visible_env
from runner.recovery import Garbage, Recovered, recover_orphans
from runner.restart import RestartPlan, plan_restart
from runner.scheduler import Resume, RunOptions, Scheduler
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
from runner.store.fence import FencedStore
from runner.template_limits import Limits
from runner.values import InputType, parse_input_args

if TYPE_CHECKING:
    from runner.backends.base import Backend, EngineInfo
    from runner.store import (
        ArtifactRecord,
        ExecutionRecord,
        LogRecord,
        SchemaRevision,
        Store,
    )

__all__ = [
    "ExecutionPage",
    "Info",
    "Worker",
    "collect_garbage",
    "default_backend",
    "get_execution",
    "get_logs",
    "info",
    "kill_execution",
    "list_artifacts",
    "list_executions",
    "load_flow",
    "open_store",
    "parse_input_args",
    "recover",
    "restart_execution",
    "run_flow",
    "schema_revision",
    "submit",
    "task_run_names",
    "upgrade_schema",
]

log = get_logger()

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
) -> str:
    """Record a new execution and run it in a background worker; return its id at once.

    Bad input (flow, inputs, files) raises here, before anything is recorded. `worker`
    (default: one shared by the callers of this function with this store, running 4
    executions at once) decides how many run together; the others wait, CREATED and
    leased. `store` must stay open until the execution ends (`Worker.wait`)."""
    the_worker = worker if worker is not None else _default_worker(store, backend)
    return the_worker.submit(
        flow,
        inputs,
        concurrency=concurrency,
        keep_workspace=keep_workspace,
        allow_env=allow_env,
        artifacts_dir=artifacts_dir,
    )


class Worker:
    """Runs submitted executions in background threads of this process, `max_running` at
    a time (on top of each flow's own concurrency limit). A server holds one; `submit`
    uses a shared one."""

    def __init__(
        self, store: Store, *, backend: Backend | None = None, max_running: int = 4
    ) -> None:
        if max_running < 1:
            raise UsageError(f"a worker runs at least 1 execution at once, not {max_running}")
        self._store = store
        self._backend = backend
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="execution")
        self._lock = threading.Lock()
        self._futures: dict[str, Future[ExecutionResult]] = {}
        self._controls: dict[str, Control] = {}
        self._closed = False

    def submit(
        self,
        flow: str | Path | LoadedFlow,
        inputs: Mapping[str, str] | None = None,
        *,
        concurrency: int | None = None,
        keep_workspace: bool = False,
        allow_env: Iterable[str] = (),
        artifacts_dir: str | Path | None = None,
    ) -> str:
        """See `runner.api.submit`."""
        prepared = _prepare(flow, inputs, concurrency, keep_workspace, allow_env, artifacts_dir)
        owner = Owner.here()
        control = Control()
        with self._lock:
            if self._closed:
                raise UsageError("this worker is shut down: it takes no more executions")
            execution_id = _create(self._store, prepared, owner)
            # Leased from now on, also while it waits for a thread: another process must
            # not take it for orphaned.
            lease = _Lease.of(self._store, execution_id, owner, control)
            lease.heartbeat.__enter__()
            self._controls[execution_id] = control
            self._futures[execution_id] = self._pool.submit(
                self._run, prepared, execution_id, owner, control, lease
            )
        return execution_id

    def _run(
        self,
        prepared: _Prepared,
        execution_id: str,
        owner: Owner,
        control: Control,
        lease: _Lease,
    ) -> ExecutionResult:
        try:
            with _store_and_backend(self._store, self._backend) as (store, backend):
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
        except RunnerError as exc:
            # Recorded by the scheduler where it could be (an unreachable engine ends the
            # execution FAILED); the caller of `wait` gets the error.
            log.error("execution_failed", execution_id=execution_id, error=str(exc))
            raise
        finally:
            lease.heartbeat.__exit__(None, None, None)

    def wait(self, execution_id: str, timeout: float | None = None) -> ExecutionResult:
        """Block until a submitted execution ends; its result (or the error it raised)."""
        with self._lock:
            future = self._futures.get(execution_id)
        if future is None:
            raise UsageError(f"execution {execution_id} was not submitted to this worker")
        return future.result(timeout=timeout)

    def running(self) -> list[str]:
        """The ids of the executions submitted here that have not ended."""
        with self._lock:
            return [eid for eid, future in self._futures.items() if not future.done()]

    def kill(self, execution_id: str, reason: str | None = None) -> bool:
        """Kill an execution submitted here, at once (False if it is not running here)."""
        with self._lock:
            control = self._controls.get(execution_id)
            future = self._futures.get(execution_id)
        if control is None or future is None or future.done():
            return False
        control.cancel(reason)
        return True

    def shutdown(self, *, grace_s: float = 0.0) -> None:
        """Take no more executions; let those running go on for `grace_s` seconds, then
        kill them (recorded KILLED, as `runner kill` would) and wait for them to end."""
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
        for execution_id in self.running():
            self.kill(execution_id, "killed: the worker running it shut down")
        self._pool.shutdown(wait=True)


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
    """
    with _store_and_backend(store, backend) as (the_store, the_backend):
        record = the_store.get_execution(execution)
        if record.state not in (ExecutionState.FAILED, ExecutionState.KILLED):
            raise UsageError(
                f"execution {record.id} is {record.state.value}: only a FAILED or KILLED"
                " execution can be restarted"
            )
        source = the_store.get_execution_source(record.id)
        flow_path = the_store.execution_flow_path(record.id)
        loaded = parse_flow(source, path=flow_path or f"execution-{record.id}.yml")
        # Secret input values were never stored, so they cannot be given again.
        lost = sorted(
            i for i in secret_input_ids(loaded.flow.inputs) if record.inputs.get(i) is not None
        )
        if lost:
            raise UsageError(
                f"execution {record.id} cannot be restarted: the values of its secret"
                f" input(s) {', '.join(lost)} are not stored; run the flow again with"
                " `runner run`"
            )
        env = _visible_env(loaded, allow_env)
        plan = dag.build_plan(loaded.flow)
        restart = plan_restart(plan, record.task_runs, from_task=from_task)
        workspace = the_backend.workspace(record.id, execution_labels(record.id, loaded.flow))
        kept = workspace.exists()
        workspace_files = None
        if not kept:
            if any(spec.type is InputType.FILE for spec in loaded.flow.inputs):
                raise UsageError(
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
        owner = Owner.here()
        the_store.reopen_execution(record.id, owner)
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
        )
        resume = Resume(
            done=restart.reused, first_attempt=restart.first_attempt, workspace_kept=kept
        )
        return _execute(
            the_store,
            the_backend,
            loaded,
            record.id,
            dict(record.inputs),
            options,
            owner=owner,
            control=Control(),
            handle_signals=handle_signals,
            resume=resume,
        )


def kill_execution(
    execution: str,
    *,
    store: Store | None = None,
    backend: Backend | None = None,
    wait_s: float | None = None,
) -> ExecutionState:
    """Ask the process running an execution (here or on any machine sharing the
    database) to kill it, and wait up to `wait_s` seconds for it to end; return the state
    it ended in (a state that is not final if it did not end in time). An execution whose
    runner is gone is killed here: its containers and workspace are removed."""
    with _store_and_backend(store, backend, lazy_backend=True) as (the_store, connect):
        record = the_store.get_execution(execution)
        if record.state.is_final:
            return record.state
        the_store.request_kill(record.id)
        deadline = time.monotonic() + (default_kill_wait() if wait_s is None else wait_s)
        while True:
            recover_orphans(the_store, connect, execution_id=record.id, kill=True)
            state = the_store.get_execution(record.id).state
            if state.is_final or time.monotonic() >= deadline:
                return state
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


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
    with _store_and_backend(store, backend) as (the_store, the_backend):
        return recovery.collect_garbage(the_store, the_backend, dry_run=dry_run)


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


def get_logs(
    store: Store,
    execution: str,
    *,
    task_id: str | None = None,
    after: int | None = None,
    limit: int | None = None,
) -> list[LogRecord]:
    """The stored lines of an execution (or one task run), in order, after the line id
    `after`, at most `limit` of them."""
    record = store.get_execution(execution)
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be at least 1, not {limit}")
    return store.get_logs(record.id, task_id=task_id, after=after, limit=limit)


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


@dataclass(frozen=True)
class _Prepared:
    loaded: LoadedFlow
    values: Mapping[str, Any]  # what the tasks see
    stored: Mapping[str, Any]  # what the store keeps: secret inputs as ******
    options: RunOptions


def _prepare(
    flow: str | Path | LoadedFlow,
    inputs: Mapping[str, str] | None,
    concurrency: int | None,
    keep_workspace: bool,
    allow_env: Iterable[str],
    artifacts_dir_: str | Path | None,
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
        loaded, concurrency, keep_workspace, env, artifacts_dir_, workspace_files, masker
    )
    return _Prepared(loaded, values, stored_inputs(values, secret_ids, masker), options)


def _create(store: Store, prepared: _Prepared, owner: Owner) -> str:
    execution_id = uuid.uuid4().hex
    loaded = prepared.loaded
    store.create_execution(
        execution_id=execution_id,
        flow_id=loaded.flow.id,
        namespace=loaded.flow.namespace,
        revision=loaded.revision,
        source=loaded.source,
        inputs=prepared.stored,
        labels=dict(loaded.flow.labels),
        owner=owner,
        flow_path=str(loaded.path),
    )
    return execution_id


def _options(
    loaded: LoadedFlow,
    concurrency: int | None,
    keep_workspace: bool,
    env: Mapping[str, str],
    artifacts_dir_: str | Path | None,
    workspace_files: bytes | None,
    masker: Masker,
) -> RunOptions:
    return RunOptions(
        concurrency=concurrency or loaded.flow.concurrency.tasks or DEFAULT_CONCURRENCY,
        keep_workspace=keep_workspace,
        artifacts_dir=Path(artifacts_dir_) if artifacts_dir_ else artifacts_dir(),
        env=env,
        workspace_files=workspace_files,
        masker=masker,
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
    heartbeat: Heartbeat

    @classmethod
    def of(cls, store: Store, execution_id: str, owner: Owner, control: Control) -> _Lease:
        fenced = FencedStore(store)
        heartbeat = Heartbeat(fenced, execution_id, owner, control.cancel, on_lost=fenced.fence)
        return cls(fenced, heartbeat)


@contextmanager
def _holding(heartbeat: Heartbeat, *, own: bool) -> Iterator[None]:
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
