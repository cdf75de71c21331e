"""Archives into and out of the workspace: `pack_files` and `extract_artifacts`.

The tars stand in for what Docker's put_archive takes and get_archive streams; every
refused case (absolute names, `..`, links, devices, fifos, absurd sizes, too many files)
is planted in one and must fail with a clear message, leaving nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.archives import (
    ArchiveError,
    Artifact,
    artifact_roots,
    extract_artifacts,
    matches_artifact_pattern,
    pack_files,
)
from runner.errors import RunnerError

# -- helpers -------------------------------------------------------------------------------


def entry(
    name: str,
    data: bytes = b"",
    *,
    kind: bytes = tarfile.REGTYPE,
    linkname: str = "",
    mode: int = 0o644,
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data


def folder(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, kind=tarfile.DIRTYPE, mode=0o755)


def make_tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def chunked(data: bytes, size: int = 7) -> Iterator[bytes]:
    """The archive as an engine streams it, here in absurdly small pieces."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def workspace_tar(*members: tuple[tarfile.TarInfo, bytes]) -> Iterator[bytes]:
    """Like Docker's get_archive of /workspace: every name under `workspace/`."""
    for info, _ in members:
        info.name = f"workspace/{info.name}"
    return chunked(make_tar(folder("workspace"), *members))


def extract(
    chunks: Iterator[bytes], patterns: list[str], dest: Path, **limits: int
) -> list[Artifact]:
    return extract_artifacts(chunks, patterns, dest, strip_prefix="workspace", **limits)


def files_under(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(
        path.relative_to(folder).as_posix() for path in folder.rglob("*") if not path.is_dir()
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def members_of(archive: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as opened:
        return {info.name: info for info in opened.getmembers()}


def content_of(archive: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive)) as opened:
        extracted = opened.extractfile(name)
        assert extracted is not None
        return extracted.read()


# -- matching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "selected"),
    [
        ("report.txt", "report.txt", True),
        ("report.txt", "sub/report.txt", False),
        ("report.txt", "report.txt.bak", False),
        ("out/*.csv", "out/a.csv", True),
        ("out/*.csv", "out/sub/x.csv", False),
        ("out/*.csv", "out/a.json", False),
        ("*.csv", "sub/a.csv", False),
        ("out/?.txt", "out/a.txt", True),
        ("out/[ab].txt", "out/c.txt", False),
        ("out/*", "out/.hidden", True),
        ("**/*.csv", "a.csv", True),
        ("**/*.csv", "x/y/a.csv", True),
        ("out/**/*.csv", "out/a.csv", True),
        ("out/**/*.csv", "out/a/b/c.csv", True),
        ("out/**/*.csv", "other/a.csv", False),
        ("out/**", "out/x/y", True),
        ("**", "anything/at/all", True),
        # a pattern that matches a folder takes everything below it
        ("out", "out/a/b.csv", True),
        ("out/", "out/a/b.csv", True),
        ("out/*", "out/sub/x.csv", True),
        ("out", "outside/x", False),
        # a trailing '/' only matches folders
        ("out/", "out", False),
        ("out/", "out/", True),
        ("Out/*.csv", "out/a.csv", False),
    ],
)
def test_artifact_pattern_semantics(pattern: str, path: str, selected: bool) -> None:
    assert matches_artifact_pattern(pattern, path) is selected


@pytest.mark.parametrize(
    ("patterns", "roots"),
    [
        (["out/*.csv"], ["out"]),
        (["report.txt", "out/*.csv", "out/sub/x.json"], ["out", "report.txt"]),
        (["out/a/*.csv", "out/b/**"], ["out/a", "out/b"]),
        (["out/*.csv", "**/*.log"], [""]),
        ([], []),
    ],
)
def test_artifact_roots(patterns: list[str], roots: list[str]) -> None:
    assert artifact_roots(patterns) == roots


def test_patterns_leaving_the_workspace_are_refused(tmp_path: Path) -> None:
    for pattern in ("/etc/passwd", "../x", "out/../../x"):
        with pytest.raises(ArchiveError, match="must be a glob relative to /workspace"):
            extract(workspace_tar(), [pattern], tmp_path / "dest")


# -- extracting ------------------------------------------------------------------------------


def test_extracts_the_selected_files_streamed_in_small_chunks(tmp_path: Path) -> None:
    big = os.urandom(3 * 1024 * 1024 + 5)  # several of the copy's blocks
    chunks = workspace_tar(
        folder("out"),
        entry("out/a.csv", b"a,b\n1,2\n"),
        entry("out/big.bin", big),
        folder("out/sub"),
        entry("out/sub/x.csv", b"nested"),
        entry("report.txt", b"done\n"),
        entry("notes.md", b"not wanted"),
        entry("empty.csv", b""),
    )
    dest = tmp_path / "artifacts" / "exec" / "task"
    artifacts = extract(chunks, ["out/*.csv", "out/*.bin", "report.txt", "*.csv"], dest)

    assert [a.path for a in artifacts] == ["empty.csv", "out/a.csv", "out/big.bin", "report.txt"]
    by_path = {a.path: a for a in artifacts}
    assert by_path["out/a.csv"] == Artifact(
        path="out/a.csv",
        size=8,
        sha256=sha256(b"a,b\n1,2\n"),
        local_path=dest / "out" / "a.csv",
    )
    assert by_path["out/big.bin"].size == len(big)
    assert by_path["out/big.bin"].sha256 == sha256(big)
    assert by_path["empty.csv"].sha256 == sha256(b"")
    assert (dest / "out" / "big.bin").read_bytes() == big
    assert (dest / "report.txt").read_bytes() == b"done\n"
    assert files_under(dest) == ["empty.csv", "out/a.csv", "out/big.bin", "report.txt"]


def test_a_folder_pattern_takes_everything_below_it(tmp_path: Path) -> None:
    chunks = workspace_tar(
        folder("out"),
        folder("out/empty"),
        entry("out/a.txt", b"a"),
        entry("out/deep/er/b.txt", b"b"),
        entry("outside.txt", b"no"),
    )
    artifacts = extract(chunks, ["out"], tmp_path / "dest")
    assert [a.path for a in artifacts] == ["out/a.txt", "out/deep/er/b.txt"]
    # folders are not recorded, and an empty one is not copied
    assert not (tmp_path / "dest" / "out" / "empty").exists()


def test_double_star_matches_any_depth(tmp_path: Path) -> None:
    chunks = workspace_tar(
        entry("a.csv", b"1"), entry("x/b.csv", b"2"), entry("x/y/c.csv", b"3"), entry("x/d.txt")
    )
    artifacts = extract(chunks, ["**/*.csv"], tmp_path / "dest")
    assert [a.path for a in artifacts] == ["a.csv", "x/b.csv", "x/y/c.csv"]


def test_unselected_links_and_devices_are_ignored(tmp_path: Path) -> None:
    chunks = workspace_tar(
        entry("node_modules/.bin/tool", kind=tarfile.SYMTYPE, linkname="/usr/bin/env"),
        entry("dev/null", kind=tarfile.CHRTYPE),
        entry("out/a.txt", b"a"),
    )
    assert [a.path for a in extract(chunks, ["out/*"], tmp_path / "dest")] == ["out/a.txt"]


def test_a_pattern_matching_nothing_gives_no_artifacts(tmp_path: Path) -> None:
    chunks = workspace_tar(entry("a.txt", b"a"))
    assert extract(chunks, ["out/*.csv"], tmp_path / "dest") == []
    assert not (tmp_path / "dest").exists()


def test_the_executable_bit_is_kept(tmp_path: Path) -> None:
    chunks = workspace_tar(
        entry("bin/tool", b"#!/bin/sh\n", mode=0o755), entry("bin/data", b"x", mode=0o644)
    )
    extract(chunks, ["bin"], tmp_path / "dest")
    assert os.stat(tmp_path / "dest" / "bin" / "tool").st_mode & 0o100
    assert not os.stat(tmp_path / "dest" / "bin" / "data").st_mode & 0o111


def test_an_archive_of_a_sub_folder_maps_back_under_the_workspace(tmp_path: Path) -> None:
    # Docker's get_archive of /workspace/out/sub names its members sub/...
    data = make_tar(folder("sub"), entry("sub/x.csv", b"x"), entry("sub/y.txt", b"y"))
    artifacts = extract_artifacts(
        chunked(data), ["out/sub/*.csv"], tmp_path / "dest", strip_prefix="", add_prefix="out"
    )
    assert [(a.path, a.local_path) for a in artifacts] == [
        ("out/sub/x.csv", tmp_path / "dest" / "out" / "sub" / "x.csv")
    ]


def test_empty_chunks_in_the_stream_are_fine(tmp_path: Path) -> None:
    data = make_tar(folder("workspace"), entry("workspace/a.txt", b"hello"))
    chunks = iter([b"", *(piece for c in chunked(data, 100) for piece in (c, b""))])
    artifacts = extract(chunks, ["a.txt"], tmp_path / "dest")
    assert [a.sha256 for a in artifacts] == [sha256(b"hello")]


def test_the_stream_is_read_to_its_end(tmp_path: Path) -> None:
    data = make_tar(folder("workspace"), entry("workspace/a.txt", b"hello"))
    consumed = []

    def stream() -> Iterator[bytes]:
        for piece in chunked(data, 512):
            consumed.append(len(piece))
            yield piece

    extract(stream(), ["a.txt"], tmp_path / "dest")
    assert sum(consumed) == len(data)


def test_a_file_already_in_dest_is_replaced_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    dest = tmp_path / "dest"
    (dest / "out").mkdir(parents=True)
    (dest / "out" / "a.txt").symlink_to(outside)
    (dest / "out" / "b.txt").write_text("old")

    extract(
        workspace_tar(entry("out/a.txt", b"new a"), entry("out/b.txt", b"new b")), ["out"], dest
    )

    assert outside.read_text() == "precious"
    assert not (dest / "out" / "a.txt").is_symlink()
    assert (dest / "out" / "a.txt").read_bytes() == b"new a"
    assert (dest / "out" / "b.txt").read_bytes() == b"new b"


def test_a_link_already_in_dest_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "out").symlink_to(outside)
    with pytest.raises(ArchiveError, match=r"cannot write artifact 'out/a\.txt' under .*dest"):
        extract(workspace_tar(entry("out/a.txt", b"x")), ["out/*"], dest)
    assert list(outside.iterdir()) == []


# -- refused members -------------------------------------------------------------------------

REFUSED = [
    pytest.param(
        entry("/etc/cron.d/evil", b"x"),
        ["**"],
        r"archive member '/etc/cron\.d/evil' has an absolute name",
        id="absolute-name",
    ),
    pytest.param(
        entry("workspace/../escape.txt", b"x"),
        ["**"],
        r"archive member 'workspace/\.\./escape\.txt' has a '\.\.' in its name",
        id="dot-dot",
    ),
    pytest.param(
        entry("workspace/out/passwd", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
        ["out/*"],
        r"artifact 'out/passwd' is a symbolic link \(to '/etc/passwd'\): links are not copied",
        id="symlink-outside",
    ),
    pytest.param(
        entry("workspace/out/inner", kind=tarfile.SYMTYPE, linkname="ok.txt"),
        ["out/*"],
        r"artifact 'out/inner' is a symbolic link \(to 'ok\.txt'\): links are not copied",
        id="symlink-inside",
    ),
    pytest.param(
        entry("workspace/out/shadow", kind=tarfile.LNKTYPE, linkname="etc/shadow"),
        ["out/*"],
        r"artifact 'out/shadow' is a hard link \(to 'etc/shadow'\): links are not copied",
        id="hard-link-outside",
    ),
    pytest.param(
        entry("workspace/out/tty", kind=tarfile.CHRTYPE),
        ["out/*"],
        r"artifact 'out/tty' is a character device: only regular files are copied",
        id="char-device",
    ),
    pytest.param(
        entry("workspace/out/disk", kind=tarfile.BLKTYPE),
        ["out/*"],
        r"artifact 'out/disk' is a block device: only regular files are copied",
        id="block-device",
    ),
    pytest.param(
        entry("workspace/out/pipe", kind=tarfile.FIFOTYPE),
        ["out/*"],
        r"artifact 'out/pipe' is a fifo: only regular files are copied",
        id="fifo",
    ),
    pytest.param(
        entry("elsewhere/x.txt", b"x"),
        ["**"],
        r"archive member 'elsewhere/x\.txt' is not under 'workspace', the root of the archive",
        id="outside-the-root",
    ),
    pytest.param(
        entry("workspace/out/ok.txt", b"again"),
        ["out/*"],
        r"artifact 'out/ok\.txt' appears twice in the archive",
        id="duplicate",
    ),
]


@pytest.mark.parametrize(("planted", "patterns", "message"), REFUSED)
def test_a_planted_member_is_refused_and_nothing_stays(
    tmp_path: Path, planted: tuple[tarfile.TarInfo, bytes], patterns: list[str], message: str
) -> None:
    # a good file comes first, so the refusal also proves the clean-up
    data = make_tar(folder("workspace"), entry("workspace/out/ok.txt", b"fine"), planted)
    dest = tmp_path / "artifacts" / "exec" / "task"
    with pytest.raises(ArchiveError, match=message):
        extract_artifacts(chunked(data), patterns, dest, strip_prefix="workspace")
    assert not dest.exists()
    assert (tmp_path / "artifacts").exists() is False
    assert files_under(tmp_path) == []


def test_a_header_claiming_20_gib_is_refused_before_its_data_is_read(tmp_path: Path) -> None:
    huge = tarfile.TarInfo("workspace/out/huge.bin")
    huge.size = 20 * 1024**3
    buffer = io.BytesIO()
    archive = tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closing it would end the archive
    for info, content in (folder("workspace"), entry("workspace/out/a.txt", b"a")):
        archive.addfile(info, io.BytesIO(content))
    # then the header alone, without its data: reading the data would fail differently
    data = buffer.getvalue() + huge.tobuf(tarfile.PAX_FORMAT)
    dest = tmp_path / "dest"
    with pytest.raises(
        ArchiveError,
        match=r"artifact 'out/huge\.bin' is 20\.0 GiB; with the 1 B already copied that is"
        r" over the limit of 1\.0 MiB",
    ):
        extract(chunked(data, 4096), ["out/*"], dest, max_total_bytes=1024**2)
    assert files_under(tmp_path) == []


def test_the_size_limit_counts_all_files_together(tmp_path: Path) -> None:
    chunks = workspace_tar(entry("a.bin", b"x" * 60), entry("b.bin", b"y" * 60))
    with pytest.raises(ArchiveError, match=r"'b\.bin' is 60 B; with the 60 B already copied"):
        extract(chunks, ["*.bin"], tmp_path / "dest", max_total_bytes=100)
    assert files_under(tmp_path) == []


def test_more_than_max_files_is_refused(tmp_path: Path) -> None:
    chunks = workspace_tar(*(entry(f"out/{i}.txt", b"x") for i in range(6)))
    with pytest.raises(ArchiveError, match=r"more than 5 files match the artifact patterns"):
        extract(chunks, ["out"], tmp_path / "dest", max_files=5)
    assert files_under(tmp_path) == []
    chunks = workspace_tar(*(entry(f"out/{i}.txt", b"x") for i in range(5)))
    assert len(extract(chunks, ["out"], tmp_path / "dest", max_files=5)) == 5


def test_a_damaged_archive_is_an_archive_error(tmp_path: Path) -> None:
    data = make_tar(folder("workspace"), entry("workspace/a.txt", b"x" * 2000))
    with pytest.raises(ArchiveError, match=r"the archive of /workspace cannot be read: "):
        extract(chunked(data[:1200]), ["a.txt"], tmp_path / "dest")
    with pytest.raises(ArchiveError, match=r"the archive of /workspace cannot be read: "):
        extract(iter([b"not a tar at all" * 64]), ["a.txt"], tmp_path / "dest")
    assert files_under(tmp_path) == []


def test_an_error_from_the_stream_still_cleans_up(tmp_path: Path) -> None:
    data = make_tar(
        folder("workspace"), entry("workspace/a.txt", b"a"), entry("workspace/b.txt", b"b" * 5000)
    )

    def broken() -> Iterator[bytes]:
        yield data[:2048]
        raise ConnectionError("engine went away")

    with pytest.raises(ConnectionError):
        extract(broken(), ["*.txt"], tmp_path / "dest")
    assert files_under(tmp_path) == []


def test_an_existing_dest_is_kept_on_error(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "earlier.txt").write_text("kept")
    chunks = workspace_tar(
        entry("a.txt", b"a"), entry("b.txt", kind=tarfile.SYMTYPE, linkname="/etc")
    )
    with pytest.raises(ArchiveError):
        extract(chunks, ["*.txt"], dest)
    assert files_under(dest) == ["earlier.txt"]


def test_archive_error_is_a_runner_error() -> None:
    assert issubclass(ArchiveError, RunnerError)


# -- packing -------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A flow's folder: scripts, a nested package, data that is not shipped."""
    base = tmp_path / "project"
    (base / "scripts").mkdir(parents=True)
    (base / "scripts" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (base / "scripts" / "run.sh").chmod(0o755)
    (base / "scripts" / "helper.py").write_text("print('help')\n")
    (base / "pkg" / "sub").mkdir(parents=True)
    (base / "pkg" / "__init__.py").write_text("")
    (base / "pkg" / "sub" / "mod.py").write_text("X = 1\n")
    (base / "data.csv").write_text("a,b\n")
    (base / "flow.yaml").write_text("id: x\n")
    return base


def test_pack_folders_globs_and_files_relative_to_the_base(project: Path) -> None:
    archive = pack_files(["scripts", "**/*.py", "data.csv"], project)
    members = members_of(archive)
    assert list(members) == [
        "data.csv",
        "pkg",
        "pkg/__init__.py",
        "pkg/sub",
        "pkg/sub/mod.py",
        "scripts",
        "scripts/helper.py",
        "scripts/run.sh",
    ]
    assert content_of(archive, "pkg/sub/mod.py") == b"X = 1\n"
    assert members["pkg"].isdir() and members["pkg"].mode == 0o777
    assert members["scripts/run.sh"].mode == 0o777  # executable locally
    assert members["scripts/helper.py"].mode == 0o666
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in members.values())


def test_pack_glob_stays_in_one_folder(project: Path) -> None:
    assert list(members_of(pack_files(["scripts/*.py"], project))) == [
        "scripts",
        "scripts/helper.py",
    ]


def test_pack_is_deterministic_in_order(project: Path) -> None:
    first = members_of(pack_files(["data.csv", "scripts"], project))
    second = members_of(pack_files(["scripts", "data.csv", "scripts/run.sh"], project))
    assert list(first) == list(second)


def test_pack_accepts_an_absolute_path_inside_the_base(project: Path) -> None:
    archive = pack_files([str(project / "scripts" / "run.sh"), str(project)], project)
    assert "scripts/run.sh" in members_of(archive)
    assert "flow.yaml" in members_of(archive)


@pytest.mark.parametrize("pattern", ["../secret.txt", "scripts/../../secret.txt", "/etc/passwd"])
def test_pack_refuses_patterns_outside_the_base(project: Path, pattern: str) -> None:
    (project.parent / "secret.txt").write_text("no")
    with pytest.raises(
        ArchiveError, match=rf"files: '{pattern}' is outside the flow's folder {project}"
    ):
        pack_files([pattern], project)


@pytest.mark.parametrize("pattern", ["missing.txt", "scripts/*.rb", "**/*.go"])
def test_pack_refuses_a_pattern_matching_nothing(project: Path, pattern: str) -> None:
    with pytest.raises(ArchiveError, match=rf"files: '{re.escape(pattern)}' matches nothing under"):
        pack_files(["scripts", pattern], project)


def test_pack_follows_links_inside_the_base(project: Path) -> None:
    (project / "scripts" / "alias.sh").symlink_to(project / "scripts" / "run.sh")
    (project / "lib").symlink_to(project / "pkg")
    archive = pack_files(["scripts/alias.sh", "lib"], project)
    members = members_of(archive)
    assert members["scripts/alias.sh"].isreg() and members["scripts/alias.sh"].mode == 0o777
    assert content_of(archive, "scripts/alias.sh") == b"#!/bin/sh\necho hi\n"
    assert content_of(archive, "lib/sub/mod.py") == b"X = 1\n"


def test_pack_refuses_links_pointing_outside_the_base(project: Path) -> None:
    secret = project.parent / "secret.txt"
    secret.write_text("no")
    (project / "scripts" / "leak.txt").symlink_to(secret)
    with pytest.raises(
        ArchiveError,
        match=r"files: 'scripts': 'scripts/leak\.txt' is a symbolic link to .*secret\.txt,"
        r" outside the flow's folder",
    ):
        pack_files(["scripts"], project)


def test_pack_refuses_a_link_loop(project: Path) -> None:
    (project / "pkg" / "sub" / "up").symlink_to(project / "pkg")
    with pytest.raises(ArchiveError, match=r"'pkg/sub/up' is a symbolic link that loops back"):
        pack_files(["pkg"], project)


def test_pack_refuses_a_broken_link(project: Path) -> None:
    (project / "scripts" / "gone.sh").symlink_to(project / "nowhere.sh")
    with pytest.raises(ArchiveError, match=r"files: 'scripts': cannot read .*gone\.sh"):
        pack_files(["scripts"], project)


def test_pack_refuses_a_fifo(project: Path) -> None:
    os.mkfifo(project / "scripts" / "pipe")
    with pytest.raises(
        ArchiveError, match=r"'scripts/pipe' is not a regular file or folder \(a fifo\)"
    ):
        pack_files(["scripts"], project)


def test_pack_adds_extra_files_under_their_own_names(project: Path, tmp_path: Path) -> None:
    local = tmp_path / "elsewhere" / "local.csv"
    local.parent.mkdir()
    local.write_text("1,2\n")
    archive = pack_files(["scripts/run.sh"], project, extra={"inputs/data/local.csv": local})
    members = members_of(archive)
    assert list(members) == [
        "inputs",
        "inputs/data",
        "inputs/data/local.csv",
        "scripts",
        "scripts/run.sh",
    ]
    assert members["inputs/data"].isdir() and members["inputs/data"].mode == 0o777
    assert members["inputs/data/local.csv"].mode == 0o666
    assert content_of(archive, "inputs/data/local.csv") == b"1,2\n"
    assert members_of(pack_files([], project, extra={"inputs/x/y.csv": local})).keys() == {
        "inputs",
        "inputs/x",
        "inputs/x/y.csv",
    }


def test_pack_refuses_bad_extra_entries(project: Path, tmp_path: Path) -> None:
    local = tmp_path / "local.csv"
    local.write_text("x")
    with pytest.raises(ArchiveError, match=r"the name must be a relative path without '\.\.'"):
        pack_files([], project, extra={"../evil": local})
    with pytest.raises(ArchiveError, match=r"the name must be a relative path"):
        pack_files([], project, extra={"/etc/evil": local})
    with pytest.raises(ArchiveError, match=r"cannot copy .*missing\.csv to /workspace/inputs/m/"):
        pack_files([], project, extra={"inputs/m/missing.csv": tmp_path / "missing.csv"})
    with pytest.raises(ArchiveError, match=r"it is a folder, not a regular file"):
        pack_files([], project, extra={"inputs/d/dir": tmp_path})
    with pytest.raises(ArchiveError, match=r"/workspace/data\.csv would be written twice"):
        pack_files(["data.csv"], project, extra={"data.csv": local})
    with pytest.raises(ArchiveError, match=r"/workspace/data\.csv would be both a file"):
        pack_files(["data.csv"], project, extra={"data.csv/x": local})


def test_pack_refuses_more_than_the_limit(project: Path) -> None:
    (project / "big.bin").write_bytes(b"x" * 2000)
    with pytest.raises(
        ArchiveError,
        match=r"the files to copy into /workspace add up to 2\.0 KiB, over the limit of"
        r" 1\.0 KiB \(largest: big\.bin \(2\.0 KiB\)",
    ):
        pack_files(["big.bin", "data.csv"], project, max_bytes=1024)
    assert pack_files(["data.csv"], project, max_bytes=1024)


def test_pack_a_missing_base_folder(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"files: cannot read the folder .*nope"):
        pack_files(["x"], tmp_path / "nope")


# -- round trip ----------------------------------------------------------------------------


def test_pack_then_extract_gives_back_the_files(project: Path, tmp_path: Path) -> None:
    archive = pack_files(["scripts", "pkg", "data.csv"], project)
    dest = tmp_path / "back"
    artifacts = extract_artifacts(
        chunked(archive, 7), ["scripts/*.sh", "pkg", "*.csv"], dest, strip_prefix=""
    )
    assert [a.path for a in artifacts] == [
        "data.csv",
        "pkg/__init__.py",
        "pkg/sub/mod.py",
        "scripts/run.sh",
    ]
    for artifact in artifacts:
        original = (project / artifact.path).read_bytes()
        assert artifact.local_path.read_bytes() == original
        assert artifact.sha256 == sha256(original)
        assert artifact.size == len(original)
    assert os.stat(dest / "scripts" / "run.sh").st_mode & 0o100


def test_a_destination_that_cannot_be_created_is_an_archive_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ArchiveError, match=r"cannot create the artifacts folder .*file/dest"):
        extract(workspace_tar(entry("a.txt", b"a")), ["a.txt"], blocker / "dest")


def test_a_file_where_a_folder_is_needed_is_an_archive_error(tmp_path: Path) -> None:
    chunks = workspace_tar(entry("out", b"a file"), entry("out/x.txt", b"x"))
    with pytest.raises(ArchiveError, match=r"cannot write artifact 'out/x\.txt' under "):
        extract(chunks, ["out", "out/*"], tmp_path / "dest")
    assert files_under(tmp_path) == []


def test_deep_folders_are_walked_once_not_once_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2,000 files 400 folders deep took 8 s: each file opened every folder on its way
    again. Now a file in the folder of the one before opens none, so the count of
    `os.open` calls grows with the files plus the folders, not with their product."""
    deep = "/".join(["d"] * 100)
    members = [entry(f"{deep}/f{n}.txt", b"x") for n in range(50)]
    members += [entry(f"{deep}/e/f{n}.txt", b"y") for n in range(50)]  # one level down
    members += [entry(f"{deep[:-2]}/s{n}/g.txt", b"z") for n in range(20)]  # siblings
    opened = 0
    real_open = os.open

    def counting(*args: object, **kwargs: object) -> int:
        nonlocal opened
        opened += 1
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting)
    found = extract(workspace_tar(*members), ["**"], tmp_path / "out")
    monkeypatch.undo()
    assert len(found) == 120
    # a file each, the folders once (twice when made: a first try, then after mkdir), and
    # for each sibling folder at most the levels up to a kept descriptor
    assert opened <= 120 + 2 * 101 + 20 * (2 + 32)
    assert (tmp_path / "out" / deep / "e" / "f49.txt").read_bytes() == b"y"
    assert (tmp_path / "out" / deep[:-2] / "s19" / "g.txt").read_bytes() == b"z"
    assert found[0].local_path == tmp_path / "out" / deep / "e" / "f0.txt"
