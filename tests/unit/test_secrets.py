"""Secrets (`runner.secrets`): where they come from, how they are masked, and that a
secret input is never stored nor echoed in a message."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from runner.errors import FlowError
from runner.loader import parse_flow
from runner.policy import HostPolicy
from runner.secrets import (
    MASK,
    Masker,
    SecretError,
    load_secrets,
    lookup,
    open_private_log,
    private_folder,
    secret_input_ids,
    stored_inputs,
)
from runner.templating import TemplateContext, TemplateError, render
from runner.values import coerce_value

# --- where secrets come from -----------------------------------------------------------------


def test_secrets_come_from_the_environment_and_a_dotenv_file(tmp_path: Path) -> None:
    file = tmp_path / "secrets.env"
    file.write_text(
        "# the team's secrets\nDB_PASSWORD=from-file\nAPI_TOKEN='t$ken ${HOME} x'\n"
        'export MULTI="line one\nline two"\nEMPTY=\n'
    )
    environ = {
        "RUNNER_SECRETS_FILE": str(file),
        "RUNNER_SECRET_DB_PASSWORD": "from-env",  # the environment wins
        "HOME": "/root",
    }
    assert load_secrets(environ) == {
        "DB_PASSWORD": "from-env",
        "API_TOKEN": "t$ken ${HOME} x",  # no expansion: a password may hold a $
        "MULTI": "line one\nline two",
        "EMPTY": "",
    }
    assert lookup("API_TOKEN", environ) == "t$ken ${HOME} x"


def test_a_missing_secret_says_where_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as caught:
        lookup("DB_PASWORD", {"RUNNER_SECRET_DB_PASSWORD": "x"})
    assert str(caught.value) == (
        "secret 'DB_PASWORD' is not set (did you mean 'DB_PASSWORD'?): set"
        " RUNNER_SECRET_DB_PASWORD in the runner's environment, or name a dotenv file"
        " holding it in RUNNER_SECRETS_FILE"
    )
    file = tmp_path / "s.env"
    file.write_text("A=1\n")
    with pytest.raises(SecretError, match=rf"or add B=\.\.\. to {file}$"):
        lookup("B", {"RUNNER_SECRETS_FILE": str(file)})
    with pytest.raises(SecretError, match="a secret's name is letters, digits and '_'"):
        lookup("A-B", {})


def test_an_unreadable_secrets_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        SecretError,
        match=r"RUNNER_SECRETS_FILE names .*nope.env, which cannot be read: No such file",
    ):
        load_secrets({"RUNNER_SECRETS_FILE": str(tmp_path / "nope.env")})
    with pytest.raises(SecretError, match="which is not a file"):
        load_secrets({"RUNNER_SECRETS_FILE": str(tmp_path)})


def test_the_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    file = tmp_path / "s.env"
    file.write_text("A=1\n")
    environ = {"RUNNER_SECRETS_FILE": str(file)}
    assert load_secrets(environ) == {"A": "1"}
    file.write_text("A=22\n")
    assert load_secrets(environ) == {"A": "22"}


def test_secret_in_a_template(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_SECRET_TOKEN", "s3cr3t")
    ctx = TemplateContext()
    assert render("Bearer {{ secret('TOKEN') }}", ctx, where="env.AUTH") == "Bearer s3cr3t"
    with pytest.raises(TemplateError) as caught:
        render("{{ secret('TOKN') }}", ctx, where="env.AUTH")
    assert str(caught.value).startswith(
        "env.AUTH: {{ secret('TOKN') }}: secret 'TOKN' is not set (did you mean 'TOKEN'?)"
    )


def test_validation_accepts_secret_in_templates() -> None:
    text = "id: x\ntasks: [{id: a, image: i, env: {T: \"{{ secret('TOKEN') }}\"}}]\n"
    assert parse_flow(text, path="/flows/f.yml", policy=HostPolicy()).flow.id == "x"


# --- secret inputs ---------------------------------------------------------------------------


def test_a_secret_input_cannot_have_a_default_in_the_file() -> None:
    with pytest.raises(FlowError) as caught:
        parse_flow(
            "id: x\ninputs:\n  - {id: pw, type: secret, default: hunter2}\ntasks: [{id: a, image: i}]\n",
            path="/flows/f.yml",
            policy=HostPolicy(),
        )
    (problem,) = caught.value.problems
    assert problem.line == 3 and problem.field == "inputs[0] (pw)"
    assert problem.message.startswith("a secret input cannot have a default")
    assert "hunter2" not in str(caught.value)


def test_a_secret_value_is_never_quoted_in_an_error() -> None:
    assert coerce_value("secret", "hunter2") == "hunter2"
    for bad in (1234, ["hunter2"], True):
        with pytest.raises(ValueError) as caught:
            coerce_value("secret", bad)
        assert "hunter2" not in str(caught.value) and "1234" not in str(caught.value)
    with pytest.raises(ValueError, match="cannot hold items of type secret"):
        coerce_value("array", "a,b", None, "secret")


def test_stored_inputs_hold_the_mask() -> None:
    loaded = parse_flow(
        "id: x\ninputs:\n  - {id: pw, type: secret}\n  - {id: opt, type: secret, required: false}\n"
        "  - {id: note, type: string}\ntasks: [{id: a, image: i}]\n",
        path="/flows/f.yml",
        policy=HostPolicy(),
    )
    ids = secret_input_ids(loaded.flow.inputs)
    assert ids == {"pw", "opt"}
    masker = Masker(["hunter2", "tok-123"])
    stored = stored_inputs(
        {"pw": "hunter2", "opt": None, "note": "uses tok-123 twice: tok-123"}, ids, masker
    )
    assert stored == {"pw": MASK, "opt": None, "note": f"uses {MASK} twice: {MASK}"}


# --- masking ---------------------------------------------------------------------------------


def test_every_occurrence_of_every_secret_is_masked() -> None:
    masker = Masker(["hunter2", "hunter2-extended", "tok"])
    assert masker.mask("pw=hunter2-extended, hunter2hunter2; tok tok") == (
        f"pw={MASK}, {MASK}{MASK}; {MASK} {MASK}"
    )


def test_json_escaped_and_multi_line_secrets_are_masked() -> None:
    secret = 'pa"ss\\word'
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\nhkiG9w0BAQEFAASC\n-----END KEY-----"
    masker = Masker([secret, key, "ünï"])
    line = json.dumps({"outputs": {"pw": secret, "k": "ünï"}})
    assert secret not in masker.mask(line) and json.dumps(secret)[1:-1] not in masker.mask(line)
    assert "\\u00fcn\\u00ef" not in masker.mask(line)
    for part in key.splitlines():
        assert masker.mask(f"> {part}") == f"> {MASK}"


def test_mask_value_walks_json_data() -> None:
    masker = Masker(["hunter2", "4242"])
    assert masker.mask_value(
        {"a": ["x hunter2", 1, None, True], "hunter2": {"n": 4242, "m": 1.5}}
    ) == {"a": [f"x {MASK}", 1, None, True], MASK: {"n": MASK, "m": 1.5}}


def test_a_line_without_a_secret_is_returned_as_it_is() -> None:
    line = "nothing to see here " * 5
    assert Masker().mask(line) is line
    assert Masker(["hunter2"]).mask(line) is line
    assert Masker(["z" * 200]).mask(line) is line  # longer than the line: not even searched


def test_lines_are_masked_as_one_by_one() -> None:
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\nhkiG9w0BAQEFAASC\n-----END KEY-----"
    masker = Masker(["hunter2", key])
    lines = ("plain", "", "pw=hunter2", "hunt", "er2", *key.splitlines(), "end")
    assert masker.mask_lines(lines) == tuple(masker.mask(line) for line in lines)
    assert masker.mask_lines(lines)[2] == f"pw={MASK}"
    assert all(MASK in line for line in masker.mask_lines(tuple(key.splitlines())))
    clean = ("nothing", "to", "see")
    assert masker.mask_lines(clean) is clean  # one search of them all, no copy
    assert Masker().mask_lines(lines) is lines
    assert masker.mask_lines(()) == ()


def test_many_secrets_are_masked_whatever_their_characters() -> None:
    import random
    import string

    rng = random.Random(3)
    values = [
        "".join(rng.choices(string.printable.strip(), k=rng.randint(1, 30))) for _ in range(200)
    ]
    masker = Masker(values)
    for value in values:
        assert value not in masker.mask(f"<{value}>"), value


def test_the_masker_never_shows_the_values() -> None:
    masker = Masker(["hunter2"])
    assert "hunter2" not in repr(masker) and "hunter2" not in str(masker)
    assert masker.with_values(["hunter2"]) is masker
    assert masker.with_values(["other"]).mask("other hunter2") == f"{MASK} {MASK}"
    assert not Masker([""]) and Masker(["x"])


def test_the_masker_of_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "s.env"
    file.write_text("A=from-file\n")
    masker = Masker.from_env(
        extra=["from-input"],
        environ={"RUNNER_SECRET_B": "from-env", "RUNNER_SECRETS_FILE": str(file), "HOME": "/x"},
    )
    assert masker.mask("from-file from-env from-input /x") == f"{MASK} {MASK} {MASK} /x"


# --- private files ---------------------------------------------------------------------------


def test_a_private_log_is_0600_in_a_0700_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    os.umask(old := os.umask(0))  # the most open umask: the modes must not depend on it
    try:
        path, out = open_private_log("runner-recover-x.log")
        with out:
            out.write(b"task output\n")
    finally:
        os.umask(old)
    assert path.parent == tmp_path / f"runner-{os.getuid()}"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"task output\n"


def test_a_folder_left_open_by_someone_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    planted = tmp_path / f"runner-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    folder = private_folder()
    assert folder != planted and folder.parent == tmp_path
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    planted.rmdir()
    planted.symlink_to(tmp_path)  # a link is not the private folder either
    assert private_folder() != planted


# --- a run: what is stored and echoed (the scripted backend; containers in integration) ----


def test_a_run_stores_and_echoes_only_masked_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    import structlog

    from runner import logs
    from runner.api import run_flow
    from runner.backends.fake import FakeBackend, Script
    from runner.store.testing import InMemoryStore

    monkeypatch.setenv("RUNNER_SECRET_TOKEN", "tok-123456")
    echo = io.StringIO()
    saved = structlog.get_config()
    logs.configure("console", stream=echo, colors=False)
    backend = FakeBackend(
        {
            "a": Script(
                lines=(
                    "token tok-123456, password hunter2-pw",
                    '::{"outputs": {"t": "tok-123456", "p": ["hunter2-pw"]}}::',
                ),
                exit_code=3,
            )
        }
    )
    loaded = parse_flow(
        "id: f\ninputs: [{id: pw, type: secret}]\ntasks: [{id: a, image: i}]\n",
        path=tmp_path / "flow.yml",
        policy=HostPolicy(),
    )
    store = InMemoryStore()
    try:
        result = run_flow(loaded, {"pw": "hunter2-pw"}, store=store, backend=backend)
        record = store.get_execution(result.execution_id)
        lines = [line.line for line in store.get_logs(result.execution_id)]
    finally:
        store.close()
        structlog.configure(**saved)
    assert record.inputs == {"pw": MASK}
    assert lines == [
        f"token {MASK}, password {MASK}",
        f'::{{"outputs": {{"t": "{MASK}", "p": ["{MASK}"]}}}}::',
    ]
    assert record.task_runs[0].outputs == {"t": MASK, "p": [MASK]}
    printed = echo.getvalue()
    assert f"token {MASK}, password {MASK}" in printed
    assert "tok-123456" not in printed and "hunter2-pw" not in printed
    assert backend.started[0].env["RUNNER_TASK_ID"] == "a"
    database = b"".join(p.read_bytes() for p in tmp_path.glob("runner.db*"))
    assert b"tok-123456" not in database and b"hunter2-pw" not in database
