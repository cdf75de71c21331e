"""Typed run-time inputs checked against what a loaded flow declares: a value for every
input (given, default, or None), each converted to its type (`runner.values`), and the
local files of `file` inputs to copy into the workspace.

A file input's value is where the file is in the container: `/workspace/inputs/ID/NAME`;
`file_inputs` gives the local file to copy there. The file must exist and be readable. A
path given at run time is relative to the current directory, a default in the flow file
to the flow file's folder (like `build:` and volumes).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runner.errors import InputError, PolicyError
from runner.execution import WORKSPACE_PATH
from runner.loader import LoadedFlow
from runner.messages import did_you_mean, shorten
from runner.policy import check_inside_folder
from runner.values import InputType, coerce_value, parse_input_args

__all__ = [
    "INPUT_FILES_PATH",
    "coerce_value",
    "file_inputs",
    "parse_input_args",
    "resolve_inputs",
]

INPUT_FILES_PATH = f"{WORKSPACE_PATH}/inputs"
"""File inputs are copied to INPUT_FILES_PATH/<input id>/<file name> in the workspace."""


def resolve_inputs(loaded: LoadedFlow, given: Mapping[str, Any]) -> dict[str, Any]:
    """A value for every input the flow declares: the one given, else the default, else
    None for an optional input. Raises one InputError listing every problem, each on
    its own line and naming the line of the input's declaration.

    A file input's value is its path in the container (`/workspace/inputs/ID/NAME`); the
    file must exist and be readable now.
    """
    return _resolve(loaded, given)[0]


def file_inputs(loaded: LoadedFlow, given: Mapping[str, Any]) -> dict[str, Path]:
    """Input id -> absolute local path of each file input that has a value, for the runner
    to copy to `/workspace/inputs/ID/NAME` (NAME being the path's name). Raises InputError
    as `resolve_inputs` does."""
    return _resolve(loaded, given)[1]


def _resolve(
    loaded: LoadedFlow, given: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Path]]:
    declared = [spec.id for spec in loaded.flow.inputs]
    values: dict[str, Any] = {}
    files: dict[str, Path] = {}
    problems: list[tuple[int | None, str]] = []

    def where(line: int | None) -> str:
        return f"{loaded.file}:{line}" if line is not None else loaded.file

    for index, spec in enumerate(loaded.flow.inputs):
        line = loaded.line_of(("inputs", index))
        base_dir: Path | None = None  # relative paths of given values: the current directory
        if spec.id in given:
            raw = given[spec.id]
        elif spec.default is not None:
            raw, base_dir = spec.default, loaded.base_dir
        elif spec.is_required:
            problems.append(
                (
                    line,
                    f"{where(line)}: input {spec.id!r} is required: give it with -i {spec.id}=VALUE",
                )
            )
            continue
        else:
            values[spec.id] = None
            continue
        try:
            value = coerce_value(spec.type, raw, spec.values, spec.item_type)
            if spec.type is InputType.FILE:
                if base_dir is not None:  # a default: it must stay in the flow's folder
                    _check_default_file(value, base_dir)
                local = _local_file(value, base_dir)
                files[spec.id] = local
                value = f"{INPUT_FILES_PATH}/{spec.id}/{local.name}"
            values[spec.id] = value
        except ValueError as exc:
            problems.append((line, f"{where(line)}: input {spec.id!r}: {exc}"))
    for name in given:
        if name in declared:
            continue
        line = loaded.line_of(("inputs",)) if declared else None
        if not declared:
            hint = "; this flow declares no inputs"
        else:
            hint = did_you_mean(name, declared) or f"; this flow declares {_listing(declared)}"
        problems.append((line, f"{where(line)}: unknown input {name!r}{hint}"))
    if problems:
        problems.sort(key=lambda problem: (problem[0] is None, problem[0] or 0))
        raise InputError("\n".join(message for _, message in problems))
    return values, files


def _check_default_file(default: str, base_dir: Path) -> None:
    """A file input's default is read from the flow's folder, never from outside it (a
    link in the folder is judged by where it leads): the flow's author, not the operator,
    wrote it."""
    try:
        check_inside_folder(
            default, base_dir, what=f"default {shorten(repr(default))}", resolve=os.path.realpath
        )
    except PolicyError as exc:
        raise ValueError(str(exc)) from None


def _local_file(given: str, base_dir: Path | None) -> Path:
    """The absolute path of a file input, checked to be a readable file.

    Symlinks are not resolved: the file keeps the name the user gave it.
    """
    path = Path(given)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    absolute = Path(os.path.abspath(path))
    full = str(absolute) if str(absolute).isprintable() else repr(str(absolute))
    shown = repr(given) if str(absolute) == given else f"{given!r} ({full})"
    try:
        if not absolute.exists():
            raise ValueError(f"file {shown} does not exist")
        if not absolute.is_file():
            raise ValueError(f"{shown} is not a file")
        if not os.access(absolute, os.R_OK):
            raise ValueError(f"file {shown} cannot be read (permission denied)")
    except OSError as exc:
        raise ValueError(f"cannot look at {shown}: {exc.strerror or exc}") from None
    return absolute


def _listing(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)
