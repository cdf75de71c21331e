"""The `server` rows of bench/overhead.py: `runner serve` answering from a big history, and
running executions submitted through its API.

    python bench/serving.py                  # the rows, at the sizes of the issue
    python bench/serving.py --quick          # small sizes: a check that it all works
    python bench/overhead.py --only server   # the same rows, in the overhead table

Rows (group `server`):

    executions page   GET /api/v1/executions?limit=50 (first page, a deep page by cursor,
                      and filtered by namespace+state and by a label), median ms, from a
                      Postgres history of 100,000 executions and 10 million log lines
    logs page         GET /api/v1/executions/ID/logs?after=X&limit=1000 on an execution
                      of 10,000 lines in that history, median ms
    api fanout        200 one-task executions POSTed to the API at once, until all ended,
                      against the raw SDK fan-out of the same containers at the same
                      concurrency (the server's --workers): runner time / raw time

The history is generated with SQL (bench/history.py's `fill_history`, which the history
rows share) in a database `runner_bench_history_*` next to the one of
RUNNER_TEST_POSTGRES_URL (kept between runs: generating it takes minutes; `--fresh`
makes it again). The server is the real `python -m runner serve`, on a free port; times
are measured by this process over HTTP (keep-alive), so they include the HTTP stack, the
token check, the queries and the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for entry in (str(REPO), str(REPO / "bench")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import docker  # noqa: E402
import httpx2  # noqa: E402
import overhead  # noqa: E402
from docker.utils import kwargs_from_env  # noqa: E402
from history import fill_history, history_url  # noqa: E402

from runner import api  # noqa: E402
from runner.store.testing import POSTGRES_URL_ENV  # noqa: E402

TARGET_MS = 50.0
FANOUT_TARGET = 1.10


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- a server ------------------------------------------------------------------------------------


@contextmanager
def serve(url: str, flows: Path, workers: int, work: Path) -> Iterator[tuple[str, str]]:
    """A real `runner serve` on `url`: its base URL and a token."""
    store = api.open_store(url, recover=False)
    try:
        token, _ = api.create_token(store, f"bench-{time.monotonic_ns()}")
    finally:
        store.close()
    env = {**os.environ, "RUNNER_DATABASE_URL": url, "RUNNER_LOG_FORMAT": "json"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner",
            "serve",
            "--port",
            "0",
            "--flows",
            str(flows),
            "--workers",
            str(workers),
        ],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "listening on" not in line:
            raise AssertionError(f"runner serve did not start: {line!r}")
        base = line.split("listening on ", 1)[1].split()[0]
        threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True).start()
        yield base, token
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def median_ms(client: httpx2.Client, path: str, params: dict[str, Any], runs: int) -> float:
    times = []
    for _ in range(runs + 2):
        started = time.perf_counter()
        answer = client.get(path, params=params)
        elapsed = time.perf_counter() - started
        if answer.status_code != 200:
            raise AssertionError(f"{path}: {answer.status_code} {answer.text[:200]}")
        times.append(elapsed * 1000)
    return statistics.median(times[2:])  # the first two warm the caches and the connection


def bench_history(
    server_url: str, work: Path, executions: int, lines: int, runs: int, fresh: bool
) -> list[dict[str, Any]]:
    url = history_url(server_url, executions, lines)
    noisy = fill_history(url, executions, lines, fresh=fresh)
    flows = work / "flows-empty"
    flows.mkdir(exist_ok=True)
    rows = []
    with serve(url, flows, 4, work) as (base, token):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx2.Client(base_url=f"{base}/api/v1", headers=headers, timeout=60) as client:
            page: dict[str, Any] = {"next": None}
            deep_page = min(100, executions // 50 - 1)
            for _ in range(deep_page):  # the cursor of a deep page (101 in the full run)
                params = {"limit": 50, **({"after": page["next"]} if page["next"] else {})}
                page = client.get("/executions", params=params).json()
            deep = page["next"]
            pages = {
                "first": {"limit": 50},
                f"page {deep_page + 1} (cursor)": {"limit": 50, "after": deep},
                "namespace+state": {"limit": 50, "namespace": "ns_3", "state": "FAILED"},
                "label": {"limit": 50, "label": "owner:team_3"},
            }
            found = {
                name: median_ms(client, "/executions", params, runs)
                for name, params in pages.items()
            }
            say("  executions page: " + ", ".join(f"{k} {v:.1f} ms" for k, v in found.items()))
            worst = max(found.values())
            rows.append(
                {
                    "group": "server",
                    "row": "executions page",
                    "what": f"GET /executions?limit=50 from {executions} executions, median ms (worst of {len(found)} kinds)",
                    "kind": "latency_ms",
                    "ms": round(worst, 1),
                    "kinds_ms": {k: round(v, 1) for k, v in found.items()},
                    "target": f"< {TARGET_MS} ms",
                    "ok": worst < TARGET_MS,
                }
            )
            first = client.get(f"/executions/{noisy}/logs", params={"limit": 1}).json()
            start_id = first["lines"][0]["id"]
            logs = {
                "first": {"limit": 1000},
                "middle": {"limit": 1000, "after": start_id + 5000},
                "task filter": {"limit": 1000, "after": start_id + 2000, "task": "task"},
            }
            found = {
                name: median_ms(client, f"/executions/{noisy}/logs", params, runs)
                for name, params in logs.items()
            }
            say("  logs page: " + ", ".join(f"{k} {v:.1f} ms" for k, v in found.items()))
            worst = max(found.values())
            rows.append(
                {
                    "group": "server",
                    "row": "logs page",
                    "what": f"GET /executions/ID/logs?limit=1000 with {lines} lines stored, median ms",
                    "kind": "latency_ms",
                    "ms": round(worst, 1),
                    "kinds_ms": {k: round(v, 1) for k, v in found.items()},
                    "target": f"< {TARGET_MS} ms",
                    "ok": worst < TARGET_MS,
                }
            )
    return rows


# -- fan-out through the API -------------------------------------------------------------------


def api_fanout(base: str, token: str, n: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    with httpx2.Client(base_url=f"{base}/api/v1", headers=headers, timeout=120) as client:
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(
                pool.map(lambda _: client.post("/executions/bench/one", json={}), range(n))
            )
        ids = [a.json()["id"] for a in answers if a.status_code == 201]
        if len(ids) != n:
            bad = next(a for a in answers if a.status_code != 201)
            raise AssertionError(f"POST answered {bad.status_code}: {bad.text[:200]}")
        waiting = set(ids)
        # Asked twice a second, for this round's ended executions only: the bench must
        # not load the server it measures.
        params = {
            "flow_id": "one",
            "limit": 1000,
            "state": ["SUCCESS", "FAILED", "KILLED"],
            "created_after": since,
        }
        while waiting:
            page = client.get("/executions", params=params).json()
            ended = {e["id"]: e["state"] for e in page["executions"]}
            failed = [i for i in waiting if ended.get(i) in ("FAILED", "KILLED")]
            if failed:
                raise AssertionError(f"execution {failed[0]} failed")
            waiting -= set(ended)
            if waiting:
                time.sleep(0.5)


def bench_api_fanout(
    server_url: str | None, work: Path, n: int, concurrency: int, pairs: int
) -> dict[str, Any]:
    client = docker.APIClient(**kwargs_from_env())
    flows = work / "flows-fanout"
    flows.mkdir(exist_ok=True)
    (flows / "one.yml").write_text(
        f"id: one\nnamespace: bench\ntasks: [{{id: t, image: {overhead.IMAGE}, command: '{overhead.TRIVIAL_COMMAND}'}}]\n",
        encoding="utf-8",
    )
    if server_url:
        from runner.store.testing import temporary_postgres_database

        context: Any = temporary_postgres_database(server_url)
    else:
        context = _sqlite(work)
    with context as url, serve(url, flows, concurrency, work) as (base, token):
        measured = overhead.Pairs()
        measured.measure(
            pairs,
            lambda: api_fanout(base, token, n),
            lambda: overhead.raw_fanout(client, n, concurrency),
        )
    row = overhead.time_row(
        "server",
        "api fanout",
        measured,
        n,
        FANOUT_TARGET,
        f"{n} one-task executions POSTed at once to runner serve --workers {concurrency},"
        f" until all ended / raw SDK fan-out at concurrency {concurrency}",
    )
    row["database"] = "postgres" if server_url else "sqlite"
    return row


@contextmanager
def _sqlite(work: Path) -> Iterator[str]:
    yield f"sqlite:///{work / 'fanout.db'}"


def rows(
    quick: bool,
    *,
    server_url: str | None,
    fresh: bool = False,
    only: tuple[str, ...] = ("history", "fanout"),
) -> list[dict[str, Any]]:
    """The server rows; the history rows need a Postgres server (`server_url`)."""
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runner-bench-server-") as folder:
        work = Path(folder)
        if "history" not in only:
            pass
        elif server_url:
            executions, lines = (2_000, 100_000) if quick else (100_000, 10_000_000)
            say(f"server: history of {executions} executions, {lines} lines")
            out += bench_history(server_url, work, executions, lines, 5 if quick else 30, fresh)
        else:
            out.append(overhead.skipped_row("server", "history", f"{POSTGRES_URL_ENV} is not set"))
        if "fanout" in only:
            n, pairs = (20, 1) if quick else (200, 3)
            say(f"server: api fanout of {n} executions")
            out.append(bench_api_fanout(server_url, work, n, 8, pairs))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="generate the history again")
    parser.add_argument("--only", choices=("history", "fanout"), action="append")
    args = parser.parse_args(argv)
    server_url = os.environ.get(POSTGRES_URL_ENV, "").strip() or None
    found = rows(
        args.quick,
        server_url=server_url,
        fresh=args.fresh,
        only=tuple(args.only or ("history", "fanout")),
    )
    print(overhead.table(found), file=sys.stderr)
    print(json.dumps(found))
    return 0 if all(r.get("ok") is not False for r in found) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
