"""The Swarm backend's pure pieces, without a swarm: placement constraints, service names,
log frames and how a non-follow read is lined up with what a follow already gave, the
poller's verdicts on tasks and nodes, and the `workspace: false` task field. What needs a
swarm is in tests/integration/test_swarm_backend.py."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from runner.backends.swarm import (
    CATCH_UP_MARGIN_NS,
    _Followed,
    _frame_ns,
    _LogsUnavailable,
    _Poller,
    _ReadLog,
    _split_frames,
    parse_constraints,
    service_name,
)
from runner.errors import FlowError
from runner.loader import parse_flow
from runner.settings import SettingError, registry, swarm_constraints, swarm_pending_seconds
from runner.specs import TaskContext, build_spec

NODE = {
    "ID": "n1abc",
    "Spec": {"Role": "worker", "Availability": "active", "Labels": {"pool": "ETL"}},
    "Description": {
        "Hostname": "worker1",
        "Platform": {"OS": "linux", "Architecture": "x86_64"},
        "Engine": {"Labels": {"disk": "ssd"}},
    },
    "Status": {"State": "ready", "Addr": "10.0.0.2"},
}


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        ("node.hostname==worker1", True),
        ("node.hostname==WORKER1", True),  # Swarm compares without case
        ("node.hostname!=worker1", False),
        ("node.role==manager", False),
        ("node.role != manager", True),
        ("node.id==n1abc", True),
        ("node.labels.pool==etl", True),
        ("node.labels.missing==x", False),
        ("node.labels.missing!=x", True),  # a node without the label is not equal to it
        ("engine.labels.disk==ssd", True),
        ("node.platform.os==linux", True),
        ("node.platform.arch==arm64", False),
    ],
)
def test_constraints_are_evaluated_as_swarm_does(constraint: str, expected: bool) -> None:
    (parsed,) = parse_constraints([constraint])
    assert parsed.matches(NODE) is expected


@pytest.mark.parametrize(
    "bad", ["node.colour==blue", "pool==etl", "node.role=manager", "node.role=="]
)
def test_a_constraint_the_runner_cannot_evaluate_is_a_setting_error(bad: str) -> None:
    with pytest.raises(SettingError, match=r"RUNNER_SWARM_CONSTRAINTS: .* node\.labels\.pool==etl"):
        parse_constraints([bad])


def test_swarm_settings_are_read_and_checked() -> None:
    assert registry({"RUNNER_REGISTRY": "http://127.0.0.1:5000/"}) == "127.0.0.1:5000"
    assert registry({}) == ""
    with pytest.raises(SettingError, match="RUNNER_REGISTRY"):
        registry({"RUNNER_REGISTRY": "my registry"})
    assert swarm_constraints(
        {"RUNNER_SWARM_CONSTRAINTS": " node.labels.pool==etl , node.role!=manager,"}
    ) == ("node.labels.pool==etl", "node.role!=manager")
    with pytest.raises(SettingError, match="RUNNER_SWARM_PENDING_SECONDS"):
        swarm_pending_seconds({"RUNNER_SWARM_PENDING_SECONDS": "0"})


@pytest.mark.parametrize(
    ("container", "service"),
    [
        ("runner-0123456789ab-load-7", "runner-0123456789ab-load-7"),
        ("runner-0123456789ab-load_month_1.csv-12", "runner-0123456789ab-load-month-1-csv-12"),
        (
            "runner-0123456789ab-" + "x" * 40 + "-123456789",
            "runner-0123456789ab-" + "x" * 33 + "-123456789",
        ),
    ],
)
def test_service_names_are_valid_and_keep_their_unique_end(container: str, service: str) -> None:
    assert service_name(container) == service
    assert len(service) <= 63


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


class _Body:
    """A response body handing out its bytes in pieces of `size` (headers get split)."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data, self._size = data, size

    def read1(self, size: int, /) -> bytes:
        piece, self._data = self._data[: self._size], self._data[self._size :]
        return piece


def test_frames_are_split_whatever_the_chunking_and_stdin_frames_dropped() -> None:
    data = _frame(1, b"t one\n") + _frame(0, b"ignored") + _frame(2, b"t " + b"x" * 20_000)
    for size in (1, 3, 7, 8, 9, 1000, 100_000):
        assert list(_split_frames(_Body(data, size))) == [
            (1, b"t one\n"),
            (2, b"t " + b"x" * 20_000),
        ]


def test_a_system_error_frame_is_raised_with_the_managers_words() -> None:
    data = _frame(1, b"t ok\n") + _frame(3, b"Error grabbing logs: node x is not available\n")
    frames = _split_frames(_Body(data, 5))
    assert next(frames) == (1, b"t ok\n")
    with pytest.raises(_LogsUnavailable, match="node x is not available"):
        next(frames)


def test_frame_times_keep_their_nanoseconds() -> None:
    assert _frame_ns(b"1970-01-01T00:00:01.000000007Z hi") == 1_000_000_007
    assert _frame_ns(b"2026-12-03T15:05:00.280263969Z x") % 1_000_000_000 == 280_263_969
    assert _frame_ns(b"no-time at all") == 0


def _at(ns: int, text: str, stream: int = 1) -> tuple[int, bytes]:
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"
    return stream, f"{stamp} {text}".encode()


def test_a_read_after_the_follow_is_lined_up_by_counting_the_window() -> None:
    """The follow gave lines 0-5 of a log whose stdout and stderr times disagree by a
    little; the read since (last - margin) returns those in the window again, then the
    new ones: only the new ones are kept."""
    base = 1_800_000_000 * 1_000_000_000
    log = [
        _at(base, "a"),
        _at(base + 10, "b", 2),
        _at(base + 5, "c"),  # stored after a later-timed line of the other stream
        _at(base + 2 * CATCH_UP_MARGIN_NS, "d"),
        _at(base + 2 * CATCH_UP_MARGIN_NS + 1, "e"),
        _at(base + 2 * CATCH_UP_MARGIN_NS + 1, "e"),  # the same line twice, legitimately
        _at(base + 3 * CATCH_UP_MARGIN_NS, "f"),
    ]
    read = _ReadLog()
    for frame in log[:6]:
        read.add(frame)
    since = read.since()
    assert since is not None
    returned = [f for f in log if _frame_ns(f[1]) >= since]
    window = read.count_since(since)
    assert read.aligned(returned, window)
    assert returned[window:] == [log[6]]


def test_a_read_that_does_not_line_up_is_noticed() -> None:
    read = _ReadLog()
    read.add(_at(5_000_000_000, "mine"))
    since = read.since()
    assert since is not None
    assert not read.aligned([_at(5_000_000_000, "other")], read.count_since(since))
    assert not read.aligned([], 1)
    assert _ReadLog().aligned([], 0)


def _poller(pending_s: float = 60.0) -> _Poller:
    return _Poller(None, "tcp://manager:2375", pending_s, structlog.get_logger())  # type: ignore[arg-type]  # never called here


def _task(state: str, node: str | None = None, **status: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "ID": "t1",
        "ServiceID": "s1",
        "CreatedAt": "2026-01-01T00:00:00Z",
        "DesiredState": status.pop("desired", "running"),
        "Status": {"State": state, **status},
    }
    if node:
        task["NodeID"] = node
    return task


def _node(state: str, hostname: str = "worker1") -> dict[str, Any]:
    return {
        "ID": "n1",
        "Description": {"Hostname": hostname},
        "Status": {"State": state, "Message": "heartbeat failure"},
    }


def _seen(
    tasks: list[dict[str, Any]],
    nodes: dict[str, dict[str, Any]],
    *,
    pinned: str | None = None,
    age: float = 0.0,
    pending_s: float = 60.0,
) -> _Followed:
    followed = _Followed("s1", (("service", "s1"),), time.monotonic() - age, pinned)
    _poller(pending_s)._update(followed, tasks, nodes, time.monotonic())
    return followed


def test_a_running_task_on_a_ready_node_goes_on() -> None:
    assert not _seen([_task("running", "n1")], {"n1": _node("ready")}).done.is_set()


def test_a_final_state_ends_the_task() -> None:
    followed = _seen([_task("failed", "n1", Err="task: non-zero exit (3)")], {"n1": _node("ready")})
    assert (followed.ended, followed.task_id) == ("final", "t1")


def test_a_task_whose_node_is_down_is_lost_though_it_says_running() -> None:
    followed = _seen([_task("running", "n1")], {"n1": _node("down")})
    assert followed.ended == "lost"
    assert followed.reason == "node worker1 down (heartbeat failure)"


def test_a_pending_task_pinned_to_a_down_node_ends_at_once() -> None:
    followed = _seen([_task("pending", Err="no suitable node")], {"n1": _node("down")}, pinned="n1")
    assert followed.ended == "unplaceable" and "worker1" in followed.reason


def test_a_task_nobody_can_take_fails_after_the_pending_deadline() -> None:
    waiting = [_task("pending", Err="no suitable node (scheduling constraints not satisfied)")]
    assert not _seen(waiting, {}, age=5, pending_s=30).done.is_set()
    late = _seen(waiting, {}, age=31, pending_s=30)
    assert late.ended == "unplaceable"
    assert "no node took it in 30s (RUNNER_SWARM_PENDING_SECONDS)" in late.reason
    assert "scheduling constraints not satisfied" in late.reason


def test_a_task_stopped_before_any_node_took_it_is_final() -> None:
    followed = _seen([_task("pending", desired="shutdown")], {})
    assert followed.ended == "final"


def test_the_first_task_is_followed_not_the_replacement_a_stop_asks_for() -> None:
    first = _task("shutdown", "n1")
    replacement = {**_task("pending"), "ID": "t2", "CreatedAt": "2026-01-01T00:00:05Z"}
    followed = _seen([replacement, first], {"n1": _node("ready")})
    assert (followed.task_id, followed.ended) == ("t1", "final")


def test_workspace_false_gives_a_spec_without_workspace(tmp_path: Path) -> None:
    loaded = parse_flow(
        "id: w\ntasks:\n  - {id: free, image: x, workspace: false, command: 'true'}\n"
        "  - {id: bound, image: x, command: 'true'}\n",
        path=str(tmp_path / "flow.yml"),
    )
    ctx = TaskContext(
        execution_id="e" * 32, flow=loaded.flow, base_dir=tmp_path, workspace="runner-ws-e"
    )
    free, bound = loaded.flow.tasks
    assert build_spec(ctx, free, 1, "x", task_run_id=1).workspace is None
    assert build_spec(ctx, bound, 1, "x", task_run_id=2).workspace == "runner-ws-e"


def test_workspace_false_and_artifacts_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match=r"flow.yml:3.*artifacts.*workspace: false"):
        parse_flow(
            "id: w\ntasks:\n  - {id: t, image: x, workspace: false, artifacts: [out/*]}\n",
            path=str(tmp_path / "flow.yml"),
        )
    with pytest.raises(FlowError, match="workspace"):
        parse_flow(
            "id: w\ntasks:\n  - {id: t, image: x, workspace: 'no'}\n",
            path=str(tmp_path / "flow.yml"),
        )
