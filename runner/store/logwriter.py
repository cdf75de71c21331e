"""A buffer in front of `Store.append_log_batches`, so that a chatty container costs one
insert per 5,000 lines instead of one transaction per line.

Many threads `add` lines, or `add_batch` a batch of a task's output (a list append under
a lock, never a database call); one background thread writes them every 0.2 s, or sooner
once 5,000 lines are waiting.
Lines are written in the order they were added, so each task's lines keep their order.

When a write fails on a connection-level error (`TransientStoreError`) the lines are
kept and the write is retried with a growing pause (0.2 s doubling to 5 s); lines added
meanwhile wait behind them. After `give_up_after` seconds of failures (default
`RUNNER_DB_RETRY_SECONDS`, else 60), or as soon as the store says it has given up itself
(`StoreUnavailableError`: its outage clock, shared by all its writes, passed the limit),
the writer gives up: the lines still waiting are lost, and every later `add`, `flush` and
`close` raises the `StoreError` that made it give up.

Any other failure is permanent (a line the database refuses, whatever the retries): the
writer stores the lines before the one refused, then gives up at once, naming the task
and that line's number in the task's output.
"""

from __future__ import annotations

import threading
import time

from runner.errors import StoreError
from runner.logs import module_logger
from runner.settings import DB_RETRY_FIRST_S, DB_RETRY_MAX_S, db_retry_seconds
from runner.store.base import Store
from runner.store.records import (
    NewLogBatch,
    NewLogLine,
    StoreUnavailableError,
    TransientStoreError,
)

FLUSH_INTERVAL_S = 0.2
BATCH_SIZE = 5_000
RETRY_FIRST_S = DB_RETRY_FIRST_S
RETRY_MAX_S = DB_RETRY_MAX_S

log = module_logger(__name__)


class LogWriter:
    """Thread-safe, batching writer of log lines into a `Store`. Close it when done."""

    def __init__(
        self,
        store: Store,
        *,
        give_up_after: float | None = None,
        flush_interval: float = FLUSH_INTERVAL_S,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._store = store
        self._give_up_after = db_retry_seconds() if give_up_after is None else give_up_after
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        # A plain Lock under the Condition: `add` runs once per line of output and takes it
        # directly, which costs a third of going through the Condition's default RLock.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: list[NewLogBatch] = []
        self._pending_lines = 0
        self._added = 0  # lines ever added
        self._stored = 0  # lines ever stored
        self._flush_target = 0  # flush() waits until _stored reaches this
        self._closing = False
        self._error: StoreError | None = None
        self._thread = threading.Thread(target=self._run, name="runner-log-writer", daemon=True)
        self._thread.start()

    def add(self, line: NewLogLine) -> None:
        """Queue one line; it is stored within about `flush_interval` seconds."""
        self.add_batch(
            NewLogBatch(
                line.execution_id,
                line.task_run_id,
                line.task_id,
                line.stream,
                line.time,
                (line.line,),
            )
        )

    def add_batch(self, batch: NewLogBatch) -> None:
        """Queue the lines of a batch, in their order (one lock and one list entry for them
        all: a batch of a container's output costs what one line does)."""
        count = len(batch.lines)
        if not count:
            return
        with self._lock:
            if self._error is not None or self._closing:
                self._check()
            self._pending.append(batch)
            self._added += count
            self._pending_lines += count
            if self._pending_lines >= self._batch_size:
                self._cond.notify_all()

    def flush(self) -> None:
        """Return once every line added so far is stored (or raise why it cannot be)."""
        with self._cond:
            self._check()
            target = self._added
            if self._stored >= target:
                return
            self._flush_target = max(self._flush_target, target)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._stored >= target or self._error is not None)
            self._check()

    def close(self) -> None:
        """Store what is waiting and stop the background thread (closing again is a no-op,
        unless the writer gave up: then every call raises why)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._cond:
            if self._error is not None:
                raise self._error

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check(self) -> None:
        """Raise the error that made the writer give up, or refuse lines after close()."""
        if self._error is not None:
            raise self._error
        if self._closing:
            raise StoreError("the log writer is closed: no more lines can be added")

    def _wanted(self) -> bool:
        return (
            self._closing
            or self._pending_lines >= self._batch_size
            or self._flush_target > self._stored
        )

    def _run(self) -> None:
        """The background thread: take what is waiting, write it, repeat until closed."""
        batch: list[NewLogBatch] = []
        lines = 0  # in batch
        failing_since: float | None = None
        retry_in = RETRY_FIRST_S
        while True:
            with self._cond:
                if not batch:
                    self._cond.wait_for(self._wanted, timeout=self._flush_interval)
                # Lines that failed before go first, so order is kept across retries.
                batch.extend(self._pending)
                lines += self._pending_lines
                self._pending, self._pending_lines = [], 0
                closing = self._closing
            if not batch:
                if closing:
                    return
                continue
            try:
                self._store.append_log_batches(batch)
            except StoreUnavailableError as exc:
                # The store has been failing for its whole limit already: it says so itself.
                log.error("log_lines_lost", lines=lines, error=str(exc))
                self._give_up(exc, None)
                return
            except TransientStoreError as exc:
                now = time.monotonic()
                failing_since = failing_since if failing_since is not None else now
                left = self._give_up_after - (now - failing_since)
                if left <= 0:
                    log.error("log_lines_lost", lines=lines, error=str(exc))
                    self._give_up(
                        StoreError(
                            f"gave up storing {lines} log lines after "
                            f"{self._give_up_after:g} s of failures: {exc}"
                        ),
                        exc,
                    )
                    return
                pause = min(retry_in, left)  # one last try at the limit, not after it
                log.warning(
                    "log_write_failed", lines=lines, retry_in_s=round(pause, 2), error=str(exc)
                )
                time.sleep(pause)
                retry_in = min(retry_in * 2, RETRY_MAX_S)
                continue
            except StoreError as exc:
                # Permanent: the database refuses a line. Store those before it, then stop.
                refused = self._refused(batch, exc)
                if refused is not None:
                    self._give_up(refused, exc)
                    return
            except Exception as exc:  # a bug, not an outage: retrying will not help
                log.error("log_lines_lost", lines=lines, error=repr(exc))
                self._give_up(StoreError(f"cannot store {lines} log lines: {exc!r}"), exc)
                return
            failing_since, retry_in = None, RETRY_FIRST_S
            with self._cond:
                self._stored += lines
                self._cond.notify_all()
            batch, lines = [], 0

    def _give_up(self, error: StoreError, cause: BaseException | None) -> None:
        if cause is not None and error is not cause:
            error.__cause__ = cause
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def _refused(self, batch: list[NewLogBatch], exc: StoreError) -> StoreError | None:
        """After the store refused `batch` for good: store the lines before the first one
        it refuses (halving the lines until that line is found) and say which it is.
        None if the store took every line this time."""
        single = [b._replace(lines=(line,)) for b in batch for line in b.lines]
        try:
            stored, bad, error = self._store_until_refused(single)
        except StoreError as again:  # the database failed otherwise meanwhile: give up
            log.error("log_lines_lost", lines=len(single), error=str(again))
            return StoreError(f"cannot store {len(single)} log lines: {exc}")
        if bad is None:
            return None
        with self._cond:
            self._stored += stored
        try:
            number = str(self._store.count_task_run_logs(bad.task_run_id) + 1)
        except StoreError:
            number = "?"
        lost = len(single) - stored
        log.error(
            "log_line_refused",
            task_id=bad.task_id,
            line_number=number,
            lines_lost=lost,
            error=str(error),
        )
        return StoreError(
            f"line {number} of task '{bad.task_id}' (execution {bad.execution_id}) cannot be"
            f" stored, so its output ends before it ({lost} lines lost): {error}"
        )

    def _store_until_refused(
        self, lines: list[NewLogBatch]
    ) -> tuple[int, NewLogBatch | None, StoreError | None]:
        """Store `lines` in order up to the first the store refuses for good: how many
        were stored, that line and the error (None, None if all were stored)."""
        if len(lines) > 1:
            half = len(lines) // 2
            stored, bad, error = self._store_until_refused(lines[:half])
            if bad is not None:
                return stored, bad, error
            more, bad, error = self._store_until_refused(lines[half:])
            return stored + more, bad, error
        try:
            self._store.append_log_batches(lines)
        except (TransientStoreError, StoreUnavailableError):
            raise
        except StoreError as exc:
            return 0, lines[0], exc
        return len(lines), None, None
