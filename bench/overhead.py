"""The runner's overhead against raw Docker SDK calls, measured in one run on one machine.

    python bench/overhead.py             # the full benchmark (about 20 minutes on 2 cores)
    python bench/overhead.py --quick     # small sizes, one pair: a check that it all works
    python bench/overhead.py --only logs --log-pairs 5    # one row, more pairs

Each timed row runs the runner (A) and a raw Docker SDK baseline (B) in alternating pairs
(A B, then B A, ...) so that load from other processes falls on both sides alike, and
reports the median of the per-pair ratios with their range. Rows (the groups of the JSON):

    chain       N tasks one after another        vs N sequential create/start/wait/logs/remove
    fanout      N tasks at concurrency C         vs the same raw calls in a pool of C threads
    logs        one task printing L 100-byte lines, every line stored in SQLite / Postgres
                                                 vs the same container's logs read and dropped
    planning    loading (validating) and planning a generated N-task DAG; no containers
    memory      peak RSS of `python -m runner run` on an N-task flow at concurrency 8
    startup     `runner --help` and `runner validate flows/hello.yml`, wall seconds beyond
                `python -c pass` (both started the same way, in alternating pairs)
    server      `runner serve` over HTTP: a page of 50 executions and a page of 1,000 log
                lines from a history of 100,000 executions and 10 M lines in Postgres
                (median ms), and 200 one-task executions POSTed at once against the raw
                fan-out at the same concurrency (see bench/serving.py)
    history     (optional: `--only history`) from a history of 100,000 executions and 10 M
                log lines in SQLite and in Postgres: `runner executions`, `show` and
                `logs --tail 1000` (ms beyond `runner --help`), the same from the HTTP
                API (median ms), and `runner gc` of 10,000 ended executions' volumes
                (seconds); see bench/history.py
    scaling     the runner's own CPU ms per task of chains and fan-outs of 100, 1,000 and
                10,000 tasks on the scripted backend (no containers), into the in-memory
                store and SQLite: at most 20 % more per task at the largest size than at
                the smallest; and the peak RSS of the largest fan-out (bench/scaling.py)
    swarm       (optional: `--only swarm`, not part of the default run) the Swarm backend on
                the three-node test swarm of tests/integration/swarm.py (started for the
                run, ~25 s, unless --swarm-host names a manager): a chain of N tasks vs
                N sequential raw service calls (bench/swarm_raw.py: create, poll the task
                to its end, read its logs, remove), and a fan-out of M `workspace: false`
                tasks at concurrency C vs the same calls in a pool of C threads

The raw baseline uses docker-py's low-level `docker.APIClient`, as the runner does, and does
per task what a fair minimal runner must: create the container with the same `/bin/sh -c`
command, start it, wait for it, read all of its logs, remove it (the logs row follows the
log while the task runs, as the runner does). The runner is measured through its library
API, `runner.api.run_flow`, with a Store on a temporary SQLite file (or a throwaway Postgres
database) and its events rendered as JSON into /dev/null. The memory row runs the real CLI
in a subprocess and takes its peak RSS from `os.wait4` (the kernel's ru_maxrss of that
process), started from a small launcher process so that this process's own memory does not
count (see `_LAUNCHER`). Planning is timed in CPU seconds of this process (`time.process_time`): other
work on a shared machine stretches wall time but not that.

Progress goes to stderr; stdout gets the table, then one JSON line with every row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/overhead.py` from a checkout
    sys.path.insert(0, str(REPO))

import docker  # noqa: E402  (after the sys.path line above)
import docker.errors  # noqa: E402
from docker.utils import kwargs_from_env  # noqa: E402

from runner import api, dag, logs  # noqa: E402
from runner.loader import load_flow  # noqa: E402
from runner.store import Store, open_store  # noqa: E402
from runner.store.testing import (  # noqa: E402
    POSTGRES_URL_ENV,
    postgres_problem,
    temporary_postgres_database,
)

IMAGE = "debian:bookworm-slim"
TRIVIAL_COMMAND = "echo ok"
LINE_BYTES = 100  # 99 characters and a newline
BENCH_LABEL = "io.runner.bench"  # on the raw side's containers, to sweep them up on errors
GROUPS = ("chain", "fanout", "logs", "planning", "memory", "startup", "server", "scaling")
OPTIONAL_GROUPS = ("swarm", "history")
"""Run only when asked (`--only swarm`): it starts a three-node swarm and takes ~15 min;
`--only history` generates (once) a history of 10 M log lines per database, and creates
and removes 10,000 volumes per database (~10 min)."""

TARGETS = {
    "chain": 1.15,  # runner time / raw time, at most
    "fanout": 1.10,  # runner time / raw time, at most
    "logs": 0.85,  # runner lines/s / raw lines/s, at least
    "planning": 0.4,  # CPU seconds, under
    "memory": 150.0,  # MB of peak RSS, under
    "startup --help": 0.15,  # seconds beyond `python -c pass`, at most
    "swarm chain": 1.15,  # runner time / raw Swarm service calls, at most
    "swarm fanout": 1.10,
    "startup validate": 0.35,
    "server executions page": 50.0,  # ms, under
    "server logs page": 50.0,  # ms, under
    "server api fanout": 1.10,  # runner time / raw time, at most
    "scaling": 1.20,  # runner CPU ms per task at the largest size / at smaller ones, at most
    "scaling memory": 150.0,  # MB of peak RSS of the largest fake-backend execution, under
}


@dataclass(frozen=True)
class Sizes:
    pairs: int = 5  # chain and fan-out: short rows, and the noisiest on a shared machine
    log_pairs: int = 3
    chain: int = 30
    fanout: int = 60
    concurrencies: tuple[int, ...] = (4, 8)
    log_lines: int = 500_000
    plan_tasks: int = 10_000
    plan_runs: int = 3
    memory_tasks: int = 1_000
    memory_concurrency: int = 8
    startup_runs: int = 10
    swarm_pairs: int = 3
    swarm_chain: int = 20
    swarm_fanout: int = 60
    swarm_concurrency: int = 8
    scaling_tasks: tuple[int, ...] = (100, 1_000, 10_000)
    scaling_runs: int = 3
    scaling_concurrency: int = 8


QUICK = Sizes(
    pairs=1,
    log_pairs=1,
    chain=4,
    fanout=8,
    concurrencies=(4,),
    log_lines=20_000,
    plan_tasks=500,
    plan_runs=1,
    memory_tasks=16,
    startup_runs=2,
    swarm_pairs=1,
    swarm_chain=3,
    swarm_fanout=6,
    swarm_concurrency=3,
    scaling_tasks=(50, 500),
    scaling_runs=1,
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- flows ------------------------------------------------------------------------------


def chain_flow(n: int) -> str:
    """n tasks in file order (no depends_on: each waits for the one before)."""
    tasks = "".join(f"  - id: t{i:04d}\n" for i in range(n))
    return (
        f"id: bench_chain\ndefaults: {{image: {IMAGE}, command: {json.dumps(TRIVIAL_COMMAND)}}}\n"
        f"tasks:\n{tasks}"
    )


def fanout_flow(n: int) -> str:
    """One task with an n-value matrix: n independent task runs."""
    values = ", ".join(str(i) for i in range(n))
    return (
        f"id: bench_fanout\ntasks:\n  - id: f\n    image: {IMAGE}\n"
        f"    command: {json.dumps(TRIVIAL_COMMAND)}\n    matrix: {{i: [{values}]}}\n"
    )


def free_fanout_flow(n: int) -> str:
    """fanout_flow with `workspace: false`: tasks a multi-host backend may place anywhere."""
    return fanout_flow(n).replace("    matrix:", "    workspace: false\n    matrix:")


def logs_command(lines: int) -> str:
    return f"yes '{'x' * (LINE_BYTES - 1)}' | head -n {lines}"


def logs_flow(lines: int) -> str:
    return (
        f"id: bench_logs\ntasks:\n  - id: talk\n    image: {IMAGE}\n"
        f"    command: {json.dumps(logs_command(lines))}\n"
    )


def wide_flow(n: int, lanes: int) -> str:
    """n distinct tasks in `lanes` parallel chains (task i waits for task i - lanes)."""
    out = [f"id: bench_wide\ndefaults: {{image: {IMAGE}, command: {json.dumps(TRIVIAL_COMMAND)}}}"]
    out.append("tasks:")
    for i in range(n):
        deps = f", depends_on: [t{i - lanes:05d}]" if i >= lanes else ""
        out.append(f"  - {{id: t{i:05d}{deps}}}")
    return "\n".join(out) + "\n"


def plan_flow(n: int, seed: int = 0) -> str:
    """n tasks, each depending on 1 to 3 of the 50 tasks before it (a deterministic DAG),
    in block style with a command each; the image comes from `defaults`."""
    rng = random.Random(seed)
    out = [f"id: bench_plan\ndefaults:\n  image: {IMAGE}\ntasks:"]
    for i in range(n):
        out.append(f"  - id: t{i:05d}")
        if i:
            ups = sorted({rng.randrange(max(0, i - 50), i) for _ in range(rng.randint(1, 3))})
            out.append("    depends_on: [" + ", ".join(f"t{u:05d}" for u in ups) + "]")
        out.append(f'    command: "echo step {i}"')
    return "\n".join(out) + "\n"


# -- the raw baseline ---------------------------------------------------------------------


def raw_task(client: docker.APIClient, command: str) -> int:
    """What a fair minimal runner does per task; returns how many log bytes it read."""
    container = client.create_container(
        IMAGE, command=["/bin/sh", "-c", command], labels={BENCH_LABEL: "raw"}
    )
    cid = container["Id"]
    try:
        client.start(cid)
        client.wait(cid, timeout=None)
        return len(client.logs(cid, stdout=True, stderr=True))
    finally:
        client.remove_container(cid, v=True, force=True)


def raw_chain(client: docker.APIClient, n: int) -> None:
    for _ in range(n):
        raw_task(client, TRIVIAL_COMMAND)


def raw_fanout(client: docker.APIClient, n: int, concurrency: int) -> None:
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda _: raw_task(client, TRIVIAL_COMMAND), range(n)))


def raw_logs(client: docker.APIClient, lines: int) -> None:
    """Follow the log while the task writes it, count the lines, drop them."""
    container = client.create_container(
        IMAGE, command=["/bin/sh", "-c", logs_command(lines)], labels={BENCH_LABEL: "raw"}
    )
    cid = container["Id"]
    seen = 0
    try:
        client.start(cid)
        for chunk in client.logs(cid, stdout=True, stderr=True, stream=True, follow=True):
            seen += chunk.count(b"\n")
        client.wait(cid, timeout=None)
    finally:
        client.remove_container(cid, v=True, force=True)
    if seen != lines:
        raise AssertionError(f"the raw SDK read {seen} log lines, expected {lines}")


# -- the runner ---------------------------------------------------------------------------


def run_runner(flow: Path, store: Store, concurrency: int | None = None) -> str:
    result = api.run_flow(flow, store=store, concurrency=concurrency)
    if not result.ok:
        failed = [t.error for t in result.tasks if t.error]
        raise AssertionError(f"{flow.name}: {result.state.value}: {failed[:1]}")
    return result.execution_id


# -- measuring ----------------------------------------------------------------------------


@dataclass
class Pairs:
    """Alternating A/B timings: pair i runs the runner first when i is even."""

    runner_s: list[float] = field(default_factory=list)
    raw_s: list[float] = field(default_factory=list)

    def measure(
        self,
        pairs: int,
        runner: Callable[[], object],
        raw: Callable[[], object],
        check: Callable[[object], None] = lambda _: None,
    ) -> None:
        """`check` gets what `runner` returned, outside the timing."""
        for i in range(pairs):
            if i % 2 == 0:
                a, result = _timed(runner)
                b, _ = _timed(raw)
            else:
                b, _ = _timed(raw)
                a, result = _timed(runner)
            check(result)
            self.runner_s.append(a)
            self.raw_s.append(b)
            say(f"    pair {i + 1}: runner {a:.3f} s, raw {b:.3f} s, runner/raw {a / b:.3f}")

    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.runner_s, self.raw_s, strict=True)]


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "ratio": round(statistics.median(values), 3),
        "ratio_min": round(min(values), 3),
        "ratio_max": round(max(values), 3),
    }


def time_row(
    group: str, name: str, pairs: Pairs, tasks: int, target: float, what: str
) -> dict[str, Any]:
    ratios = pairs.ratios()
    runner_med, raw_med = statistics.median(pairs.runner_s), statistics.median(pairs.raw_s)
    return {
        "group": group,
        "row": name,
        "what": what,
        "kind": "time_ratio",
        **_spread(ratios),
        "runner_s": round(runner_med, 3),
        "raw_s": round(raw_med, 3),
        "overhead_ms_per_task": round((runner_med - raw_med) / tasks * 1000, 1),
        "target": f"<= {target}x",
        "ok": statistics.median(ratios) <= target,
        "pairs": len(ratios),
        "runner_samples_s": [round(s, 3) for s in pairs.runner_s],
        "raw_samples_s": [round(s, 3) for s in pairs.raw_s],
    }


def rate_row(group: str, name: str, pairs: Pairs, lines: int, target: float) -> dict[str, Any]:
    # (lines / runner time) / (lines / raw time) = raw time / runner time
    ratios = [1 / r for r in pairs.ratios()]
    runner_med, raw_med = statistics.median(pairs.runner_s), statistics.median(pairs.raw_s)
    return {
        "group": group,
        "row": name,
        "what": "runner lines/s end to end (every line stored) / raw SDK lines/s read and dropped",
        "kind": "rate_ratio",
        **_spread(ratios),
        "runner_lines_per_s": round(lines / runner_med),
        "raw_lines_per_s": round(lines / raw_med),
        "runner_s": round(runner_med, 3),
        "raw_s": round(raw_med, 3),
        "target": f">= {target}x",
        "ok": statistics.median(ratios) >= target,
        "pairs": len(ratios),
        "lines": lines,
        "lines_stored": lines,  # counted in the store after every runner run (see bench_logs)
        "runner_samples_s": [round(s, 3) for s in pairs.runner_s],
        "raw_samples_s": [round(s, 3) for s in pairs.raw_s],
    }


def skipped_row(group: str, name: str, reason: str) -> dict[str, Any]:
    return {"group": group, "row": name, "kind": "skipped", "ok": None, "reason": reason}


@contextlib.contextmanager
def sqlite_store(work: Path, name: str) -> Iterator[Store]:
    store = open_store(f"sqlite:///{work / name}.db")
    try:
        yield store
    finally:
        store.close()


def bench_chain(client: docker.APIClient, work: Path, sizes: Sizes) -> dict[str, Any]:
    flow = work / "chain.yml"
    flow.write_text(chain_flow(sizes.chain))
    say(f"chain: {sizes.chain} tasks, {sizes.pairs} pairs")
    pairs = Pairs()
    with sqlite_store(work, "chain") as store:
        pairs.measure(
            sizes.pairs, lambda: run_runner(flow, store), lambda: raw_chain(client, sizes.chain)
        )
    what = "runner time / raw time of sequential create/start/wait/logs/remove"
    return time_row("chain", f"chain {sizes.chain}", pairs, sizes.chain, TARGETS["chain"], what)


def bench_fanout(
    client: docker.APIClient, work: Path, sizes: Sizes, concurrency: int
) -> dict[str, Any]:
    flow = work / "fanout.yml"
    flow.write_text(fanout_flow(sizes.fanout))
    say(f"fan-out: {sizes.fanout} tasks at concurrency {concurrency}, {sizes.pairs} pairs")
    pairs = Pairs()
    with sqlite_store(work, f"fanout{concurrency}") as store:
        pairs.measure(
            sizes.pairs,
            lambda: run_runner(flow, store, concurrency),
            lambda: raw_fanout(client, sizes.fanout, concurrency),
        )
    what = f"runner time / raw time of the same calls in a pool of {concurrency} threads"
    name = f"fan-out {sizes.fanout} c={concurrency}"
    row = time_row("fanout", name, pairs, sizes.fanout, TARGETS["fanout"], what)
    row["concurrency"] = concurrency
    return row


def bench_logs(
    client: docker.APIClient, work: Path, sizes: Sizes, store: Store, name: str
) -> dict[str, Any]:
    flow = work / "logs.yml"
    flow.write_text(logs_flow(sizes.log_lines))
    say(f"logs: {sizes.log_lines} lines of {LINE_BYTES} bytes into {name}, {sizes.log_pairs} pairs")

    def check(execution_id: object) -> None:
        stored = store.count_logs(str(execution_id))
        if stored != sizes.log_lines:
            raise AssertionError(f"{name}: {stored} log lines stored, expected {sizes.log_lines}")

    pairs = Pairs()
    pairs.measure(
        sizes.log_pairs,
        lambda: run_runner(flow, store),
        lambda: raw_logs(client, sizes.log_lines),
        check,
    )
    row = rate_row("logs", f"logs {name}", pairs, sizes.log_lines, TARGETS["logs"])
    row["store"] = name
    return row


def bench_logs_postgres(
    client: docker.APIClient, work: Path, sizes: Sizes, url: str | None
) -> dict[str, Any]:
    if not url:
        return skipped_row("logs", "logs postgres", f"skipped: {POSTGRES_URL_ENV} is not set")
    problem = postgres_problem(url)
    if problem is not None:
        return skipped_row("logs", "logs postgres", f"skipped: {problem}")
    with temporary_postgres_database(url) as db_url:
        store = open_store(db_url)
        try:
            return bench_logs(client, work, sizes, store, "postgres")
        finally:
            store.close()


@contextlib.contextmanager
def swarm_manager(host: str | None) -> Iterator[str]:
    """The URL of a Swarm manager: `host`, or the test swarm's, started for the run."""
    if host:
        yield host
        return
    from tests.integration.swarm import swarm_cluster

    outer = docker.from_env()
    try:
        with swarm_cluster(outer, images=(IMAGE,)) as cluster:
            say(cluster.summary())
            yield cluster.manager_url
    finally:
        outer.close()


def bench_swarm(work: Path, sizes: Sizes, host: str | None) -> list[dict[str, Any]]:
    """The Swarm backend against bench/swarm_raw.py's raw service calls, on one swarm."""
    from bench import swarm_raw
    from runner.backends.swarm import SwarmBackend

    rows = []
    with swarm_manager(host) as url:
        raw_api = docker.APIClient(base_url=url, version="auto", timeout=120, max_pool_size=64)
        client = docker.DockerClient(base_url=url, version="auto", timeout=120, max_pool_size=64)
        try:
            swarm_raw.run_job(raw_api)  # the first task on a node pays for what others do not

            def runner(flow: Path, store: Store, concurrency: int | None = None) -> str:
                backend = SwarmBackend(client, registry_address="", constraints=())
                try:
                    result = api.run_flow(
                        flow, store=store, backend=backend, concurrency=concurrency
                    )
                finally:
                    backend.close()
                if not result.ok:
                    failed = [t.error for t in result.tasks if t.error]
                    raise AssertionError(f"{flow.name}: {result.state.value}: {failed[:1]}")
                return result.execution_id

            chain = work / "swarm-chain.yml"
            chain.write_text(chain_flow(sizes.swarm_chain))
            say(f"swarm chain: {sizes.swarm_chain} tasks, {sizes.swarm_pairs} pairs")
            pairs = Pairs()
            with sqlite_store(work, "swarm-chain") as store:
                pairs.measure(
                    sizes.swarm_pairs,
                    lambda: runner(chain, store),
                    lambda: swarm_raw.run_chain(raw_api, sizes.swarm_chain),
                )
            what = "Swarm backend time / raw time of sequential service create/poll/logs/remove"
            name = f"swarm chain {sizes.swarm_chain}"
            rows.append(
                time_row("swarm", name, pairs, sizes.swarm_chain, TARGETS["swarm chain"], what)
            )
            rows[-1]["per_task_s"] = round(rows[-1]["runner_s"] / sizes.swarm_chain, 3)

            fanout = work / "swarm-fanout.yml"
            fanout.write_text(free_fanout_flow(sizes.swarm_fanout))
            c = sizes.swarm_concurrency
            say(f"swarm fan-out: {sizes.swarm_fanout} workspace: false tasks at c={c}")
            pairs = Pairs()
            with sqlite_store(work, "swarm-fanout") as store:
                pairs.measure(
                    sizes.swarm_pairs,
                    lambda: runner(fanout, store, c),
                    lambda: swarm_raw.run_fanout(raw_api, sizes.swarm_fanout, c),
                )
            what = f"Swarm backend time / raw time of the same calls in a pool of {c} threads"
            name = f"swarm fan-out {sizes.swarm_fanout} c={c}"
            row = time_row("swarm", name, pairs, sizes.swarm_fanout, TARGETS["swarm fanout"], what)
            row["concurrency"] = c
            row["per_task_s"] = round(row["runner_s"] / sizes.swarm_fanout, 3)
            rows.append(row)
        finally:
            swarm_raw.sweep(raw_api)
            raw_api.close()
            client.close()
    return rows


def bench_planning(work: Path, sizes: Sizes) -> dict[str, Any]:
    flow = work / "plan.yml"
    flow.write_text(plan_flow(sizes.plan_tasks))
    say(f"planning: {sizes.plan_tasks} tasks, {sizes.plan_runs} runs")
    cpu, wall = [], []
    for i in range(sizes.plan_runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        plan = dag.build_plan(load_flow(flow).flow)
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started)
        if len(plan.order) != sizes.plan_tasks:
            raise AssertionError(f"planned {len(plan.order)} tasks, expected {sizes.plan_tasks}")
        say(f"    run {i + 1}: {cpu[-1]:.3f} s CPU, {wall[-1]:.3f} s wall")
    value = statistics.median(cpu)
    return {
        "group": "planning",
        "row": f"planning {sizes.plan_tasks}",
        "what": "CPU seconds of load_flow (validation) + dag.build_plan",
        "kind": "seconds",
        "value": round(value, 3),
        "ratio": round(value / TARGETS["planning"], 3),  # of the budget
        "min": round(min(cpu), 3),
        "max": round(max(cpu), 3),
        "wall_s": round(statistics.median(wall), 3),
        "target": f"< {TARGETS['planning']:g} s",
        "ok": value < TARGETS["planning"],
        "samples_cpu_s": [round(s, 3) for s in cpu],
    }


# Runs the command in argv[1:] and prints its exit code and ru_maxrss (KiB). The memory row
# starts `runner run` through this small process, not from the benchmark's own: subprocess
# starts a child with vfork, and at exec the kernel counts the high-water RSS of the memory
# the child shared until then, the parent's, into the child's ru_maxrss. From this process,
# which has loaded and planned 10,000 tasks and stored 500,000 log lines by the time the
# memory row runs (about 170 MB), the runner's peak would read as this process's.
_LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(
    sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
)
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = os.waitstatus_to_exitcode(status)
print(proc.returncode, usage.ru_maxrss)
"""


def launch(args: list[str], work: Path) -> tuple[float, float]:
    """Run `args` (this checkout's runner on the path) through `_LAUNCHER`: its wall
    seconds and its own peak RSS in MB."""
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # this checkout's runner
    started = time.perf_counter()
    launcher = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *args],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if launcher.returncode != 0:
        raise AssertionError(f"the launcher failed: {launcher.stderr.strip()}")
    returncode, maxrss_kib = (int(word) for word in launcher.stdout.split())
    if returncode != 0:
        raise AssertionError(f"`{' '.join(args[1:])}` exited with {returncode}")
    return elapsed, maxrss_kib / 1024  # KiB on Linux


def bench_memory(work: Path, sizes: Sizes) -> dict[str, Any]:
    flow = work / "wide.yml"
    flow.write_text(wide_flow(sizes.memory_tasks, sizes.memory_concurrency))
    say(
        f"memory: `runner run` of {sizes.memory_tasks} tasks at concurrency {sizes.memory_concurrency}"
    )
    args = [
        sys.executable, "-m", "runner", "run", str(flow),
        "--db", f"sqlite:///{work / 'memory.db'}",
        "--concurrency", str(sizes.memory_concurrency),
        "--log-format", "json",
    ]  # fmt: skip
    elapsed, peak_mb = launch(args, work)
    say(f"    peak RSS {peak_mb:.1f} MB in {elapsed:.1f} s")
    return {
        "group": "memory",
        "row": f"memory {sizes.memory_tasks} c={sizes.memory_concurrency}",
        "what": "peak RSS (ru_maxrss, from a small launcher) of `python -m runner run`",
        "kind": "megabytes",
        "value": round(peak_mb, 1),
        "ratio": round(peak_mb / TARGETS["memory"], 3),  # of the budget
        "target": f"< {TARGETS['memory']:g} MB",
        "ok": peak_mb < TARGETS["memory"],
        "wall_s": round(elapsed, 1),
    }


def bench_scaling(work: Path, sizes: Sizes) -> list[dict[str, Any]]:
    """The runner's own CPU ms per task of chains and fan-outs as they grow, on the
    scripted backend (bench/scaling.py), into the in-memory store and into SQLite; and
    the peak RSS of the largest fan-out into SQLite."""
    script = str(REPO / "bench" / "scaling.py")
    counts, runs, c = sizes.scaling_tasks, sizes.scaling_runs, sizes.scaling_concurrency
    rows: list[dict[str, Any]] = []
    peak: dict[tuple[str, str, int], float] = {}
    for shape in ("chain", "fanout"):
        for store in ("memory", "sqlite"):
            say(
                f"scaling: {shape} of {', '.join(map(str, counts))} tasks into {store}, {runs} runs"
            )
            per_task: dict[int, list[float]] = {n: [] for n in counts}
            wall: dict[int, list[float]] = {n: [] for n in counts}
            for n in counts:
                for i in range(runs):
                    out = work / f"scaling-{shape}-{store}-{n}-{i}.json"
                    args = [sys.executable, script, shape, store, str(n), str(c), str(out)]
                    _, rss = launch(args, work)
                    measured = json.loads(out.read_text())
                    per_task[n].append(measured["cpu_s"] / n * 1000)
                    wall[n].append(measured["wall_s"] / n * 1000)
                    peak[shape, store, n] = max(rss, peak.get((shape, store, n), 0.0))
                    say(
                        f"    {n} tasks: {per_task[n][-1]:.3f} ms CPU/task,"
                        f" {wall[n][-1]:.3f} ms wall/task, peak RSS {rss:.1f} MB"
                    )
            ms = {n: statistics.median(v) for n, v in per_task.items()}
            small, large = counts[0], counts[-1]
            # against the cheapest smaller size, not only the smallest: the fixed costs of
            # an execution weigh most per task at 100 tasks and would hide growth
            value = ms[large] / min(ms[n] for n in counts[:-1])
            rows.append(
                {
                    "group": "scaling",
                    "row": f"scaling {shape} {store}",
                    "what": f"runner CPU ms/task at {large} tasks / the least at fewer tasks"
                    f" (fake backend, concurrency {c})",
                    "kind": "scaling",
                    "value": round(value, 3),
                    "ratio": round(value, 3),
                    "target": f"<= {TARGETS['scaling']:g}x",
                    "ok": value <= TARGETS["scaling"],
                    "ms_per_task": {str(n): round(v, 3) for n, v in ms.items()},
                    "wall_ms_per_task": {
                        str(n): round(statistics.median(v), 3) for n, v in wall.items()
                    },
                    # (CPU at the largest - at the smallest) / the tasks between: fixed
                    # costs of an execution left out
                    "marginal_ms_per_task": round(
                        (ms[large] * large - ms[small] * small) / (large - small), 3
                    ),
                    "peak_rss_mb": {str(n): round(peak[shape, store, n], 1) for n in counts},
                    "runs": runs,
                    "samples_ms_per_task": {
                        str(n): [round(x, 3) for x in v] for n, v in per_task.items()
                    },
                }
            )
    largest = counts[-1]
    peak_mb = peak["fanout", "sqlite", largest]
    rows.append(
        {
            "group": "scaling",
            "row": f"memory {largest} fake",
            "what": f"peak RSS (ru_maxrss, from a small launcher) of a {largest}-task fan-out"
            f" into SQLite on the fake backend at concurrency {c}",
            "kind": "megabytes",
            "value": round(peak_mb, 1),
            "ratio": round(peak_mb / TARGETS["scaling memory"], 3),  # of the budget
            "target": f"< {TARGETS['scaling memory']:g} MB",
            "ok": peak_mb < TARGETS["scaling memory"],
            "wall_s": None,
        }
    )
    return rows


def bench_startup(work: Path, sizes: Sizes) -> list[dict[str, Any]]:
    """How long the CLI takes to start: the time a person waits for `--help`, and for
    `validate` (which loads pydantic, YAML and Jinja). Each run is timed beside a bare
    `python -c pass`, started alike, in alternating order; the row is the median of the
    differences, so interpreter start-up and machine load cancel out."""
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # this checkout's runner
    # Start-up as installed (pip writes the bytecode): with PYTHONDONTWRITEBYTECODE set, as
    # on some CI machines, every run would compile the runner's modules again.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    hello = REPO / "flows" / "hello.yml"
    commands = {
        "startup --help": [sys.executable, "-m", "runner", "--help"],
        "startup validate": [sys.executable, "-m", "runner", "validate", str(hello)],
    }
    baseline = [sys.executable, "-c", "pass"]

    def timed(argv: list[str]) -> float:
        started = time.perf_counter()
        subprocess.run(argv, cwd=work, env=env, check=True, capture_output=True)
        return time.perf_counter() - started

    rows = []
    for name, argv in commands.items():
        say(f"{name}: {sizes.startup_runs} runs beside `python -c pass`")
        timed(argv)  # the first run compiles the bytecode: not what a person waits for
        extra, own, bare = [], [], []
        for i in range(sizes.startup_runs):
            if i % 2 == 0:
                a, b = timed(argv), timed(baseline)
            else:
                b, a = timed(baseline), timed(argv)
            own.append(a)
            bare.append(b)
            extra.append(a - b)
        value = statistics.median(extra)
        target = TARGETS[name]
        say(f"    median {value:.3f} s beyond python -c pass [{min(extra):.3f}-{max(extra):.3f}]")
        rows.append(
            {
                "group": "startup",
                "row": name,
                "what": f"wall seconds of `{' '.join(argv[2:])}` beyond `python -c pass`",
                "kind": "startup",
                "value": round(value, 3),
                "ratio": round(value / target, 3),  # of the budget
                "min": round(min(extra), 3),
                "max": round(max(extra), 3),
                "runner_s": round(statistics.median(own), 3),
                "raw_s": round(statistics.median(bare), 3),
                "target": f"<= {target:g} s",
                "ok": value <= target,
                "runs": len(extra),
            }
        )
    return rows


# -- output -------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    """One line a row: the verdict (median ratio, [range], pairs) first, then medians."""
    head = f"{'row':<22} {'verdict':<31} {'target':>9} {'ok':>3}   {'runner':>12} {'raw':>12}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["kind"] == "skipped":
            lines.append(f"{r['row']:<22} {r['reason']}")
            continue
        ok = {True: "yes", False: "NO", None: "-"}[r["ok"]]
        note = ""
        if r["kind"] in ("time_ratio", "rate_ratio"):
            verdict = (
                f"{r['ratio']:.3f}x [{r['ratio_min']:.3f}-{r['ratio_max']:.3f}] n={r['pairs']}"
            )
        if r["kind"] == "time_ratio":
            a, b = f"{r['runner_s']:.2f} s", f"{r['raw_s']:.2f} s"
            note = f"{r['overhead_ms_per_task']:+.1f} ms/task"
        elif r["kind"] == "rate_ratio":
            a = f"{r['runner_lines_per_s'] / 1000:.1f}k/s"
            b = f"{r['raw_lines_per_s'] / 1000:.1f}k/s"
            note = f"{r['lines_stored']} of {r['lines']} lines stored"
        elif r["kind"] == "startup":
            verdict = f"+{r['value']:.3f} s [{r['min']:.3f}-{r['max']:.3f}] n={r['runs']}"
            a, b = f"{r['runner_s']:.3f} s", f"{r['raw_s']:.3f} s"
            note = "raw column: python -c pass"
        elif r["kind"] == "latency_ms":
            verdict = f"{r['ms']:.1f} ms median, worst of {len(r['kinds_ms'])}"
            a, b = f"{r['ms']:.1f} ms", "-"
            note = ", ".join(f"{k} {v:.1f}" for k, v in r["kinds_ms"].items())
            if "history_ms" in r:  # bench/history.py: against the same on a tiny history
                note += "; vs 50 executions: " + ", ".join(
                    f"{k} {v:+.1f}" for k, v in r["history_ms"].items()
                )
        elif r["kind"] == "seconds_wall":  # bench/history.py's gc rows
            verdict = f"{r['value']:.1f} s wall"
            a, b = f"{r['value']:.1f} s", "-"
            note = r["summary"]
        elif r["kind"] == "scaling":
            ms = r["ms_per_task"]
            first, last = next(iter(ms)), list(ms)[-1]
            verdict = f"{r['value']:.3f}x ({first}..{last} tasks) n={r['runs']}"
            a, b = f"{ms[last]:.3f} ms", "-"
            note = "CPU ms/task: " + ", ".join(f"{n} {v:.3f}" for n, v in ms.items())
        elif r["kind"] == "seconds":
            verdict = f"{r['value']:.3f} s CPU [{r['min']:.3f}-{r['max']:.3f}]"
            a, b = f"{r['wall_s']:.3f} s", "-"
            note = "runner column: wall time"
        else:
            verdict = f"{r['value']:.1f} MB peak RSS"
            a, b = f"{r['value']:.1f} MB", "-"
            note = f"{r['wall_s']:.0f} s run" if r.get("wall_s") is not None else ""
        lines.append(
            f"{r['row']:<22} {verdict:<31} {r['target']:>9} {ok:>3}   {a:>12} {b:>12}  {note}"
        )
    return "\n".join(lines)


def machine(client: docker.APIClient) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "docker_sdk": docker.__version__,
    }
    with contextlib.suppress(Exception):
        version = client.version()
        info["engine"] = version.get("Version")
        info["log_driver"] = client.info().get("LoggingDriver")
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        load = Path("/proc/loadavg").read_text().split()[:3]
        info["loadavg_at_end"] = " ".join(load)
    return info


def parse_args(argv: list[str] | None) -> tuple[Sizes, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="Measure runner's overhead against raw Docker SDK calls."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one pair (no verdict)")
    parser.add_argument("--pairs", type=int, help="A/B pairs of the chain and fan-out rows")
    parser.add_argument("--log-pairs", type=int, help="A/B pairs of the log rows")
    parser.add_argument("--chain", type=int, help="tasks of the chain")
    parser.add_argument("--fanout", type=int, help="tasks of the fan-out")
    parser.add_argument(
        "--concurrency", type=int, action="append", help="a fan-out concurrency (repeat)"
    )
    parser.add_argument("--log-lines", type=int, help="lines the log task prints")
    parser.add_argument("--plan-tasks", type=int, help="tasks of the planned DAG")
    parser.add_argument("--plan-runs", type=int, help="times the DAG is loaded and planned")
    parser.add_argument("--memory-tasks", type=int, help="tasks of the memory flow")
    parser.add_argument(
        "--startup-runs", type=int, help="runs of each start-up command (and of python -c pass)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=(*GROUPS, *OPTIONAL_GROUPS),
        help="run only this row group (repeat); `swarm` and `history` run only when named",
    )
    parser.add_argument("--swarm-pairs", type=int, help="A/B pairs of the swarm rows")
    parser.add_argument("--swarm-chain", type=int, help="tasks of the swarm chain")
    parser.add_argument("--swarm-fanout", type=int, help="tasks of the swarm fan-out")
    parser.add_argument(
        "--swarm-host",
        default=os.environ.get("RUNNER_BENCH_SWARM"),
        help="a Swarm manager's URL for the swarm rows (default: start the test swarm)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_URL_ENV),
        help=f"server for the Postgres log row (default ${POSTGRES_URL_ENV}; unset: skipped)",
    )
    parser.add_argument(
        "--scaling-tasks", type=int, action="append", help="a size of the scaling rows (repeat)"
    )
    parser.add_argument("--scaling-runs", type=int, help="runs of each scaling size (median)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.scaling_tasks and len(set(args.scaling_tasks)) < 2:
        parser.error("--scaling-tasks: give at least two sizes, to compare their cost per task")
    sizes = QUICK if args.quick else Sizes()
    given = {
        "pairs": args.pairs,
        "log_pairs": args.log_pairs,
        "chain": args.chain,
        "fanout": args.fanout,
        "concurrencies": tuple(args.concurrency) if args.concurrency else None,
        "log_lines": args.log_lines,
        "plan_tasks": args.plan_tasks,
        "plan_runs": args.plan_runs,
        "memory_tasks": args.memory_tasks,
        "startup_runs": args.startup_runs,
        "swarm_pairs": args.swarm_pairs,
        "swarm_chain": args.swarm_chain,
        "swarm_fanout": args.swarm_fanout,
        "scaling_tasks": tuple(sorted(set(args.scaling_tasks))) if args.scaling_tasks else None,
        "scaling_runs": args.scaling_runs,
    }
    sizes = replace(sizes, **{k: v for k, v in given.items() if v is not None})
    return sizes, args


def main(argv: list[str] | None = None) -> int:
    sizes, args = parse_args(argv)
    only = set(args.only or GROUPS)
    devnull = open(os.devnull, "w")  # noqa: SIM115  (the log stream lives as long as the run)
    logs.configure("json", stream=devnull)
    # DOCKER_HOST and friends as docker.from_env reads them; a pool as large as the runner's
    client = docker.APIClient(max_pool_size=64, **kwargs_from_env())
    # fail at once without the image: nothing can be pulled
    client.inspect_image(IMAGE)  # type: ignore[no-untyped-call]  # the stubs leave it untyped
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        work = Path(tmp)
        try:
            if "chain" in only:
                rows.append(bench_chain(client, work, sizes))
            if "fanout" in only:
                rows += [bench_fanout(client, work, sizes, c) for c in sizes.concurrencies]
            if "logs" in only:
                with sqlite_store(work, "logs") as store:
                    rows.append(bench_logs(client, work, sizes, store, "sqlite"))
                rows.append(bench_logs_postgres(client, work, sizes, args.postgres_url))
            if "planning" in only:
                rows.append(bench_planning(work, sizes))
            if "memory" in only:
                rows.append(bench_memory(work, sizes))
            if "startup" in only:
                rows += bench_startup(work, sizes)
            if "server" in only:
                import serving  # bench/serving.py: it imports this module

                rows += serving.rows(args.quick, server_url=args.postgres_url)
            if "swarm" in only:
                rows += bench_swarm(work, sizes, args.swarm_host)
            if "history" in only:
                import history  # bench/history.py: it imports this module

                rows += history.rows(args.quick, server_url=args.postgres_url)
            if "scaling" in only:
                rows += bench_scaling(work, sizes)
        finally:
            for leftover in client.containers(all=True, filters={"label": BENCH_LABEL}):
                with contextlib.suppress(docker.errors.NotFound):  # another run's, gone
                    client.remove_container(leftover["Id"], v=True, force=True)
    report = {
        "bench": "runner-overhead",
        "quick": args.quick,
        "machine": machine(client),
        "sizes": asdict(sizes),
        "rows": rows,
    }
    client.close()
    if not args.json_only:
        m = report["machine"]
        print(
            f"runner overhead: {m['date']}, {m.get('cpu', '?')} x{m['cpus']}, "
            f"engine {m.get('engine', '?')} ({m.get('log_driver', '?')}), Python {m['python']}"
        )
        if args.quick:
            print("quick check: sizes and pairs too small for a verdict")
        print(table(rows))
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
