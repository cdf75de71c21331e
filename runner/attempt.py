"""One task attempt, start to end: render its templates, start its container, record and
print every line, wait for it, copy its artifacts out of the workspace, remove it, and
record how it ended. Also the other way an attempt is followed: adopting the container
of a runner that died (`runner.recovery`).

The scheduler decides which attempt runs when (order, retries, skips); this module only
runs one. Both share a `Control`: the flags that say the execution was killed or timed
out, which every attempt obeys.
"""

from __future__ import annotations

import dataclasses
import posixpath
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runner import dag
from runner.archives import ArchiveError, Artifact, artifact_roots, extract_artifacts
from runner.backends.base import Backend, Workspace, log_batches
from runner.errors import BackendError, PolicyError, RunnerError
from runner.execution import WORKSPACE_PATH, ContainerExit, TaskResult, TaskState
from runner.flow import Task
from runner.lineendings import crlf_message
from runner.logs import echo_task_lines, get_logger
from runner.outputs import merge_outputs, output_line_problem, parse_output_line
from runner.secrets import Masker
from runner.specs import TaskContext, build_spec, image_source, render_task
from runner.store import LogWriter, NewLogBatch, Store
from runner.template_checks import referenced_outputs
from runner.templating import TemplateContext, TemplateError, TemplateInterrupted, is_true

STOP_GRACE_S = 10.0
"""How long a task stopped for a timeout has, after SIGTERM, before it is killed."""


class Control:
    """Why the attempts of an execution must stop: a kill (of the whole execution) or a
    halt (the flow's timeout: running tasks are stopped, no new one starts, but handlers
    still run). Shared by the scheduler, its attempts and the lease's heartbeat; every
    method is safe from a signal handler or another thread."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        # Set on cancel and halt: ends retry delays and queue waits early.
        self._wake = threading.Event()
        self._kill_reason = "killed by the user"
        self._halt_reason: str | None = None

    def cancel(self, reason: str | None = None) -> None:
        """Kill the execution. Only sets flags."""
        if reason and not self._cancelled.is_set():
            self._kill_reason = reason
        self._cancelled.set()
        self._wake.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def kill_reason(self) -> str:
        return self._kill_reason

    def halt(self, reason: str) -> None:
        """Stop what runs and start nothing new (the flow timed out)."""
        self._halt_reason = reason
        self._wake.set()

    @property
    def halt_reason(self) -> str | None:
        return self._halt_reason

    def resume(self) -> None:
        """Lift a halt, for the `errors:`/`finally:` handlers; a kill stays."""
        self._halt_reason = None
        if not self.cancelled:
            self._wake.clear()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, woken by a kill or a halt; whether it was killed."""
        self._wake.wait(seconds)
        return self.cancelled

    def stop_reason(self) -> str | None:
        """Why whatever runs now must end (a kill first), or None."""
        return self._kill_reason if self.cancelled else self._halt_reason


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as it is recorded."""

    state: TaskState
    error: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    container_id: str | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)
    timed_out: bool = False  # stopped by the task's `timeout:` (its exit code is not its own)
    retryable: bool = True  # False when another try would fail alike (a template, the policy)
    node: str | None = None  # where it ran (Backend.node_of)


def _now() -> datetime:
    return datetime.now(UTC)


class Attempts:
    """Runs the task attempts of one execution; one instance per execution, shared by its
    worker threads. Knows the running containers, so that a kill or a timeout reaches
    every one of them."""

    def __init__(
        self,
        backend: Backend,
        store: Store,
        log_writer: LogWriter,
        control: Control,
        workspace: Workspace | None,
        masker: Masker | None = None,
    ) -> None:
        self.backend = backend
        self.store = store
        self.log_writer = log_writer
        self.control = control
        self.workspace = workspace
        # Secrets never stored nor printed: in task output, outputs and errors.
        self.masker = masker if masker is not None else Masker.from_env()
        self._lock = threading.Lock()
        self._running: dict[str, str] = {}  # node id -> container id
        self._stopped: set[str] = set()  # node ids whose container was stopped or killed

    # -- one attempt ---------------------------------------------------------------------

    def run(
        self,
        ctx: TaskContext,
        node: dag.Node,
        attempt: int,
        outputs: Mapping[str, Any],
        skipped_tasks: frozenset[str],
        *,
        tries: int,
    ) -> TaskResult:
        """Run attempt number `attempt` of a task run, in a worker thread; never raises.

        `tries` counts the attempts of this run so far, this one included (a restart
        counts afresh): it decides whether a failure is retried (state RETRYING). A
        failure in the task's templates or `when` is not retried: it would fail again.
        """
        task = ctx.flow.task(node.task_id)
        log = get_logger(execution_id=ctx.execution_id, task_id=node.id, attempt=attempt)
        try:
            needed = referenced_outputs(task) & skipped_tasks
            if needed:
                names = ", ".join(sorted(needed))
                return self.skip(
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
                return self.skip(ctx, node.id, attempt, f"when: {task.when.strip()} is false", log)
        except RunnerError as exc:
            run_id = self.store.create_task_run(
                execution_id=ctx.execution_id, task_id=node.id, attempt=attempt, image=task.image
            )
            # `when` stopped by a kill or the flow timeout: KILLED, as a container would be.
            outcome = (
                Outcome(TaskState.KILLED, exc.reason)
                if isinstance(exc, TemplateInterrupted)
                else Outcome(TaskState.FAILED, str(exc))
            )
            return self._finish(run_id, node.id, attempt, outcome, log)
        outcome, run_id = self._run_container(ctx, node, attempt, tctx, log)
        if self._retried(task, outcome, tries):
            outcome = dataclasses.replace(outcome, state=TaskState.RETRYING)
        return self._finish(run_id, node.id, attempt, outcome, log)

    def pause(
        self,
        ctx: TaskContext,
        node: dag.Node,
        attempt: int,
        outputs: Mapping[str, Any],
        skipped_tasks: frozenset[str],
    ) -> tuple[TaskResult, int]:
        """Settle a pause task that became ready, in the scheduler's thread: record it
        PAUSED (it starts no container), or skipped if its `when` is false, or failed if
        its `when` cannot be rendered. The result and its task run's id."""
        task = ctx.flow.task(node.task_id)
        log = get_logger(execution_id=ctx.execution_id, task_id=node.id, attempt=attempt)
        run_id = self.store.create_task_run(
            execution_id=ctx.execution_id, task_id=node.id, attempt=attempt, image=None
        )
        try:
            if task.when is not None:
                needed = referenced_outputs(task) & skipped_tasks
                if needed:
                    names = ", ".join(sorted(needed))
                    reason = f"needs the outputs of skipped task(s) {names}"
                    return self._skip_run(run_id, node.id, attempt, reason, log), run_id
                tctx = ctx.templates.for_task(
                    node.task_id, attempt=attempt, name=node.id, outputs=outputs
                )
                if not is_true(task.when, tctx, where="when"):
                    reason = f"when: {task.when.strip()} is false"
                    return self._skip_run(run_id, node.id, attempt, reason, log), run_id
        except RunnerError as exc:
            outcome = Outcome(TaskState.FAILED, str(exc))
            return self._finish(run_id, node.id, attempt, outcome, log), run_id
        started_at = _now()
        self.store.pause_task_run(run_id, started_at=started_at)
        log.info(
            "task_paused",
            timeout=task.timeout.text if task.timeout is not None else None,
            on_timeout=(task.on_timeout or "fail") if task.timeout is not None else None,
        )
        result = TaskResult(
            task_id=node.id, attempt=attempt, state=TaskState.PAUSED, started_at=started_at
        )
        return result, run_id

    def _skip_run(
        self, run_id: int, node_id: str, attempt: int, reason: str, log: Any
    ) -> TaskResult:
        self.store.finish_task_run(run_id, state=TaskState.SKIPPED, error=reason)
        log.info("task_skipped", reason=reason)
        return TaskResult(task_id=node_id, attempt=attempt, state=TaskState.SKIPPED, error=reason)

    def _retried(self, task: Task, outcome: Outcome, tries: int) -> bool:
        if outcome.state is not TaskState.FAILED or task.retry is None or not outcome.retryable:
            return False
        if self.control.halt_reason or self.control.cancelled:
            return False
        # A timeout or a failed start has no exit code of the task's own.
        own_code = None if outcome.timed_out else outcome.exit_code
        return task.retry.retries(tries, own_code)

    def _run_container(
        self, ctx: TaskContext, node: dag.Node, attempt: int, tctx: TemplateContext, log: Any
    ) -> tuple[Outcome, int]:
        task = ctx.flow.task(node.task_id)
        image_name = task.image or f"build:{task.build}"
        run_id = self.store.create_task_run(
            execution_id=ctx.execution_id, task_id=node.id, attempt=attempt, image=image_name
        )
        container_id: str | None = None
        started_at: datetime | None = None
        timed_out = threading.Event()
        timer: threading.Timer | None = None
        state, exit_code, error = TaskState.FAILED, None, None
        retryable = True
        outputs: dict[str, Any] = {}
        placed: str | None = None  # the machine it ran on (Backend.node_of)
        try:
            if self.control.cancelled or self.control.halt_reason:
                reason = self.control.halt_reason or "killed before it started"
                return Outcome(TaskState.KILLED, reason), run_id

            def progress(text: str) -> None:
                log.info("image_progress", image=image_name, status=text)

            rendered = render_task(task, tctx)
            image = self.backend.ensure_image(image_source(rendered, ctx.base_dir), progress)
            spec = build_spec(ctx, rendered, attempt, image, task_run_id=run_id, node_id=node.id)
            started_at = _now()
            container_id = self.backend.start(spec)
            with self._lock:
                self._running[node.id] = container_id
            if self.control.cancelled:
                self.kill_running(log)
            self.store.task_run_started(run_id, container_id=container_id, started_at=started_at)
            log.info("task_started", image=image_name, container_id=container_id[:12])
            if task.timeout is not None:
                timer = self._start_timer(task.timeout.seconds, container_id, timed_out, log)
            outputs, bad_outputs = self._stream_logs(ctx, node.id, run_id, container_id, log)
            ended = self.backend.wait(container_id)
            exit_code = ended.exit_code
            with self._lock:
                halted = node.id in self._stopped
            if self.control.cancelled:
                state, error = TaskState.KILLED, self.control.kill_reason
            elif halted and self.control.halt_reason:
                state, error = TaskState.KILLED, self.control.halt_reason
            elif timed_out.is_set():
                assert task.timeout is not None  # the timer comes from it
                state, error = TaskState.FAILED, f"timed out after {task.timeout.text}"
            else:
                state, error = verdict(task, ended)
                if state is TaskState.SUCCESS and bad_outputs is not None:
                    # A value its downstream tasks would read is missing or wrong: the
                    # task did not do what it says.
                    state, error = TaskState.FAILED, f"outputs: {bad_outputs}"
                if state is TaskState.SUCCESS and task.artifacts:
                    self._collect_artifacts(ctx, node.id, run_id, task.artifacts, log)
                elif state is TaskState.FAILED and error is not None:
                    error += _crlf_hint(ctx, rendered)
        except TemplateInterrupted as exc:  # a render stopped by a kill or the timeout
            state, error = TaskState.KILLED, exc.reason
        except RunnerError as exc:
            state = TaskState.KILLED if self.control.cancelled else TaskState.FAILED
            error = str(exc)
            # Rendered again, a template or a refused host path fails the same way.
            retryable = not isinstance(exc, TemplateError | PolicyError)
        except Exception as exc:  # a bug must not leave the execution hanging
            state, error = TaskState.FAILED, f"internal error: {exc!r}"
            log.exception("task_crashed")
        finally:
            if timer is not None:
                timer.cancel()
            if container_id is not None:
                with self._lock:
                    self._running.pop(node.id, None)
                placed = self._node_quietly(container_id, log)
                self._remove_quietly(container_id, log)
        outcome = Outcome(
            state,
            error,
            exit_code,
            started_at,
            container_id,
            outputs,
            timed_out.is_set(),
            retryable,
            placed,
        )
        return outcome, run_id

    # -- an orphan's container ---------------------------------------------------------------

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
        placed: str | None = None
        with self._lock:
            self._running[node_id] = container_id
        try:
            log.info("task_adopted", container_id=container_id[:12], stored_lines=stored_lines)
            outputs, bad_outputs = self._stream_logs(
                ctx, node_id, task_run_id, container_id, log, skip=stored_lines
            )
            ended = self.backend.wait(container_id)
            exit_code = ended.exit_code
            state, error = verdict(task, ended)
            if state is TaskState.SUCCESS and bad_outputs is not None:
                state, error = TaskState.FAILED, f"outputs: {bad_outputs}"
            if self.control.cancelled:
                state, error = TaskState.KILLED, self.control.kill_reason
            if state is TaskState.SUCCESS and task.artifacts:
                self._collect_artifacts(ctx, node_id, task_run_id, task.artifacts, log)
        except RunnerError as exc:
            state, error = TaskState.FAILED, str(exc)
        except Exception as exc:  # a bug must not leave the task run RUNNING
            state, error = TaskState.FAILED, f"internal error: {exc!r}"
            log.exception("task_crashed")
        finally:
            with self._lock:
                self._running.pop(node_id, None)
            placed = self._node_quietly(container_id, log)
            self._remove_quietly(container_id, log)
        self.log_writer.flush()
        outcome = Outcome(state, error, exit_code, started_at, container_id, outputs, node=placed)
        return self._finish(task_run_id, node_id, attempt, outcome, log)

    # -- stopping what runs ----------------------------------------------------------------

    def kill_running(self, log: Any) -> None:
        """Kill every running container of the execution (a kill of the execution)."""
        for node_id, container_id in self._take_running():
            log.info("task_killing", task_id=node_id, container_id=container_id[:12])
            try:
                self.backend.kill(container_id)
            except BackendError as exc:
                log.warning("kill_failed", task_id=node_id, error=str(exc))

    def stop_running(self, log: Any) -> None:
        """Stop (SIGTERM, then SIGKILL after a grace period) every running container, each
        from its own thread so that the caller does not wait out the grace periods."""
        for node_id, container_id in self._take_running():
            log.info("task_stopping", task_id=node_id, container_id=container_id[:12])
            threading.Thread(
                target=self._stop_quietly, args=(node_id, container_id, log), daemon=True
            ).start()

    def _take_running(self) -> list[tuple[str, str]]:
        with self._lock:
            targets = [(n, c) for n, c in self._running.items() if n not in self._stopped]
            self._stopped.update(n for n, _ in targets)
        return targets

    def _stop_quietly(self, node_id: str, container_id: str, log: Any) -> None:
        try:
            self.backend.stop(container_id, STOP_GRACE_S)
        except BackendError as exc:
            log.warning("stop_failed", task_id=node_id, error=str(exc))

    def _node_quietly(self, container_id: str, log: Any) -> str | None:
        try:
            return self.backend.node_of(container_id)
        except BackendError as exc:
            log.warning("node_unknown", error=str(exc))
            return None

    def _remove_quietly(self, container_id: str, log: Any) -> None:
        try:
            self.backend.remove(container_id)
        except BackendError as exc:
            log.warning("remove_failed", error=str(exc))

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

    # -- what an attempt leaves ------------------------------------------------------------

    def skip(
        self, ctx: TaskContext, node_id: str, attempt: int, reason: str, log: Any
    ) -> TaskResult:
        """Record an attempt that does not run (by `when`, or for want of outputs)."""
        self.store.record_skipped(
            execution_id=ctx.execution_id, task_id=node_id, reason=reason, attempt=attempt
        )
        log.info("task_skipped", reason=reason)
        return TaskResult(task_id=node_id, attempt=attempt, state=TaskState.SKIPPED, error=reason)

    def _stream_logs(
        self,
        ctx: TaskContext,
        node_id: str,
        run_id: int,
        container_id: str,
        log: Any,
        *,
        skip: int = 0,
    ) -> tuple[dict[str, Any], str | None]:
        """Record and print every line but the first `skip` (stored before the runner
        died); return the outputs the task published on stdout (read from every line),
        and what was wrong with the first outputs line that could not be read, if any.

        The lines come in batches (`log_batches`): masked, printed and queued for the
        store a batch at a time, so that a chatty task costs little more per line than
        reading it."""
        loggers = {
            stream: get_logger(execution_id=ctx.execution_id, task_id=node_id, stream=stream)
            for stream in ("stdout", "stderr")
        }
        add_batch = self.log_writer.add_batch
        masker = self.masker
        execution_id = ctx.execution_id
        outputs: dict[str, Any] = {}
        problem: str | None = None
        stdout_lines = 0
        for batch in log_batches(self.backend, container_id):
            lines = batch.lines
            # (one search of the batch joined finds whether any line starts with "::")
            if batch.stream == "stdout" and "\n::" in "\n" + "\n".join(lines):
                for number, line in enumerate(lines, start=stdout_lines + 1):
                    if not line.startswith("::"):
                        continue
                    published = parse_output_line(line)
                    if published is not None:
                        # Parsed from the line as written: a secret is masked in the values
                        # (its JSON-escaped form in the line may differ from it).
                        outputs = merge_outputs(outputs, masker.mask_value(published))
                    elif problem is None and (wrong := output_line_problem(line)):
                        problem = masker.mask(f"line {number} of stdout: {wrong}")
            if batch.stream == "stdout":
                stdout_lines += len(lines)
            if skip:
                skipped = min(skip, len(lines))
                skip -= skipped
                lines = lines[skipped:]
                if not lines:
                    continue
            texts = masker.mask_lines(lines)
            echo_task_lines(loggers[batch.stream], texts)
            add_batch(NewLogBatch(execution_id, run_id, node_id, batch.stream, batch.time, texts))
        return outputs, problem

    def _collect_artifacts(
        self,
        ctx: TaskContext,
        node_id: str,
        run_id: int,
        patterns: tuple[str, ...],
        log: Any,
    ) -> None:
        """Copy what the task's `artifacts:` globs match out of the workspace."""
        if self.workspace is None:
            raise ArchiveError("artifacts: this task has no workspace to copy them from")
        dest = ctx.artifacts_dir / ctx.execution_id / node_id
        found: list[Artifact] = []
        for root in artifact_roots(patterns):
            chunks = self.workspace.read(root)
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
        self, run_id: int, node_id: str, attempt: int, outcome: Outcome, log: Any
    ) -> TaskResult:
        ended_at = _now()
        if outcome.error is not None:  # a rendered value may hold a secret
            outcome = dataclasses.replace(outcome, error=self.masker.mask(outcome.error))
        self.store.finish_task_run(
            run_id,
            state=outcome.state,
            exit_code=outcome.exit_code,
            error=outcome.error,
            ended_at=ended_at,
            outputs=dict(outcome.outputs) if outcome.outputs else None,
            node=outcome.node,
        )
        started_at = outcome.started_at
        duration = (ended_at - started_at).total_seconds() if started_at else None
        log.info(
            "task_finished",
            state=outcome.state.value,
            exit_code=outcome.exit_code,
            duration_s=round(duration, 3) if duration is not None else None,
            **({"error": outcome.error} if outcome.error else {}),
            **({"node": outcome.node} if outcome.node else {}),
        )
        return TaskResult(
            task_id=node_id,
            attempt=attempt,
            state=outcome.state,
            exit_code=outcome.exit_code,
            error=outcome.error,
            started_at=started_at,
            ended_at=ended_at,
            container_id=outcome.container_id,
            outputs=dict(outcome.outputs),
            node=outcome.node,
        )


def _crlf_hint(ctx: TaskContext, task: Task) -> str:
    """Why a failed task that runs a script of `files:` with Windows line endings failed."""
    command = task.command if isinstance(task.command, str) else " ".join(task.command or ())
    said = f"{task.script or ''} {command}"
    for name in ctx.crlf_files:
        if posixpath.basename(name) in said:
            return f"; {crlf_message(name)}"
    return ""


def verdict(task: Task, ended: ContainerExit) -> tuple[TaskState, str | None]:
    """How a container that ran to its end did: its exit code, or why the engine ended it."""
    if ended.oom_killed:
        limit = f", limit {task.memory.text}" if task.memory is not None else ""
        return TaskState.FAILED, f"killed: out of memory (OOM{limit})"
    if ended.error:
        return TaskState.FAILED, ended.error
    if ended.exit_code == 0:
        return TaskState.SUCCESS, None
    return TaskState.FAILED, f"exited with code {ended.exit_code}"
