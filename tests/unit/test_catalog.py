"""The flows folder of a server: loaded, watched for changes, bad files reported with
file:line without stopping the others."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.errors import NotFoundError
from runner.server.catalog import FlowCatalog

GOOD = """\
id: {id}
namespace: team
tasks:
  - {{id: a, image: debian:bookworm-slim, command: "true"}}
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    # A rewrite within the same clock tick must still be noticed: move the mtime on.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_a_scan_loads_every_flow_file_under_the_folder(tmp_path: Path) -> None:
    _write(tmp_path / "one.yml", GOOD.format(id="one"))
    _write(tmp_path / "sub" / "two.yaml", GOOD.format(id="two"))
    _write(tmp_path / "notes.txt", "not a flow")
    _write(tmp_path / ".hidden" / "three.yml", GOOD.format(id="three"))
    catalog = FlowCatalog(tmp_path)
    changes = catalog.scan()
    assert [f.flow.full_id for f in changes.loaded] == ["team.one", "team.two"]
    assert [f.flow.id for f in catalog.flows()] == ["one", "two"]
    assert catalog.get("team", "two").path == (tmp_path / "sub" / "two.yaml").absolute()
    assert not catalog.scan()  # nothing changed: nothing to say


def test_changes_additions_and_removals_are_picked_up(tmp_path: Path) -> None:
    _write(tmp_path / "one.yml", GOOD.format(id="one"))
    catalog = FlowCatalog(tmp_path)
    first = catalog.scan().loaded[0].revision
    _write(tmp_path / "one.yml", GOOD.format(id="one") + "description: changed\n")
    _write(tmp_path / "two.yml", GOOD.format(id="two"))
    changes = catalog.scan()
    assert [(f.flow.id, f.revision != first) for f in changes.loaded] == [
        ("one", True),
        ("two", True),
    ]
    (tmp_path / "one.yml").unlink()
    assert catalog.scan().removed == ("team.one",)
    with pytest.raises(
        NotFoundError, match=r"no flow team\.one in .*\(did you mean 'team\.two'\?\)"
    ):
        catalog.get("team", "one")


def test_an_invalid_file_is_reported_with_its_lines_and_the_rest_is_served(
    tmp_path: Path,
) -> None:
    _write(tmp_path / "good.yml", GOOD.format(id="good"))
    _write(tmp_path / "bad.yml", "id: bad\ntasks:\n  - {id: a, image: x, retry: {attempts: 0}}\n")
    catalog = FlowCatalog(tmp_path)
    changes = catalog.scan()
    assert [f.flow.id for f in catalog.flows()] == ["good"]
    [invalid] = changes.invalid
    assert invalid.file == str(tmp_path / "bad.yml")
    assert [str(p) for p in invalid.problems] == [
        f"{tmp_path / 'bad.yml'}:3:31: tasks[0] (a).retry.attempts: must be at least 1, got 0"
    ]
    # Fixed: served, and no longer reported.
    _write(tmp_path / "bad.yml", GOOD.format(id="bad"))
    changes = catalog.scan()
    assert [f.flow.id for f in changes.loaded] == ["bad"]
    assert catalog.invalid() == []


def test_two_files_of_one_flow_the_first_keeps_it_the_second_is_reported(tmp_path: Path) -> None:
    _write(tmp_path / "a.yml", GOOD.format(id="same"))
    _write(tmp_path / "b.yml", GOOD.format(id="same") + "description: second\n")
    catalog = FlowCatalog(tmp_path)
    catalog.scan()
    assert catalog.get("team", "same").path.name == "a.yml"
    [invalid] = catalog.invalid()
    assert invalid.file == str(tmp_path / "b.yml")
    assert "flow team.same is already defined in" in str(invalid.problems[0])
    assert str(invalid.problems[0]).startswith(f"{tmp_path / 'b.yml'}:1:")


def test_a_missing_folder_is_an_empty_catalog(tmp_path: Path) -> None:
    catalog = FlowCatalog(tmp_path / "nowhere")
    assert not catalog.scan()
    assert catalog.flows() == []
