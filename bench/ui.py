"""The web UI at size, in Debian's headless Chromium: the executions list over a history of
100,000 executions (first page and a deep page by cursor), and the page of one execution
of 1,000 task runs (a 25 x 40 matrix): time until each page is ready, median of a few loads.

    python bench/ui.py             # the sizes of the issue (Postgres: RUNNER_TEST_POSTGRES_URL)
    python bench/ui.py --quick     # 10,000 executions, 200 task runs: a check that it works

The history is bench/serving.py's (generated with SQL in a database next to
RUNNER_TEST_POSTGRES_URL's, kept between runs); the 1,000 runs are recorded by the real
scheduler and store with the scripted backend (as the browser test does for 200). The
server is a real `python -m runner serve`; "ready" means what a person waits for: the
list's 50 rows drawn; the execution's graph, timeline and every log line shown (the
stream's `end` received). Target: under 2 s each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for entry in (str(REPO), str(REPO / "bench")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import httpx2  # noqa: E402
import serving as server_bench  # noqa: E402

from runner.store.testing import POSTGRES_URL_ENV  # noqa: E402
from tests.integration import browser as ui  # noqa: E402

TARGET_S = 2.0

MATRIX = """\
id: wide
namespace: bench
concurrency: 32
tasks:
  - {id: split, image: debian:bookworm-slim, command: "echo split"}
  - id: part
    depends_on: [split]
    image: debian:bookworm-slim
    matrix: {a: [A_VALUES], b: [B_VALUES]}
    command: "echo part"
  - {id: combine, depends_on: [part], image: debian:bookworm-slim, command: "echo combined"}
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def record_wide(url: str, flows: Path, a: int, b: int) -> str:
    from runner import api
    from runner.backends.fake import FakeBackend, Script

    path = flows / "wide.yml"
    text = MATRIX.replace("A_VALUES", ", ".join(map(str, range(a))))
    path.write_text(text.replace("B_VALUES", ", ".join(map(str, range(b)))))
    loaded = api.load_flow(path)
    scripts = {t.id: Script(lines=(f"{t.id} done",), seconds=0.01) for t in loaded.flow.tasks}
    store = api.open_store(url, recover=False)
    try:
        return api.run_flow(
            loaded, store=store, backend=FakeBackend(scripts), concurrency=32
        ).execution_id
    finally:
        store.close()


def timed(page: Any, url: str, ready: Any, runs: int) -> float:
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        page.goto(url)
        ready(page)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])  # the first warms the caches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fresh", action="store_true", help="generate the history again")
    args = parser.parse_args(argv)
    postgres = os.environ.get(POSTGRES_URL_ENV, "").strip()
    if not postgres:
        say(f"error: {POSTGRES_URL_ENV} must name a PostgreSQL server (see bench/serving.py)")
        return 1
    problem = ui.browser_problem()
    if problem is not None:
        say(f"error: {problem}")
        return 1
    from playwright.sync_api import expect, sync_playwright

    executions, (a, b) = (10_000, (10, 20)) if args.quick else (100_000, (25, 40))
    url = server_bench.history_url(postgres, executions, 10_000)
    server_bench.fill_history(url, executions, 10_000, fresh=args.fresh)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runner-bench-ui-") as scratch:
        work = Path(scratch)
        flows = work / "flows"
        flows.mkdir()
        say(f"recording an execution of {a * b + 2} task runs...")
        wide = record_wide(url, flows, a, b)
        with server_bench.serve(url, flows, 4, work) as (base, token):
            with httpx2.Client(
                base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {token}"}
            ) as client:
                cursor = None
                for _ in range(20):  # the 21st page of 50: 1,000 executions down
                    cursor = client.get(
                        "/executions",
                        params={"limit": 50, "after": cursor} if cursor else {"limit": 50},
                    ).json()["next"]
            with sync_playwright() as playwright:
                browser = ui.launch(playwright)
                context = ui.logged_in(browser, base, token)
                page = context.new_page()
                rows_of = page.locator("#executions tbody tr")

                def list_ready(p: Any) -> None:
                    expect(rows_of).to_have_count(50, timeout=30_000)

                def execution_ready(p: Any) -> None:
                    p.wait_for_selector("main[data-ready=true]", timeout=60_000)
                    expect(p.locator(".log-status")).to_contain_text("Ended", timeout=60_000)

                for name, path, ready in (
                    (f"list, first page ({executions:,} executions)", "/ui/executions", list_ready),
                    (
                        "list, page 21 by cursor",
                        f"/ui/executions?after={cursor}&page=21",
                        list_ready,
                    ),
                    ("list, filtered (state FAILED)", "/ui/executions?state=FAILED", list_ready),
                    (
                        f"execution of {a * b + 2} task runs",
                        f"/ui/executions/{wide}",
                        execution_ready,
                    ),
                ):
                    seconds = timed(page, path, ready, args.runs)
                    rows.append({"row": name, "median_s": round(seconds, 3), "target_s": TARGET_S})
                    say(f"  {name:<44} {seconds:6.2f} s   (target < {TARGET_S} s)")
                page.goto(f"/ui/executions/{wide}")
                execution_ready(page)
                started = time.perf_counter()
                page.locator('[data-group="part"]').click()
                expect(page.locator(".g-row.g-child")).to_have_count(a * b, timeout=60_000)
                seconds = time.perf_counter() - started
                rows.append(
                    {
                        "row": f"open the timeline's {a * b} runs",
                        "median_s": round(seconds, 3),
                        "target_s": TARGET_S,
                    }
                )
                say(f"  {'open the timeline of ' + str(a * b) + ' runs':<44} {seconds:6.2f} s")
                browser.close()
    print(json.dumps({"group": "ui", "rows": rows}))
    return 0 if all(r["median_s"] < r["target_s"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
