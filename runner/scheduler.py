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
import posixpath
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner import dag
from runner.archives import ArchiveError, Artifact, artifact_roots, extract_artifacts
from runner.backends.base import Backend
from runner.errors import BackendError, RunnerError, StoreError
from runner.execution import (
    LABEL_EXECUTION,
    WORKSPACE_PATH,
    ContainerExit,
    ExecutionResult,
    ExecutionState,
    TaskResult,
    TaskState,
)
from runner.flow import Task
from runner.loader import LoadedFlow
from runner.logs import TASK_LOG, get_logger
from runner.outputs import merge_outputs, parse_output_line
from runner.specs import (
    TaskContext,
    build_spec,
    execution_labels,
    image_source,
    render_task,
    workspace_name,
)
from runner.store import LogWriter, NewLogLine, Store
from runner.template_checks import referenced_outputs
from runner.templating import TemplateContext, TemplateInterrupted, is_true

# How often the main loop wakes to notice a cancel request while tasks run.
_TICK_S = 0.2
# How long a task stopped for a timeout has, after SIGTERM, before it is killed.
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class RunOptions:
    concurrency: int
    keep_workspace: bool = False
    artifacts_dir: Path = Path(".runner/artifacts")
    env: Mapping[str, str] = field(default_factory=dict)  # runner env names templates may read
    workspace_files: bytes | None = None  # a tar copied into /workspace before the first task


@dataclass(frozen=True)
class Resume:
    """What a restarted execution keeps of its earlier run (see `runner.restart`)."""

    done: Mapping[str, TaskResult]  # node id -> its successful result: not run again
    first_attempt: Mapping[str, int]  # node id -> the attempt number its rerun starts at
    workspace_kept: bool  # the workspace volume is still there, with the files of `done`


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


_NOT_RUN = TaskResult(task_id="", attempt=0, state=TaskState.CREATED)


def _now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Runs one execution of a flow. Create one per execution."""

    def __init__(self, backend: Backend, store: Store, log_writer: LogWriter) -> None:
        self.backend = backend
        self.store = store
        self.log_writer = log_writer
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[str, str] = {}  # node id -> container id
        self._killed: set[str] = set()
        # Set on cancel and when the execution times out: ends retry delays early.
        self._wake = threading.Event()
        self._halt_reason: str | None = None  # why running tasks were stopped (flow timeout)
        self._kill_reason = "killed by the user"
        self._first_attempt: Mapping[str, int] = {}

    def cancel(self, reason: str | None = None) -> None:
        """Ask the execution to stop. Safe from signal handlers: only sets flags."""
        if reason and not self._cancelled.is_set():
            self._kill_reason = reason
        self._cancelled.set()
        self._wake.set()

    @property
    def kill_reason(self) -> str:
        return self._kill_reason

    def _render_stop_reason(self) -> str | None:
        """[sandbox] Asked by templates while they render (TemplateContext.should_stop): a
        kill or the flow's timeout ends a render as it ends a running container."""
        if self.cancelled:
            return self._kill_reason
        return self._halt_reason

    def wait_for_cancel(self, seconds: float) -> bool:
        """Sleep up to `seconds`, ending early on `cancel`; whether it was cancelled."""
        self._wake.wait(seconds)
        return self.cancelled

    def _first(self, node_id: str) -> int:
        return self._first_attempt.get(node_id, 1)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

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
        ctx = TaskContext(
            execution_id=execution_id,
            flow=flow,
            base_dir=loaded.base_dir,
            workspace=workspace_name(execution_id),
            revision=loaded.revision,
            inputs=inputs,
            env=options.env,
            artifacts_dir=options.artifacts_dir.resolve(),
            templates=TemplateContext.for_execution(
                flow,
                execution_id=execution_id,
                inputs=inputs,
                env=options.env,
                revision=loaded.revision,
                started_at=_now(),
                should_stop=self._render_stop_reason,  # [sandbox] see _render_stop_reason
            ),
        )
        labels = execution_labels(execution_id, flow)
        run = _Run()
        done: Mapping[str, TaskResult] = {}
        if resume is not None:
            done = {n: r for n, r in resume.done.items() if n in plan.nodes}
            self._first_attempt = resume.first_attempt
            for node_id, result in done.items():
                self._reuse(plan.nodes[node_id], result, run)
        state, execution_error, store_failed = ExecutionState.FAILED, None, False
        try:
            self.backend.check()
            reuse_workspace = resume is not None and resume.workspace_kept
            if not reuse_workspace:
                self.backend.create_workspace(ctx.workspace, labels)
            self.store.set_execution_state(execution_id, ExecutionState.RUNNING)
            log.info(
                "execution_started",
                tasks=len(plan.order) - len(done),
                concurrency=options.concurrency,
                **({"reused": len(done)} if done else {}),
            )
            if options.workspace_files and not reuse_workspace:
                self._seed_workspace(ctx, plan, options.workspace_files, log)
            deadline = None if flow.timeout is None else time.monotonic() + flow.timeout.seconds
            run.order += plan.order
            self._run_plan(ctx, plan, options, run, log, deadline=deadline, done=frozenset(done))
            self._skip_not_started(ctx, plan, run, log)
            state = self._final_state(run)
            state = self._run_handlers(ctx, state, options, run, log)
        except BackendError as exc:
            execution_error = str(exc)
            log.error("execution_error", error=execution_error)
            raise
        except StoreError as exc:
            # The history cannot be written (the database stayed down past the retry
            # limit): leave nothing behind, as a kill does; a kept workspace would have
            # no record to find it by.
            execution_error, store_failed = str(exc), True
            log.error("execution_error", error=execution_error)
            raise
        finally:
            if self.cancelled:
                state = ExecutionState.KILLED
            self._clean_up(ctx, state, options, log, remove_all=store_failed)
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
    def _reuse(node: dag.Node, result: TaskResult, run: _Run) -> None:
        """Take a task run's result from before a restart as if it had just ended."""
        run.results[node.id] = result
        if node.matrix:
            run.outputs.setdefault(node.task_id, {})[node.matrix_label] = dict(result.outputs)
        else:
            run.outputs[node.task_id] = dict(result.outputs)

    def _error_of(self, state: ExecutionState, run: _Run) -> str | None:
        if state is ExecutionState.KILLED:
            return self._kill_reason
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
        self._halt_reason = None
        self._wake.clear()
        if self.cancelled:
            self._wake.set()
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

    def _seed_workspace(self, ctx: TaskContext, plan: dag.Plan, archive: bytes, log: Any) -> None:
        """Copy `files:` and file inputs into the workspace, through the engine's archive API."""
        first = ctx.flow.task(plan.nodes[plan.order[0]].task_id)
        image = self.backend.ensure_image(image_source(first, ctx.base_dir), None)
        self.backend.copy_into_workspace(ctx.workspace, image, archive)
        log.info("workspace_seeded", bytes=len(archive))

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
    ) -> None:
        """Run a plan to its end, but for the nodes in `done` (a restart). Past `deadline`
        (monotonic), running tasks are stopped and no new one starts."""
        progress = dag.Progress(plan, done=done)
        running: dict[Future[TaskResult], str] = {}
        halted = False
        with (
            ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="task") as pool,
            self._killing_on_error(log),
        ):
            while True:
                if self.cancelled:
                    self._kill_running(log)
                elif not halted and deadline is not None and time.monotonic() > deadline:
                    halted = True
                    assert ctx.flow.timeout is not None  # a deadline comes from it
                    run.timed_out = f"execution timed out after {ctx.flow.timeout.text}"
                    log.warning("execution_timed_out", timeout=ctx.flow.timeout.text)
                    self._halt_reason = f"stopped: {run.timed_out}"
                    self._wake.set()
                    self._stop_running(log)
                elif not halted:
                    for node_id in progress.take_ready(options.concurrency - len(running)):
                        node = plan.nodes[node_id]
                        snapshot = dict(run.outputs), frozenset(run.skipped_tasks)
                        future = pool.submit(self._run_node, ctx, node, *snapshot)
                        running[future] = node_id
                if not running:
                    return
                ended, _ = wait(running, timeout=_TICK_S, return_when=FIRST_COMPLETED)
                for future in ended:
                    node_id = running.pop(future)
                    self._record_result(ctx, plan, progress, run, node_id, future.result(), log)

    @contextmanager
    def _killing_on_error(self, log: Any) -> Iterator[None]:
        """If the main loop raises (a StoreError from a worker or from recording a skip),
        kill the running containers first: leaving the pool waits for every worker, and
        a worker waits for its container to end."""
        try:
            yield
        except BaseException:
            self._kill_running(log)
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
            for skipped in sorted(plan.descendants(node_id), key=plan.order.index):
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

    def _stop_running(self, log: Any) -> None:
        """Stop (SIGTERM, then SIGKILL after a grace period) every running container, each
        from its own thread so the main loop does not wait out the grace periods."""
        with self._lock:
            targets = [(t, c) for t, c in self._running.items() if t not in self._killed]
            self._killed.update(t for t, _ in targets)
        for node_id, container_id in targets:
            log.info("task_stopping", task_id=node_id, container_id=container_id[:12])
            threading.Thread(
                target=self._stop_quietly, args=(node_id, container_id, log), daemon=True
            ).start()

    def _stop_quietly(self, node_id: str, container_id: str, log: Any) -> None:
        try:
            self.backend.stop(container_id, STOP_GRACE_S)
        except BackendError as exc:
            log.warning("stop_failed", task_id=node_id, error=str(exc))

    def _kill_running(self, log: Any) -> None:
        with self._lock:
            targets = [(t, c) for t, c in self._running.items() if t not in self._killed]
            self._killed.update(t for t, _ in targets)
        for node_id, container_id in targets:
            log.info("task_killing", task_id=node_id, container_id=container_id[:12])
            try:
                self.backend.kill(container_id)
            except BackendError as exc:
                log.warning("kill_failed", task_id=node_id, error=str(exc))

    def _skip(
        self, ctx: TaskContext, node_id: str, attempt: int, reason: str, log: Any
    ) -> TaskResult:
        self.store.record_skipped(
            execution_id=ctx.execution_id, task_id=node_id, reason=reason, attempt=attempt
        )
        log.info("task_skipped", reason=reason)
        return TaskResult(task_id=node_id, attempt=attempt, state=TaskState.SKIPPED, error=reason)

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
            result = self._run_attempt(ctx, node, attempt, outputs, skipped_tasks)
            retry = ctx.flow.task(node.task_id).retry
            if result.state is not TaskState.RETRYING or retry is None:
                return result
            delay = retry.delay_after(attempt - first + 1)
            get_logger(execution_id=ctx.execution_id, task_id=node.id, attempt=attempt).info(
                "task_retrying", next_attempt=attempt + 1, delay_s=round(delay, 3)
            )
            # Woken early, the next attempt records that it was killed before it started.
            self._wake.wait(delay)
            attempt += 1

    def _run_attempt(
        self,
        ctx: TaskContext,
        node: dag.Node,
        attempt: int,
        outputs: Mapping[str, Any],
        skipped_tasks: frozenset[str],
    ) -> TaskResult:
        """One attempt of one task run, start to end, in a worker thread. Never raises.

        A failure in the task's templates or `when` is not retried: it would fail again.
        """
        task = ctx.flow.task(node.task_id)
        log = get_logger(execution_id=ctx.execution_id, task_id=node.id, attempt=attempt)
        try:
            needed = referenced_outputs(task) & skipped_tasks
            if needed:
                names = ", ".join(sorted(needed))
                return self._skip(
                    ctx, node.id, attempt, f"needs the outputs of skipped task(s) {names}", log
                )
            tctx = ctx.templates.for_task(
                node.task_id,
                attempt=attempt,
                name=node.id,
                matrix=dict(node.matrix),
                outputs=outputs,
            )
            if task.when is not None and not is_true(task.when, tctx, where="when"):
                return self._skip(ctx, node.id, attempt, f"when: {task.when.strip()} is false", log)
        except RunnerError as exc:
            run_id = self.store.create_task_run(
                execution_id=ctx.execution_id, task_id=node.id, attempt=attempt, image=task.image
            )
            # [sandbox] `when` stopped by a kill or the flow timeout: KILLED, as a container.
            if isinstance(exc, TemplateInterrupted):
                return self._finish(
                    run_id,
                    node.id,
                    attempt,
                    TaskState.KILLED,
                    None,
                    exc.reason,
                    None,
                    None,
                    {},
                    log,
                )
            return self._finish(
                run_id, node.id, attempt, TaskState.FAILED, None, str(exc), None, None, {}, log
            )
        return self._run_container(ctx, node, attempt, tctx, log)

    def _run_container(
        self, ctx: TaskContext, node: dag.Node, attempt: int, tctx: TemplateContext, log: Any
    ) -> TaskResult:
        task = ctx.flow.task(node.task_id)
        image_name = task.image or f"build:{task.build}"
        run_id = self.store.create_task_run(
            execution_id=ctx.execution_id, task_id=node.id, attempt=attempt, image=image_name
        )
        container_id: str | None = None
        started_at: datetime | None = None
        state, exit_code, error = TaskState.FAILED, None, None
        outputs: dict[str, Any] = {}
        timed_out = threading.Event()
        timer: threading.Timer | None = None
        try:
            if self.cancelled or self._halt_reason:
                state = TaskState.KILLED
                error = self._halt_reason or "killed before it started"
                return self._finish(
                    run_id, node.id, attempt, state, None, error, None, None, {}, log
                )

            def progress(text: str) -> None:
                log.info("image_progress", image=image_name, status=text)

            rendered = render_task(task, tctx)
            image = self.backend.ensure_image(image_source(rendered, ctx.base_dir), progress)
            spec = build_spec(ctx, rendered, attempt, image, node_id=node.id)
            started_at = _now()
            container_id = self.backend.start(spec)
            with self._lock:
                self._running[node.id] = container_id
            if self.cancelled:
                self._kill_running(log)
            self.store.task_run_started(run_id, container_id=container_id, started_at=started_at)
            log.info("task_started", image=image_name, container_id=container_id[:12])
            if task.timeout is not None:
                timer = self._start_timer(task.timeout.seconds, container_id, timed_out, log)
            outputs = self._stream_logs(ctx, node.id, run_id, container_id, log)
            outcome = self.backend.wait(container_id)
            exit_code = outcome.exit_code
            with self._lock:
                halted = node.id in self._killed
            if self.cancelled:
                state, error = TaskState.KILLED, self._kill_reason
            elif halted and self._halt_reason:
                state, error = TaskState.KILLED, self._halt_reason
            elif timed_out.is_set():
                assert task.timeout is not None  # the timer comes from it
                state, error = TaskState.FAILED, f"timed out after {task.timeout.text}"
            else:
                state, error = _verdict(task, outcome)
                if state is TaskState.SUCCESS and task.artifacts:
                    self._collect_artifacts(ctx, node.id, run_id, container_id, task.artifacts, log)
        except TemplateInterrupted as exc:  # [sandbox] a render stopped by a kill or timeout
            state, error = TaskState.KILLED, exc.reason
        except RunnerError as exc:
            state = TaskState.KILLED if self.cancelled else TaskState.FAILED
            error = str(exc)
        except Exception as exc:  # a bug must not leave the execution hanging
            state, error = TaskState.FAILED, f"internal error: {exc!r}"
            log.exception("task_crashed")
        finally:
            if timer is not None:
                timer.cancel()
            if container_id is not None:
                with self._lock:
                    self._running.pop(node.id, None)
                try:
                    self.backend.remove(container_id)
                except BackendError as exc:
                    log.warning("remove_failed", error=str(exc))
        if state is TaskState.FAILED and task.retry is not None and not self._halt_reason:
            # A timeout or a failed start has no exit code of the task's own.
            own_code = None if timed_out.is_set() else exit_code
            tries = attempt - self._first(node.id) + 1  # a restart counts its attempts afresh
            if task.retry.retries(tries, own_code) and not self.cancelled:
                state = TaskState.RETRYING
        return self._finish(
            run_id,
            node.id,
            attempt,
            state,
            exit_code,
            error,
            started_at,
            container_id,
            outputs,
            log,
        )

    def adopt(
        self,
        ctx: TaskContext,
        node_id: str,
        attempt: int,
        task_run_id: int,
        container_id: str,
        *,
        stored_lines: int,
        started_at: datetime | None,
    ) -> TaskResult:
        """Follow a container whose runner died to its end and record how it ended: the
        lines after the `stored_lines` already stored, its exit code, its outputs (read
        from every line) and artifacts. The container is removed. Never raises."""
        log = get_logger(execution_id=ctx.execution_id, task_id=node_id, attempt=attempt)
        task = ctx.flow.task(dag.task_id_of(node_id))
        outputs: dict[str, Any] = {}
        exit_code: int | None = None
        try:
            log.info("task_adopted", container_id=container_id[:12], stored_lines=stored_lines)
            outputs = self._stream_logs(
                ctx, node_id, task_run_id, container_id, log, skip=stored_lines
            )
            outcome = self.backend.wait(container_id)
            exit_code = outcome.exit_code
            state, error = _verdict(task, outcome)
            if self.cancelled:
                state, error = TaskState.KILLED, self._kill_reason
            if state is TaskState.SUCCESS and task.artifacts:
                self._collect_artifacts(
                    ctx, node_id, task_run_id, container_id, task.artifacts, log
                )
        except RunnerError as exc:
            state, error = TaskState.FAILED, str(exc)
        except Exception as exc:  # a bug must not leave the task run RUNNING
            state, error = TaskState.FAILED, f"internal error: {exc!r}"
            log.exception("task_crashed")
        finally:
            try:
                self.backend.remove(container_id)
            except BackendError as exc:
                log.warning("remove_failed", error=str(exc))
        self.log_writer.flush()
        return self._finish(
            task_run_id,
            node_id,
            attempt,
            state,
            exit_code,
            error,
            started_at,
            container_id,
            outputs,
            log,
        )

    def _start_timer(
        self, seconds: float, container_id: str, timed_out: threading.Event, log: Any
    ) -> threading.Timer:
        """Stop the container when the attempt's `timeout:` passes."""

        def stop() -> None:
            timed_out.set()
            log.warning("task_timed_out", timeout_s=seconds)
            try:
                self.backend.stop(container_id, STOP_GRACE_S)
            except BackendError as exc:
                log.warning("stop_failed", error=str(exc))

        timer = threading.Timer(seconds, stop)
        timer.daemon = True
        timer.start()
        return timer

    def _collect_artifacts(
        self,
        ctx: TaskContext,
        node_id: str,
        run_id: int,
        container_id: str,
        patterns: tuple[str, ...],
        log: Any,
    ) -> None:
        """Copy what the task's `artifacts:` globs match out of its stopped container."""
        dest = ctx.artifacts_dir / ctx.execution_id / node_id
        found: list[Artifact] = []
        for root in artifact_roots(patterns):
            chunks = self.backend.copy_out(container_id, f"{WORKSPACE_PATH}/{root}".rstrip("/"))
            if chunks is None:  # that folder or file does not exist: it matches nothing
                continue
            found += extract_artifacts(
                chunks,
                patterns,
                dest,
                strip_prefix="" if root else WORKSPACE_PATH.strip("/"),
                add_prefix=posixpath.dirname(root),
            )
        if not found:
            raise ArchiveError(
                f"artifacts: nothing in {WORKSPACE_PATH} matches {', '.join(patterns)}"
            )
        self.store.record_artifacts(
            execution_id=ctx.execution_id, task_run_id=run_id, task_id=node_id, artifacts=found
        )
        log.info(
            "artifacts_copied", count=len(found), bytes=sum(a.size for a in found), to=str(dest)
        )

    def _finish(
        self,
        run_id: int,
        node_id: str,
        attempt: int,
        state: TaskState,
        exit_code: int | None,
        error: str | None,
        started_at: datetime | None,
        container_id: str | None,
        outputs: Mapping[str, Any],
        log: Any,
    ) -> TaskResult:
        ended_at = _now()
        self.store.finish_task_run(
            run_id,
            state=state,
            exit_code=exit_code,
            error=error,
            ended_at=ended_at,
            outputs=dict(outputs) if outputs else None,
        )
        duration = (ended_at - started_at).total_seconds() if started_at else None
        log.info(
            "task_finished",
            state=state.value,
            exit_code=exit_code,
            duration_s=round(duration, 3) if duration is not None else None,
            **({"error": error} if error else {}),
        )
        return TaskResult(
            task_id=node_id,
            attempt=attempt,
            state=state,
            exit_code=exit_code,
            error=error,
            started_at=started_at,
            ended_at=ended_at,
            container_id=container_id,
            outputs=dict(outputs),
        )

    def _stream_logs(
        self,
        ctx: TaskContext,
        node_id: str,
        run_id: int,
        container_id: str,
        log: Any,
        *,
        skip: int = 0,
    ) -> dict[str, Any]:
        """Record and print every line but the first `skip` (stored before the runner
        died); return the outputs the task published on stdout (read from every line)."""
        loggers = {
            stream: get_logger(execution_id=ctx.execution_id, task_id=node_id, stream=stream)
            for stream in ("stdout", "stderr")
        }
        add = self.log_writer.add
        outputs: dict[str, Any] = {}
        for line in self.backend.logs(container_id):
            if line.stream == "stdout" and line.line.startswith("::"):
                published = parse_output_line(line.line)
                if published is not None:
                    outputs = merge_outputs(outputs, published)
            if skip:
                skip -= 1
                continue
            loggers[line.stream].info(TASK_LOG, line=line.line)
            add(
                NewLogLine(
                    execution_id=ctx.execution_id,
                    task_run_id=run_id,
                    task_id=node_id,
                    stream=line.stream,
                    line=line.line,
                    time=line.time,
                )
            )
        return outputs

    def _clean_up(
        self,
        ctx: TaskContext,
        state: ExecutionState,
        options: RunOptions,
        log: Any,
        *,
        remove_all: bool = False,
    ) -> None:
        """Containers always go; the workspace stays after a failure (for debugging) or if
        asked. `remove_all` (the store failed) treats a failure like a kill."""
        keep = options.keep_workspace or (state is ExecutionState.FAILED and not remove_all)
        try:
            if (state is ExecutionState.KILLED or remove_all) and not keep:
                # Workers remove their own containers; the label sweep catches one created
                # while the kill was under way.
                self.backend.cleanup({LABEL_EXECUTION: ctx.execution_id})
            if not keep:
                self.backend.remove_workspace(ctx.workspace)
            else:
                log.info("workspace_kept", volume=ctx.workspace)
        except BackendError as exc:
            log.warning("cleanup_failed", error=str(exc))


def _verdict(task: Task, outcome: ContainerExit) -> tuple[TaskState, str | None]:
    """How a container that ran to its end did: its exit code, or why the engine ended it."""
    if outcome.oom_killed:
        limit = f", limit {task.memory.text}" if task.memory is not None else ""
        return TaskState.FAILED, f"killed: out of memory (OOM{limit})"
    if outcome.error:
        return TaskState.FAILED, outcome.error
    if outcome.exit_code == 0:
        return TaskState.SUCCESS, None
    return TaskState.FAILED, f"exited with code {outcome.exit_code}"
