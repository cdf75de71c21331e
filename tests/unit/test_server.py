"""The HTTP API of `runner serve`, through Starlette's TestClient: the app factory with
the in-memory store, the scripted FakeBackend and a flows folder of the test's own.
Real HTTP against a real `runner serve` and real containers is
tests/integration/test_serve.py's business."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from starlette.testclient import TestClient

from runner import api
from runner.backends.fake import FakeBackend, Script
from runner.errors import BackendError
from runner.execution import ExecutionState
from runner.server.app import API_PREFIX, create_app
from runner.server.service import Service
from runner.store.testing import InMemoryStore

HELLO = """\
id: hello
namespace: team
description: says hello
labels: {owner: data}
inputs:
  - {id: who, type: string, default: world}
  - {id: n, type: int, default: 1}
triggers:
  - {id: nightly, type: schedule, cron: "0 2 * * *", timezone: Europe/Paris}
  - {id: ci, type: webhook, key: a-long-enough-secret-key, inputs: {who: "{{ trigger.body.who }}"}}
tasks:
  - {id: a, image: i, command: "echo hi {{ inputs.who }}"}
  - {id: b, image: i, depends_on: [a]}
"""

UPLOAD = """\
id: upload
namespace: team
inputs:
  - {id: data, type: file}
tasks:
  - {id: a, image: i}
"""

PAUSING = """\
id: gate
namespace: team
tasks:
  - {id: approve, type: pause, inputs: [{id: ok, type: bool, default: false}]}
  - {id: go, image: i, depends_on: [approve]}
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend({"a": Script(lines=("hello", "world"))})


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "hello.yml").write_text(HELLO, encoding="utf-8")
    (folder / "upload.yml").write_text(UPLOAD, encoding="utf-8")
    (folder / "gate.yml").write_text(PAUSING, encoding="utf-8")
    (folder / "broken.yml").write_text("id: broken\ntasks: []\n", encoding="utf-8")
    return folder


@pytest.fixture
def service(flows: Path, backend: FakeBackend) -> Iterator[Service]:
    store = InMemoryStore()
    made = Service(store, backend, flows_dir=flows, workers=4, clock=Clock())
    made.start(background=False)
    yield made
    made.close()


@pytest.fixture
def token(service: Service) -> str:
    secret, _ = api.create_token(service.store, "tests")
    return secret


@pytest.fixture
def client(service: Service, token: str) -> Iterator[TestClient]:
    with TestClient(
        create_app(service),
        headers={"Authorization": f"Bearer {token}"},
        raise_server_exceptions=False,
    ) as made:
        yield made


def wait_state(client: TestClient, execution_id: str, *states: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found: dict[str, Any] = client.get(f"{API_PREFIX}/executions/{execution_id}").json()
        if found["state"] in states:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{execution_id} never reached {states}: {found}")


def start(client: TestClient, flow: str = "hello", **body: Any) -> str:
    answer = client.post(f"{API_PREFIX}/executions/team/{flow}", json=body)
    assert answer.status_code == 201, answer.text
    execution_id: str = answer.json()["id"]
    return execution_id


# -- tokens ------------------------------------------------------------------------------


PUBLIC = {f"{API_PREFIX}/health", "/openapi.json", "/docs", "/docs/oauth2-redirect"}


def test_every_route_but_health_docs_and_webhooks_needs_a_token(service: Service) -> None:
    """The routes are read from the app (with those of its routers): a route added later
    is checked too."""
    app = create_app(service)
    checked = 0
    with TestClient(app, raise_server_exceptions=False) as anonymous:
        for route in iter_route_contexts(app.routes):
            if route.path is None or route.methods is None or route.path in PUBLIC:
                continue
            if route.path.startswith(f"{API_PREFIX}/webhooks/"):
                continue
            if not route.path.startswith(API_PREFIX):
                continue  # `/` sends to the UI, whose pages have their own login (test_ui.py)
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            for method in route.methods - {"HEAD"}:
                for headers in ({}, {"Authorization": "Bearer rnr_" + "x" * 43}):
                    answer = anonymous.request(method, path, headers=headers)
                    assert answer.status_code == 401, (method, path, answer.text)
                    assert answer.json()["error"].startswith(("missing token", "invalid token"))
                    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
                    checked += 1
    assert checked >= 2 * 14, checked


def test_health_and_the_docs_answer_without_a_token(service: Service) -> None:
    with TestClient(create_app(service)) as anonymous:
        assert anonymous.get(f"{API_PREFIX}/health").json() == {
            "status": "ok",
            "database": "ok",
            "engine": "ok",
        }
        schema = anonymous.get("/openapi.json").json()
        assert f"{API_PREFIX}/executions/{{execution_id}}/logs/stream" in schema["paths"]
        assert "bearer" in json.dumps(schema["components"]["securitySchemes"]).lower()
        docs = anonymous.get("/docs")
        assert docs.status_code == 200
        # Swagger UI from the runner itself, not a CDN: the page works without internet.
        assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
        assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
        for asset in assets:
            assert asset.startswith("/"), asset
            assert anonymous.get(asset).status_code == 200, asset


def test_health_names_what_is_down(service: Service, backend: FakeBackend) -> None:
    def down() -> None:
        raise BackendError("cannot reach the Docker engine at unix:///var/run/docker.sock")

    backend.check = down  # type: ignore[method-assign]
    with TestClient(create_app(service)) as anonymous:
        answer = anonymous.get(f"{API_PREFIX}/health")
    assert answer.status_code == 503
    assert answer.json()["engine"].startswith("cannot reach the Docker engine")
    assert answer.json()["database"] == "ok"


def test_a_revoked_token_is_refused(client: TestClient, service: Service) -> None:
    assert client.get(f"{API_PREFIX}/flows").status_code == 200
    api.revoke_token(service.store, "tests")
    answer = client.get(f"{API_PREFIX}/flows")
    assert answer.status_code == 401 and answer.json()["error"].startswith("invalid token")


# -- errors ------------------------------------------------------------------------------


def test_errors_are_json_with_their_status(client: TestClient) -> None:
    missing = client.get(f"{API_PREFIX}/executions/0123456789abcdef")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no execution matches '0123456789abcdef'", "details": []}
    route = client.get(f"{API_PREFIX}/nothing")
    assert route.status_code == 404 and route.json()["error"].startswith("no such route")
    bad = client.get(f"{API_PREFIX}/executions", params={"limit": 0})
    assert bad.status_code == 422
    assert bad.json()["details"][0]["loc"] == ["query", "limit"]
    label = client.get(f"{API_PREFIX}/executions", params={"label": "nocolon"})
    assert label.status_code == 400 and label.json()["error"] == "label 'nocolon' must be key:value"
    flow = client.post(f"{API_PREFIX}/executions/team/nope", json={})
    assert flow.status_code == 404 and "no flow team.nope" in flow.json()["error"]


def test_a_bug_is_a_500_without_a_traceback(client: TestClient, service: Service) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    service.store.list_executions = broken  # type: ignore[method-assign]
    answer = client.get(f"{API_PREFIX}/executions")
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error: RuntimeError", "details": []}


# -- flows -------------------------------------------------------------------------------


def test_flows_list_triggers_with_next_times_and_invalid_files(client: TestClient) -> None:
    found = client.get(f"{API_PREFIX}/flows").json()
    assert [(f["namespace"], f["id"]) for f in found["flows"]] == [
        ("team", "gate"),
        ("team", "hello"),
        ("team", "upload"),
    ]
    hello = found["flows"][1]
    nightly = hello["triggers"][0]
    assert nightly["next"][:2] == ["2024-06-02T02:00:00+02:00", "2024-06-03T02:00:00+02:00"]
    assert hello["paused"] is False and hello["last_execution"] is None
    [broken] = found["invalid"]
    assert broken["file"].endswith("broken.yml")
    assert broken["problems"][0]["line"] == 2 and "tasks" in broken["problems"][0]["text"]


def test_a_flow_document_has_source_inputs_and_graph(client: TestClient) -> None:
    found = client.get(f"{API_PREFIX}/flows/team/hello").json()
    assert found["source"] == HELLO
    assert [(i["id"], i["type"], i["required"], i["default"]) for i in found["inputs"]] == [
        ("who", "string", False, "world"),
        ("n", "int", False, 1),
    ]
    assert [(t["id"], t["depends_on"]) for t in found["graph"]] == [("a", []), ("b", ["a"])]


def test_validate_reports_the_same_lines_as_the_cli(client: TestClient, tmp_path: Path) -> None:
    text = "id: f\ntasks:\n  - {id: a, image: i, depends_on: [b]}\n  - {id: b, imag: i}\n"
    answer = client.post(f"{API_PREFIX}/flows/validate", content=text, params={"name": "mine.yml"})
    assert answer.status_code == 422
    assert answer.json()["error"] == "the flow is not valid"
    cli_file = tmp_path / "flows" / "mine.yml"
    cli_file.write_text(text, encoding="utf-8")
    from runner.errors import FlowError

    with pytest.raises(FlowError) as caught:
        api.load_flow(cli_file)
    assert [d["text"] for d in answer.json()["details"]] == [str(p) for p in caught.value.problems]
    good = client.post(f"{API_PREFIX}/flows/validate", content=HELLO)
    assert good.json() == {"valid": True, "namespace": "team", "id": "hello", "tasks": 2}


def test_pause_and_unpause_a_flow(client: TestClient) -> None:
    paused = client.post(f"{API_PREFIX}/flows/team/hello/pause").json()
    assert paused["paused"] is True and paused["paused_at"] == "2024-06-01T12:00:00Z"
    assert paused["triggers"][0]["next"] == []
    hook = client.post(f"{API_PREFIX}/webhooks/team/hello/a-long-enough-secret-key", json={})
    assert hook.status_code == 409
    assert client.post(f"{API_PREFIX}/flows/team/hello/unpause").json()["paused"] is False


# -- executions --------------------------------------------------------------------------


def test_start_an_execution_and_read_it_as_runner_show_does(
    client: TestClient, service: Service
) -> None:
    execution_id = start(client, inputs={"who": "you", "n": 3}, labels={"ticket": "7"})
    done = wait_state(client, execution_id, "SUCCESS")
    assert done == json.loads(json.dumps(api.get_execution(service.store, execution_id).to_dict()))
    assert done["inputs"] == {"who": "you", "n": 3}
    assert done["labels"] == {"owner": "data", "ticket": "7"}


def test_bad_inputs_are_422_with_each_problem(client: TestClient) -> None:
    answer = client.post(
        f"{API_PREFIX}/executions/team/hello", json={"inputs": {"n": "many", "colour": 1}}
    )
    assert answer.status_code == 422
    assert answer.json()["error"] == "the inputs are not valid"
    details = answer.json()["details"]
    assert any("input 'n': expected an int, got 'many'" in d for d in details)
    assert any("unknown input 'colour'" in d for d in details)


def test_a_file_input_is_uploaded_never_a_path(
    client: TestClient, backend: FakeBackend, tmp_path: Path
) -> None:
    secret = tmp_path / "server-secret.txt"
    secret.write_text("do not read me", encoding="utf-8")
    as_path = client.post(
        f"{API_PREFIX}/executions/team/upload", json={"inputs": {"data": str(secret)}}
    )
    assert as_path.status_code == 422 and "must be uploaded" in as_path.json()["error"] + str(
        as_path.json()["details"]
    )
    answer = client.post(
        f"{API_PREFIX}/executions/team/upload",
        files={"data": ("rows.csv", b"a,b\n1,2\n", "text/csv")},
    )
    assert answer.status_code == 201, answer.text
    done = wait_state(client, answer.json()["id"], "SUCCESS")
    assert done["inputs"] == {"data": "/workspace/inputs/data/rows.csv"}
    import io
    import tarfile

    [(_, archive)] = backend.seeded
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("inputs/data/rows.csv")
        assert member is not None and member.read() == b"a,b\n1,2\n"


def test_the_list_pages_newest_first_with_a_cursor_and_filters(client: TestClient) -> None:
    ids = [start(client, labels={"batch": str(i % 2)}) for i in range(5)]
    for execution_id in ids:
        wait_state(client, execution_id, "SUCCESS")
    first = client.get(f"{API_PREFIX}/executions", params={"limit": 2}).json()
    assert [e["id"] for e in first["executions"]] == ids[::-1][:2]
    assert first["executions"][0]["task_states"] == {"SUCCESS": 2}
    second = client.get(
        f"{API_PREFIX}/executions", params={"limit": 2, "after": first["next"]}
    ).json()
    assert [e["id"] for e in second["executions"]] == ids[::-1][2:4]
    odd = client.get(f"{API_PREFIX}/executions", params={"label": "batch:1"}).json()
    assert [e["id"] for e in odd["executions"]] == [ids[3], ids[1]]
    failed = client.get(f"{API_PREFIX}/executions", params={"state": "FAILED"}).json()
    assert failed == {"executions": [], "next": None}


def test_logs_after_a_cursor(client: TestClient) -> None:
    execution_id = start(client)
    wait_state(client, execution_id, "SUCCESS")
    page = client.get(f"{API_PREFIX}/executions/{execution_id}/logs", params={"limit": 1}).json()
    assert [line["line"] for line in page["lines"]] == ["hello"]
    rest = client.get(
        f"{API_PREFIX}/executions/{execution_id}/logs", params={"after": page["next"]}
    ).json()
    assert [line["line"] for line in rest["lines"]] == ["world"]
    empty = client.get(
        f"{API_PREFIX}/executions/{execution_id}/logs", params={"after": rest["next"]}
    ).json()
    assert empty == {"lines": [], "next": rest["next"]}
    last = client.get(f"{API_PREFIX}/executions/{execution_id}/logs", params={"tail": 1}).json()
    assert last == {"lines": rest["lines"], "next": rest["next"]}


def _events(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        event: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            event[key] = value
        if event:
            events.append(event)
    return events


def test_the_log_stream_ends_once_every_line_was_sent(
    client: TestClient, backend: FakeBackend
) -> None:
    backend.scripts["a"] = Script(lines=tuple(f"line {i}" for i in range(2500)), seconds=0.5)
    execution_id = start(client)
    with client.stream("GET", f"{API_PREFIX}/executions/{execution_id}/logs/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    events = _events(text)
    lines = [e for e in events if e["event"] == "line"]
    assert [json.loads(e["data"])["line"] for e in lines] == [f"line {i}" for i in range(2500)]
    assert [int(e["id"]) for e in lines] == sorted({int(e["id"]) for e in lines})
    assert events[-1]["event"] == "end" and json.loads(events[-1]["data"]) == {"state": "SUCCESS"}
    assert [e for e in events if e["event"] == "end"] == [events[-1]]
    # Resuming after a line id gives what follows it, and the end again.
    middle = lines[1000]["id"]
    with client.stream(
        "GET",
        f"{API_PREFIX}/executions/{execution_id}/logs/stream",
        headers={"Last-Event-ID": middle},
    ) as stream:
        again = _events("".join(stream.iter_text()))
    resumed = [json.loads(e["data"])["line"] for e in again if e["event"] == "line"]
    assert resumed == [f"line {i}" for i in range(1001, 2500)]
    assert again[-1]["event"] == "end"


def test_kill_restart_and_resume(client: TestClient, backend: FakeBackend) -> None:
    backend.scripts["a"] = Script(seconds=30)
    execution_id = start(client)
    wait_state(client, execution_id, "RUNNING")
    killed = client.post(f"{API_PREFIX}/executions/{execution_id}/kill")
    assert killed.status_code == 200 and killed.json()["state"] == "KILLED"
    again = client.post(f"{API_PREFIX}/executions/{execution_id}/kill")
    assert again.status_code == 409
    backend.scripts["a"] = Script()
    restarted = client.post(f"{API_PREFIX}/executions/{execution_id}/restart", json={"from": "a"})
    assert restarted.status_code == 202 and restarted.json()["id"] == execution_id
    wait_state(client, execution_id, "SUCCESS")
    conflict = client.post(f"{API_PREFIX}/executions/{execution_id}/restart", json={})
    assert conflict.status_code == 409
    assert "only a FAILED or KILLED execution can be restarted" in conflict.json()["error"]

    gate = start(client, "gate")
    wait_state(client, gate, "PAUSED")
    bad = client.post(f"{API_PREFIX}/executions/{gate}/resume", json={"inputs": {"ok": "maybe"}})
    assert bad.status_code == 422
    resumed = client.post(f"{API_PREFIX}/executions/{gate}/resume", json={"inputs": {"ok": True}})
    assert resumed.status_code == 202
    done = wait_state(client, gate, "SUCCESS")
    approve = next(r for r in done["task_runs"] if r["task_id"] == "approve")
    assert approve["outputs"] == {"ok": True}
    assert client.post(f"{API_PREFIX}/executions/{gate}/resume", json={}).status_code == 409


def test_artifacts_list_and_download(client: TestClient, service: Service, tmp_path: Path) -> None:
    execution_id = start(client)
    wait_state(client, execution_id, "SUCCESS")
    copy = tmp_path / "copied" / "report.txt"
    copy.parent.mkdir()
    copy.write_bytes(b"the report")
    runs = api.get_execution(service.store, execution_id).task_runs

    class File:
        path, size, sha256, local_path = "out/report.txt", 10, "0" * 64, str(copy)

    service.store.record_artifacts(
        execution_id=execution_id, task_run_id=runs[0].id, task_id="a", artifacts=[File()]
    )
    [found] = client.get(f"{API_PREFIX}/executions/{execution_id}/artifacts").json()["artifacts"]
    assert (found["path"], found["task_id"]) == ("out/report.txt", "a")
    download = client.get(found["url"])
    assert download.content == b"the report"
    assert 'filename="report.txt"' in download.headers["content-disposition"]
    other = start(client)
    wait_state(client, other, "SUCCESS")
    assert client.get(f"{API_PREFIX}/executions/{other}/artifacts/{found['id']}").status_code == 404


# -- webhooks and backfills --------------------------------------------------------------


def test_a_webhook_with_a_wrong_key_is_404_and_a_right_one_starts_the_flow(
    service: Service,
) -> None:
    with TestClient(create_app(service)) as anonymous:
        for path in (
            "team/hello/wrong-key-wrong-key",
            "team/nope/a-long-enough-secret-key",
            "nope/hello/a-long-enough-secret-key",
        ):
            answer = anonymous.post(f"{API_PREFIX}/webhooks/{path}", json={})
            assert answer.status_code == 404 and answer.json()["error"] == "no such webhook"
        answer = anonymous.post(
            f"{API_PREFIX}/webhooks/team/hello/a-long-enough-secret-key",
            json={"who": "ci"},
            headers={"Authorization": "Bearer not-stored", "X-Event": "push"},
        )
    assert answer.status_code == 201
    record = api.get_execution(service.store, answer.json()["id"])
    assert record.inputs["who"] == "ci" and record.labels["trigger"] == "ci"
    assert record.trigger is not None and record.trigger["headers"]["x-event"] == "push"
    assert "authorization" not in record.trigger["headers"]


def test_a_backfill_through_the_api(client: TestClient) -> None:
    body = {
        "namespace": "team",
        "flow_id": "hello",
        "start": "2024-01-01T00:00:00",
        "end": "2024-01-04T00:00:00",
    }
    dry = client.post(f"{API_PREFIX}/backfills", json={**body, "dry_run": True}).json()
    assert [t["scheduled_at"] for t in dry["times"]] == [
        "2024-01-01T02:00:00+01:00",
        "2024-01-02T02:00:00+01:00",
        "2024-01-03T02:00:00+01:00",
    ]
    ran = client.post(f"{API_PREFIX}/backfills", json=body)
    assert ran.status_code == 201
    for item in ran.json()["times"]:
        wait_state(client, item["execution_id"], "SUCCESS")
    again = client.post(f"{API_PREFIX}/backfills", json=body).json()
    assert [t["already_run"] for t in again["times"]] == [True, True, True]


def test_a_draining_server_refuses_new_work_but_answers_reads(
    client: TestClient, service: Service
) -> None:
    execution_id = start(client)
    wait_state(client, execution_id, "SUCCESS")
    service.drain(grace_s=0)
    refused = client.post(f"{API_PREFIX}/executions/team/hello", json={})
    assert refused.status_code == 503
    assert refused.json()["error"] == "the server is shutting down: it takes no new work"
    assert client.get(f"{API_PREFIX}/executions/{execution_id}").status_code == 200
    assert client.get(f"{API_PREFIX}/health").json()["status"] == "stopping"
    assert service.stopping and ExecutionState.SUCCESS.is_final
