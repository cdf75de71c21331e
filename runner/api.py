"""The library API: what the CLI, a server and tests call. It wires the stages together:

load_flow -> resolve_inputs -> Store.create_execution -> (a concurrency slot) ->
Scheduler(backend, store).run, with the execution's lease renewed meanwhile.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from runner import dag, recovery
from runner.archives import pack_files
from runner.backends.base import Backend
from runner.errors import BackendError, UsageError
from runner.execution import ExecutionResult, ExecutionState
from runner.flow import ConcurrencyBehavior
from runner.inputs import file_inputs, resolve_inputs
from runner.lease import Heartbeat, Lease, Owner
from runner.loader import LoadedFlow, load_flow, parse_flow
from runner.logs import get_logger
from runner.recovery import Garbage, Recovered, recover_orphans
from runner.restart import RestartPlan, plan_restart
from runner.scheduler import Resume, RunOptions, Scheduler
from runner.settings import (
    DEFAULT_ARTIFACTS_DIR,
    DEFAULT_CONCURRENCY,
    QUEUE_POLL_SECONDS,
    heartbeat_seconds,
    lease_seconds,
)
from runner.specs import workspace_name
from runner.store import LogWriter, Store
from runner.store import open_store as _open_store
from runner.values import InputType

__all__ = [
    "collect_garbage",
    "kill_execution",
    "load_flow",
    "open_store",
    "recover",
    "restart_execution",
    "run_flow",
]

log = get_logger()


def open_store(url: str | None = None) -> Store:
    """Open (and migrate) the database at `url`, or the default one."""
    return _open_store(url)


def default_backend() -> Backend:
    from runner.backends.docker import DockerBackend

    return DockerBackend.from_env()


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

    `allow_env` names variables of this process's environment that templates may read as
    `{{ env.NAME }}`, besides the flow's `allowed_env`. `handle_signals` turns SIGINT and
    SIGTERM into a clean kill of the execution (the CLI sets it). `on_created` receives the
    execution id as soon as it is recorded. A flow with `concurrency.limit` waits in state
    QUEUED for a slot (or ends CANCELLED / FAILED, as its `behavior` says).
    """
    loaded = flow if isinstance(flow, LoadedFlow) else load_flow(flow)
    given = inputs or {}
    values = resolve_inputs(loaded, given)
    # Read local files before anything is recorded: a missing file is bad input, not a run.
    workspace_files = _pack_workspace_files(loaded, given)
    with _store_and_backend(store, backend) as (the_store, the_backend):
        execution_id = uuid.uuid4().hex
        owner = Owner.here()
        the_store.create_execution(
            execution_id=execution_id,
            flow_id=loaded.flow.id,
            namespace=loaded.flow.namespace,
            revision=loaded.revision,
            source=loaded.source,
            inputs=values,
            labels=dict(loaded.flow.labels),
            owner=owner,
            flow_path=str(loaded.path),
        )
        if on_created is not None:
            on_created(execution_id)
        options = _options(
            loaded, concurrency, keep_workspace, allow_env, artifacts_dir, workspace_files
        )
        return _execute(
            the_store,
            the_backend,
            loaded,
            execution_id,
            values,
            options,
            owner=owner,
            handle_signals=handle_signals,
        )


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
        plan = dag.build_plan(loaded.flow)
        restart = plan_restart(plan, record.task_runs, from_task=from_task)
        kept = the_backend.workspace_exists(workspace_name(record.id))
        workspace_files = None
        if not kept:
            if any(spec.type is InputType.FILE for spec in loaded.flow.inputs):
                raise UsageError(
                    f"execution {record.id} cannot be restarted: its workspace volume is gone"
                    " and its file inputs with it; run the flow again with `runner run`"
                )
            # The files the succeeded tasks wrote are gone with it: they run again too.
            restart = RestartPlan(
                reused={}, rerun=tuple(plan.order), first_attempt=restart.first_attempt
            )
            workspace_files = _pack_workspace_files(loaded, {})
        owner = Owner.here()
        the_store.reopen_execution(record.id, owner)
        if on_restarted is not None:
            on_restarted(record.id, restart)
        options = _options(
            loaded, concurrency, keep_workspace, allow_env, artifacts_dir, workspace_files
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
    follow: Callable[[Lease], None] | None = None,
) -> list[Recovered]:
    """End the executions whose runner died (see `runner.recovery`); the CLI calls this
    whenever it opens the database, with `follow` handing executions whose containers still
    run to a background `runner recover`. Without a reachable engine nothing is done."""
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
        if backend is None:
            for made in opened:
                made.close()


def collect_garbage(
    store: Store, backend: Backend | None = None, *, dry_run: bool = False
) -> Garbage:
    """Remove the containers and volumes of executions that have ended (`runner gc`)."""
    with _store_and_backend(store, backend) as (the_store, the_backend):
        return recovery.collect_garbage(the_store, the_backend, dry_run=dry_run)


def _options(
    loaded: LoadedFlow,
    concurrency: int | None,
    keep_workspace: bool,
    allow_env: Iterable[str],
    artifacts_dir: str | Path | None,
    workspace_files: bytes | None,
) -> RunOptions:
    names = {*loaded.flow.allowed_env, *allow_env}
    return RunOptions(
        concurrency=concurrency or loaded.flow.concurrency.tasks or DEFAULT_CONCURRENCY,
        keep_workspace=keep_workspace,
        artifacts_dir=Path(artifacts_dir) if artifacts_dir else Path(DEFAULT_ARTIFACTS_DIR),
        env={name: os.environ[name] for name in sorted(names) if name in os.environ},
        workspace_files=workspace_files,
    )


def _execute(
    store: Store,
    backend: Backend,
    loaded: LoadedFlow,
    execution_id: str,
    values: Mapping[str, Any],
    options: RunOptions,
    *,
    owner: Owner,
    handle_signals: bool,
    resume: Resume | None = None,
) -> ExecutionResult:
    """Hold the lease, wait for a concurrency slot, run; the part run and restart share."""
    writer = LogWriter(store)
    scheduler = Scheduler(backend, store, writer)
    try:
        with (
            Heartbeat(store, execution_id, owner, scheduler.cancel),
            _cancel_on_signals(scheduler.cancel, enabled=handle_signals),
        ):
            refused = _wait_for_slot(store, loaded, execution_id, scheduler)
            if refused is not None:
                return ExecutionResult(execution_id, loaded.flow.full_id, refused)
            return scheduler.run(execution_id, loaded, values, options, resume)
    finally:
        writer.close()


def _wait_for_slot(
    store: Store, loaded: LoadedFlow, execution_id: str, scheduler: Scheduler
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
        if scheduler.cancelled:
            store.set_execution_state(
                execution_id, ExecutionState.KILLED, error=scheduler.kill_reason
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
        scheduler.wait_for_cancel(QUEUE_POLL_SECONDS)


@contextmanager
def _store_and_backend(
    store: Store | None, backend: Backend | None, *, lazy_backend: bool = False
) -> Iterator[tuple[Store, Any]]:
    """The given store and backend, or the defaults, closed after if opened here. With
    `lazy_backend`, the second value is a function connecting on first call."""
    the_store = store if store is not None else open_store()
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
    """Route Ctrl-C and SIGTERM to `cancel` for the duration of a run (main thread only)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        cancel()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
