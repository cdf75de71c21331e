"""`runner serve` over real HTTP, as a subprocess, with real containers: schedules (a
seconds field, on time), pause tasks resumed with an input, webhooks, flow triggers,
unpausing with each recover_missed, backfills, SIGTERM with a running execution, and two
servers on one Postgres firing each scheduled time once."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runner import api
from tests.conftest import BASE_IMAGE
from tests.integration.helpers import Cli, labelled
from tests.integration.serving import Server, running_server, sse_events


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir()
    return folder


def write(flows: Path, name: str, text: str) -> None:
    (flows / name).write_text(text.replace("BASE", BASE_IMAGE), encoding="utf-8")


def executions(server: Server, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = server.get("/executions", params={"limit": 1000, **params})[
        "executions"
    ]
    return found


def lines(server: Server, execution_id: str) -> list[str]:
    page = server.get(f"/executions/{execution_id}/logs")
    return [line["line"] for line in page["lines"]]


def test_a_schedule_with_seconds_fires_on_time_with_its_date(
    cli: Cli, flows: Path, docker_client: Any
) -> None:
    write(
        flows,
        "tick.yml",
        """\
id: tick
namespace: t
concurrency: {limit: 5}  # a slow container must not hold the next time back
triggers: [{id: every2, type: schedule, cron: "*/2 * * * * *"}]
tasks: [{id: show, image: BASE, command: "echo date={{ trigger.date }}"}]
""",
    )
    with running_server(cli, flows) as server:
        deadline = time.monotonic() + 60
        while len(executions(server, label="trigger:every2")) < 3:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert server.post("/flows/t/tick/pause").status_code == 200
        time.sleep(0.5)
        fired = executions(server, label="trigger:every2")
        for item in fired:
            server.wait_state(item["id"], "SUCCESS")
    scheduled = sorted(datetime.fromisoformat(e["labels"]["scheduled_at"]) for e in fired)
    assert all(t.second % 2 == 0 and t.microsecond == 0 for t in scheduled)
    assert len(set(scheduled)) == len(scheduled)
    for item in fired:
        at = datetime.fromisoformat(item["labels"]["scheduled_at"])
        late = (datetime.fromisoformat(item["created_at"]) - at).total_seconds()
        assert 0 <= late < 1.0, (item["labels"], item["created_at"])
    with running_server(cli, flows) as server:
        one = fired[0]
        shown = lines(server, one["id"])
        at = datetime.fromisoformat(one["labels"]["scheduled_at"])
        assert shown == [f"date={at.astimezone(UTC).isoformat()}"]


def test_a_pause_task_is_resumed_with_an_input(cli: Cli, flows: Path, docker_client: Any) -> None:
    write(
        flows,
        "gate.yml",
        """\
id: gate
tasks:
  - {id: prepare, image: BASE, command: "echo prepared > /workspace/state"}
  - id: approve
    type: pause
    depends_on: [prepare]
    inputs: [{id: note, type: string}]
  - id: say
    image: BASE
    depends_on: [approve]
    command: "cat /workspace/state; echo note={{ outputs.approve.note }}"
""",
    )
    with running_server(cli, flows) as server:
        started = server.post("/executions/default/gate", json={})
        assert started.status_code == 201, started.text
        execution_id = started.json()["id"]
        server.wait_state(execution_id, "PAUSED")
        containers, volumes = labelled(docker_client, execution_id)
        assert containers == [] and len(volumes) == 1  # no container; the workspace kept
        missing = server.post(f"/executions/{execution_id}/resume", json={})
        assert missing.status_code == 422
        assert "input 'note' is required" in json.dumps(missing.json())
        resumed = server.post(
            f"/executions/{execution_id}/resume", json={"inputs": {"note": "ship it"}}
        )
        assert resumed.status_code == 202, resumed.text
        done = server.wait_state(execution_id, "SUCCESS", "FAILED")
        assert done["state"] == "SUCCESS", done
        assert lines(server, execution_id) == ["prepared", "note=ship it"]
        # The CLI resumes one the server paused, too.
        other = server.post("/executions/default/gate", json={}).json()["id"]
        server.wait_state(other, "PAUSED")
    out = cli("resume", other, "-i", "note=from the cli")
    assert out.returncode == 0, out.stderr
    assert cli.show(other)["state"] == "SUCCESS"
    assert labelled(docker_client, other) == ([], [])


def test_webhooks_need_their_key(cli: Cli, flows: Path, docker_client: Any) -> None:
    write(
        flows,
        "hook.yml",
        """\
id: hook
namespace: ci
inputs: [{id: ref, type: string}]
triggers:
  - {id: push, type: webhook, key: sixteen-chars-or-more, inputs: {ref: "{{ trigger.body.ref }}"}}
tasks: [{id: build, image: BASE, command: "echo building {{ inputs.ref }}"}]
""",
    )
    with running_server(cli, flows) as server:
        import httpx2

        with httpx2.Client(base_url=f"{server.url}/api/v1", timeout=60) as anonymous:
            wrong = anonymous.post("/webhooks/ci/hook/not-the-key-at-all", json={"ref": "x"})
            assert wrong.status_code == 404 and wrong.json()["error"] == "no such webhook"
            right = anonymous.post("/webhooks/ci/hook/sixteen-chars-or-more", json={"ref": "main"})
            assert right.status_code == 201, right.text
            assert anonymous.get("/executions").status_code == 401
        execution_id = right.json()["id"]
        server.wait_state(execution_id, "SUCCESS")
        assert lines(server, execution_id) == ["building main"]


def test_a_flow_trigger_starts_after_its_upstream_succeeds(
    cli: Cli, flows: Path, docker_client: Any
) -> None:
    write(
        flows,
        "load.yml",
        """\
id: load
namespace: z
tasks: [{id: count, image: BASE, command: "echo '::{\\"outputs\\": {\\"rows\\": 7}}::'"}]
""",
    )
    write(
        flows,
        "report.yml",
        """\
id: report
namespace: z
triggers:
  - {id: after_load, type: flow, upstream: {namespace: z, flow_id: load}}
tasks:
  - id: tell
    image: BASE
    command: "echo {{ trigger.execution_id }} rows={{ trigger.outputs.count.rows }}"
""",
    )
    with running_server(cli, flows) as server:
        time.sleep(1.0)  # the flow trigger is first seen
        upstream = server.post("/executions/z/load", json={}).json()["id"]
        server.wait_state(upstream, "SUCCESS")
        deadline = time.monotonic() + 60
        while not (found := executions(server, flow_id="report")):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        [report] = found
        server.wait_state(report["id"], "SUCCESS")
        assert lines(server, report["id"]) == [f"{upstream} rows=7"]
        time.sleep(1.0)
        assert len(executions(server, flow_id="report")) == 1


@pytest.mark.parametrize(("recover", "count"), [("all", 3), ("last", 1), ("none", 0)])
def test_unpausing_follows_recover_missed(
    cli: Cli, flows: Path, docker_client: Any, recover: str, count: int
) -> None:
    # An hourly schedule at a minute half an hour from now: the times it missed are an
    # hour apart, and none of them is "on time" when it is unpaused.
    now = datetime.now(UTC)
    minute = (now.minute + 30) % 60
    write(
        flows,
        "hourly.yml",
        f"""\
id: hourly
namespace: h
triggers: [{{id: h, type: schedule, cron: "{minute} * * * *", recover_missed: {recover}}}]
tasks: [{{id: t, image: BASE, command: "echo {{{{ trigger.date }}}}"}}]
""",
    )
    # The flow was paused three hours and five minutes ago, its trigger last fired then.
    store = api.open_store(cli.db_url, recover=False)
    try:
        api.pause_flow(store, "h", "hourly", at=now - timedelta(hours=3, minutes=5))
        store.init_trigger("h", "hourly", "h", at=now - timedelta(hours=3, minutes=5))
    finally:
        store.close()
    with running_server(cli, flows) as server:
        time.sleep(1.0)
        assert executions(server) == []  # paused: nothing fires
        unpaused = server.post("/flows/h/hourly/unpause")
        assert unpaused.status_code == 200
        time.sleep(3.0)  # a few ticks: missed times fire one after the other
        deadline = time.monotonic() + 120
        while len(found := executions(server)) < count:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        time.sleep(1.5)
        found = executions(server)
        for item in found:
            server.wait_state(item["id"], "SUCCESS")
    assert len(found) == count
    scheduled = sorted(datetime.fromisoformat(e["labels"]["scheduled_at"]) for e in found)
    assert all(t < now and t.minute == minute for t in scheduled)
    if count == 1:
        assert scheduled[0] > now - timedelta(hours=1)  # the most recent missed time


def test_backfill_from_the_cli_runs_each_time_once(
    cli: Cli, flows: Path, docker_client: Any
) -> None:
    write(
        flows,
        "daily.yml",
        """\
id: daily
namespace: b
triggers: [{id: d, type: schedule, cron: "0 3 * * *", timezone: Europe/Paris}]
tasks: [{id: t, image: BASE, command: "echo {{ trigger.date | date('%Y-%m-%d') }}"}]
""",
    )
    args = ["backfill", "b.daily", "--flows", str(flows), "--start", "2019-01-01"]
    dry = cli(*args, "--end", "2019-01-04", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "2019-01-01T03:00:00+01:00  would run"
    assert dry.stdout.splitlines()[-1] == "b.daily (d): 3 time(s), 3 to run, 0 already ran"
    ran = cli(*args, "--end", "2019-01-03", "--wait")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "b.daily: 2 execution(s) ran: 2 SUCCESS"
    more = cli(*args, "--end", "2019-01-04", "--wait")
    assert more.returncode == 0, more.stderr
    assert more.stdout.strip() == (
        "b.daily: 1 execution(s) ran, 2 time(s) had already run: 1 SUCCESS"
    )
    listed = json.loads(cli("executions", "--json").stdout)
    outputs = sorted(cli("logs", e["id"]).stdout.split("│")[-1].strip() for e in listed)
    assert outputs == ["2019-01-01", "2019-01-02", "2019-01-03"]


def test_sigterm_kills_what_still_runs_after_the_grace_period(
    cli: Cli, flows: Path, docker_client: Any
) -> None:
    write(flows, "slow.yml", "id: slow\ntasks: [{id: s, image: BASE, command: 'sleep 120'}]\n")
    write(flows, "quick.yml", "id: quick\ntasks: [{id: q, image: BASE, command: 'sleep 3'}]\n")
    with running_server(cli, flows, "--grace", "6s") as server:
        slow = server.post("/executions/default/slow", json={}).json()["id"]
        quick = server.post("/executions/default/quick", json={}).json()["id"]
        server.wait_state(slow, "RUNNING")
        server.wait_state(quick, "RUNNING")
        with (
            server.client as client,
            client.stream("GET", f"/executions/{quick}/logs/stream") as response,
        ):
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            # Draining: reads answer, new work is refused, health says so.
            valid = server.post("/flows/validate", content="id: x\ntasks: [{id: a, image: i}]\n")
            assert valid.status_code == 200, valid.text
            refused = server.post("/executions/default/quick", json={})
            assert refused.status_code == 503, refused.text
            health = client.get("/health")
            assert (health.status_code, health.json()["status"]) == (503, "stopping")
            events = sse_events("".join(response.iter_text()))
        code = server.process.wait(timeout=60)
        took = time.monotonic() - signalled
    assert code == 0, server.log()
    assert 6 <= took < 30, took
    assert events[-1]["event"] == "end" and json.loads(events[-1]["data"])["state"] == "SUCCESS"
    assert cli.show(quick)["state"] == "SUCCESS"
    killed = cli.show(slow)
    assert killed["state"] == "KILLED", killed
    assert killed["error"] == "killed: the server shut down (its grace period of 6 s was over)"
    assert labelled(docker_client, slow) == ([], [])


@pytest.mark.postgres
def test_two_servers_on_one_postgres_fire_each_time_once(
    tmp_path: Path, flows: Path, docker_client: Any, postgres_database_url: str
) -> None:
    write(
        flows,
        "often.yml",
        """\
id: often
namespace: p
concurrency: {limit: 10}
triggers: [{id: s, type: schedule, cron: "* * * * * *"}]
tasks: [{id: t, image: BASE, command: "true"}]
""",
    )
    cli = Cli(cwd=tmp_path, db_url=postgres_database_url)
    with (
        running_server(cli, flows, "--workers", "8") as one,
        running_server(cli, flows, "--workers", "8") as two,
    ):
        time.sleep(8)
        assert one.post("/flows/p/often/pause").status_code == 200
        time.sleep(1.0)
        found = executions(two, flow_id="often")
        for item in found:
            two.wait_state(item["id"], "SUCCESS", "FAILED")
    times = [e["labels"]["scheduled_at"] for e in found]
    assert len(times) >= 5, one.log() + two.log()
    assert len(times) == len(set(times)), sorted(times)
