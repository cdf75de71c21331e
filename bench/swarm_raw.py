"""The raw Swarm baseline the Swarm backend is measured against (bench/overhead.py's swarm
rows, to come): per task, what a fair minimal runner must do with Swarm's API alone.

    create_job   a `replicated-job` service: one replica, restart condition none, labels,
                 optionally placement constraints and a memory limit
    wait         poll the service's task (Swarm has no task events) until a final state
    read logs    service_logs(stdout, stderr) once the task ended
    remove       remove_service

    python bench/swarm_raw.py                      # starts the test swarm (tests/integration)
    python bench/swarm_raw.py --host tcp://H:2375  # an existing swarm manager
    python bench/swarm_raw.py --chain 20 --fanout 60 --concurrency 8 --poll 0.05

It prints one line per task (observed latencies since create: assigned, running, ended; then
the logs and remove calls), then a summary per group. Functions, for the benchmark:
`run_job`, `run_chain`, `run_fanout`, `summarize`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/swarm_raw.py` from a checkout
    sys.path.insert(0, str(REPO))

import docker  # noqa: E402  (after the sys.path line above)
from docker.types import (  # noqa: E402
    ContainerSpec,
    Placement,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)

IMAGE = "debian:bookworm-slim"
TRIVIAL_COMMAND = "echo ok"
BENCH_LABEL = "io.runner.bench"  # on every service, to sweep them up after an error
POLL_S = 0.05
"""How often the task is polled. Swarm publishes no event for task state changes, so a
runner polls; at 0.05 s a task's end is seen at most 50 ms late, at the cost of about 20
small requests a second per followed task on the manager."""
FINAL_STATES = frozenset({"complete", "failed", "rejected", "shutdown", "orphaned", "remove"})
"""Task states after which nothing more happens (swarmkit's api.TaskState >= COMPLETED)."""
JOB_TIMEOUT_S = 300.0
Mode = Literal["replicated", "replicated-job"]
MODE: Mode = "replicated"
"""`replicated` with restart condition none runs the task once, like `replicated-job`, but
its task and container are deleted when the service is removed; a `replicated-job`
service leaves both behind for good on Docker 20.10 (moby#42789, #44312; see
docs/scale-out.md). Both can be measured (--mode)."""


@dataclass(frozen=True)
class JobTiming:
    """One job's seconds since its create_service call, as observed by polling."""

    service: str
    node: str
    state: str
    exit_code: int | None
    error: str
    lines: int
    created_s: float  # the create_service call returned
    assigned_s: float | None  # first seen assigned to a node (or later)
    running_s: float | None  # first seen running (None: too short to be seen)
    ended_s: float  # first seen in a final state
    logs_s: float  # logs read
    removed_s: float  # remove_service returned
    states: tuple[str, ...] = field(default=())

    @property
    def total_s(self) -> float:
        return self.removed_s

    def line(self) -> str:
        def at(value: float | None) -> str:
            return "    -" if value is None else f"{value:5.2f}"

        return (
            f"{self.service[:12]} on {self.node[:8]:8} {self.state:9} exit {self.exit_code!s:4} "
            f"created {at(self.created_s)} assigned {at(self.assigned_s)} "
            f"running {at(self.running_s)} ended {at(self.ended_s)} logs {at(self.logs_s)} "
            f"removed {at(self.removed_s)}  ({' > '.join(self.states)})"
        )


def job_template(
    image: str,
    command: str,
    *,
    constraints: Sequence[str] = (),
    memory_bytes: int | None = None,
) -> TaskTemplate:
    """The task of one attempt: `/bin/sh -c COMMAND`, never restarted, placed and limited."""
    return TaskTemplate(
        ContainerSpec(image, command=["/bin/sh", "-c", command]),
        restart_policy=RestartPolicy(condition="none"),
        placement=Placement(constraints=list(constraints)) if constraints else None,
        resources=Resources(mem_limit=memory_bytes) if memory_bytes else None,
    )


def run_job(
    api: docker.APIClient,
    image: str = IMAGE,
    command: str = TRIVIAL_COMMAND,
    *,
    constraints: Sequence[str] = (),
    memory_bytes: int | None = None,
    poll_s: float = POLL_S,
    timeout_s: float = JOB_TIMEOUT_S,
    mode: Mode = MODE,
) -> JobTiming:
    """Create a one-replica service in `mode`, follow its task to a final state, read its
    logs, remove it; return the observed timings."""
    started = time.monotonic()
    service = api.create_service(  # type: ignore[no-untyped-call]  # untyped in the stubs
        job_template(image, command, constraints=constraints, memory_bytes=memory_bytes),
        name=f"bench-{uuid.uuid4().hex[:12]}",
        mode=ServiceMode(mode, replicas=1),
        labels={BENCH_LABEL: "swarm-raw"},
    )["ID"]
    try:
        created = time.monotonic() - started
        assigned = running = None
        states: list[str] = []
        while True:
            found = api.tasks(filters={"service": service})  # type: ignore[no-untyped-call]  # untyped in the stubs
            task = found[0] if found else None
            state = task["Status"]["State"] if task else "none"
            now = time.monotonic() - started
            if not states or states[-1] != state:
                states.append(state)
            if task and task.get("NodeID") and assigned is None:
                assigned = now
            if state == "running" and running is None:
                running = now
            if state in FINAL_STATES:
                ended = now
                break
            if now > timeout_s:
                raise TimeoutError(f"job {service} still {state} after {timeout_s:.0f}s")
            time.sleep(poll_s)
        assert task is not None
        logs = b"".join(api.service_logs(service, stdout=True, stderr=True, follow=False))
        logs_read = time.monotonic() - started
    finally:
        api.remove_service(service)  # type: ignore[no-untyped-call]  # untyped in the stubs
    status = task["Status"]
    return JobTiming(
        service=service,
        node=str(task.get("NodeID", "")),
        state=state,
        exit_code=status.get("ContainerStatus", {}).get("ExitCode"),
        error=str(status.get("Err", "")),
        lines=logs.count(b"\n"),
        created_s=created,
        assigned_s=assigned,
        running_s=running,
        ended_s=ended,
        logs_s=logs_read,
        removed_s=time.monotonic() - started,
        states=tuple(states),
    )


def run_chain(api: docker.APIClient, n: int = 20, **job: Any) -> tuple[float, list[JobTiming]]:
    """`n` jobs one after another; return the wall time and each job's timings."""
    started = time.monotonic()
    timings = [run_job(api, **job) for _ in range(n)]
    return time.monotonic() - started, timings


def run_fanout(
    api: docker.APIClient, n: int = 60, concurrency: int = 8, **job: Any
) -> tuple[float, list[JobTiming]]:
    """`n` jobs, at most `concurrency` at a time (threads sharing one client: its
    connection pool is sized for that); return the wall time and each job's timings."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        timings = list(pool.map(lambda _: run_job(api, **job), range(n)))
    return time.monotonic() - started, timings


def summarize(name: str, wall_s: float, timings: Sequence[JobTiming]) -> str:
    """One line: wall time, per-task time, medians of each phase, states and nodes."""

    def median(pick: Callable[[JobTiming], float | None]) -> str:
        values = [v for t in timings if (v := pick(t)) is not None]
        return f"{statistics.median(values):.2f}" if values else "-"

    nodes: dict[str, int] = {}
    for timing in timings:
        nodes[timing.node[:8]] = nodes.get(timing.node[:8], 0) + 1
    bad = [t for t in timings if t.state != "complete" or t.lines != 1]
    return (
        f"{name}: {len(timings)} jobs in {wall_s:.2f}s = {wall_s / len(timings):.3f}s a job; "
        f"medians since create: created {median(lambda t: t.created_s)}, "
        f"running {median(lambda t: t.running_s)}, ended {median(lambda t: t.ended_s)}, "
        f"logs {median(lambda t: t.logs_s)}, removed {median(lambda t: t.removed_s)}; "
        f"nodes {nodes}; not complete with 1 line: {len(bad)}"
    )


def sweep(api: docker.APIClient) -> int:
    """Remove every service this module created (after an interrupted run)."""
    services = api.services(filters={"label": f"{BENCH_LABEL}=swarm-raw"})  # type: ignore[no-untyped-call]  # untyped in the stubs
    for service in services:
        api.remove_service(service["ID"])  # type: ignore[no-untyped-call]  # untyped in the stubs
    return len(services)


@contextmanager
def manager_api(host: str | None) -> Iterator[docker.APIClient]:
    """A client of the manager at `host`, or of a test swarm started for the run."""
    if host:
        api = docker.APIClient(base_url=host, version="auto", timeout=120, max_pool_size=32)
        try:
            yield api
        finally:
            api.close()
        return
    from tests.integration.swarm import swarm_cluster

    outer = docker.from_env()
    with swarm_cluster(outer, images=(IMAGE,)) as cluster:
        print(cluster.summary(), file=sys.stderr)
        api = docker.APIClient(
            base_url=cluster.manager_url, version="auto", timeout=120, max_pool_size=32
        )
        try:
            yield api
        finally:
            api.close()
    outer.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--host",
        default=os.environ.get("RUNNER_BENCH_SWARM"),
        help="a swarm manager's URL (default: start the test swarm)",
    )
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--fanout", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--poll", type=float, default=POLL_S)
    parser.add_argument("--mode", choices=("replicated", "replicated-job"), default=MODE)
    parser.add_argument("--quiet", action="store_true", help="only the summaries")
    args = parser.parse_args(argv)
    with manager_api(args.host) as api:
        try:
            job: dict[str, Any] = {"poll_s": args.poll, "mode": args.mode}
            run_job(api, **job)  # the first job on a node pays for things later ones do not
            results = []
            if args.chain:
                results.append(("chain", *run_chain(api, args.chain, **job)))
            if args.fanout:
                fanout = run_fanout(api, args.fanout, args.concurrency, **job)
                results.append((f"fanout c={args.concurrency}", *fanout))
        finally:
            sweep(api)
        for name, wall, timings in results:
            if not args.quiet:
                print(f"-- {name}")
                for timing in timings:
                    print(timing.line())
            print(summarize(name, wall, timings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
