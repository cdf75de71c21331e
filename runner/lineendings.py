"""Scripts saved with Windows line endings: detect them before a Linux container trips.

A `files:` script with CRLF endings and a `#!` line fails in the container with
`/bin/sh^M: bad interpreter` or `$'\\r': command not found`, far from the cause. These pure
functions let `runner validate` warn about such a file, and a failed task's error say why.
(A flow file with CRLF endings needs nothing: YAML reads `\\r\\n` as a line break, and an
inline `script:` reaches the container with `\\n` endings.)
"""

from __future__ import annotations

CRLF_SAMPLE_BYTES = 64 * 1024
"""How much of a file is looked at: a script's first lines say it, and a large data file
with a '#!' prefix is not worth reading whole."""


def has_crlf_shebang(content: bytes) -> bool:
    """True when `content` starts with a `#!` line and uses CRLF line endings (its first
    line ends with `\\r\\n`, which is what breaks the interpreter lookup and the shell)."""
    if not content.startswith(b"#!"):
        return False
    first_end = content.find(b"\n", 0, CRLF_SAMPLE_BYTES)
    return first_end > 0 and content[first_end - 1 : first_end] == b"\r"


def crlf_message(name: str) -> str:
    """One line about `name` (a path as the flow writes it) for validate and task errors."""
    return (
        f"{name} has Windows (CRLF) line endings and a '#!' line: in a Linux container it "
        'fails with "$\'\\r\': command not found" or "bad interpreter". Save it with LF '
        "endings (e.g. 'dos2unix', or '*.sh text eol=lf' in .gitattributes)"
    )


def crlf_scripts(files: dict[str, bytes]) -> list[str]:
    """The names among `files` (name -> content) that `has_crlf_shebang`, sorted."""
    return sorted(name for name, content in files.items() if has_crlf_shebang(content))
