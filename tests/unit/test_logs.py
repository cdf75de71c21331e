"""`task_log` events take a short path in runner.logs; it must write what the chain writes."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from runner import log_output, logs

LINES = ["plain", 'quo"te \\ back', "ünïcødé ✓", "", "\x00\x1b[31mred\ttab", "x" * 300]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    log_output._shortcut = None


def _emit(fmt: logs.LogFormat, *, shortcut: bool, colors: bool | None = None) -> str:
    out = io.StringIO()
    logs.configure(fmt, stream=out, colors=colors)
    if not shortcut:
        log_output._shortcut = None  # every event through structlog's chain
    log = logs.get_logger(execution_id="e" * 32, task_id="talk", stream="stdout")
    for line in LINES:
        log.info(logs.TASK_LOG, line=line)
    log.info("task_started", image="debian")
    logs.get_logger().info(logs.TASK_LOG, line="no context")
    logs.get_logger(line="bound").info(logs.TASK_LOG, line="clashing key")
    log.info(logs.TASK_LOG, line=42)  # not a string
    structlog.contextvars.bind_contextvars(request="r1")
    log.info(logs.TASK_LOG, line="with a context variable")
    structlog.contextvars.clear_contextvars()
    log.info(logs.TASK_LOG, line="after clearing it")
    return re.sub(r'"timestamp": "[^"]*"', '"timestamp": "T"', out.getvalue())


@pytest.mark.parametrize(("fmt", "colors"), [("json", None), ("console", False), ("console", True)])
def test_the_short_path_writes_what_the_chain_writes(
    fmt: logs.LogFormat, colors: bool | None
) -> None:
    fast = _emit(fmt, shortcut=True, colors=colors)
    assert fast == _emit(fmt, shortcut=False, colors=colors)
    assert len(fast.splitlines()) == len(LINES) + 6


def test_json_task_lines_keep_every_field() -> None:
    events = [json.loads(line) for line in _emit("json", shortcut=True).splitlines()]
    assert events[0] == {
        "execution_id": "e" * 32,
        "task_id": "talk",
        "stream": "stdout",
        "line": "plain",
        "event": "task_log",
        "level": "info",
        "timestamp": "T",
    }
    assert [e["line"] for e in events[: len(LINES)]] == LINES
    assert events[-2]["request"] == "r1"
    assert "request" not in events[-1]


def test_capture_logs_still_sees_task_lines() -> None:
    logs.configure("json", stream=io.StringIO())
    log = logs.get_logger(task_id="talk", stream="stdout")
    with capture_logs() as captured:
        log.info(logs.TASK_LOG, line="hello")
    assert captured == [
        {
            "task_id": "talk",
            "stream": "stdout",
            "line": "hello",
            "event": "task_log",
            "log_level": "info",
        }
    ]


@pytest.mark.parametrize(("fmt", "colors"), [("json", None), ("console", False), ("console", True)])
@pytest.mark.parametrize("shortcut", [True, False])
def test_echoed_lines_are_what_one_event_a_line_writes(
    fmt: logs.LogFormat, colors: bool | None, shortcut: bool
) -> None:
    def emit(batched: bool) -> str:
        out = io.StringIO()
        logs.configure(fmt, stream=out, colors=colors)
        if not shortcut:
            log_output._shortcut = None
        log = logs.get_logger(execution_id="e" * 32, task_id="talk", stream="stderr")
        if batched:
            logs.echo_task_lines(log, LINES)
            logs.echo_task_lines(log, [])
        else:
            for line in LINES:
                log.info(logs.TASK_LOG, line=line)
        structlog.contextvars.bind_contextvars(request="r1")  # then event by event
        if batched:
            logs.echo_task_lines(log, ["with a context variable"])
        else:
            log.info(logs.TASK_LOG, line="with a context variable")
        structlog.contextvars.clear_contextvars()
        return re.sub(r'"timestamp": "[^"]*"', '"timestamp": "T"', out.getvalue())

    batched = emit(True)
    assert batched == emit(False)
    assert len(batched.splitlines()) == len(LINES) + 1


def test_echoed_lines_are_captured_and_dropped_when_not_wanted() -> None:
    logs.configure("json", stream=io.StringIO())
    log = logs.get_logger(task_id="talk", stream="stdout")
    with capture_logs() as captured:
        logs.echo_task_lines(log, ["a", "b"])
    assert [e["line"] for e in captured] == ["a", "b"]
    out = io.StringIO()
    logs.configure("json", stream=out, task_output=False)
    logs.echo_task_lines(logs.get_logger(task_id="t"), ["not shown"])
    logs.configure("json", stream=out, quiet=True)
    logs.echo_task_lines(logs.get_logger(task_id="t"), ["not shown"])
    assert out.getvalue() == ""
