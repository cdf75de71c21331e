"""The Docker log stream read in bulk (runner/backends/docker_logs.py): HTTP chunks, the
engine's frames and the lines they hold, whatever the size of each read."""

from __future__ import annotations

import http.client
import random
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from runner.backends.docker_logs import (
    assemble_lines,
    batch_frames,
    read_frames,
    split_frames,
)
from runner.errors import BackendError
from runner.execution import LogBatch, LogLine, batch_lines, unbatch_lines

T0 = datetime(2026, 12, 3, 17, 0, 0, tzinfo=UTC)


def stamp(offset_us: int = 0) -> bytes:
    """The engine's RFC 3339 time with nanoseconds, `offset_us` after T0."""
    when = T0 + timedelta(microseconds=offset_us)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f").encode() + b"321Z"


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def chunked(*parts: bytes, extension: bytes = b"") -> bytes:
    """An HTTP/1.1 chunked body: one chunk a part, as the engine sends one a frame."""
    return b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in parts) + b"0\r\n\r\n"


class Pieces:
    """A connection handing out `data` in pieces of the given sizes (cycled), as reads of
    a socket do."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.reads = data, sizes, 0

    def read1(self, size: int) -> bytes:
        take = min(size, self.sizes[self.reads % len(self.sizes)])
        self.reads += 1
        piece, self.data = self.data[:take], self.data[take:]
        return piece


def lines_of(frames: list[tuple[int, bytes]]) -> list[LogLine]:
    return list(assemble_lines(frames))


def texts(lines: list[LogLine]) -> list[tuple[str, str]]:
    return [(ln.stream, ln.line) for ln in lines]


# -- HTTP chunks ---------------------------------------------------------------------------


def frames_of(body: bytes, sizes: list[int]) -> list[tuple[int, bytes]]:
    reader = Pieces(body, sizes)
    return [
        (number, payload)
        for numbers, payloads in read_frames(reader.read1, 1 << 20, "c")
        for number, payload in zip(numbers, payloads, strict=True)
    ]


FRAMES = [
    (1, stamp() + b" one\n"),
    (2, stamp() + b" 0\r\n\r\n"),  # text that looks like chunk syntax
    (1, stamp() + b" " + b"x" * 300),
    (0, b"stdin"),
    (1, stamp() + b" \n"),
]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 1 << 20])
def test_frames_come_whole_whatever_the_size_of_each_read(size: int) -> None:
    body = chunked(*[frame(n, p) for n, p in FRAMES])
    assert frames_of(body, [size]) == FRAMES


@pytest.mark.parametrize("cut", [1, 5, 8, 9, 30, 1000])
def test_frames_across_chunks_and_chunks_of_several_frames(cut: int) -> None:
    stream = b"".join(frame(n, p) for n, p in FRAMES)
    body = chunked(*[stream[i : i + cut] for i in range(0, len(stream), cut)])
    for size in (1, 7, len(body)):
        assert frames_of(body, [size]) == FRAMES


def test_chunk_extensions_are_ignored() -> None:
    body = chunked(*[frame(n, p) for n, p in FRAMES], extension=b";name=value")
    assert frames_of(body, [4]) == frames_of(body, [len(body)]) == FRAMES


def test_a_body_cut_short_is_an_incomplete_read() -> None:
    body = chunked(*[frame(n, p) for n, p in FRAMES])[:-7]  # no last chunk
    with pytest.raises(http.client.IncompleteRead):
        frames_of(body, [3])


def test_a_chunk_size_that_is_not_a_number_is_an_http_error() -> None:
    with pytest.raises(http.client.HTTPException, match="not a number: b'zz'"):
        frames_of(b"zz\r\nhello\r\n", [100])


def test_a_system_error_comes_after_the_frames_before_it() -> None:
    error = frame(3, b"Error grabbing logs: invalid character\n")
    body = chunked(frame(1, stamp() + b" ok\n"), error, frame(1, stamp() + b" never\n"))
    reader = Pieces(body, [len(body)])
    frame_lists = read_frames(reader.read1, 1 << 20, "0123456789abcdef")
    assert next(frame_lists) == ([1], [stamp() + b" ok\n"])
    with pytest.raises(
        BackendError,
        match=r"^the Docker engine failed while sending the logs of container 0123456789ab: "
        r"Error grabbing logs: invalid character$",
    ):
        next(frame_lists)


# -- frames --------------------------------------------------------------------------------


def test_frames_split_across_reads_come_whole() -> None:
    data = frame(1, stamp() + b" one\n") + frame(2, stamp() + b" " + b"x" * 20_000)
    for size in (1, 3, 7, 8, 9, 1000, 100_000):
        blocks = [data[i : i + size] for i in range(0, len(data), size)]
        found = [
            (number, payload)
            for numbers, payloads in split_frames(blocks, "c1")
            for number, payload in zip(numbers, payloads, strict=True)
        ]
        assert found == [(1, stamp() + b" one\n"), (2, stamp() + b" " + b"x" * 20_000)]


def test_a_system_error_frame_raises_with_the_engines_words() -> None:
    data = frame(1, stamp() + b" ok\n") + frame(3, b"Error grabbing logs: invalid character\n")
    frame_lists = split_frames([data[:20], data[20:]], "0123456789abcdef")
    assert next(frame_lists) == ([1], [stamp() + b" ok\n"])
    with pytest.raises(
        BackendError,
        match=r"the Docker engine failed while sending the logs of container 0123456789ab: "
        r"Error grabbing logs: invalid character$",
    ):
        next(frame_lists)


def test_stdin_frames_are_dropped() -> None:
    assert texts(lines_of([(0, stamp() + b" in\n"), (1, stamp() + b" out\n")])) == [
        ("stdout", "out")
    ]


# -- lines ---------------------------------------------------------------------------------


def test_line_endings_go_and_a_carriage_return_inside_stays() -> None:
    frames = [
        (1, stamp() + b" crlf\r\n"),
        (1, stamp() + b" progress 1\rprogress 2\n"),
        (1, stamp() + b" two returns\r\r\n"),
        (1, stamp() + b" \n"),
        (1, stamp() + b" \r\n"),
        (2, stamp() + b" err\r\n"),
    ]
    assert texts(lines_of(frames)) == [
        ("stdout", "crlf"),
        ("stdout", "progress 1\rprogress 2"),
        ("stdout", "two returns\r"),
        ("stdout", ""),
        ("stdout", ""),
        ("stderr", "err"),
    ]


def test_a_long_line_split_in_frames_is_one_line_with_the_time_of_its_first() -> None:
    # The engine cuts lines longer than 16 KiB in frames of the same time; the last has '\n'.
    # A UTF-8 character is cut in two between them.
    text = "é" * 20_000 + "x" * 10
    raw = text.encode()
    cut = 16_385  # inside a 2-byte character
    frames = [
        (1, stamp(1) + b" " + raw[:cut]),
        (2, stamp(2) + b" meanwhile on stderr\n"),
        (1, stamp(1) + b" " + raw[cut:] + b"\n"),
        (1, stamp(3) + b" next\n"),
    ]
    lines = lines_of(frames)
    assert texts(lines) == [
        ("stderr", "meanwhile on stderr"),
        ("stdout", text),
        ("stdout", "next"),
    ]
    assert lines[1].time == T0 + timedelta(microseconds=1)


def test_a_huge_line_survives() -> None:
    raw = b"y" * (8 << 20)
    frames = [(1, stamp() + b" " + raw[i : i + 16_384]) for i in range(0, len(raw), 16_384)]
    frames.append((1, stamp() + b" \n"))
    assert texts(lines_of(frames)) == [("stdout", raw.decode())]


def test_a_last_line_without_newline_comes_at_the_end() -> None:
    frames = [(1, stamp() + b" first\n"), (1, stamp() + b" no newline"), (2, stamp() + b" e\n")]
    assert texts(lines_of(frames)) == [
        ("stdout", "first"),
        ("stderr", "e"),
        ("stdout", "no newline"),
    ]


def test_a_pending_line_ends_when_a_frame_of_another_time_comes() -> None:
    # The `local` log driver drops the '\n' of a long line's last fragment.
    frames = [(1, stamp(1) + b" lost its newline"), (1, stamp(2) + b" next\n")]
    assert texts(lines_of(frames)) == [("stdout", "lost its newline"), ("stdout", "next")]


def test_a_frame_of_several_lines_gives_each() -> None:
    frames = [(1, stamp() + b" a\nb\n\nc\n"), (1, stamp() + b" d\nhalf"), (1, stamp() + b" done\n")]
    assert texts(lines_of(frames)) == [
        ("stdout", line) for line in ["a", "b", "", "c", "d", "halfdone"]
    ]


def test_a_frame_without_a_time_is_taken_whole() -> None:
    before = datetime.now(UTC)
    lines = lines_of([(1, b"no time here\n"), (1, b"\n")])
    assert texts(lines) == [("stdout", "no time here"), ("stdout", "")]
    assert all(ln.time >= before for ln in lines)


def test_invalid_utf8_is_replaced() -> None:
    assert texts(lines_of([(1, stamp() + b" bad \xff byte\n")])) == [("stdout", "bad \ufffd byte")]


def test_lines_of_one_stream_within_ten_ms_share_a_batch_and_its_first_time() -> None:
    frames = [
        (1, stamp(0) + b" a\n"),
        (1, stamp(4_000) + b" b\n"),
        (1, stamp(9_999) + b" c\n"),
        (1, stamp(10_000) + b" d\n"),  # the next hundredth of a second
        (2, stamp(10_001) + b" e\n"),
        (1, stamp(10_002) + b" f\n"),
    ]
    batches = list(batch_frames([([n for n, _ in frames], [p for _, p in frames])]))
    assert batches == [
        LogBatch("stdout", T0, ("a", "b", "c")),
        LogBatch("stdout", T0 + timedelta(microseconds=10_000), ("d",)),
        LogBatch("stderr", T0 + timedelta(microseconds=10_001), ("e",)),
        LogBatch("stdout", T0 + timedelta(microseconds=10_002), ("f",)),
    ]


def test_a_time_of_another_length_starts_a_batch() -> None:
    # RFC 3339 with nanoseconds drops trailing zeros: times of one batch may differ in length.
    short = b"2026-12-03T17:00:00.1Z"
    frames = [(1, short + b" a\n"), (1, short + b" b\n"), (1, stamp(100_000) + b" c\n")]
    batches = list(batch_frames([([n for n, _ in frames], [p for _, p in frames])]))
    assert [b.lines for b in batches] == [("a", "b"), ("c",)]
    assert batches[0].time == T0 + timedelta(microseconds=100_000)


def _random_output(rng: random.Random) -> tuple[list[tuple[int, bytes]], list[tuple[str, str]]]:
    """Frames as the engine sends them for random output on both streams (lines cut in
    fragments, CRLF, empty lines, non-ASCII) and the lines they hold, in the order they end."""
    frames: list[tuple[int, bytes]] = []
    expected: list[tuple[str, str]] = []
    open_lines: dict[int, list[bytes]] = {}
    clock = 0
    for _ in range(400):
        number = rng.choice((1, 1, 1, 2))
        clock += rng.choice((1, 50, 3_000, 12_000))
        if number in open_lines:  # finish the line this stream began, at its time
            rest = open_lines.pop(number)
            frames.extend((number, part) for part in rest)
            continue
        text = rng.choice(["", "plain", "ünï ✓", "tab\there", "x" * rng.randint(1, 300)])
        ending = rng.choice((b"\n", b"\n", b"\r\n"))
        raw = text.encode() + ending
        expected.append(("stdout" if number == 1 else "stderr", text))
        when = stamp(clock)
        cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(0, 2))))
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        pieces = [p for p in pieces if p]
        frames.append((number, when + b" " + pieces[0]))
        if len(pieces) > 1:
            open_lines[number] = [when + b" " + p for p in pieces[1:]]
    for number, rest in open_lines.items():
        frames.extend((number, part) for part in rest)
    # the order lines end in: a stream's line ends at its last fragment
    order: list[tuple[str, str]] = []
    pending = {
        1: [e for e in expected if e[0] == "stdout"],
        2: [e for e in expected if e[0] == "stderr"],
    }
    for number, payload in frames:
        if payload.endswith(b"\n"):
            order.append(pending[number].pop(0))
    return frames, order


@pytest.mark.parametrize("seed", range(20))
def test_random_output_read_in_random_pieces_gives_every_line_in_order(seed: int) -> None:
    rng = random.Random(seed)
    frames, expected = _random_output(rng)
    body = chunked(*[frame(n, p) for n, p in frames])
    reader = Pieces(body, [rng.choice((1, 7, 100, 4096, 70_000)) for _ in range(50)])
    batches = list(batch_frames(read_frames(reader.read1, 1 << 18, "c")))
    assert [(ln.stream, ln.line) for ln in unbatch_lines(batches)] == expected
    stamped = {payload[:30] for _, payload in frames}
    for batch in batches:  # each batch has the time of a frame
        assert batch.time.strftime("%Y-%m-%dT%H:%M:%S.%f").encode() + b"321Z" in stamped


# -- the generic fallback --------------------------------------------------------------------


def test_lines_read_one_by_one_are_passed_on_at_once() -> None:
    """A line is not held back until the next one arrives (on a live task that can be
    minutes): each batch is yielded before the next line is read."""
    later = T0 + timedelta(seconds=1)
    lines = [
        LogLine("stdout", "a", T0),
        LogLine("stdout", "b", T0),
        LogLine("stderr", "c", T0),
        LogLine("stdout", "", later),
    ]
    read: list[LogLine] = []

    def reader() -> Iterator[LogLine]:
        for line in lines:
            read.append(line)
            yield line

    batches = []
    for batch in batch_lines(reader()):
        assert read[-1] == LogLine(batch.stream, batch.lines[-1], batch.time)
        batches.append(batch)
    assert batches == [LogBatch(ln.stream, ln.time, (ln.line,)) for ln in lines]
    assert list(unbatch_lines(batches)) == lines
    assert list(batch_lines(iter([]))) == []
