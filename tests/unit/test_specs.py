from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner.flow import Flow
from runner.specs import (
    SCRIPT_PATH,
    TaskContext,
    build_spec,
    container_command,
    container_name,
    execution_labels,
    label_value,
    parse_mount,
)


def _flow(**task: object) -> Flow:
    return Flow.model_validate(
        {
            "id": "f",
            "env": {"A": "flow", "B": "flow"},
            "tasks": [{"id": "t", "image": "img", **task}],
        }
    )


def test_script_is_delivered_as_a_file_and_run_by_the_interpreter() -> None:
    task = _flow(script="print(1)\n", interpreter="python3 -u").tasks[0]
    command, files = container_command(task)
    assert command == ("python3", "-u", SCRIPT_PATH)
    assert files[0].path == SCRIPT_PATH and files[0].content == b"print(1)\n"


def test_string_command_runs_in_a_shell_and_list_command_as_is() -> None:
    assert container_command(_flow(command="echo $HOME").tasks[0])[0] == (
        "/bin/sh",
        "-c",
        "echo $HOME",
    )
    assert container_command(_flow(command=["echo", "a b"]).tasks[0])[0] == ("echo", "a b")
    assert container_command(_flow().tasks[0]) == (None, ())


@pytest.mark.parametrize(
    ("spec", "kind", "source", "target", "ro"),
    [
        ("cache:/cache", "volume", "cache", "/cache", False),
        ("/srv/data:/data:ro", "bind", "/srv/data", "/data", True),
        ("C:/Users/me/Data Engg:/data:ro", "bind", "C:/Users/me/Data Engg", "/data", True),
        ("C:\\Users\\me\\Data Engg:/data", "bind", "C:\\Users\\me\\Data Engg", "/data", False),
    ],
)
def test_mounts(spec: str, kind: str, source: str, target: str, ro: bool) -> None:
    mount = parse_mount(spec, Path("/flows"))
    assert (mount.kind, mount.source, mount.target, mount.read_only) == (kind, source, target, ro)


def test_relative_bind_is_resolved_against_the_flow_folder(tmp_path: Path) -> None:
    mount = parse_mount("./data:/data", tmp_path / "flows")
    assert mount.kind == "bind" and mount.source == str((tmp_path / "flows" / "data").resolve())


def test_spec_env_labels_and_workspace() -> None:
    flow = _flow(env={"B": "task", "C": "task"}, user="1000:1000")
    ctx = TaskContext(execution_id="e" * 32, flow=flow, base_dir=Path("/flows"), workspace="ws")
    spec = build_spec(ctx, flow.tasks[0], attempt=2, image="img", task_run_id=17)
    assert spec.env["A"] == "flow" and spec.env["B"] == "task" and spec.env["C"] == "task"
    assert spec.env["RUNNER_ATTEMPT"] == "2" and spec.env["RUNNER_TASK_ID"] == "t"
    assert (
        spec.env["RUNNER_EXECUTION_ID"] == "e" * 32 and spec.env["RUNNER_WORKSPACE"] == "/workspace"
    )
    assert spec.labels["io.runner.execution"] == "e" * 32
    assert spec.labels["io.runner.task-run"] == "17" and spec.labels["io.runner.attempt"] == "2"
    assert spec.workspace == "ws" and spec.user == "1000:1000" and spec.working_dir == "/workspace"


def test_container_names_are_docker_safe_and_unique_by_task_run() -> None:
    assert container_name("abcdef0123456789", "load.x", 1) == "runner-abcdef012345-load.x-1"
    # Run names that differ only in unsafe characters stay apart through the run's id.
    a = container_name("abcdef0123456789", "t[path=a/b]", 7)
    b = container_name("abcdef0123456789", "t[path=a_b]", 8)
    assert a != b and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]+", a)
    long = container_name("e" * 32, "x" * 300, 123456)
    assert len(long) < 80 and long.endswith("-123456")


LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "process[year=2019,month=1]",
        "namespace.flow",
        "a" * 63,
        "a" * 64,
        "-leading",
        "trailing.",
        "ünïcode",
        "",
    ],
)
def test_label_values_fit_every_backend(text: str) -> None:
    value = label_value(text)
    assert LABEL.fullmatch(value), value
    if LABEL.fullmatch(text):
        assert value == text  # readable when it can be
    assert label_value(text) == value  # stable: recovery finds containers by it


def test_execution_labels_are_safe_for_long_flow_ids() -> None:
    flow = Flow.model_validate(
        {"id": "f" * 150, "namespace": "n" * 40, "tasks": [{"id": "t", "image": "i"}]}
    )
    labels = execution_labels("e" * 32, flow)
    assert all(LABEL.fullmatch(value) for value in labels.values())
