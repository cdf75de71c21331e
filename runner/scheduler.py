"""Run a planned flow: start ready task runs within the concurrency limit, follow each to
its end, skip what depends on a failure, and report every step to the store and the log.

The scheduler knows the Backend protocol, never Docker. Each task run (a task, or one
combination of its matrix) runs in a worker thread: render its templates, start the
container, stream its logs, wait, copy artifacts out, remove it. The calling thread only
decides what runs next, so cancelling is a flag the main loop sees within a fraction of a
second.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner import dag
from runner.attempt import Attempts, Control
from runner.backends.base import Backend, Workspace
from runner.errors import BackendError, StoreError
from runner.execution import (
    LABEL_EXECUTION,
    ExecutionResult,
    ExecutionState,
    TaskResult,
    TaskState,
)
from runner.flow import Flow
from runner.loader import LoadedFlow
from runner.logs import get_logger
from runner.secrets import Masker
from runner.settings import DEFAULT_ARTIFACTS_DIR
from runner.specs import TaskContext, execution_labels
from runner.store import LogWriter, Store
from runner.store.fence import LeaseLostError
from runner.template_checks import reads_outputs
from runner.templating import TemplateContext

# How often the main loop wakes to notice a cancel request while tasks run.
_TICK_S = 0.2


@dataclass(frozen=True)
class RunOptions:
    concurrency: int
    keep_workspace: bool = False
    artifacts_dir: Path = Path(DEFAULT_ARTIFACTS_DIR)
    env: Mapping[str, str] = field(default_factory=dict)  # runner env names templates may read
    workspace_files: bytes | None = None  # a tar copied into /workspace before the first task
    trigger: Mapping[str, Any] | None = None  # `trigger.*` of templates (what started it)
    # Every secret of the run (secret inputs too), masked in what is stored and printed;
    # None: those of the runner's environment (runner.secrets).
    masker: Masker | None = None


@dataclass(frozen=True)
class Resume:
    """What a restarted or resumed execution keeps of its earlier run (see
    `runner.restart`)."""

    done: Mapping[str, TaskResult]  # node id -> its result (success, skip, allowed failure)
    first_attempt: Mapping[str, int]  # node id -> the attempt number its rerun starts at
    workspace_kept: bool  # the workspace volume is still there, with the files of `done`
    resolved: Mapping[str, TaskResult] = field(default_factory=dict)
    """Pause tasks just resumed (SUCCESS, their inputs as outputs) or timed out (FAILED):
    recorded already, their dependents go on (or are skipped) from here."""
    held: Mapping[str, Paused] = field(default_factory=dict)
    """Pause tasks still waiting (another one of the execution was resumed)."""


@dataclass(frozen=True)
class Paused:
    """A pause task waiting: its task run in the store."""

    task_run_id: int
    attempt: int


@dataclass
class _Run:
    """What the main loop knows of the execution so far; only the main thread mutates it."""

    results: dict[str, TaskResult] = field(default_factory=dict)
    outputs: dict[str, Any] = field(
        default_factory=dict
    )  # task id -> outputs (per label for matrix)
    skipped_tasks: set[str] = field(default_factory=set)  # skipped by `when` or upstream
    allowed_failures: set[str] = field(default_factory=set)  # failed, with allow_failure
    order: list[str] = field(default_factory=list)  # node ids of every plan run, in order
    timed_out: str | None = None  # "execution timed out after X", once it has
    paused: dict[str, Paused] = field(default_factory=dict)  # pause tasks waiting


_NOT_RUN = TaskResult(task_id="", attempt=0, state=TaskState.CREATED)


def _now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Runs one execution of a flow. Create one per execution."""

    def __init__(
        self,
        backend: Backend,
        store: Store,
        log_writer: LogWriter,
        control: Control | None = None,
    ) -> None:
        self.backend = backend
        self.store = store
        self.log_writer = log_writer
        self.control = control if control is not None else Control()
        self._first_attempt: Mapping[str, int] = {}
        self._attempts: Attempts | None = None
        self._reads_outputs: dict[str, bool] = {}  # task id -> whether its templates do

    def cancel(self, reason: str | None = None) -> None:
        """Ask the execution to stop. Safe from signal handlers: only sets flags."""
        self.control.cancel(reason)

    @property
    def cancelled(self) -> bool:
        return self.control.cancelled

    def _first(self, node_id: str) -> int:
        return self._first_attempt.get(node_id, 1)

    @property
    def attempts(self) -> Attempts:
        assert self._attempts is not None, "only while `run` runs"
        return self._attempts

    def run(
        self,
        execution_id: str,
        loaded: LoadedFlow,
        inputs: Mapping[str, Any],
        options: RunOptions,
        resume: Resume | None = None,
    ) -> ExecutionResult:
        """Run the execution to its end. With `resume` (a restart), the task runs in
        `resume.done` are not run again: their outputs are reused."""
        flow = loaded.flow
        log = get_logger(execution_id=execution_id, flow_id=flow.full_id)
        plan = dag.build_plan(flow)
        workspace = self.backend.workspace(execution_id, execution_labels(execution_id, flow))
        masker = options.masker if options.masker is not None else Masker.from_env()
        self._attempts = Attempts(
            self.backend, self.store, self.log_writer, self.control, workspace, masker
        )
        ctx = TaskContext(
            execution_id=execution_id,
            flow=flow,
            base_dir=loaded.base_dir,
            workspace=workspace.name,
            revision=loaded.revision,
            inputs=inputs,
            env=options.env,
            artifacts_dir=options.artifacts_dir.resolve(),
            crlf_files=loaded.crlf_files,
            templates=TemplateContext.for_execution(
                flow,
                execution_id=execution_id,
                inputs=inputs,
                env=options.env,
                revision=loaded.revision,
                started_at=_now(),
                trigger=options.trigger,
                # A kill or the flow's timeout ends a render as it ends a container.
                should_stop=self.control.stop_reason,
            ),
        )
        run = _Run()
        done: Mapping[str, TaskResult] = {}
        resolved: Mapping[str, TaskResult] = {}
        if resume is not None:
            done = {n: r for n, r in resume.done.items() if n in plan.nodes}
            resolved = {n: r for n, r in resume.resolved.items() if n in plan.nodes}
            self._first_attempt = resume.first_attempt
            for node_id, result in done.items():
                self._reuse(ctx.flow, plan.nodes[node_id], result, run)
            run.paused.update((n, p) for n, p in resume.held.items() if n in plan.nodes)
        state, execution_error, store_failed, lost = ExecutionState.FAILED, None, False, False
        try:
            self.backend.check()
            reuse_workspace = resume is not None and resume.workspace_kept
            if not reuse_workspace:
                workspace.create()
            self.store.set_execution_state(execution_id, ExecutionState.RUNNING)
            log.info(
                "execution_started",
                tasks=len(plan.order) - len(done),
                concurrency=options.concurrency,
                **({"reused": len(done)} if done else {}),
            )
            if options.workspace_files and not reuse_workspace:
                workspace.seed(options.workspace_files)
                log.info("workspace_seeded", bytes=len(options.workspace_files))
            deadline = None if flow.timeout is None else time.monotonic() + flow.timeout.seconds
            run.order += plan.order
            self._run_plan(
                ctx,
                plan,
                options,
                run,
                log,
                deadline=deadline,
                done=frozenset(done),
                resolved=resolved,
            )
            if self._stays_paused(run):
                state = ExecutionState.PAUSED
                log.info("execution_paused", tasks=sorted(run.paused))
            else:
                self._end_pauses(ctx, run, log)
                self._skip_not_started(ctx, plan, run, log)
                state = self._final_state(run)
                state = self._run_handlers(ctx, state, options, run, log)
        except BackendError as exc:
            execution_error = masker.mask(str(exc))
            log.error("execution_error", error=execution_error)
            raise
        except LeaseLostError as exc:
            # Another runner has the execution now: its containers are killed (the
            # heartbeat cancelled this run), its history and workspace are the new
            # owner's to write and clean up. Nothing more is written from here.
            lost = True
            log.error("execution_abandoned", reason=str(exc))
            raise
        except StoreError as exc:
            # The history cannot be written (the database stayed down past the retry
            # limit): leave nothing behind, as a kill does; a kept workspace would have
            # no record to find it by.
            execution_error, store_failed = masker.mask(str(exc)), True
            log.error("execution_error", error=execution_error)
            raise
        finally:
            if not lost:
                if self.cancelled:
                    state = ExecutionState.KILLED
                self._clean_up(ctx, workspace, state, options, log, remove_all=store_failed)
                self.log_writer.flush()
                error = execution_error or self._error_of(state, run)
                self.store.set_execution_state(execution_id, state, error=error)
                log.info("execution_finished", state=state.value)
        return ExecutionResult(
            execution_id=execution_id,
            flow_id=flow.full_id,
            state=state,
            tasks=tuple(run.results[n] for n in run.order if n in run.results),
        )

    @staticmethod
    def _reuse(flow: Flow, node: dag.Node, result: TaskResult, run: _Run) -> None:
        """Take a task run's result from before a restart (or a pause) as if it had just
        ended: a success, a skip, or a failure its task allows."""
        run.results[node.id] = result
        if result.state is TaskState.SKIPPED:
            run.skipped_tasks.add(node.task_id)
            return
        if result.state is TaskState.FAILED and flow.task(node.task_id).allow_failure:
            run.allowed_failures.add(node.id)
        if node.matrix:
            run.outputs.setdefault(node.task_id, {})[node.matrix_label] = dict(result.outputs)
        else:
            run.outputs[node.task_id] = dict(result.outputs)

    def _stays_paused(self, run: _Run) -> bool:
        """Whether the execution waits for its pause tasks: it does unless it was killed,
        timed out or a task failed (then it ends, and its pause tasks with it)."""
        if not run.paused or self.cancelled or run.timed_out:
            return False
        failed = {n for n, r in run.results.items() if r.state is TaskState.FAILED}
        return not failed - run.allowed_failures

    def _end_pauses(self, ctx: TaskContext, run: _Run, log: Any) -> None:
        """Pause tasks of an execution that ends anyway: they end too, as does whatever
        waited for them."""
        if not run.paused:
            return
        reason = (
            self.control.kill_reason
            if self.cancelled
            else run.timed_out or "the execution ended (a task failed) before it was resumed"
        )
        state = TaskState.KILLED if self.cancelled else TaskState.SKIPPED
        for node_id, paused in run.paused.items():
            self.store.finish_task_run(paused.task_run_id, state=state, error=reason)
            run.results[node_id] = TaskResult(
                task_id=node_id, attempt=paused.attempt, state=state, error=reason
            )
            log.info("task_unpaused", task_id=node_id, state=state.value, reason=reason)
        run.paused.clear()

    def _error_of(self, state: ExecutionState, run: _Run) -> str | None:
        if state is ExecutionState.PAUSED:
            return None
        if state is ExecutionState.KILLED:
            return self.control.kill_reason
        failed = [n for n, r in run.results.items() if r.state is TaskState.FAILED]
        if run.timed_out:
            return run.timed_out + (f"; task(s) failed: {', '.join(failed)}" if failed else "")
        if state is ExecutionState.WARNING:
            return f"task(s) failed, allowed to: {', '.join(failed)}"
        return f"task(s) failed: {', '.join(failed)}" if failed else None

    def _final_state(self, run: _Run) -> ExecutionState:
        if self.cancelled:
            return ExecutionState.KILLED
        failed = {n for n, r in run.results.items() if r.state is TaskState.FAILED}
        if run.timed_out or failed - run.allowed_failures:
            return ExecutionState.FAILED
        return ExecutionState.WARNING if failed else ExecutionState.SUCCESS

    def _skip_not_started(self, ctx: TaskContext, plan: dag.Plan, run: _Run, log: Any) -> None:
        """After a flow timeout, record the task runs that never started as skipped."""
        if run.timed_out is None or self.cancelled:
            return
        for node_id in plan.order:
            if node_id not in run.results:
                attempt = self._first(node_id)
                self.store.record_skipped(
                    execution_id=ctx.execution_id,
                    task_id=node_id,
                    reason=run.timed_out,
                    attempt=attempt,
                )
                run.results[node_id] = TaskResult(
                    task_id=node_id, attempt=attempt, state=TaskState.SKIPPED, error=run.timed_out
                )
                log.info("task_skipped", task_id=node_id, reason=run.timed_out)

    def _run_handlers(
        self, ctx: TaskContext, state: ExecutionState, options: RunOptions, run: _Run, log: Any
    ) -> ExecutionState:
        """Run `errors:` (if the execution failed), then `finally:` (always, but not after
        a kill), one task at a time in file order. They cannot make a failed execution
        succeed; a failing `finally:` or `errors:` task fails an execution that had not."""
        flow = ctx.flow
        if state is ExecutionState.KILLED:
            return state
        groups = [("errors", flow.errors)] if state is ExecutionState.FAILED else []
        groups.append(("finally", flow.finally_))
        failed = [n for n in run.order if run.results.get(n, _NOT_RUN).state is TaskState.FAILED]
        templates = dataclasses.replace(
            ctx.templates,
            execution={**ctx.templates.execution, "state": state.value, "failed_tasks": failed},
        )
        handler_ctx = dataclasses.replace(ctx, templates=templates)
        one_at_a_time = dataclasses.replace(options, concurrency=1)
        # The flow timeout bounds `tasks:` only: handlers report on it, so they still run.
        self.control.resume()
        for group, tasks in groups:
            if not tasks or self.cancelled:
                continue
            plan = dag.build_handler_plan(tasks)
            log.info("handlers_started", group=group, tasks=len(plan.order))
            run.order += plan.order
            self._run_plan(handler_ctx, plan, one_at_a_time, run, log)
        if self.cancelled:
            return ExecutionState.KILLED
        return self._final_state(run) if state is not ExecutionState.FAILED else state

    def _run_plan(
        self,
        ctx: TaskContext,
        plan: dag.Plan,
        options: RunOptions,
        run: _Run,
        log: Any,
        *,
        deadline: float | None = None,
        done: frozenset[str] = frozenset(),
        resolved: Mapping[str, TaskResult] | None = None,
    ) -> None:
        """Run a plan to its end, but for the nodes in `done` (a restart). Past `deadline`
        (monotonic), running tasks are stopped and no new one starts. A pause task is not
        run: it is recorded PAUSED and what depends on it waits (`run.paused`); those in
        `resolved` were just resumed or timed out, and their dependents go on."""
        progress = dag.Progress(plan, done=done)
        progress.claim([*(resolved or {}), *run.paused])
        for node_id, result in (resolved or {}).items():
            self._record_result(ctx, plan, progress, run, node_id, result, log)
        running: dict[Future[TaskResult], str] = {}
        halted = False
        with (
            ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="task") as pool,
            self._killing_on_error(log),
        ):
            while True:
                if self.cancelled:
                    self.attempts.kill_running(log)
                elif not halted and deadline is not None and time.monotonic() > deadline:
                    halted = True
                    assert ctx.flow.timeout is not None  # a deadline comes from it
                    run.timed_out = f"execution timed out after {ctx.flow.timeout.text}"
                    log.warning("execution_timed_out", timeout=ctx.flow.timeout.text)
                    self.control.halt(f"stopped: {run.timed_out}")
                    self.attempts.stop_running(log)
                elif not halted:
                    settled = True
                    while settled:  # a pause task settles at once, and may free others
                        settled = False
                        for node_id in progress.take_ready(options.concurrency - len(running)):
                            node = plan.nodes[node_id]
                            if ctx.flow.task(node.task_id).is_pause:
                                self._pause(ctx, plan, progress, run, node, log)
                                settled = True
                                continue
                            snapshot = self._snapshot(ctx, node, run)
                            future = pool.submit(self._run_node, ctx, node, *snapshot)
                            running[future] = node_id
                if not running:
                    return
                ended, _ = wait(running, timeout=_TICK_S, return_when=FIRST_COMPLETED)
                for future in ended:
                    node_id = running.pop(future)
                    self._record_result(ctx, plan, progress, run, node_id, future.result(), log)

    def _pause(
        self,
        ctx: TaskContext,
        plan: dag.Plan,
        progress: dag.Progress,
        run: _Run,
        node: dag.Node,
        log: Any,
    ) -> None:
        """A pause task became ready: record it PAUSED (what depends on it waits), or
        skipped if its `when` is false. In the main loop: it starts no container."""
        snapshot = self._snapshot(ctx, node, run)
        result, task_run_id = self.attempts.pause(ctx, node, self._first(node.id), *snapshot)
        if result.state is TaskState.PAUSED:
            run.paused[node.id] = Paused(task_run_id, result.attempt)
            return
        self._record_result(ctx, plan, progress, run, node.id, result, log)

    def _snapshot(
        self, ctx: TaskContext, node: dag.Node, run: _Run
    ) -> tuple[Mapping[str, Any], frozenset[str]]:
        """What a task run starting now may read of the others: their outputs, and which
        tasks were skipped. A copy, as the main loop goes on adding to both; the outputs
        only for a task whose templates name them: copying every finished task's outputs
        for each task that starts made a 10,000-task run quadratic."""
        reads = self._reads_outputs.get(node.task_id)
        if reads is None:
            reads = self._reads_outputs[node.task_id] = reads_outputs(ctx.flow.task(node.task_id))
        return (dict(run.outputs) if reads else {}), frozenset(run.skipped_tasks)

    @contextmanager
    def _killing_on_error(self, log: Any) -> Iterator[None]:
        """If the main loop raises (a StoreError from a worker or from recording a skip),
        kill the running containers first: leaving the pool waits for every worker, and
        a worker waits for its container to end."""
        try:
            yield
        except BaseException:
            self.attempts.kill_running(log)
            raise

    def _record_result(
        self,
        ctx: TaskContext,
        plan: dag.Plan,
        progress: dag.Progress,
        run: _Run,
        node_id: str,
        result: TaskResult,
        log: Any,
    ) -> None:
        node = plan.nodes[node_id]
        run.results[node_id] = result
        allowed = result.state is TaskState.FAILED and ctx.flow.task(node.task_id).allow_failure
        if allowed:
            # Done as far as its dependents know; its outputs are what it published.
            run.allowed_failures.add(node_id)
            log.warning("task_failure_allowed", task_id=node_id, error=result.error)
        if result.state is TaskState.SUCCESS or allowed:
            if node.matrix:
                run.outputs.setdefault(node.task_id, {})[node.matrix_label] = dict(result.outputs)
            else:
                run.outputs[node.task_id] = dict(result.outputs)
            progress.succeeded(node_id)
        elif result.state is TaskState.SKIPPED:
            # Skipped by `when` (or for needing a skipped task's outputs): dependents go on,
            # unless they need this task's outputs, which they check when they start.
            run.skipped_tasks.add(node.task_id)
            progress.succeeded(node_id)
        elif not self.cancelled:
            descendants = plan.descendants(node_id)
            position = {n: i for i, n in enumerate(plan.order)} if descendants else {}
            for skipped in sorted(descendants, key=position.__getitem__):
                if skipped in run.results:
                    continue
                reason = f"upstream task {node_id!r} {result.state.value.lower()}"
                attempt = self._first(skipped)
                self.store.record_skipped(
                    execution_id=ctx.execution_id, task_id=skipped, reason=reason, attempt=attempt
                )
                run.results[skipped] = TaskResult(
                    task_id=skipped, attempt=attempt, state=TaskState.SKIPPED, error=reason
                )
                log.info("task_skipped", task_id=skipped, reason=reason)

    def _run_node(
        self,
        ctx: TaskContext,
        node: dag.Node,
        outputs: Mapping[str, Any],
        skipped_tasks: frozenset[str],
    ) -> TaskResult:
        """Every attempt of one task run, in a worker thread; the last one's result.

        The worker keeps its slot while it waits between attempts: simpler than giving
        it back, and a waiting retry is rarely what holds a flow up. Cancel (or the flow
        timing out) ends the wait at once. Never raises.
        """
        first = attempt = self._first(node.id)
        while True:
            result = self.attempts.run(
                ctx, node, attempt, outputs, skipped_tasks, tries=attempt - first + 1
            )
            retry = ctx.flow.task(node.task_id).retry
            if result.state is not TaskState.RETRYING or retry is None:
                return result
            delay = retry.delay_after(attempt - first + 1)
            get_logger(execution_id=ctx.execution_id, task_id=node.id, attempt=attempt).info(
                "task_retrying", next_attempt=attempt + 1, delay_s=round(delay, 3)
            )
            # Woken early, the next attempt records that it was killed before it started.
            self.control.wait(delay)
            attempt += 1

    def _clean_up(
        self,
        ctx: TaskContext,
        workspace: Workspace,
        state: ExecutionState,
        options: RunOptions,
        log: Any,
        *,
        remove_all: bool = False,
    ) -> None:
        """Containers always go; the workspace stays after a failure (for debugging) or if
        asked. `remove_all` (the store failed) treats a failure like a kill."""
        keep = options.keep_workspace or (
            state in (ExecutionState.FAILED, ExecutionState.PAUSED) and not remove_all
        )
        try:
            if (state is ExecutionState.KILLED or remove_all) and not keep:
                # Workers remove their own containers; the label sweep catches one created
                # while the kill was under way.
                self.backend.cleanup({LABEL_EXECUTION: ctx.execution_id})
            if not keep:
                workspace.remove()
            else:
                log.info("workspace_kept", volume=workspace.name)
        except BackendError as exc:
            log.warning("cleanup_failed", error=str(exc))
