"""Values and files between tasks, with real containers: outputs, every template source,
`when`, `matrix`, `files:` in, `artifacts:` out (and what is refused), file inputs, networks."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing_service
from tests.integration.helpers import REPO, Cli, execution_id_of, run_ok, write_flow


def _logs(cli: Cli, execution_id: str, task: str) -> list[str]:
    out = cli("logs", execution_id, "--task", task, "--json")
    assert out.returncode == 0, out.stderr
    return [ln["line"] for ln in json.loads(out.stdout)]


def _runs(shown: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["task_id"]: r for r in shown["task_runs"]}


def test_every_template_source_reaches_the_container(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_TEST_SECRET", "from-my-shell")
    monkeypatch.setenv("RUNNER_TEST_ALLOWED", "allowed-by-flow")
    flow = write_flow(
        tmp_path,
        """
id: templated
allowed_env: [RUNNER_TEST_ALLOWED]
inputs:
  - {id: color, type: enum, values: [green, yellow], default: green}
  - {id: months, type: array, item_type: int}
variables:
  file: "{{ inputs.color }}_{{ variables.stamp }}.csv"
  stamp: "2024"
defaults: {image: debian:bookworm-slim}
tasks:
  - id: extract
    script: |
      echo '::{"outputs": {"rows": 1200, "file": "first.csv"}}::'
      echo '::{"outputs": {"file": "{{ variables.file }}"}}::'
  - id: use
    depends_on: [extract]
    working_dir: "/work/{{ inputs.color }}"
    volumes: ["runner-test-{{ execution.id }}:/cache"]
    env:
      ROWS: "{{ outputs.extract.rows }}"
    command:
      - sh
      - -c
      - >-
        echo "rows=$ROWS file={{ outputs.extract.file }} months={{ inputs.months | join('+') }}";
        echo "flow={{ flow.id }} task={{ task.id }} attempt={{ task.attempt }} exec={{ execution.id }}";
        echo "env={{ env.RUNNER_TEST_SECRET }} allowed={{ env.RUNNER_TEST_ALLOWED }} pwd=$(pwd)";
        ls -d /cache
""",
    )
    # allowed_env declares, the operator allows (--env); --env alone also lets templates read
    out = cli(
        "run",
        str(flow),
        "-i",
        "months=[1,2,3]",
        "--env",
        "RUNNER_TEST_SECRET",
        "--env",
        "RUNNER_TEST_ALLOWED",
    )
    assert out.returncode == 0, out.stderr
    execution_id = execution_id_of(out.stdout)
    assert _logs(cli, execution_id, "use") == [
        "rows=1200 file=green_2024.csv months=1+2+3",
        f"flow=templated task=use attempt=1 exec={execution_id}",
        "env=from-my-shell allowed=allowed-by-flow pwd=/work/green",
        "/cache",
    ]
    shown = cli.show(execution_id)
    assert _runs(shown)["extract"]["outputs"] == {"rows": 1200, "file": "green_2024.csv"}
    assert shown["inputs"] == {"color": "green", "months": [1, 2, 3]}
    subprocess.run(
        ["docker", "volume", "rm", "-f", f"runner-test-{execution_id}"],
        check=True,
        capture_output=True,
    )


def test_an_undefined_name_fails_the_task_naming_it(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_TEST_NOT_ALLOWED", "secret")
    flow = write_flow(
        tmp_path,
        """
id: strict
tasks:
  - id: leak
    image: debian:bookworm-slim
    command: "echo {{ env.RUNNER_TEST_NOT_ALLOWED }}"
""",
    )
    out = cli("run", str(flow))
    assert out.returncode == 1
    run = _runs(cli.show(execution_id_of(out.stdout)))["leak"]
    assert run["state"] == "FAILED"
    assert "env.RUNNER_TEST_NOT_ALLOWED" in run["error"] and "secret" not in run["error"]
    assert "allowed_env" in run["error"] or "--env" in run["error"]


def test_outputs_that_no_store_takes_fail_the_task_and_json_stays_json(
    cli: Cli, tmp_path: Path
) -> None:
    """`1e999` is infinity to a JSON parser: Postgres refuses it and `runner show --json`
    would print `Infinity`, which is not JSON. The task says so and fails; its NUL byte
    in a log line is stored, shown as ␀."""
    flow = write_flow(
        tmp_path,
        "id: odd_output\ntasks:\n"
        "  - id: publish\n    image: debian:bookworm-slim\n"
        "    script: |\n"
        "      printf 'a\\000b\\n'\n"
        '      echo \'::{"outputs": {"n": 1e999}}::\'\n',
    )
    out = cli("run", str(flow))
    assert out.returncode == 1, out.stderr
    shown = cli("show", execution_id_of(out.stdout), "--json")
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)["task_runs"][0]  # strict JSON: no Infinity in it
    assert run["state"] == "FAILED" and run["exit_code"] == 0
    assert run["error"].startswith("outputs: line 2 of stdout: ")
    assert "1e999" in run["error"] and run["outputs"] is None
    lines = json.loads(cli("logs", execution_id_of(out.stdout), "--json").stdout)
    assert lines[0]["line"] == "a\u2400b"


def test_when_skips_and_dependents_go_on_unless_they_need_outputs(cli: Cli, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        """
id: conditional
inputs:
  - {id: color, type: enum, values: [green, yellow], default: green}
defaults: {image: debian:bookworm-slim}
tasks:
  - id: only_yellow
    when: "{{ inputs.color == 'yellow' }}"
    command: "echo '::{\\"outputs\\": {\\"n\\": 1}}::'"
  - id: only_green
    when: "{{ inputs.color == 'green' }}"
    command: "echo green"
  - id: after_any
    depends_on: [only_yellow, only_green]
    command: "echo after"
  - id: needs_yellow
    depends_on: [only_yellow]
    command: "echo {{ outputs.only_yellow.n }}"
""",
    )
    execution_id = run_ok(cli, ["run", str(flow)])
    runs = _runs(cli.show(execution_id))
    assert {t: r["state"] for t, r in runs.items()} == {
        "only_yellow": "SKIPPED",
        "only_green": "SUCCESS",
        "after_any": "SUCCESS",
        "needs_yellow": "SKIPPED",
    }
    assert "is false" in runs["only_yellow"]["error"]
    assert "only_yellow" in runs["needs_yellow"]["error"]
    yellow = run_ok(cli, ["run", str(flow), "-i", "color=yellow"])
    assert _logs(cli, yellow, "needs_yellow") == ["1"]


def test_matrix_expands_runs_in_parallel_and_the_join_waits_for_all(
    cli: Cli, tmp_path: Path
) -> None:
    flow = write_flow(
        tmp_path,
        """
id: backfill
concurrency: 6
defaults: {image: debian:bookworm-slim}
tasks:
  - id: month
    matrix: {year: [2019, 2020], month: [1, 2, 3]}
    command: "sleep 2; echo {{ matrix.year }}-{{ matrix.month }} > /workspace/{{ matrix.year }}-{{ matrix.month }}.txt; echo '::{\\"outputs\\": {\\"m\\": {{ matrix.month }}}}::'"
  - id: join
    depends_on: [month]
    command: "ls /workspace | sort | tr '\\\\n' ' '; echo; echo {{ outputs.month['year=2020,month=3'].m }}"
""",
    )
    execution_id = run_ok(cli, ["run", str(flow)])
    shown = cli.show(execution_id)
    names = [r["task_id"] for r in shown["task_runs"]]
    expected = [f"month[year={y},month={m}]" for y in (2019, 2020) for m in (1, 2, 3)]
    assert sorted(names[:6]) == sorted(expected) and names[6] == "join"
    starts = [datetime.fromisoformat(r["started_at"]) for r in shown["task_runs"][:6]]
    ends = [datetime.fromisoformat(r["ended_at"]) for r in shown["task_runs"][:6]]
    assert max(starts) < min(ends), "the six combinations should overlap in time"
    join_started = datetime.fromisoformat(shown["task_runs"][6]["started_at"])
    assert join_started >= max(ends)
    assert _logs(cli, execution_id, "join") == [
        "2019-1.txt 2019-2.txt 2019-3.txt 2020-1.txt 2020-2.txt 2020-3.txt ",
        "3",
    ]


def test_files_in_and_artifacts_out(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "make.sh").write_text(
        "#!/bin/sh\nmkdir -p out/sub\necho hello > out/a.txt\necho deep > out/sub/b.txt\necho no > out/c.log\n"
    )
    (tmp_path / "scripts" / "make.sh").chmod(0o755)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.csv").write_text("a,b\n1,2\n")
    (tmp_path / "local.csv").write_text("x\n42\n")
    flow = write_flow(
        tmp_path,
        """
id: files
inputs:
  - {id: extra, type: file}
files: [scripts/*.sh, data]
tasks:
  - id: build
    image: debian:bookworm-slim
    user: "1000:1000"
    command: "cat data/input.csv {{ inputs.extra }} && ./scripts/make.sh"
    artifacts: ["out/*.txt", "out/sub/"]
""",
    )
    out = cli("run", str(flow), "-i", "extra=local.csv")
    assert out.returncode == 0, out.stderr
    execution_id = execution_id_of(out.stdout)
    assert _logs(cli, execution_id, "build") == ["a,b", "1,2", "x", "42"]
    listed = json.loads(cli("artifacts", execution_id, "--json").stdout)
    assert sorted(a["path"] for a in listed) == ["out/a.txt", "out/sub/b.txt"]
    for artifact in listed:
        local = Path(artifact["local_path"])
        assert local.is_relative_to(tmp_path / ".runner" / "artifacts" / execution_id / "build")
        content = local.read_bytes()
        assert (
            hashlib.sha256(content).hexdigest() == artifact["sha256"]
            and len(content) == artifact["size"]
        )
    assert "out/a.txt" in cli("artifacts", execution_id).stdout


@pytest.mark.parametrize(
    ("plant", "complaint"),
    [
        ("ln -s /etc/passwd out/passwd", "link"),
        ("echo secret > out/secret && ln out/secret out/hard", "link"),
        ("mknod out/null c 1 3", "device"),
        ("mkfifo out/pipe", "fifo"),
        ("truncate -s 20G out/huge", "GiB"),
    ],
    ids=["symlink", "hardlink", "device", "fifo", "absurd-size"],
)
def test_dangerous_artifacts_are_refused(
    cli: Cli, tmp_path: Path, plant: str, complaint: str
) -> None:
    flow = write_flow(
        tmp_path,
        f"""
id: planted
tasks:
  - id: plant
    image: debian:bookworm-slim
    command: "mkdir -p out && echo fine > out/ok.txt && {plant}"
    artifacts: ["out/*"]
""",
    )
    out = cli("run", str(flow), "--artifacts-dir", str(tmp_path / "arts"))
    assert out.returncode == 1, out.stderr
    run = _runs(cli.show(execution_id_of(out.stdout)))["plant"]
    assert run["state"] == "FAILED" and complaint in run["error"], run["error"]
    assert "Traceback" not in out.stderr
    written = (
        [p for p in (tmp_path / "arts").rglob("*") if p.is_file()]
        if (tmp_path / "arts").exists()
        else []
    )
    assert written == []  # nothing half-copied
    assert Path("/etc/passwd").read_text()  # and nothing outside was touched


def test_network_none_has_only_loopback(cli: Cli, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        "id: net\ntasks:\n  - {id: isolated, image: debian:bookworm-slim, network: none, command: 'ls /sys/class/net'}\n",
    )
    execution_id = run_ok(cli, ["run", str(flow)])
    assert _logs(cli, execution_id, "isolated") == ["lo"]


def test_polyglot_etl_moves_values_files_and_artifacts(cli: Cli) -> None:
    execution_id = run_ok(cli, ["run", str(REPO / "flows/polyglot_etl.yml"), "-i", "rows=250"])
    runs = _runs(cli.show(execution_id))
    assert runs["extract"]["outputs"] == {"rows": 250, "file": "trips_250.csv"}
    assert runs["transform"]["outputs"] == {"zones": 4, "trips": 250}
    assert (
        _logs(cli, execution_id, "report")[0] == "extract wrote 250 trips, zones.json sums to 250"
    )
    listed = json.loads(cli("artifacts", execution_id, "--json").stdout)
    assert sorted(a["path"] for a in listed) == ["report/zones.json", "report/zones.tsv"]


def test_taxi_monthly_loads_postgres_over_the_host_network(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_ALLOW_HOST_NETWORK", "1")  # the operator's leave for `host`
    url = os.environ.get("RUNNER_TEST_POSTGRES_URL")
    if not url:
        missing_service("RUNNER_TEST_POSTGRES_URL is not set")
    assert url is not None
    libpq_url = url.replace("postgresql+psycopg://", "postgresql://")
    execution_id = run_ok(
        cli,
        [
            "run",
            str(REPO / "flows/taxi_monthly.yml"),
            "-i",
            f"pg_url={libpq_url}",
            "-i",
            "network=host",
        ],
    )
    runs = _runs(cli.show(execution_id))
    assert len([t for t in runs if t.startswith("generate[")]) == 6
    assert runs["aggregate"]["outputs"] == {
        "trips": 6 * 40 + 10 * (1 + 2 + 3) * 2 + 3 * 5,
        "months": 6,
    }
    assert (
        _logs(cli, execution_id, "load")[-1]
        == f"loaded 6 monthly rows, {runs['aggregate']['outputs']['trips']} trips"
    )
