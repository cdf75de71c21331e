"""The runner's own cost per task as a flow grows, without containers.

    python bench/overhead.py --only scaling          # the rows (this module runs each size)
    python bench/scaling.py SHAPE STORE TASKS CONCURRENCY OUT.json   # one measured run

A chain (N tasks in file order) and a fan-out (one task, then N - 1 tasks waiting for it)
run through `runner.api.run_flow` on the scripted in-memory backend of the unit tests
(`runner.backends.fake.FakeBackend`): no engine, so what is measured is the runner alone,
its scheduler, worker threads, templates, events and store, into the in-memory store
(`runner.store.testing.InMemoryStore`) or a SQLite file. Each run is a process of its own,
started by `bench/overhead.py` through its small launcher, so that its peak RSS is its own
and no garbage of earlier rows is walked by its collector. It writes its CPU and wall
seconds to OUT.json; the CPU seconds of the whole process (every thread) over the run, per
task, are "the runner's ms per task".
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/scaling.py` from a checkout
    sys.path.insert(0, str(REPO))

SHAPES = ("chain", "fanout")
STORES = ("memory", "sqlite")


def flow_text(shape: str, tasks: int) -> str:
    """`chain`: tasks in file order, each waiting for the one before (no depends_on).
    `fanout`: a first task, then tasks - 1 tasks that wait for it and run side by side."""
    out = ["id: bench_scaling", "defaults: {image: 'debian:bookworm-slim', command: 'echo ok'}"]
    out.append("tasks:")
    if shape == "chain":
        out += [f"  - id: t{i:05d}" for i in range(tasks)]
    elif shape == "fanout":
        out.append("  - id: root")
        out += [f"  - {{id: t{i:05d}, depends_on: [root]}}" for i in range(1, tasks)]
    else:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    return "\n".join(out) + "\n"


def run(shape: str, store_kind: str, tasks: int, concurrency: int) -> dict[str, Any]:
    """One execution of a `shape` flow of `tasks` tasks, timed; in this process."""
    from runner import api, logs
    from runner.backends.fake import FakeBackend
    from runner.store import open_store
    from runner.store.testing import InMemoryStore

    devnull = open(os.devnull, "w")  # noqa: SIM115  (the log stream lives as long as the run)
    logs.configure("json", stream=devnull)
    with tempfile.TemporaryDirectory(prefix="runner-scaling-") as tmp:
        work = Path(tmp)
        # a first, small execution: imports and caches warm, as in a runner that has run
        warm = work / "warm.yml"
        warm.write_text(flow_text(shape, 3))
        flow = work / "flow.yml"
        flow.write_text(flow_text(shape, tasks))
        store = InMemoryStore() if store_kind == "memory" else open_store(f"sqlite:///{work}/s.db")
        try:
            api.run_flow(
                warm, store=store, backend=FakeBackend(keep_history=False), concurrency=concurrency
            )
            started, started_cpu = time.perf_counter(), time.process_time()
            result = api.run_flow(
                flow, store=store, backend=FakeBackend(keep_history=False), concurrency=concurrency
            )
            cpu = time.process_time() - started_cpu
            wall = time.perf_counter() - started
        finally:
            store.close()
    if not result.ok or len(result.tasks) != tasks:
        raise AssertionError(f"{shape} {tasks}: {result.state.value}, {len(result.tasks)} tasks")
    return {"cpu_s": cpu, "wall_s": wall, "tasks": tasks}


def main(argv: list[str]) -> int:
    shape, store_kind, tasks, concurrency, out = argv
    if store_kind not in STORES:
        raise SystemExit(f"unknown store {store_kind!r}; one of {', '.join(STORES)}")
    measured = run(shape, store_kind, int(tasks), int(concurrency))
    Path(out).write_text(json.dumps(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
