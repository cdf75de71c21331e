"""What a task becomes in a container: pure translation of a Task into a ContainerSpec.

No I/O: bind paths are resolved as strings against the flow's folder, never checked here,
because with a remote daemon they name the daemon's disk, not ours.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from runner import settings
from runner.errors import PolicyError
from runner.execution import (
    LABEL_ATTEMPT,
    LABEL_EXECUTION,
    LABEL_FLOW,
    LABEL_MANAGED,
    LABEL_TASK_RUN,
    WORKSPACE_PATH,
    BuildImage,
    ContainerSpec,
    FileToCopy,
    ImageSource,
    Mount,
    PullImage,
)
from runner.flow import NAMED_VOLUME_RE, VOLUME_RE, Flow, Task, check_volume
from runner.messages import shorten
from runner.policy import HostPolicy, check_environment_size
from runner.templating import (
    TemplateContext,
    TemplateError,
    render,
    render_value,
    shared_budget,
)

SCRIPT_PATH = "/.runner/script"
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_LABEL_SAFE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_NAME_PART_MAX = 40


@dataclass(frozen=True)
class TaskContext:
    """What one task attempt knows about the execution it belongs to."""

    execution_id: str
    flow: Flow
    base_dir: Path
    workspace: str
    revision: str = ""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)  # runner env names templates may read
    artifacts_dir: Path = Path(".runner/artifacts")
    templates: TemplateContext = field(default_factory=TemplateContext)  # execution-level
    crlf_files: tuple[str, ...] = ()  # scripts of `files:` with CRLF endings (loader)
    # what the operator allows rendered volumes, networks and envs
    host_policy: HostPolicy = field(default_factory=HostPolicy.from_env)
    max_env_bytes: int = field(default_factory=settings.max_env_bytes)


def label_value(text: str) -> str:
    """`text` as a label value every backend accepts (Kubernetes is the strictest: at most
    63 characters of `[A-Za-z0-9._-]`, starting and ending with a letter or digit); a
    text that does not fit becomes a hash of it. The readable names are in the store."""
    if _LABEL_SAFE.fullmatch(text):
        return text
    return "h" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def execution_labels(execution_id: str, flow: Flow) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_EXECUTION: label_value(execution_id),
        LABEL_FLOW: label_value(flow.full_id),
    }


def image_source(task: Task, base_dir: Path) -> ImageSource:
    if task.build is not None:
        return BuildImage(context=(base_dir / task.build).resolve())
    assert task.image is not None  # the model guarantees one of the two
    return PullImage(reference=task.image, policy=task.pull.value)


def container_command(task: Task) -> tuple[tuple[str, ...] | None, tuple[FileToCopy, ...]]:
    """The argv to run and the files to deliver first (the inline script, if any)."""
    if task.script is not None:
        interpreter = (
            tuple(shlex.split(task.interpreter))
            if isinstance(task.interpreter, str)
            else task.interpreter
        )
        script = FileToCopy(path=SCRIPT_PATH, content=task.script.encode(), mode=0o755)
        return (*interpreter, SCRIPT_PATH), (script,)
    if isinstance(task.command, str):
        return ("/bin/sh", "-c", task.command), ()
    return task.command, ()


def parse_mount(spec: str, base_dir: Path) -> Mount:
    """`name:/target`, `./rel:/target:ro`, `/abs:/target`, `C:/Users/me/Data Engg:/data`."""
    match = VOLUME_RE.match(spec)
    if match is None:  # the model validated it already; this guards direct callers
        raise ValueError(f"bad volume {spec!r}")
    source, target, mode = match["source"], match["target"], match["mode"]
    read_only = mode == "ro"
    if NAMED_VOLUME_RE.match(source) and not source.startswith("."):
        return Mount("volume", source, target, read_only, spec)
    if PureWindowsPath(source).drive or PurePosixPath(source).is_absolute():
        return Mount("bind", source, target, read_only, spec)
    return Mount("bind", str((base_dir / source).resolve()), target, read_only, spec)


def container_name(execution_id: str, run_name: str, task_run_id: int) -> str:
    """`runner-EXECUTION-NAME-ID`: readable in `docker ps`, unique by the task run's id
    (run names that differ only in unsafe characters, `a/b` and `a_b`, stay apart)."""
    readable = _NAME_UNSAFE.sub("_", run_name)[:_NAME_PART_MAX].strip("_.-") or "task"
    return f"runner-{execution_id[:12]}-{readable}-{task_run_id}"


def render_task(task: Task, tctx: TemplateContext) -> Task:
    """The task with its templated fields rendered for this run (a copy; the model is frozen).

    The fields share one time budget (RUNNER_TEMPLATE_TIMEOUT): forty `env` values cannot
    take forty times as long. Raises TemplateError."""
    update: dict[str, Any] = {}
    with shared_budget(tctx):
        if task.script is not None:
            update["script"] = render(task.script, tctx, where="script")
        if task.command is not None:
            update["command"] = render_value(task.command, tctx, where="command")
        if task.env:
            update["env"] = {k: render(v, tctx, where=f"env.{k}") for k, v in task.env.items()}
        if task.volumes:
            update["volumes"] = tuple(render_value(list(task.volumes), tctx, where="volumes"))
        update["working_dir"] = render(task.working_dir, tctx, where="working_dir")
        if task.network is not None:
            update["network"] = render(task.network, tctx, where="network")
    # A rendered volume is checked as the file's are (`:/x` from an empty input must be
    # a task error, not a crash in parse_mount).
    for index, volume in enumerate(update.get("volumes", ())):
        try:
            check_volume(volume)
        except ValueError as exc:
            raise TemplateError(f"volumes[{index}]: {exc}") from None
    if not update["working_dir"].startswith("/"):
        raise TemplateError(
            f"working_dir: rendered to {shorten(repr(update['working_dir']))}, not an absolute"
            " path in the container"
        )
    if task.network is not None and not update["network"].strip():
        raise TemplateError("network: rendered to nothing; give a network name")
    return task.model_copy(update=update)


def check_host_access(ctx: TaskContext, task: Task, env: Mapping[str, str]) -> None:
    """Raise PolicyError if a rendered task asks for what the operator has not allowed
    (see `runner.policy`): checked again after rendering, so that an input cannot bring
    a host path, the socket or the host's network that the file could not."""
    for index, volume in enumerate(task.volumes):
        try:
            ctx.host_policy.check_volume(volume, ctx.base_dir)
        except PolicyError as exc:
            raise PolicyError(f"volumes[{index}]: {exc}") from None
    try:
        ctx.host_policy.check_network(task.network)
    except PolicyError as exc:
        raise PolicyError(f"network: {exc}") from None
    try:
        check_environment_size(env, ctx.max_env_bytes)
    except PolicyError as exc:
        raise PolicyError(f"env: {exc}") from None


def build_spec(
    ctx: TaskContext,
    task: Task,
    attempt: int,
    image: str,
    *,
    task_run_id: int,
    node_id: str | None = None,
) -> ContainerSpec:
    command, files = container_command(task)
    env = {
        **ctx.flow.env,
        **task.env,
        "RUNNER_EXECUTION_ID": ctx.execution_id,
        "RUNNER_FLOW_ID": ctx.flow.id,
        "RUNNER_NAMESPACE": ctx.flow.namespace,
        "RUNNER_TASK_ID": task.id,
        "RUNNER_TASK_RUN": node_id or task.id,
        "RUNNER_ATTEMPT": str(attempt),
        "RUNNER_WORKSPACE": WORKSPACE_PATH,
    }
    check_host_access(ctx, task, env)
    labels: Mapping[str, str] = {
        **execution_labels(ctx.execution_id, ctx.flow),
        LABEL_TASK_RUN: str(task_run_id),
        LABEL_ATTEMPT: str(attempt),
    }
    return ContainerSpec(
        name=container_name(ctx.execution_id, node_id or task.id, task_run_id),
        image=image,
        command=command,
        env=env,
        labels=labels,
        workspace=ctx.workspace if task.workspace else None,
        mounts=tuple(parse_mount(v, ctx.base_dir) for v in task.volumes),
        files=files,
        working_dir=task.working_dir,
        user=task.user,
        network=task.network,
        cpus=task.cpus,
        memory_bytes=task.memory.bytes if task.memory is not None else None,
    )
