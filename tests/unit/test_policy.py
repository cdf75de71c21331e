"""The host-access policy (`runner.policy`): what a flow may mount, which network it may
join, which variables of the runner's environment it may read; checked when a flow is
loaded (`runner validate`) and again on the rendered task (`runner.specs`)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from runner.errors import FlowError, PolicyError, Problem
from runner.flow import Flow
from runner.loader import parse_flow
from runner.policy import (
    HostPolicy,
    check_environment_size,
    check_inside_folder,
    env_allowed,
    visible_env,
)
from runner.settings import SettingError
from runner.specs import TaskContext, build_spec, render_task
from runner.templating import TemplateContext, TemplateError

FLOWS = "/home/me/flows"


def refusal(policy: HostPolicy, volume: str, folder: str = FLOWS) -> str:
    with pytest.raises(PolicyError) as caught:
        policy.check_volume(volume, folder)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- volumes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "volume",
    [
        "cache:/cache",
        "runner-data.v2:/data:ro",
        "./data:/data",
        "data/sub:/data",
        f"{FLOWS}/data:/data:rw",
        f"{FLOWS}:/flows",
    ],
)
def test_named_volumes_and_the_flows_own_folder_are_allowed_by_default(volume: str) -> None:
    HostPolicy().check_volume(volume, FLOWS)


@pytest.mark.parametrize(
    ("volume", "shown"),
    [
        ("/etc:/etc", "/etc"),
        ("../secrets:/s", "/home/me/secrets"),
        ("./data/../../x:/x", "/home/me/x"),
        ("/home/me/flows-other:/x", "/home/me/flows-other"),  # a prefix of names, not of text
        ("C:/Users/me/Data Engg:/data", "C:/Users/me/Data Engg"),
    ],
)
def test_other_host_paths_name_the_setting_that_allows_them(volume: str, shown: str) -> None:
    message = refusal(HostPolicy(), volume)
    assert message == (
        f"volume {volume!r}: host path {shown} is outside the flow's folder {FLOWS}; allow it"
        f" with RUNNER_ALLOWED_MOUNTS={shown} (host paths separated by ',')"
    )


def test_allowed_mounts_are_prefixes_of_whole_names() -> None:
    policy = HostPolicy(allowed_mounts=("/data", "C:/Users/me/Data Engg"))
    policy.check_volume("/data:/d", FLOWS)
    policy.check_volume("/data/2024/jan:/d:ro", FLOWS)
    policy.check_volume("C:/Users/me/Data Engg/in:/in", FLOWS)
    policy.check_volume("c:\\users\\ME\\data engg:/in", FLOWS)  # Windows paths: any case, any slash
    for outside in (
        "/database:/d",
        "/:/d",
        "/dat:/d",
        "C:/Users/me/Data:/d",
        "D:/Users/me/Data Engg:/d",
    ):
        refusal(policy, outside)


@pytest.mark.parametrize(
    "volume",
    [
        "/var/run/docker.sock:/var/run/docker.sock",
        "/run/docker.sock:/var/run/docker.sock",
        "//var/run/docker.sock:/s",  # on Linux, // is /
        "//./var/run/docker.sock:/s",
        "/var/run/../run/docker.sock:/s",
        "/home/me/.docker/run/docker.sock:/s",  # any file of that name is a socket
        "//./pipe/docker_engine://./pipe/docker_engine",
        "\\\\.\\pipe\\docker_engine://./pipe/docker_engine",
        "/:/host",  # folders holding the socket
        "/var:/v",
        "/var/run:/r",
    ],
)
def test_the_docker_socket_is_refused_even_with_a_star(volume: str) -> None:
    for policy in (HostPolicy(), HostPolicy(allowed_mounts=("*",))):
        message = refusal(policy, volume)
        assert "Docker socket" in message
        assert "RUNNER_ALLOWED_MOUNTS (* does not cover it)" in message


def test_the_socket_is_allowed_when_named_itself() -> None:
    policy = HostPolicy(allowed_mounts=("/var/run/docker.sock",))
    policy.check_volume("/var/run/docker.sock:/var/run/docker.sock", FLOWS)
    # ... but not a folder holding it, unless that folder is allowed too
    assert "outside the flow's folder" in refusal(policy, "/var/run:/r")
    HostPolicy(allowed_mounts=("*", "/var/run/docker.sock")).check_volume("/:/host", FLOWS)
    windows = HostPolicy(allowed_mounts=("//./pipe/docker_engine",))
    windows.check_volume("//./pipe/docker_engine://./pipe/docker_engine", FLOWS)
    windows.check_volume("\\\\.\\pipe\\docker_engine://./pipe/docker_engine", FLOWS)


def test_a_message_says_which_socket_a_folder_holds() -> None:
    assert refusal(HostPolicy(), "/:/host") == (
        "volume '/:/host': host path / holds the Docker socket /var/run/docker.sock, which gives"
        " control of the engine and so of the host; allow it by naming /var/run/docker.sock"
        " itself in RUNNER_ALLOWED_MOUNTS (* does not cover it)"
    )


def test_a_link_in_the_flows_folder_is_judged_by_where_it_leads(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "root").symlink_to("/")
    (folder / "etc").symlink_to("/etc")
    (tmp_path / "fake.sock").write_text("")
    (folder / "sock").symlink_to(tmp_path / "fake.sock")
    policy = HostPolicy(sockets=(str(tmp_path / "fake.sock"),), resolve=os.path.realpath)
    assert "holds the Docker socket" in refusal(policy, "./root:/r", str(folder))
    assert f"host path {folder}/etc (a link to /etc) is outside" in refusal(
        policy, "./etc:/e", str(folder)
    )
    assert "is the Docker socket" in refusal(policy, "./sock:/s", str(folder))
    # Without following links, the same paths look inside the folder.
    HostPolicy(sockets=(str(tmp_path / "fake.sock"),)).check_volume("./etc:/e", str(folder))


def test_a_malformed_volume_is_left_to_the_format_check() -> None:
    HostPolicy().check_volume(":/x", FLOWS)  # the flow model or render_task reports it


def test_from_env_reads_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "RUNNER_ALLOWED_MOUNTS": " /data , C:/Users/me/Data Engg,, ",
        "RUNNER_ALLOW_HOST_NETWORK": "yes",
        "DOCKER_HOST": "unix:///srv/engine.sock",
    }
    policy = HostPolicy.from_env(env)
    assert policy.allowed_mounts == ("/data", "C:/Users/me/Data Engg")
    assert policy.allow_host_network
    assert policy.resolve is os.path.realpath
    assert "/var/run/docker.sock" in policy.sockets
    assert HostPolicy.from_env({}) == HostPolicy(sockets=HostPolicy.from_env({}).sockets)
    with pytest.raises(SettingError, match=r"RUNNER_ALLOWED_MOUNTS holds host paths .* not 'data'"):
        HostPolicy.from_env({"RUNNER_ALLOWED_MOUNTS": "/ok,data"})
    with pytest.raises(SettingError, match="RUNNER_ALLOW_HOST_NETWORK must be 1 or 0"):
        HostPolicy.from_env({"RUNNER_ALLOW_HOST_NETWORK": "please"})


def test_the_socket_docker_host_names_is_guarded(tmp_path: Path) -> None:
    engine = tmp_path / "run" / "engine.sock"
    engine.parent.mkdir()
    engine.write_text("")
    policy = HostPolicy.from_env({"DOCKER_HOST": f"unix://{engine}", "RUNNER_ALLOWED_MOUNTS": "*"})
    assert f"holds the Docker socket {engine}" in refusal(policy, f"{tmp_path}:/x")


# --- networks ------------------------------------------------------------------------------


@pytest.mark.parametrize("network", ["host", "HOST", " host", "container:db", "ns:/proc/1/ns/net"])
def test_host_and_container_networks_need_the_setting(network: str) -> None:
    with pytest.raises(PolicyError) as caught:
        HostPolicy().check_network(network)
    assert str(caught.value).endswith("allow it with RUNNER_ALLOW_HOST_NETWORK=1")
    HostPolicy(allow_host_network=True).check_network(network)


@pytest.mark.parametrize("network", [None, "bridge", "none", "my-net", "hostile"])
def test_other_networks_are_allowed(network: str | None) -> None:
    HostPolicy().check_network(network)


# --- files the flow reads from its folder ----------------------------------------------------


@pytest.mark.parametrize("path", ["data.csv", "sql/*.sql", "./a/b", f"{FLOWS}/in.csv", "."])
def test_paths_inside_the_folder(path: str) -> None:
    check_inside_folder(path, FLOWS, what=repr(path))


@pytest.mark.parametrize(
    "path", ["../x", "a/../../x", "a/../b", "/etc/shadow", "../../../../etc/shadow", "C:/x"]
)
def test_paths_outside_the_folder(path: str) -> None:
    with pytest.raises(PolicyError) as caught:
        check_inside_folder(path, FLOWS, what=f"files: {path!r}")
    assert str(caught.value) == (
        f"files: {path!r} is outside the flow's folder {FLOWS}: the flow may only read files"
        " inside it"
    )


def test_a_link_out_of_the_folder_is_outside_when_resolved(tmp_path: Path) -> None:
    (tmp_path / "shadow").symlink_to("/etc/shadow")
    check_inside_folder("shadow", tmp_path, what="x")
    with pytest.raises(PolicyError):
        check_inside_folder("shadow", tmp_path, what="x", resolve=os.path.realpath)


# --- the container's environment -------------------------------------------------------------


def test_environment_size() -> None:
    check_environment_size({"A": "x" * 1000}, 1010)
    with pytest.raises(PolicyError) as caught:
        check_environment_size({"A": "x" * 1000, "B": "y"}, 1000)
    assert str(caught.value) == (
        "the environment is 1,007 bytes, over the limit of 1,000; pass big values as files,"
        " or raise RUNNER_MAX_ENV_BYTES"
    )
    with pytest.raises(PolicyError, match=r"env.BIG is 200,005 bytes; Linux starts no process"):
        check_environment_size({"BIG": "z" * 200_000}, 10**9)


# --- the runner's environment ------------------------------------------------------------------


def test_env_globs_never_match_the_runners_own_settings() -> None:
    assert env_allowed("AWS_REGION", ["AWS_*"])
    assert env_allowed("HOME", ["*"])
    assert not env_allowed("RUNNER_DATABASE_URL", ["*"])
    assert not env_allowed("RUNNER_SECRET_DB", ["RUNNER_*"])
    assert env_allowed("RUNNER_DATABASE_URL", ["RUNNER_DATABASE_URL"])
    assert not env_allowed("aws_region", ["AWS_*"])


def test_a_declared_name_must_be_allowed_by_the_operator() -> None:
    environ = {"AWS_SECRET_ACCESS_KEY": "k", "RUNNER_DATABASE_URL": "postgresql://u:pw@db/x"}
    with pytest.raises(PolicyError) as caught:
        visible_env(
            ["AWS_SECRET_ACCESS_KEY", "RUNNER_DATABASE_URL"], where="flow.yml:3", environ=environ
        )
    assert str(caught.value) == (
        "flow.yml:3: allowed_env: the flow reads AWS_SECRET_ACCESS_KEY, RUNNER_DATABASE_URL"
        " from the runner's environment, which the operator has not allowed; allow with"
        " --env NAME (for this run) or"
        " RUNNER_ALLOWED_ENV=AWS_SECRET_ACCESS_KEY,RUNNER_DATABASE_URL"
    )
    allowed = {**environ, "RUNNER_ALLOWED_ENV": "AWS_*"}
    with pytest.raises(PolicyError, match="reads RUNNER_DATABASE_URL from"):
        visible_env(["AWS_SECRET_ACCESS_KEY", "RUNNER_DATABASE_URL"], environ=allowed)
    assert visible_env(["AWS_SECRET_ACCESS_KEY"], environ=allowed) == {"AWS_SECRET_ACCESS_KEY": "k"}
    assert (
        visible_env(
            ["AWS_SECRET_ACCESS_KEY", "RUNNER_DATABASE_URL"],
            ["RUNNER_DATABASE_URL", "AWS_*"],
            environ=environ,
        )
        == environ
    )


def test_exact_env_names_are_visible_undeclared_and_globs_only_allow() -> None:
    environ = {"HOME": "/root", "AWS_REGION": "eu", "RUNNER_ALLOWED_ENV": "*", "UNSET": "x"}
    assert visible_env([], ["HOME", "AWS_*"], environ=environ) == {"HOME": "/root"}
    assert visible_env(["AWS_REGION", "NOT_SET"], environ=environ) == {"AWS_REGION": "eu"}


# --- `runner validate`: literal values, with file and line ------------------------------------


def problems(text: str, policy: HostPolicy | None = None, folder: str = FLOWS) -> list[Problem]:
    with pytest.raises(FlowError) as caught:
        parse_flow(textwrap.dedent(text), path=f"{folder}/flow.yml", policy=policy or HostPolicy())
    return list(caught.value.problems)


def test_validation_refuses_literal_volumes_and_networks_with_their_lines() -> None:
    found = problems(
        """\
        id: hostile
        tasks:
          - id: escape
            image: debian:bookworm-slim
            volumes:
              - cache:/cache
              - /var/run/docker.sock:/var/run/docker.sock
              - /:/host
            network: host
          - id: templated
            image: debian:bookworm-slim
            volumes: ["{{ execution.id }}:/x"]
            network: "{{ execution.id }}"
        """
    )
    assert [(p.line, p.field) for p in found] == [
        (7, "tasks[0] (escape).volumes[1]"),
        (8, "tasks[0] (escape).volumes[2]"),
        (9, "tasks[0] (escape).network"),
    ]
    assert "RUNNER_ALLOWED_MOUNTS" in found[0].message
    assert found[2].message.endswith("RUNNER_ALLOW_HOST_NETWORK=1")
    allowing = HostPolicy(allowed_mounts=("*", "/var/run/docker.sock"), allow_host_network=True)
    text = "id: x\ntasks: [{id: a, image: i, volumes: ['/:/host'], network: host}]\n"
    assert parse_flow(text, path=f"{FLOWS}/flow.yml", policy=allowing).flow.tasks[0].network


def test_a_volume_from_defaults_is_reported_once_where_defaults_set_it() -> None:
    found = problems(
        """\
        id: x
        defaults:
          image: i
          volumes: [/etc:/etc]
        tasks:
          - {id: a}
          - {id: b}
          - {id: c, volumes: [./ok:/ok]}
        """
    )
    assert [(p.line, p.field) for p in found] == [(4, "defaults.volumes")]


def test_validation_refuses_files_and_file_defaults_outside_the_folder() -> None:
    found = problems(
        """\
        id: x
        inputs:
          - {id: shadow, type: file, default: ../../../../etc/shadow}
          - {id: fine, type: file, default: data/in.csv}
        files: [scripts/, ../../../etc/hostname]
        tasks: [{id: a, image: i}]
        """
    )
    assert [(p.line, p.field) for p in found] == [
        (3, "inputs[0] (shadow).default"),
        (5, "files[1]"),
    ]
    assert found[1].message == (
        f"'../../../etc/hostname' is outside the flow's folder {FLOWS}: the flow may only"
        " read files inside it"
    )


def test_validation_refuses_an_environment_too_big(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_MAX_ENV_BYTES", "1k")
    big = "x" * 700
    found = problems(
        f"""\
        id: x
        env: {{A: {big}}}
        tasks:
          - {{id: a, image: i, env: {{B: {big}}}}}
          - {{id: b, image: i}}
        """
    )
    assert [(p.line, p.field) for p in found] == [(4, "tasks[0] (a).env")]
    assert "over the limit of 1,024" in found[0].message


def test_an_anchor_of_a_huge_env_in_many_tasks_is_reported_a_few_times() -> None:
    tasks = "\n".join(f"  - {{id: t{n}, image: i, env: *big}}" for n in range(50))
    values = ", ".join(f"V{n}: {'x' * 120_000}" for n in range(10))  # 1.2 MB in all
    text = f"id: x\nvariables:\n  e: &big {{{values}}}\ntasks:\n{tasks}\n"
    with pytest.raises(FlowError) as caught:
        parse_flow(text, path=f"{FLOWS}/flow.yml", policy=HostPolicy())
    found = caught.value.problems
    assert len(found) == 6
    assert [p.message for p in found].count("45 more tasks have an environment too big") == 1
    assert all(len(str(p)) < 300 for p in found)


def test_a_flow_file_over_the_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.loader import load_flow

    path = tmp_path / "flow.yml"
    path.write_text("id: x\ntasks: [{id: a, image: i}]\n" + "#" * 2000 + "\n")
    monkeypatch.setenv("RUNNER_MAX_FLOW_BYTES", "1k")
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    assert str(caught.value) == (
        f"{path}: the file is larger than 1,024 bytes, the most a flow file may hold (raise"
        " RUNNER_MAX_FLOW_BYTES to read bigger ones)"
    )
    monkeypatch.setenv("RUNNER_MAX_FLOW_BYTES", "10MiB")
    assert load_flow(path).flow.id == "x"


def test_the_default_cap_is_ten_megabytes() -> None:
    text = "id: x\ntasks: [{id: a, image: i}]\n#" + "x" * (10 * 1024**2) + "\n"
    with pytest.raises(FlowError, match="larger than 10,485,760 bytes"):
        parse_flow(text, path=f"{FLOWS}/flow.yml")


# --- after rendering: what an input brings is checked too ------------------------------------


def _context(flow: Flow, policy: HostPolicy | None = None, max_env: int = 1024**2) -> TaskContext:
    return TaskContext(
        execution_id="e" * 32,
        flow=flow,
        base_dir=Path(FLOWS),
        workspace="ws",
        host_policy=policy or HostPolicy(),
        max_env_bytes=max_env,
    )


def _rendered(task: dict[str, object], **inputs: object) -> tuple[Flow, object]:
    flow = Flow.model_validate({"id": "f", "tasks": [{"id": "t", "image": "i", **task}]})
    return flow, render_task(flow.tasks[0], TemplateContext(inputs=inputs))


def test_a_rendered_volume_or_network_is_checked_like_a_written_one() -> None:
    flow, task = _rendered(
        {"volumes": ["{{ inputs.dir }}:/data"], "network": "{{ inputs.net }}"},
        dir="/var/run/docker.sock",
        net="bridge",
    )
    with pytest.raises(PolicyError) as caught:
        build_spec(_context(flow), task, 1, "img", task_run_id=1)  # type: ignore[arg-type]
    assert str(caught.value).startswith("volumes[0]: volume '/var/run/docker.sock:/data': ")
    flow, task = _rendered({"network": "{{ inputs.net }}"}, net="host")
    with pytest.raises(PolicyError, match=r"^network: network 'host' shares"):
        build_spec(_context(flow), task, 1, "img", task_run_id=1)  # type: ignore[arg-type]
    allowed = HostPolicy(allow_host_network=True)
    assert build_spec(_context(flow, allowed), task, 1, "img", task_run_id=1).network == "host"  # type: ignore[arg-type]


def test_an_empty_rendered_volume_is_a_template_error_not_a_crash() -> None:
    with pytest.raises(TemplateError) as caught:
        _rendered({"volumes": ["{{ inputs.dir }}:/x"]}, dir="")
    assert str(caught.value).startswith("volumes[0]: volume ':/x' is not SOURCE:/TARGET")
    with pytest.raises(TemplateError, match=r"^network: rendered to nothing"):
        _rendered({"network": "{{ inputs.net }}"}, net=" ")
    with pytest.raises(TemplateError, match=r"^working_dir: rendered to 'rel'"):
        _rendered({"working_dir": "{{ inputs.dir }}"}, dir="rel")


def test_a_rendered_environment_over_the_limit() -> None:
    flow, task = _rendered({"env": {"BIG": "{{ inputs.big }}"}}, big="x" * 5000)
    with pytest.raises(PolicyError, match=r"^env: the environment is .* over the limit of 4,096"):
        build_spec(_context(flow, max_env=4096), task, 1, "img", task_run_id=1)  # type: ignore[arg-type]


def test_a_file_default_linking_out_of_the_folder(tmp_path: Path) -> None:
    """A default `../../../../etc/shadow` was packed into the workspace; so would a link."""
    from runner.errors import InputError
    from runner.inputs import resolve_inputs

    (tmp_path / "data.csv").symlink_to("/etc/hostname")
    text = "id: x\ninputs: [{id: d, type: file, default: data.csv}]\ntasks: [{id: a, image: i}]\n"
    with pytest.raises(
        FlowError, match=r"inputs\[0\] \(d\)\.default: default 'data.csv' is outside"
    ):
        parse_flow(text, path=tmp_path / "flow.yml", policy=HostPolicy(resolve=os.path.realpath))
    loaded = parse_flow(text, path=tmp_path / "flow.yml", policy=HostPolicy())  # links unseen
    with pytest.raises(InputError, match=r"input 'd': default 'data.csv' is outside the flow's"):
        resolve_inputs(loaded, {})
    assert resolve_inputs(loaded, {"d": "/etc/hostname"})["d"] == "/workspace/inputs/d/hostname"
