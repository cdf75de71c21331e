"""The `history` rows of bench/overhead.py: the CLI and the HTTP API answering from a long
history, and `runner gc` of many ended executions; on SQLite and on Postgres.

    python bench/history.py                   # the rows, at the sizes of the issue
    python bench/history.py --quick           # small sizes: a check that it all works
    python bench/history.py --only sqlite     # one database
    python bench/overhead.py --only history   # the same rows, in the overhead table

Rows (group `history`), each once per database, from a history of 100,000 executions and
10 million log lines (1,000 executions of 10,000 lines each):

    store reads      what those commands ask of runner.api (opening the store, a page of
                     50 executions, an execution by id and by prefix, the last 1,000
                     lines), in this process: median ms, and beyond the same on a
                     history of 50 executions (what the history's size costs)
    cli executions   `runner executions --limit 50`: wall ms beyond `runner --help` (both
                     started alike, in turns: the median of the differences); beside it,
                     beyond the same command on a history of 50 executions
    cli show         `runner show ID`, and `runner show` of an 8-character prefix
    cli logs tail    `runner logs ID --tail 1000` of an execution of 10,000 lines
    api executions   GET /api/v1/executions?limit=50 (the first page, and page 1,000 by
                     cursor), median ms over HTTP from the real `runner serve`
    api show         GET /api/v1/executions/ID
    api logs tail    GET /api/v1/executions/ID/logs?tail=1000
    gc               `runner gc` (wall seconds, start-up included) with 10,000 ended
                     executions of that history each leaving its workspace volume (as a
                     failed execution keeps it), created for the row; all must go

The history is made by SQL in the database itself (`fill_history`, minutes), and kept
between runs (`--fresh` makes it again): on Postgres in a database `runner_bench_history_*`
next to the one of RUNNER_TEST_POSTGRES_URL (without it the Postgres rows say skipped),
on SQLite in a file under the temporary folder (runner-bench/). bench/serving.py reads the
same Postgres history.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for entry in (str(REPO), str(REPO / "bench")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import docker  # noqa: E402
import overhead  # noqa: E402
from docker.utils import kwargs_from_env  # noqa: E402
from sqlalchemy import create_engine, make_url, text  # noqa: E402

from runner import api  # noqa: E402
from runner.execution import LABEL_EXECUTION, LABEL_MANAGED  # noqa: E402
from runner.store.testing import POSTGRES_URL_ENV  # noqa: E402

HISTORY_DB = "runner_bench_history"
LINES_PER_EXECUTION = 10_000  # the executions with lines; the others have none
TARGET_MS = 100.0
GC_TARGET_S = 60.0
BENCH_VOLUME_LABEL = "io.runner.bench.history"  # to sweep up the gc row's volumes on errors
DATABASES = ("sqlite", "postgres")
SMALL = 50  # executions of the history the CLI rows compare with: one page


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the history ------------------------------------------------------------------------------


def history_url(server_url: str, executions: int, lines: int) -> str:
    """A Postgres database for this size of history, next to `server_url`'s (made if new)."""
    base = make_url(server_url)
    name = f"{HISTORY_DB}_{executions}_{lines}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if not exists:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def sqlite_history_url(executions: int, lines: int) -> str:
    folder = Path(tempfile.gettempdir()) / "runner-bench"
    folder.mkdir(exist_ok=True)
    return f"sqlite:///{folder / f'{HISTORY_DB}_{executions}_{lines}.db'}"


# Executions `g` = 1..n: ids md5(g), one second apart (g = 1 the newest), 50 flows in 5
# namespaces, one in ten FAILED, two labels; one task run each; LINES_PER_EXECUTION lines
# for each of the first executions, interleaved (line 1 of each, then line 2 of each, ...:
# as if they all ran at once), so that each line of an execution is in another page of
# the table: the worst case for reading one execution's lines.
_TABLES = ("executions", "task_runs", "log_lines")
_POSTGRES = (
    """
INSERT INTO executions (id, flow_id, namespace, revision, source, inputs, labels, state,
                        error, created_at, started_at, ended_at)
SELECT md5(g::text), 'flow_' || (g % 50), 'ns_' || (g % 5), 'r1', 'id: x', '{}'::jsonb,
       jsonb_build_object('batch', (g % 10)::text, 'owner', 'team_' || (g % 7)),
       CASE WHEN g % 10 = 0 THEN 'FAILED' ELSE 'SUCCESS' END, NULL,
       now() - make_interval(secs => g), now() - make_interval(secs => g),
       now() - make_interval(secs => g) + interval '1 second'
FROM generate_series(1, :n) AS g
""",
    """
INSERT INTO task_runs (execution_id, task_id, attempt, state, exit_code, image, created_at,
                       started_at, ended_at)
SELECT id, 'task', 1, state, CASE WHEN state = 'FAILED' THEN 1 ELSE 0 END, 'img',
       created_at, started_at, ended_at
FROM executions
""",
    """
INSERT INTO log_lines (execution_id, task_run_id, task_id, time, stream, line)
SELECT e.execution_id, e.id, 'task', now(), 'stdout',
       'line ' || g || ' ' || repeat('x', 80)
FROM (SELECT id, execution_id FROM task_runs ORDER BY id LIMIT :noisy) AS e,
     generate_series(1, :per) AS g
""",
)
# The same in SQLite: timestamps as UTCDateTime writes them ("YYYY-MM-DD HH:MM:SS.ffffff"),
# md5 from Python (registered on the connection), CROSS JOIN to keep the loop order
# (the lines' numbers outside, as Postgres's plan does).
_SQLITE_TIME = "strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || ({}) || ' seconds') || '000'"
_SQLITE = (
    f"""
WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < :n)
INSERT INTO executions (id, flow_id, namespace, revision, source, inputs, labels, state,
                        error, created_at, started_at, ended_at)
SELECT md5(g), 'flow_' || (g % 50), 'ns_' || (g % 5), 'r1', 'id: x', '{{}}',
       json_object('batch', CAST(g % 10 AS TEXT), 'owner', 'team_' || (g % 7)),
       CASE WHEN g % 10 = 0 THEN 'FAILED' ELSE 'SUCCESS' END, NULL,
       {_SQLITE_TIME.format("g")}, {_SQLITE_TIME.format("g")}, {_SQLITE_TIME.format("g - 1")}
FROM s
""",
    _POSTGRES[1],
    """
WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < :per)
INSERT INTO log_lines (execution_id, task_run_id, task_id, time, stream, line)
SELECT e.execution_id, e.id, 'task', strftime('%Y-%m-%d %H:%M:%f000', 'now'), 'stdout',
       'line ' || g || ' ' || printf('%.80c', 'x')
FROM s CROSS JOIN (SELECT id, execution_id FROM task_runs ORDER BY id LIMIT :noisy) AS e
""",
)


def _md5(value: object) -> str:
    return hashlib.md5(str(value).encode()).hexdigest()


def fill_history(url: str, executions: int, lines: int, *, fresh: bool) -> str:
    """Make (or find) the history at `url`: the id of the newest execution with lines."""
    store = api.open_store(url, recover=False)  # creates the tables at the head revision
    store.close()
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            count = conn.execute(text("SELECT count(*) FROM executions")).scalar_one()
        if fresh or count != executions:
            say(f"  generating {executions} executions and {lines} log lines (minutes)...")
            started = time.monotonic()
            params = {"n": executions, "noisy": max(1, lines // LINES_PER_EXECUTION)}
            params["per"] = min(LINES_PER_EXECUTION, lines)
            if engine.dialect.name == "sqlite":
                assert engine.url.database is not None
                engine.dispose()  # its connection would keep the journal mode from changing
                _fill_sqlite(engine.url.database, params, started)
            else:
                with engine.begin() as conn:
                    conn.exec_driver_sql("TRUNCATE log_lines, task_runs, executions CASCADE")
                    for table, statement in zip(_TABLES, _POSTGRES, strict=True):
                        conn.execute(text(statement), params)
                        say(f"    {table} after {time.monotonic() - started:.0f} s")
                    conn.exec_driver_sql("ANALYZE")
            say(f"  generated in {time.monotonic() - started:.0f} s")
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT execution_id FROM task_runs ORDER BY id LIMIT 1")
            ).scalar_one()
    finally:
        engine.dispose()
    return str(found)


def _fill_sqlite(path: str, params: dict[str, int], started: float) -> None:
    """The SQLite history, written without a journal and with a large page cache (in WAL
    mode, 10 M interleaved lines spilled the (execution_id, id) index to the log over and
    over: 2 MB/s); the database is back in WAL mode after."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.create_function("md5", 1, _md5, deterministic=True)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -1000000"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("BEGIN")
        for table in ("log_lines", "artifacts", "trigger_fires", "task_runs", "executions"):
            conn.execute(f"DELETE FROM {table}")
        for table, statement in zip(_TABLES, _SQLITE, strict=True):
            conn.execute(statement, params)
            say(f"    {table} after {time.monotonic() - started:.0f} s")
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


# -- in this process ----------------------------------------------------------------------------


def store_row(database: str, url: str, small_url: str, noisy: str, runs: int) -> dict[str, Any]:
    """What the CLI commands ask of runner.api, timed in this process (median ms) on the
    history and on the history of one page: the history's cost without start-up, and far
    less disturbed by other work on the machine than wall times of processes are."""
    reads = {
        "open": lambda store: None,  # opening (the schema check and orphan recovery) alone
        "executions page": lambda store: api.list_executions(store, limit=50),
        "show id": lambda store: api.get_execution(store, noisy),
        "show prefix": lambda store: api.get_execution(store, noisy[:8]),
        "logs tail": lambda store: api.get_logs(store, noisy, tail=1000),
    }
    found: dict[str, float] = {}
    flat: dict[str, float] = {}
    for name, read in reads.items():
        times: dict[str, list[float]] = {url: [], small_url: []}
        for i in range(runs + 1):
            for where in (url, small_url) if i % 2 else (small_url, url):
                started = time.perf_counter()
                store = api.open_store(where)
                try:
                    read(store)
                finally:
                    store.close()
                times[where].append((time.perf_counter() - started) * 1000)
        big, small = statistics.median(times[url][1:]), statistics.median(times[small_url][1:])
        found[name], flat[name] = big, big - small
    row = latency_row(
        database,
        "store reads",
        found,
        f"ms of api.open_store + each read in this process, median of {runs}",
    )
    row["history_ms"] = {k: round(v, 1) for k, v in flat.items()}
    row["ok_history"] = max(flat.values()) < TARGET_MS
    say(f"    beyond the same on a history of {SMALL}: {row['history_ms']}")
    return row


# -- the CLI ----------------------------------------------------------------------------------


def cli_rows(
    database: str, url: str, small_url: str, work: Path, noisy: str, runs: int
) -> list[dict[str, Any]]:
    """`runner executions/show/logs --tail` against `runner --help`, started alike; and
    against the same command on `small_url`, a history of one page (SMALL executions,
    the same one with lines): what the size of the history costs, start-up (imports,
    opening the database) and printing left out."""
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    # Start-up as installed: runner's modules read from bytecode, not compiled every run
    # (about 0.3 s of the runner's own modules on this machine, without it).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    runner = [sys.executable, "-m", "runner"]
    commands = {
        "cli executions": {"page of 50": ["executions", "--limit", "50"]},
        "cli show": {"id": ["show", noisy], "prefix": ["show", noisy[:8]]},
        "cli logs tail": {"tail 1000": ["logs", noisy, "--tail", "1000"]},
    }

    def timed(args: list[str], database_url: str) -> float:
        started = time.perf_counter()
        subprocess.run(
            [*runner, *args],
            cwd=work,
            env={**env, "RUNNER_DATABASE_URL": database_url},
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started

    rows = []
    for name, kinds in commands.items():
        found, flat = {}, {}
        for kind, args in kinds.items():
            timed(args, url)  # the first run writes bytecode and warms caches
            timed(args, small_url)
            extra, grown = [], []
            for i in range(runs):
                # the three in turn, each first in one run of three
                order = [("big", args, url), ("help", ["--help"], url), ("small", args, small_url)]
                order = order[i % 3 :] + order[: i % 3]
                took = {label: timed(a, u) for label, a, u in order}
                extra.append((took["big"] - took["help"]) * 1000)
                grown.append((took["big"] - took["small"]) * 1000)
            found[kind] = statistics.median(extra)
            flat[kind] = statistics.median(grown)
        shown = " | ".join(" ".join(a) for a in kinds.values())
        row = latency_row(
            database,
            name,
            found,
            f"wall ms of `runner {shown}` beyond `runner --help`, median of {runs}",
        )
        row["history_ms"] = {k: round(v, 1) for k, v in flat.items()}
        # `ok` holds start-up against the target too (imports and opening the database,
        # which no index changes); this, only what the history's size costs
        row["ok_history"] = max(flat.values()) < TARGET_MS
        say(f"    beyond the same on a history of {SMALL}: {row['history_ms']}")
        rows.append(row)
    return rows


def latency_row(database: str, name: str, found: dict[str, float], what: str) -> dict[str, Any]:
    worst = max(found.values())
    say(f"  {name} {database}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in found.items()))
    return {
        "group": "history",
        "row": f"{name} {database}",
        "database": database,
        "what": what,
        "kind": "latency_ms",
        "ms": round(worst, 1),
        "kinds_ms": {k: round(v, 1) for k, v in found.items()},
        "target": f"< {TARGET_MS:g} ms",
        "ok": worst < TARGET_MS,
    }


# -- the HTTP API -----------------------------------------------------------------------------


def api_rows(
    database: str, url: str, work: Path, noisy: str, executions: int, runs: int
) -> list[dict[str, Any]]:
    """The API's equivalents, from the real `runner serve` (bench/serving.py's)."""
    import httpx2
    import serving

    flows = work / "flows-empty"
    flows.mkdir(exist_ok=True)
    rows = []
    with serving.serve(url, flows, 4, work) as (base, token):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx2.Client(base_url=f"{base}/api/v1", headers=headers, timeout=60) as client:
            page: dict[str, Any] = {"next": None}
            deep_page = min(1000, executions // 50 - 1)
            for _ in range(deep_page):  # the cursor of page 1,000 (in the full run)
                params = {"limit": 50, **({"after": page["next"]} if page["next"] else {})}
                page = client.get("/executions", params=params).json()
            pages = {
                "first": {"limit": 50},
                f"page {deep_page + 1}": {"limit": 50, "after": page["next"]},
            }
            found = {k: serving.median_ms(client, "/executions", p, runs) for k, p in pages.items()}
            rows.append(
                latency_row(
                    database,
                    "api executions",
                    found,
                    f"GET /executions?limit=50 from {executions} executions, median ms",
                )
            )
            found = {
                "id": serving.median_ms(client, f"/executions/{noisy}", {}, runs),
                "prefix": serving.median_ms(client, f"/executions/{noisy[:8]}", {}, runs),
            }
            rows.append(latency_row(database, "api show", found, "GET /executions/ID, median ms"))
            found = {
                "tail 1000": serving.median_ms(
                    client, f"/executions/{noisy}/logs", {"tail": 1000}, runs
                )
            }
            rows.append(
                latency_row(
                    database,
                    "api logs tail",
                    found,
                    f"GET /executions/ID/logs?tail=1000 of {LINES_PER_EXECUTION} lines, median ms",
                )
            )
    return rows


# -- runner gc --------------------------------------------------------------------------------


def gc_row(database: str, url: str, work: Path, ended: int) -> dict[str, Any]:
    """`runner gc` with `ended` ended executions each leaving a workspace volume."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ids = list(
                conn.execute(
                    text(
                        "SELECT id FROM executions WHERE state IN ('SUCCESS', 'FAILED')"
                        " ORDER BY created_at DESC, id DESC LIMIT :n"
                    ),
                    {"n": ended},
                ).scalars()
            )
    finally:
        engine.dispose()
    client = docker.APIClient(max_pool_size=16, **kwargs_from_env())
    try:
        with _sweeping(client):
            say(f"  gc {database}: creating {len(ids)} workspace volumes...")
            labels = {LABEL_MANAGED: "true", BENCH_VOLUME_LABEL: "true"}
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda i: client.create_volume(
                            name=f"runner-bench-gc-{i}", labels={**labels, LABEL_EXECUTION: i}
                        ),
                        ids,
                    )
                )
            env = {**os.environ, "RUNNER_DATABASE_URL": url, "PYTHONPATH": str(REPO)}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "runner", "gc"],
                cwd=work,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            elapsed = time.perf_counter() - started
            left = client.volumes(filters={"label": [BENCH_VOLUME_LABEL]}).get("Volumes") or []
    finally:
        client.close()
    summary = out.stdout.strip().splitlines()[-1]
    say(f"  gc {database}: {elapsed:.1f} s; {summary}")
    if left:
        raise AssertionError(f"runner gc left {len(left)} of the {len(ids)} volumes: {summary}")
    return {
        "group": "history",
        "row": f"gc {database}",
        "database": database,
        "what": f"wall seconds of `runner gc` removing the volumes of {len(ids)} ended executions",
        "kind": "seconds_wall",
        "value": round(elapsed, 1),
        "removed": len(ids),
        "summary": summary,
        "target": f"< {GC_TARGET_S:g} s",
        "ok": elapsed < GC_TARGET_S,
    }


@contextmanager
def _sweeping(client: docker.APIClient) -> Iterator[None]:
    try:
        yield
    finally:
        leftovers = client.volumes(filters={"label": [BENCH_VOLUME_LABEL]}).get("Volumes") or []
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda v: client.remove_volume(v["Name"], force=True), leftovers))


# -- the rows ---------------------------------------------------------------------------------


def rows(
    quick: bool,
    *,
    server_url: str | None,
    fresh: bool = False,
    databases: tuple[str, ...] = DATABASES,
) -> list[dict[str, Any]]:
    """The history rows of each database (Postgres only with `server_url`)."""
    executions, lines = (2_000, 100_000) if quick else (100_000, 10_000_000)
    runs, ended = (2, 200) if quick else (7, 10_000)
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runner-bench-history-") as folder:
        work = Path(folder)
        for database in databases:
            if database == "postgres" and not server_url:
                out.append(
                    overhead.skipped_row(
                        "history", "history postgres", f"{POSTGRES_URL_ENV} is not set"
                    )
                )
                continue
            if database == "postgres":
                assert server_url is not None
                url = history_url(server_url, executions, lines)
            else:
                url = sqlite_history_url(executions, lines)
            say(f"history {database}: {executions} executions, {lines} lines")
            noisy = fill_history(url, executions, lines, fresh=fresh)
            if database == "postgres":
                assert server_url is not None
                small = history_url(server_url, SMALL, LINES_PER_EXECUTION)
            else:
                small = sqlite_history_url(SMALL, LINES_PER_EXECUTION)
            if fill_history(small, SMALL, LINES_PER_EXECUTION, fresh=fresh) != noisy:
                raise AssertionError("the small history's execution with lines is another one")
            out.append(store_row(database, url, small, noisy, runs * 3))
            out += cli_rows(database, url, small, work, noisy, runs)
            out += api_rows(database, url, work, noisy, executions, runs * 3)
            out.append(gc_row(database, url, work, ended))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="generate the history again")
    parser.add_argument("--only", choices=DATABASES, action="append")
    args = parser.parse_args(argv)
    server_url = os.environ.get(POSTGRES_URL_ENV, "").strip() or None
    found = rows(
        args.quick, server_url=server_url, fresh=args.fresh, databases=tuple(args.only or DATABASES)
    )
    print(overhead.table(found), file=sys.stderr)
    print(json.dumps(found))
    return 0 if all(r.get("ok") is not False for r in found) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
