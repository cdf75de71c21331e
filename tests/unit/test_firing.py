"""Triggers firing, with a fake clock: schedules (DST as Debian's cron, recover_missed after
a pause, no overlap), flow triggers, webhooks, stop_after, backfills, and two servers on
one store firing each time once. Executions run on the scripted FakeBackend through a
real `api.Worker`; the store is the in-memory one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from runner import api
from runner.backends.fake import FakeBackend, Script
from runner.errors import ConflictError, NotFoundError, UsageError
from runner.execution import ExecutionState
from runner.loader import LoadedFlow, parse_flow
from runner.store import ExecutionFilter
from runner.store.testing import InMemoryStore

PARIS = ZoneInfo("Europe/Paris")


def at(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None
    return parsed


@pytest.fixture
def store() -> Iterator[InMemoryStore]:
    with InMemoryStore() as opened:
        yield opened


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def worker(store: InMemoryStore, backend: FakeBackend) -> Iterator[api.Worker]:
    made = api.Worker(store, backend=backend, max_running=4)
    yield made
    made.shutdown()


def flow(tmp_path: Path, text: str) -> LoadedFlow:
    return parse_flow(text, path=tmp_path / "flow.yml")


def triggered(store: InMemoryStore, trigger_id: str | None = None) -> list[tuple[str, str]]:
    """(scheduled_at label, state) of the flow's executions, oldest first."""
    page = store.list_executions(ExecutionFilter(), limit=1000)
    found = [
        (str(r.labels.get("scheduled_at", "")), r.state.value)
        for r in reversed(page.items)
        if trigger_id is None or r.labels.get("trigger") == trigger_id
    ]
    return found


def settle(worker: api.Worker, started: list[str]) -> None:
    for execution_id in started:
        worker.wait(execution_id, timeout=30)


class Ticker:
    """A server's trigger loop, ticking at chosen times."""

    def __init__(self, store: InMemoryStore, worker: api.Worker, *flows: LoadedFlow) -> None:
        self.store, self.worker, self.flows = store, worker, flows
        self.seen: set[str] = set()

    def __call__(self, now: datetime, *, wait: bool = True) -> list[str]:
        started = api.fire_due(self.store, self.worker, self.flows, now=now, seen=self.seen)
        if wait:
            settle(self.worker, started)
        return started


HOURLY = """\
id: f
namespace: team
inputs:
  - {id: month, type: string}
triggers:
  - id: nightly
    type: schedule
    cron: "30 2 * * *"
    timezone: Europe/Paris
    inputs: {month: "{{ trigger.date | date('%m') }}"}
tasks:
  - {id: a, image: i, command: "echo {{ trigger.date }} {{ inputs.month }}"}
"""


def test_a_schedule_fires_on_time_with_its_date_labels_and_inputs(
    tmp_path: Path, store: InMemoryStore, worker: api.Worker, backend: FakeBackend
) -> None:
    loaded = flow(tmp_path, HOURLY)
    tick = Ticker(store, worker, loaded)
    assert tick(at("2024-06-01T12:00:00+00:00")) == []  # first seen: nothing owed
    assert tick(at("2024-06-02T00:29:59+00:00")) == []
    [execution_id] = tick(at("2024-06-02T00:30:00.200000+00:00"))
    record = api.get_execution(store, execution_id)
    assert record.labels["trigger"] == "nightly"
    assert record.labels["scheduled_at"] == "2024-06-02T00:30:00Z"
    assert record.inputs == {"month": "06"}
    [spec] = backend.started
    assert spec.command is not None and "2024-06-02T02:30:00+02:00 06" in " ".join(spec.command)
    assert tick(at("2024-06-02T00:30:01+00:00")) == []  # fired once


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # Spring forward: 02:30 does not exist on 31 March; it runs once, at 03:00 CEST.
        (
            "2024-03-29T12:00:00+01:00",
            "2024-04-01T12:00:00+02:00",
            ["2024-03-30T01:30:00Z", "2024-03-31T01:00:00Z", "2024-04-01T00:30:00Z"],
        ),
        # Fall back: 02:30 happens twice on 27 October; it runs once, in the first pass.
        (
            "2024-10-25T12:00:00+02:00",
            "2024-10-28T12:00:00+01:00",
            ["2024-10-26T00:30:00Z", "2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"],
        ),
    ],
)
def test_dst_in_paris_with_a_fake_clock_ticking_every_minute(
    tmp_path: Path,
    store: InMemoryStore,
    worker: api.Worker,
    start: str,
    end: str,
    expected: list[str],
) -> None:
    loaded = flow(tmp_path, HOURLY)
    tick = Ticker(store, worker, loaded)
    now, until = at(start), at(end)
    while now <= until:
        tick(now)
        now += timedelta(minutes=1)
    assert [label for label, _ in triggered(store)] == expected


PAUSABLE = """\
id: f
namespace: team
triggers:
  - {{id: hourly, type: schedule, cron: "0 * * * *", recover_missed: {recover}}}
tasks:
  - {{id: a, image: i}}
"""


@pytest.mark.parametrize(
    ("recover", "expected"),
    [
        ("all", ["11:00", "12:00", "13:00"]),
        ("last", ["13:00"]),
        ("none", []),
    ],
)
def test_unpause_follows_recover_missed(
    tmp_path: Path, store: InMemoryStore, worker: api.Worker, recover: str, expected: list[str]
) -> None:
    loaded = flow(tmp_path, PAUSABLE.format(recover=recover))
    tick = Ticker(store, worker, loaded)
    tick(at("2024-06-01T09:30:00+00:00"))
    assert len(tick(at("2024-06-01T09:59:59+00:00") + timedelta(seconds=1))) == 1  # 10:00
    api.pause_flow(store, "team", "f", at=at("2024-06-01T10:05:00+00:00"))
    for hour in (11, 12, 13):  # paused: nothing fires
        assert tick(at(f"2024-06-01T{hour}:00:00+00:00")) == []
    [described] = api.describe_recovery(store, loaded, now=at("2024-06-01T13:20:00+00:00"))
    assert described.startswith(f"hourly (recover_missed: {recover}): ")
    api.unpause_flow(store, "team", "f", at=at("2024-06-01T13:20:00+00:00"))
    for second in range(4):  # missed times: as recover_missed says (one after the other)
        tick(at("2024-06-01T13:20:00+00:00") + timedelta(seconds=second))
    fired = [label[11:16] for label, _ in triggered(store)]
    assert fired == ["10:00", *expected]
    # And the schedule goes on.
    tick(at("2024-06-01T14:00:00+00:00"))
    assert triggered(store)[-1][0] == "2024-06-01T14:00:00Z"


def test_a_schedule_never_overlaps_its_running_execution_without_a_concurrency_limit(
    tmp_path: Path, store: InMemoryStore, worker: api.Worker, backend: FakeBackend
) -> None:
    backend.scripts["a"] = Script(seconds=1.5)
    text = """\
id: f
triggers: [{id: s, type: schedule, cron: "* * * * * *"}]
tasks: [{id: a, image: i}]
"""
    loaded = flow(tmp_path, text)
    tick = Ticker(store, worker, loaded)
    base = at("2024-06-01T00:00:00+00:00")
    tick(base)
    [first] = tick(base + timedelta(seconds=1), wait=False)
    # It runs for 1.5 s: the next seconds wait for it, then the last missed one runs once.
    assert tick(base + timedelta(seconds=2), wait=False) == []
    assert tick(base + timedelta(seconds=3), wait=False) == []
    worker.wait(first, timeout=30)
    [second] = tick(base + timedelta(seconds=4))
    assert api.get_execution(store, second).labels["scheduled_at"] == "2024-06-01T00:00:04Z"
    assert len(triggered(store)) == 2


def test_with_a_concurrency_limit_the_limit_decides(
    tmp_path: Path, store: InMemoryStore, worker: api.Worker, backend: FakeBackend
) -> None:
    backend.scripts["a"] = Script(seconds=1.0)
    text = """\
id: f
concurrency: {limit: 1, behavior: cancel}
triggers: [{id: s, type: schedule, cron: "* * * * * *"}]
tasks: [{id: a, image: i}]
"""
    loaded = flow(tmp_path, text)
    tick = Ticker(store, worker, loaded)
    base = at("2024-06-01T00:00:00+00:00")
    tick(base)
    tick(base + timedelta(seconds=1), wait=False)
    time.sleep(0.3)
    tick(base + timedelta(seconds=2), wait=False)
    deadline = time.monotonic() + 30
    while worker.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(state for _, state in triggered(store)) == ["CANCELLED", "SUCCESS"]


def test_stop_after_disables_the_trigger_until_unpause(
    tmp_path: Path, store: InMemoryStore, worker: api.Worker, backend: FakeBackend
) -> None:
    backend.scripts["a"] = Script(exit_code=1)
    text = """\
id: f
triggers: [{id: s, type: schedule, cron: "* * * * *", stop_after: [FAILED]}]
tasks: [{id: a, image: i}]
"""
    loaded = flow(tmp_path, text)
    tick = Ticker(store, worker, loaded)
    base = at("2024-06-01T00:00:00+00:00")
    tick(base)
    assert len(tick(base + timedelta(minutes=1))) == 1
    assert tick(base + timedelta(minutes=2)) == []
    assert tick(base + timedelta(minutes=3)) == []
    state = api.flow_states(store)[("default", "f")].triggers["s"]
    assert state.disabled_reason is not None and "ended FAILED" in state.disabled_reason
    api.unpause_flow(store, "default", "f")
    assert len(tick(base + timedelta(minutes=4))) == 1


def test_two_servers_on_one_store_fire_each_time_once(
    tmp_path: Path, store: InMemoryStore, backend: FakeBackend
) -> None:
    loaded = flow(tmp_path, HOURLY.replace('"30 2 * * *"', '"* * * * * *"'))
    one, two = (api.Worker(store, backend=backend) for _ in range(2))
    try:
        ticks = [Ticker(store, w, loaded) for w in (one, two)]
        base = at("2024-06-01T00:00:00+00:00")
        for tick in ticks:
            tick(base)
        for second in range(1, 21):
            now = base + timedelta(seconds=second, milliseconds=100)
            for tick in ticks if second % 2 else reversed(ticks):
                tick(now)
        labels = [label for label, _ in triggered(store)]
        assert len(labels) == len(set(labels)) == 20
    finally:
        one.shutdown()
        two.shutdown()


def test_a_flow_trigger_starts_once_per_upstream_execution_with_its_outputs(
    tmp_path: Path, store: InMemoryStore, worker: api.Worker, backend: FakeBackend
) -> None:
    backend.scripts["load"] = Script(lines=('::{"outputs": {"rows": 42}}::',))
    upstream = parse_flow(
        "id: up\nnamespace: z\ntasks: [{id: load, image: i}]\n", path=tmp_path / "up.yml"
    )
    downstream = parse_flow(
        """\
id: down
namespace: z
inputs: [{id: rows, type: int}]
triggers:
  - id: after
    type: flow
    upstream: {namespace: z, flow_id: up}
    inputs: {rows: "{{ trigger.outputs.load.rows }}"}
tasks: [{id: use, image: i}]
""",
        path=tmp_path / "down.yml",
    )
    tick = Ticker(store, worker, upstream, downstream)
    tick(datetime.now(UTC))  # first seen
    ok = worker.submit(upstream)
    worker.wait(ok)
    started = tick(datetime.now(UTC))
    assert len(started) == 1
    record = api.get_execution(store, started[0])
    assert record.inputs == {"rows": 42} and record.labels["trigger"] == "after"
    assert tick(datetime.now(UTC)) == []  # once
    assert Ticker(store, worker, upstream, downstream)(datetime.now(UTC)) == []  # another server


WEBHOOK = """\
id: hooked
namespace: team
inputs: [{id: ref, type: string}]
triggers:
  - id: ci
    type: webhook
    key: a-long-enough-secret-key
    inputs: {ref: "{{ trigger.body.ref }}"}
tasks: [{id: a, image: i}]
"""


def test_a_webhook_needs_its_key_and_passes_its_body(
    tmp_path: Path, store: InMemoryStore, worker: api.Worker
) -> None:
    loaded = flow(tmp_path, WEBHOOK)
    with pytest.raises(NotFoundError, match="no such webhook"):
        api.fire_webhook(store, worker, loaded, "wrong-key-wrong-key", body={}, headers={})
    execution_id = api.fire_webhook(
        store, worker, loaded, "a-long-enough-secret-key", body={"ref": "main"}, headers={}
    )
    record = api.get_execution(store, execution_id)
    assert record.inputs == {"ref": "main"} and record.labels == {"trigger": "ci"}
    api.pause_flow(store, "team", "hooked")
    with pytest.raises(ConflictError, match="paused"):
        api.fire_webhook(
            store, worker, loaded, "a-long-enough-secret-key", body={"ref": "x"}, headers={}
        )


DAILY = """\
id: d
triggers: [{id: daily, type: schedule, cron: "0 3 * * *", timezone: Europe/Paris}]
tasks: [{id: a, image: i, command: "echo {{ trigger.date }} {{ trigger.backfill }}"}]
"""


def test_a_backfill_runs_each_time_once_oldest_first(
    tmp_path: Path, store: InMemoryStore, worker: api.Worker, backend: FakeBackend
) -> None:
    loaded = flow(tmp_path, DAILY)
    dry = api.backfill(
        store, loaded, start=datetime(2019, 1, 1), end=datetime(2019, 1, 8), dry_run=True
    )
    assert [t.scheduled_at.isoformat() for t in dry.times][:2] == [
        "2019-01-01T03:00:00+01:00",
        "2019-01-02T03:00:00+01:00",
    ]
    assert len(dry.times) == 7 and store.list_executions(limit=10).items == ()
    first = api.backfill(
        store, loaded, start=datetime(2019, 1, 1), end=datetime(2019, 1, 4), worker=worker
    )
    settle(worker, first.started)
    assert len(first.started) == 3
    again = api.backfill(
        store, loaded, start=datetime(2019, 1, 1), end=datetime(2019, 1, 8), worker=worker
    )
    settle(worker, again.started)
    assert [t.already_run for t in again.times] == [True] * 3 + [False] * 4
    assert [t.execution_id for t in again.times[:3]] == first.started
    labels = [label for label, _ in triggered(store)]
    assert labels == sorted(labels) and len(labels) == 7
    commands = [" ".join(spec.command or ()) for spec in backend.started]
    assert any("2019-01-01T03:00:00+01:00 true" in command for command in commands)


def test_a_backfill_names_what_is_wrong(tmp_path: Path, store: InMemoryStore) -> None:
    loaded = flow(tmp_path, DAILY)
    with pytest.raises(UsageError, match="must come after the start"):
        api.backfill(
            store, loaded, start=datetime(2019, 2, 1), end=datetime(2019, 1, 1), dry_run=True
        )
    with pytest.raises(UsageError, match=r"no schedule trigger 'dayly' \(did you mean 'daily'\?\)"):
        api.backfill(
            store,
            loaded,
            start=datetime(2019, 1, 1),
            end=datetime(2019, 2, 1),
            trigger="dayly",
            dry_run=True,
        )
    every_second = flow(tmp_path, DAILY.replace('"0 3 * * *"', '"* * * * * *"'))
    with pytest.raises(UsageError, match="more than 10000 times"):
        api.backfill(
            store, every_second, start=datetime(2019, 1, 1), end=datetime(2019, 1, 2), dry_run=True
        )


def test_a_schedule_and_a_backfill_share_the_times_they_ran(
    tmp_path: Path, store: InMemoryStore, worker: api.Worker
) -> None:
    loaded = flow(tmp_path, DAILY)
    tick = Ticker(store, worker, loaded)
    tick(at("2024-06-01T00:00:00+00:00"))
    [fired] = tick(at("2024-06-02T01:00:00+00:00"))
    done = api.backfill(
        store,
        loaded,
        start=datetime(2024, 6, 1),
        end=datetime(2024, 6, 3),
        worker=worker,
    )
    settle(worker, done.started)
    assert [(t.scheduled_at.day, t.already_run) for t in done.times] == [(1, False), (2, True)]
    assert done.times[1].execution_id == fired
    assert api.get_execution(store, fired).state is ExecutionState.SUCCESS
