"""Run a planned flow: start ready tasks within the concurrency limit, follow each one to
its end, skip what depends on a failure, and report every step to the store and the log.

The scheduler knows the Backend protocol, never Docker. Each task attempt runs in a worker
thread (start, stream logs, wait, remove); the calling thread only decides what runs next,
so cancelling is a flag the main loop sees within a fraction of a second.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runner import dag
from runner.backends.base import Backend
from runner.errors import BackendError, RunnerError
from runner.execution import (
    LABEL_EXECUTION,
    ExecutionResult,
    ExecutionState,
    TaskResult,
    TaskState,
)
from runner.loader import LoadedFlow
from runner.logs import TASK_LOG, get_logger
from runner.specs import TaskContext, build_spec, execution_labels, image_source, workspace_name
from runner.store import LogWriter, NewLogLine, Store

# How often the main loop wakes to notice a cancel request while tasks run.
_TICK_S = 0.2


@dataclass(frozen=True)
class RunOptions:
    concurrency: int
    keep_workspace: bool = False


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
        self._running: dict[str, str] = {}  # task id -> container id
        self._killed: set[str] = set()

    def cancel(self) -> None:
        """Ask the execution to stop. Safe from signal handlers: only sets a flag."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def run(
        self,
        execution_id: str,
        loaded: LoadedFlow,
        inputs: Mapping[str, Any],
        options: RunOptions,
        on_running: Callable[[], None] | None = None,
    ) -> ExecutionResult:
        flow = loaded.flow
        log = get_logger(execution_id=execution_id, flow_id=flow.full_id)
        plan = dag.build_plan(flow)
        ctx = TaskContext(
            execution_id=execution_id,
            flow=flow,
            base_dir=loaded.base_dir,
            workspace=workspace_name(execution_id),
        )
        labels = execution_labels(execution_id, flow)
        try:
            self.backend.check()
            self.backend.create_workspace(ctx.workspace, labels)
        except BackendError as exc:
            self.store.set_execution_state(execution_id, ExecutionState.FAILED, error=str(exc))
            raise
        self.store.set_execution_state(execution_id, ExecutionState.RUNNING)
        log.info("execution_started", tasks=len(plan.order), concurrency=options.concurrency)
        if on_running is not None:
            on_running()

        results: dict[str, TaskResult] = {}
        try:
            self._run_plan(ctx, plan, options, results, log)
        finally:
            state = self._final_state(results)
            self._clean_up(ctx, state, options, log)
            self.log_writer.flush()
            failed = [t for t, r in results.items() if r.state is TaskState.FAILED]
            error = f"task(s) failed: {', '.join(failed)}" if failed else None
            if state is ExecutionState.KILLED:
                error = "killed by the user"
            self.store.set_execution_state(execution_id, state, error=error)
            log.info("execution_finished", state=state.value)
        return ExecutionResult(
            execution_id=execution_id,
            flow_id=flow.full_id,
            state=state,
            tasks=tuple(results[t] for t in plan.order if t in results),
        )

    def _final_state(self, results: Mapping[str, TaskResult]) -> ExecutionState:
        if self.cancelled:
            return ExecutionState.KILLED
        if any(r.state is TaskState.FAILED for r in results.values()):
            return ExecutionState.FAILED
        return ExecutionState.SUCCESS

    def _run_plan(
        self,
        ctx: TaskContext,
        plan: dag.Plan,
        options: RunOptions,
        results: dict[str, TaskResult],
        log: Any,
    ) -> None:
        succeeded: set[str] = set()
        started: set[str] = set()
        running: dict[Future[TaskResult], str] = {}
        with ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="task") as pool:
            while True:
                if self.cancelled:
                    self._kill_running(log)
                else:
                    for task_id in plan.ready(succeeded, started):
                        if len(running) >= options.concurrency:
                            break
                        started.add(task_id)
                        running[pool.submit(self._run_task, ctx, task_id, 1)] = task_id
                if not running:
                    return
                done, _ = wait(running, timeout=_TICK_S, return_when=FIRST_COMPLETED)
                for future in done:
                    task_id = running.pop(future)
                    result = future.result()
                    results[task_id] = result
                    if result.state is TaskState.SUCCESS:
                        succeeded.add(task_id)
                    elif not self.cancelled:
                        for skipped in sorted(
                            plan.descendants(task_id) - started, key=plan.order.index
                        ):
                            started.add(skipped)
                            reason = f"upstream task {task_id!r} {result.state.value.lower()}"
                            self.store.record_skipped(
                                execution_id=ctx.execution_id, task_id=skipped, reason=reason
                            )
                            results[skipped] = TaskResult(
                                task_id=skipped, attempt=1, state=TaskState.SKIPPED, error=reason
                            )
                            log.info("task_skipped", task_id=skipped, reason=reason)

    def _kill_running(self, log: Any) -> None:
        with self._lock:
            targets = [(t, c) for t, c in self._running.items() if t not in self._killed]
            self._killed.update(t for t, _ in targets)
        for task_id, container_id in targets:
            log.info("task_killing", task_id=task_id, container_id=container_id[:12])
            try:
                self.backend.kill(container_id)
            except BackendError as exc:
                log.warning("kill_failed", task_id=task_id, error=str(exc))

    def _run_task(self, ctx: TaskContext, task_id: str, attempt: int) -> TaskResult:
        """One attempt of one task, start to end, in a worker thread. Never raises."""
        task = ctx.flow.task(task_id)
        log = get_logger(execution_id=ctx.execution_id, task_id=task_id, attempt=attempt)
        source = image_source(task, ctx.base_dir)
        image_name = task.image or f"build:{task.build}"
        run_id = self.store.create_task_run(
            execution_id=ctx.execution_id, task_id=task_id, attempt=attempt, image=image_name
        )
        container_id: str | None = None
        started_at: datetime | None = None
        state, exit_code, error = TaskState.FAILED, None, None
        try:
            if self.cancelled:
                state, error = TaskState.KILLED, "killed before it started"
                return self._finish(run_id, task_id, attempt, state, None, error, None, None, log)

            def progress(text: str) -> None:
                log.info("image_progress", image=image_name, status=text)

            image = self.backend.ensure_image(source, progress)
            spec = build_spec(ctx, task, attempt, image)
            started_at = _now()
            container_id = self.backend.start(spec)
            with self._lock:
                self._running[task_id] = container_id
            if self.cancelled:
                self._kill_running(log)
            self.store.task_run_started(run_id, container_id=container_id, started_at=started_at)
            log.info("task_started", image=image_name, container_id=container_id[:12])
            self._stream_logs(ctx, task_id, run_id, container_id)
            outcome = self.backend.wait(container_id)
            exit_code = outcome.exit_code
            if self.cancelled:
                state, error = TaskState.KILLED, "killed by the user"
            elif outcome.oom_killed:
                state, error = TaskState.FAILED, "killed: out of memory (OOM)"
            elif outcome.error:
                state, error = TaskState.FAILED, outcome.error
            elif exit_code == 0:
                state = TaskState.SUCCESS
            else:
                state, error = TaskState.FAILED, f"exited with code {exit_code}"
        except RunnerError as exc:
            state = TaskState.KILLED if self.cancelled else TaskState.FAILED
            error = str(exc)
        except Exception as exc:  # a bug must not leave the execution hanging
            state, error = TaskState.FAILED, f"internal error: {exc!r}"
            log.exception("task_crashed")
        finally:
            if container_id is not None:
                with self._lock:
                    self._running.pop(task_id, None)
                try:
                    self.backend.remove(container_id)
                except BackendError as exc:
                    log.warning("remove_failed", error=str(exc))
        return self._finish(
            run_id, task_id, attempt, state, exit_code, error, started_at, container_id, log
        )

    def _finish(
        self,
        run_id: int,
        task_id: str,
        attempt: int,
        state: TaskState,
        exit_code: int | None,
        error: str | None,
        started_at: datetime | None,
        container_id: str | None,
        log: Any,
    ) -> TaskResult:
        ended_at = _now()
        self.store.finish_task_run(
            run_id, state=state, exit_code=exit_code, error=error, ended_at=ended_at
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
            task_id=task_id,
            attempt=attempt,
            state=state,
            exit_code=exit_code,
            error=error,
            started_at=started_at,
            ended_at=ended_at,
            container_id=container_id,
        )

    def _stream_logs(self, ctx: TaskContext, task_id: str, run_id: int, container_id: str) -> None:
        loggers = {
            stream: get_logger(execution_id=ctx.execution_id, task_id=task_id, stream=stream)
            for stream in ("stdout", "stderr")
        }
        add = self.log_writer.add
        for line in self.backend.logs(container_id):
            loggers[line.stream].info(TASK_LOG, line=line.line)
            add(
                NewLogLine(
                    execution_id=ctx.execution_id,
                    task_run_id=run_id,
                    task_id=task_id,
                    stream=line.stream,
                    line=line.line,
                    time=line.time,
                )
            )

    def _clean_up(
        self, ctx: TaskContext, state: ExecutionState, options: RunOptions, log: Any
    ) -> None:
        """Containers always go; the workspace stays after a failure (for debugging) or if asked."""
        keep = options.keep_workspace or state is ExecutionState.FAILED
        try:
            if state is ExecutionState.KILLED and not keep:
                # Workers remove their own containers; the label sweep catches one created
                # while the kill was under way.
                self.backend.cleanup({LABEL_EXECUTION: ctx.execution_id})
            if not keep:
                self.backend.remove_workspace(ctx.workspace)
            else:
                log.info("workspace_kept", volume=ctx.workspace)
        except BackendError as exc:
            log.warning("cleanup_failed", error=str(exc))
