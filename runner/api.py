"""The library API: what the CLI, a server and tests call. It wires the stages together:

load_flow -> resolve_inputs -> Store.create_execution -> Scheduler(backend, store).run
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from runner.archives import pack_files
from runner.backends.base import Backend
from runner.execution import ExecutionResult
from runner.inputs import file_inputs, resolve_inputs
from runner.loader import LoadedFlow, load_flow
from runner.scheduler import RunOptions, Scheduler
from runner.settings import DEFAULT_ARTIFACTS_DIR, DEFAULT_CONCURRENCY
from runner.store import LogWriter, Store, default_database_url

__all__ = ["load_flow", "open_store", "run_flow"]


def open_store(url: str | None = None) -> Store:
    """Open (and migrate) the database at `url`, or the default one."""
    return Store.open(url or default_database_url())


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
    execution id as soon as it is recorded.
    """
    loaded = flow if isinstance(flow, LoadedFlow) else load_flow(flow)
    given = inputs or {}
    values = resolve_inputs(loaded, given)
    # Read local files before anything is recorded: a missing file is bad input, not a run.
    workspace_files = _pack_workspace_files(loaded, given)
    names = {*loaded.flow.allowed_env, *allow_env}
    env = {name: os.environ[name] for name in sorted(names) if name in os.environ}
    own_store = store is None
    the_store = store if store is not None else open_store()
    the_backend = backend if backend is not None else default_backend()
    try:
        execution_id = uuid.uuid4().hex
        the_store.create_execution(
            execution_id=execution_id,
            flow_id=loaded.flow.id,
            namespace=loaded.flow.namespace,
            revision=loaded.revision,
            source=loaded.source,
            inputs=values,
            labels=dict(loaded.flow.labels),
        )
        if on_created is not None:
            on_created(execution_id)
        writer = LogWriter(the_store)
        scheduler = Scheduler(the_backend, the_store, writer)
        options = RunOptions(
            concurrency=concurrency or loaded.flow.concurrency or DEFAULT_CONCURRENCY,
            keep_workspace=keep_workspace,
            artifacts_dir=Path(artifacts_dir) if artifacts_dir else Path(DEFAULT_ARTIFACTS_DIR),
            env=env,
            workspace_files=workspace_files,
        )
        try:
            with _cancel_on_signals(scheduler.cancel, enabled=handle_signals):
                return scheduler.run(execution_id, loaded, values, options)
        finally:
            writer.close()
    finally:
        if backend is None:
            the_backend.close()
        if own_store:
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
