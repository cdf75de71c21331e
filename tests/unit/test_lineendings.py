from __future__ import annotations

import pytest

from runner.lineendings import crlf_message, crlf_scripts, has_crlf_shebang


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"#!/bin/sh\r\necho hi\r\n", True),
        (b"#!/usr/bin/env python3\r\nprint(1)\n", True),  # the first line decides
        (b"#!/bin/sh\necho hi\n", False),
        (b"#!/bin/sh\nprintf 'a\\r\\n'\r\n", False),  # a '\r' later is the script's business
        (b"echo hi\r\n", False),  # no '#!': run by an interpreter the task names
        (b"#!/bin/sh", False),  # one line, no ending
        (b"", False),
        (b"\xef\xbb\xbf#!/bin/sh\r\n", False),  # a BOM breaks '#!' anyway; not this warning
    ],
)
def test_has_crlf_shebang(content: bytes, expected: bool) -> None:
    assert has_crlf_shebang(content) is expected


def test_the_message_names_the_file_and_the_symptom_on_one_line() -> None:
    message = crlf_message("scripts/load.sh")
    assert message.startswith("scripts/load.sh has Windows (CRLF) line endings")
    assert "$'\\r': command not found" in message and "\n" not in message


def test_crlf_scripts_lists_the_offenders_sorted() -> None:
    files = {"b.sh": b"#!/bin/sh\r\n", "a.sh": b"#!/bin/sh\r\n", "ok.sh": b"#!/bin/sh\n"}
    assert crlf_scripts(files) == ["a.sh", "b.sh"]
