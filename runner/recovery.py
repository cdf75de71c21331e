"""Executions whose runner died, and what runner left on the engine.

`recover_orphans` finds executions whose lease expired (their process was killed, their
machine rebooted), takes each lease over and ends the execution properly: a task whose
container still runs is followed to its end (the lines after the last stored one, its exit
code, outputs and artifacts); one whose container is gone is FAILED with "runner died".
Nothing stays RUNNING forever. `collect_garbage` removes the containers and volumes of
executions that have ended.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from runner import dag
from runner.attempt import Attempts, Control
from runner.backends.base import Backend, Workspace
from runner.errors import BackendError, FlowError, RunnerError
from runner.execution import (
    LABEL_EXECUTION,
    LABEL_TASK_RUN,
    ContainerStatus,
    ExecutionState,
    ManagedResource,
    TaskState,
)
from runner.lease import Heartbeat, Lease, Owner, is_expired
from runner.loader import LoadedFlow, parse_flow
from runner.logs import module_logger
from runner.restart import latest_attempts
from runner.settings import DEFAULT_ARTIFACTS_DIR, lease_seconds
from runner.specs import TaskContext, execution_labels
from runner.store import ExecutionRecord, LogWriter, Store, TaskRunRecord

log = module_logger("runner")


@dataclass(frozen=True)
class Recovered:
    """How an orphaned execution was ended."""

    execution_id: str
    state: ExecutionState
    adopted: tuple[str, ...]  # task runs whose container was followed to its end
    lost: tuple[str, ...]  # task runs recorded FAILED (or KILLED): their container was gone
    holder: str  # who had it: "pid 123 on host"

    def __str__(self) -> str:
        parts = [f"execution {self.execution_id}: its runner ({self.holder}) died"]
        if self.adopted:
            parts.append(f"followed {', '.join(self.adopted)} to the end")
        if self.lost:
            parts.append(f"lost {', '.join(self.lost)}")
        return "; ".join(parts) + f"; now {self.state.value}"


def expired_leases(store: Store, execution_id: str | None = None) -> list[Lease]:
    """The executions, not final, whose runner is gone."""
    here = Owner.here()
    return [
        lease
        for lease in store.active_leases(execution_id, lease_s=lease_seconds())
        if is_expired(lease, host=here.host, boot_id=here.boot_id)
    ]


def recover_orphans(
    store: Store,
    connect: Callable[[], Backend],
    *,
    execution_id: str | None = None,
    kill: bool = False,
    follow: Callable[[Lease], None] | None = None,
) -> list[Recovered]:
    """End every execution (or just `execution_id`) whose runner died; see the module.

    `connect` is called only if there is something to recover. With `kill`, running
    containers are killed instead of followed and the execution ends KILLED (`runner kill`
    of an execution whose runner is gone). A lease another process takes first is skipped.

    Following a running container blocks until it ends, which can be hours. With `follow`,
    an execution that still has a running container is handed to `follow(lease)` instead
    (the CLI starts `runner recover EXECUTION` in the background), so that the command
    that noticed it does not hang.
    """
    expired = expired_leases(store, execution_id)
    if not expired:
        return []
    backend = connect()
    owner = Owner.here()
    recovered = []
    for lease in expired:
        stop = kill or lease.kill_requested
        if follow is not None and not stop and _still_running(backend, lease.execution_id):
            follow(lease)
            continue
        if not store.take_lease(lease, owner):
            continue  # another process is recovering it
        recovered.append(_recover(store, backend, lease, owner, kill=stop))
    return recovered


def _still_running(backend: Backend, execution_id: str) -> bool:
    return any(c.running for c in backend.find_containers({LABEL_EXECUTION: execution_id}))


def _recover(
    store: Store, backend: Backend, lease: Lease, owner: Owner, *, kill: bool
) -> Recovered:
    """End one orphaned execution whose lease `owner` has taken; while its containers are
    followed, the lease is renewed and a `runner kill` is obeyed."""
    writer = LogWriter(store)
    control = Control()

    def stop(reason: str) -> None:
        control.cancel(reason)
        for container in backend.find_containers({LABEL_EXECUTION: lease.execution_id}):
            if container.running:
                backend.kill(container.id)

    try:
        with Heartbeat(store, lease.execution_id, owner, stop):
            return _end(store, backend, writer, control, lease, kill=kill)
    finally:
        writer.close()


def _end(
    store: Store,
    backend: Backend,
    writer: LogWriter,
    control: Control,
    lease: Lease,
    *,
    kill: bool,
) -> Recovered:
    execution_id = lease.execution_id
    record = store.get_execution(execution_id)
    labels = {LABEL_EXECUTION: execution_id}
    died = f"the runner running it ({lease.holder}) died"
    elog = log.bind(execution_id=execution_id)
    elog.warning("execution_orphaned", holder=lease.holder, state=record.state.value)
    if record.state is not ExecutionState.RUNNING:
        # It never started a task: CREATED, or QUEUED for a concurrency slot.
        backend.cleanup(labels)
        state = ExecutionState.KILLED if kill else ExecutionState.FAILED
        store.set_execution_state(
            execution_id,
            state,
            error="killed by `runner kill`" if kill else f"{died} before it started",
        )
        return Recovered(execution_id, state, (), (), lease.holder)

    loaded = _stored_flow(store, record)
    containers = {c.labels.get(LABEL_TASK_RUN, ""): c for c in backend.find_containers(labels)}
    workspace = (
        backend.workspace(execution_id, execution_labels(execution_id, loaded.flow))
        if loaded is not None
        else None
    )
    attempts = Attempts(backend, store, writer, control, workspace)
    adopted, lost = [], []
    for run in record.task_runs:
        if run.state.is_final:
            continue
        container = _container_of(run, containers)
        if container is not None and not kill and loaded is not None:
            # Still running: followed to its end. Already ended while nobody watched:
            # its exit code and the rest of its lines are still on the engine.
            attempts.adopt(
                _context(record, loaded, workspace),
                run.task_id,
                run.attempt,
                run.id,
                container.id,
                stored_lines=store.count_task_run_logs(run.id),
                started_at=run.started_at,
            )
            adopted.append(run.task_id)
            continue
        if container is not None:
            _remove_quietly(backend, container.id)
        store.finish_task_run(
            run.id,
            state=TaskState.KILLED if kill else TaskState.FAILED,
            error="killed by `runner kill`" if kill else f"{died}; its container is gone",
        )
        lost.append(run.task_id)
    # Containers of attempts the store never heard of (created just before the crash).
    backend.cleanup(labels, volumes=False)
    kill = kill or control.cancelled  # `runner kill` while its tasks were followed
    state, error = _final_state(store, execution_id, loaded, died, kill=kill)
    if state is not ExecutionState.FAILED:
        _remove_workspace(backend, execution_id)
    store.set_execution_state(execution_id, state, error=error)
    elog.info("execution_recovered", state=state.value, adopted=adopted, lost=lost)
    return Recovered(execution_id, state, tuple(adopted), tuple(lost), lease.holder)


def _final_state(
    store: Store, execution_id: str, loaded: LoadedFlow | None, died: str, *, kill: bool
) -> tuple[ExecutionState, str | None]:
    if kill:
        return ExecutionState.KILLED, "killed by `runner kill`"
    restart = f"`runner restart {execution_id}` reruns what did not finish"
    if loaded is None:
        return ExecutionState.FAILED, f"{died}; {restart}"
    record = store.get_execution(execution_id)
    latest = latest_attempts(record.task_runs)
    plan = dag.build_plan(loaded.flow)
    unfinished, allowed = [], []
    for node_id in plan.order:
        run = latest.get(node_id)
        if run is not None and run.state is TaskState.SUCCESS:
            continue
        if run is not None and run.state is TaskState.SKIPPED:
            continue  # by `when`, or after an upstream failure that is counted already
        task = loaded.flow.task(plan.nodes[node_id].task_id)
        if run is not None and run.state is TaskState.FAILED and task.allow_failure:
            allowed.append(node_id)
            continue
        unfinished.append(node_id)
    if unfinished:
        shown = ", ".join(unfinished[:10]) + (", ..." if len(unfinished) > 10 else "")
        return ExecutionState.FAILED, f"{died}; did not finish: {shown}; {restart}"
    if allowed:
        return ExecutionState.WARNING, f"task(s) failed, allowed to: {', '.join(allowed)}"
    return ExecutionState.SUCCESS, None


def _stored_flow(store: Store, record: ExecutionRecord) -> LoadedFlow | None:
    """The flow as it was when the execution started (None if it no longer loads)."""
    source = store.get_execution_source(record.id)
    path = store.execution_flow_path(record.id) or f"execution-{record.id}.yml"
    try:
        return parse_flow(source, path=path)
    except FlowError as exc:
        log.warning("stored_flow_unreadable", execution_id=record.id, error=str(exc))
        return None


def _remove_workspace(backend: Backend, execution_id: str) -> None:
    """Remove an execution's workspace (its labels matter only to create one)."""
    backend.workspace(execution_id, {}).remove()


def _context(
    record: ExecutionRecord, loaded: LoadedFlow, workspace: Workspace | None
) -> TaskContext:
    return TaskContext(
        execution_id=record.id,
        flow=loaded.flow,
        base_dir=loaded.base_dir,
        workspace=workspace.name if workspace is not None else "",
        revision=loaded.revision,
        inputs=record.inputs,
        artifacts_dir=Path(DEFAULT_ARTIFACTS_DIR).resolve(),
    )


def _container_of(
    run: TaskRunRecord, containers: dict[str, ContainerStatus]
) -> ContainerStatus | None:
    found = containers.get(str(run.id))
    if found is None and run.container_id:
        found = next((c for c in containers.values() if c.id == run.container_id), None)
    return found


def _remove_quietly(backend: Backend, container_id: str) -> None:
    try:
        backend.remove(container_id)
    except BackendError as exc:
        log.warning("remove_failed", container_id=container_id[:12], error=str(exc))


# -- runner gc ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Garbage:
    removed: tuple[ManagedResource, ...]
    kept_active: int  # of executions still running (or queued)
    kept_unknown: int  # of executions this database does not know (another database's?)


GC_WORKERS = 8
"""Removals `collect_garbage` asks the engine for at once: one at a time, 10,000 kept
workspaces took 100 s (about 10 ms each, the engine's time); 8 at once, under 50 s."""


def collect_garbage(store: Store, backend: Backend, *, dry_run: bool = False) -> Garbage:
    """Remove the containers and volumes of every execution that has ended.

    Those of executions still running are kept, and so are those whose execution this
    database does not know: they may belong to a runner using another database. The
    states are read in batches (`Store.execution_states`); the removals run GC_WORKERS at
    a time, containers before volumes (a volume a container still mounts cannot go)."""
    found = backend.list_managed()
    states = store.execution_states(sorted({r.execution_id for r in found if r.execution_id}))
    ended, active, unknown = [], 0, 0
    for resource in found:
        state = states.get(resource.execution_id)
        if state is None:
            unknown += 1
        elif not state.is_final:
            active += 1
        else:
            ended.append(resource)
    if dry_run:
        return Garbage(tuple(ended), active, unknown)

    def remove(resource: ManagedResource) -> bool:
        try:
            backend.remove_managed(resource)
        except RunnerError as exc:
            log.warning("gc_remove_failed", resource=resource.name, error=str(exc))
            return False
        return True

    removed: list[ManagedResource] = []
    with ThreadPoolExecutor(GC_WORKERS, thread_name_prefix="runner-gc") as pool:
        for kind in ("container", "volume"):
            batch = [r for r in ended if r.kind == kind]
            removed += [r for r, done in zip(batch, pool.map(remove, batch), strict=True) if done]
    return Garbage(tuple(removed), active, unknown)
