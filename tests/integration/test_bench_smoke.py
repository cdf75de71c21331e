"""The overhead benchmark (bench/overhead.py) runs end to end in its smallest configuration.

Only that it runs and reports every row is checked here; the ratios are not asserted,
because timings on a shared test machine prove nothing (see bench/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.helpers import REPO

SMALLEST = [
    "--quick",
    "--chain", "1",
    "--fanout", "2",
    "--concurrency", "2",
    "--log-lines", "200",
    "--plan-tasks", "20",
    "--memory-tasks", "2",
    "--startup-runs", "1",
    "--scaling-tasks", "3",
    "--scaling-tasks", "6",
    "--json-only",
]  # fmt: skip


def test_the_benchmark_reports_every_group(docker_client: object, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "overhead.py"), *SMALLEST],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    rows = report["rows"]
    assert {row["group"] for row in rows} == {
        "chain",
        "fanout",
        "logs",
        "planning",
        "memory",
        "startup",
        "server",
        "scaling",
    }
    by_name = {row["row"]: row for row in rows}
    assert {
        "chain 1",
        "fan-out 2 c=2",
        "logs sqlite",
        "logs postgres",
        "planning 20",
        "startup --help",
        "startup validate",
        "api fanout",
        "scaling chain memory",
        "scaling fanout sqlite",
        "memory 6 fake",
    } <= set(by_name)
    for row in rows:
        if row["kind"] == "skipped":  # only the rows that need Postgres, without one
            assert row["row"] in ("logs postgres", "history"), row
            continue
        assert isinstance(row["ok"], bool)
        measured = row.get("ratio", row.get("ms", row.get("value")))  # by the row's kind
        assert measured is not None and measured > 0, row
    assert by_name["logs sqlite"]["lines_stored"] == 200
    assert by_name["memory 2 c=8"]["value"] > 0
    assert set(by_name["scaling chain sqlite"]["ms_per_task"]) == {"3", "6"}
