"""The Docker engine's log stream, read in bulk: pure functions from the bytes of a
`/containers/ID/logs?timestamps=1` response to batches of lines.

    read_frames(read1)      an HTTP/1.1 chunked body -> (stream numbers, payloads) of the
                            whole frames of the chunks each read completed (the engine's
                            8-byte header: stream, 3 zero bytes, size)
    split_frames(blocks)    the same for a body already de-chunked, block by block
    batch_frames(lists)     -> LogBatch: lines reassembled, decoded, CR dropped, runs of
                            one stream within the same 10 ms of engine time in one batch

Why in bulk: the engine sends one HTTP chunk, holding one frame, per line. Read through
http.client, every line costs a `read1` call, a chunk-size line and a few slices, and then
a parse of its time and a `LogLine` of its own: about half of the runner's CPU on a task
printing 500,000 lines. Here one read of the socket (up to LOG_READ_SIZE bytes) is split
in one pass, and the lines of a run of frames are decoded with one `decode` and one
`split`; a time is parsed once per batch.

No I/O, no Docker: tested in tests/unit/test_docker_logs.py.
"""

from __future__ import annotations

import http.client
import struct
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

from runner.errors import BackendError
from runner.execution import LogBatch, LogLine, Stream, unbatch_lines

__all__ = [
    "BATCH_WINDOW",
    "FRAME_HEADER",
    "SYSTEM_ERROR_STREAM",
    "FrameList",
    "assemble_lines",
    "batch_frames",
    "read_frames",
    "split_frames",
]

FRAME_HEADER = struct.Struct(">BxxxL")
STREAMS: dict[int, Stream] = {1: "stdout", 2: "stderr"}
SYSTEM_ERROR_STREAM = 3
BATCH_WINDOW = 22
"""Frames whose times agree in their first 22 characters (`2024-05-01T12:00:00.12`, to the
hundredth of a second) share a batch, and the time of its first line."""

FrameList = tuple[list[int], list[bytes]]
"""The frames of one read: their stream numbers and their payloads (`<time> <text>`)."""


def read_frames(read1: Callable[[int], bytes], size: int, container_id: str) -> Iterator[FrameList]:
    """The frames of an HTTP/1.1 chunked body, read `size` bytes at most at a time from the
    connection (`read1` of its buffered socket: what has arrived, without waiting for
    more): the whole frames of the chunks completed by each read. The body ends at the
    chunk of size 0 (trailers are not read).

    The engine sends one chunk per frame: a chunk that is exactly one frame is taken as
    it is, in one step; any other (a frame across chunks, several in one) goes through
    `split_frames`' loop. A frame of stream 3 (the engine's own error) raises BackendError
    with its message, after the frames before it. A connection that ends first raises
    http.client.IncompleteRead, a chunk size that is not hexadecimal
    http.client.HTTPException, as http.client itself would."""
    unpack_header = FRAME_HEADER.unpack_from
    raw = b""
    position = 0
    carry = b""  # chunk data ending inside a frame
    while True:
        more = read1(size)
        if not more:
            raise http.client.IncompleteRead(raw[position:])
        raw = raw[position:] + more if position < len(raw) else more
        position = 0
        end = len(raw)
        find = raw.find
        streams: list[int] = []
        payloads: list[bytes] = []
        last = False
        error: str | None = None
        while True:
            eol = find(b"\r\n", position)
            if eol < 0:
                break
            try:
                length = int(raw[position:eol], 16)
            except ValueError:
                length = _chunk_size(raw[position:eol])
            if length == 0:
                last = True
                break
            start = eol + 2
            stop = start + length
            if stop + 2 > end:  # the chunk and its CRLF have not all arrived
                break
            position = stop + 2
            if not carry and length >= 8:
                number, frame_size = unpack_header(raw, start)
                if frame_size + 8 == length and number != SYSTEM_ERROR_STREAM:
                    streams.append(number)
                    payloads.append(raw[start + 8 : stop])
                    continue
            carry, error = _take_frames(carry + raw[start:stop], streams, payloads)
            if error is not None:
                break
        if payloads:
            yield streams, payloads
        if error is not None:
            raise _engine_error(container_id, error)
        if last:
            return


def split_frames(blocks: Iterable[bytes], container_id: str) -> Iterator[FrameList]:
    """The whole frames of each block of the multiplexed stream (a frame may be split
    across blocks: its start waits for the next one). A frame of stream 3 (the engine's
    own error) raises BackendError with its message, after the frames before it."""
    carry = b""
    for block in blocks:
        streams: list[int] = []
        payloads: list[bytes] = []
        carry, error = _take_frames(carry + block if carry else block, streams, payloads)
        if payloads:
            yield streams, payloads
        if error is not None:
            raise _engine_error(container_id, error)


def _take_frames(
    buffer: bytes, streams: list[int], payloads: list[bytes]
) -> tuple[bytes, str | None]:
    """Append the whole frames at the start of `buffer` to `streams` and `payloads`; return
    the bytes after them (a frame not yet complete), and the message of a stream 3 frame
    if one stopped the split."""
    unpack_header = FRAME_HEADER.unpack_from
    end = len(buffer)
    position = 0
    while end - position >= 8:
        number, size = unpack_header(buffer, position)
        stop = position + 8 + size
        if stop > end:
            break
        if number == SYSTEM_ERROR_STREAM:
            return b"", buffer[position + 8 : stop].decode("utf-8", "replace").strip()
        streams.append(number)
        payloads.append(buffer[position + 8 : stop])
        position = stop
    return buffer[position:], None


def _chunk_size(line: bytes) -> int:
    """The size on a chunk's first line that has more than hexadecimal digits."""
    try:
        return int(line.partition(b";")[0], 16)  # chunk extensions are ignored
    except ValueError:
        raise http.client.HTTPException(
            f"the engine sent a chunk size that is not a number: {line[:20]!r}"
        ) from None


def _engine_error(container_id: str, message: str) -> BackendError:
    return BackendError(
        f"the Docker engine failed while sending the logs of container "
        f"{container_id[:12]}: {message}"
    )


def batch_frames(frame_lists: Iterable[FrameList]) -> Iterator[LogBatch]:
    """Reassemble lines from timestamped frames, in batches.

    The engine writes one frame per line, but splits lines longer than 16 KiB into several
    frames, all with the time of the first and only the last with the '\\n'. A line is
    decoded only once complete, so a UTF-8 character split across frames survives (with
    the `local` log driver; `json-file` has already replaced its halves by U+FFFD); a
    trailing '\\r' is dropped; a last line without '\\n' is yielded at the end. A frame
    without a time in front is taken whole, at the time it is read.

    The common case takes a fast path: a run of frames of one stream, each one whole line,
    stamped within the same hundredth of a second, is one batch, decoded at once.
    """
    parse_time = datetime.fromisoformat
    # stream number -> (its time as the engine wrote it, that time, the parts so far)
    partial: dict[int, tuple[bytes, datetime, list[bytes]]] = {}
    for streams, payloads in frame_lists:
        count = len(payloads)
        i = 0
        while i < count:
            number = streams[i]
            stream = STREAMS.get(number)
            payload = payloads[i]
            if stream is None:
                i += 1
                continue
            space = payload.find(b" ")
            stamp = payload[:space] if space > 0 else b""
            try:
                when = parse_time(stamp.decode())
            except ValueError:  # no time in front (UnicodeDecodeError is a ValueError)
                when, space, stamp = datetime.now(UTC), -1, b""
            if stamp and number not in partial and payload.endswith(b"\n"):
                # The fast path: the frames after this one that are whole lines of the
                # same stream, stamped alike in their first BATCH_WINDOW characters.
                key = payload[:BATCH_WINDOW] if space >= BATCH_WINDOW else payload[: space + 1]
                width = len(key)
                cut = space + 1
                j = i + 1
                while j < count:
                    other = payloads[j]
                    if (
                        streams[j] != number
                        or other[:width] != key
                        or other[-1:] != b"\n"
                        or other[space:cut] != b" "
                    ):
                        break
                    j += 1
                text = (
                    payload[cut:-1]
                    if j == i + 1
                    else b"\n".join([other[cut:-1] for other in payloads[i:j]])
                )
                yield LogBatch(stream, when, _decode_lines(text))
                i = j
                continue
            yield from _one_frame(partial, number, stream, stamp, when, payload[space + 1 :])
            i += 1
    for number, (_, when, parts) in partial.items():
        yield LogBatch(STREAMS[number], when, _decode_lines(b"".join(parts)))


def _one_frame(
    partial: dict[int, tuple[bytes, datetime, list[bytes]]],
    number: int,
    stream: Stream,
    stamp: bytes,
    when: datetime,
    text: bytes,
) -> Iterator[LogBatch]:
    """The slow path: one frame that is part of a line, or holds more than one."""
    newline = text.find(b"\n")
    pending = partial.get(number)
    if pending is not None and (not stamp or pending[0] != stamp):
        # a new time: the pending line was complete, but the engine lost its '\n'
        # (the `local` log driver drops it from a long line's last fragment)
        del partial[number]
        yield LogBatch(stream, pending[1], _decode_lines(b"".join(pending[2])))
        pending = None
    if pending is None:
        if 0 <= newline == len(text) - 1:  # one frame, one line
            yield LogBatch(stream, when, _decode_lines(text[:-1]))
            return
        pending = partial[number] = (stamp, when, [])
    pending[2].append(text)
    if newline < 0:
        return
    del partial[number]
    whole, _, rest = b"".join(pending[2]).rpartition(b"\n")
    first, newline_found, others = whole.partition(b"\n")
    # the first line has the time of its first fragment; those after it this frame's
    yield LogBatch(stream, pending[1], _decode_lines(first))
    if newline_found:
        yield LogBatch(stream, when, _decode_lines(others))
    if rest:
        partial[number] = (stamp, when, [rest])


def _decode_lines(text: bytes) -> tuple[str, ...]:
    """The lines of `text` ('\\n' between them, none after the last), decoded as UTF-8
    (invalid bytes replaced), each without a trailing '\\r'. Splitting after decoding
    gives the same lines as decoding each: '\\n' is never part of a UTF-8 sequence."""
    decoded = text.decode("utf-8", "replace")
    if "\r" in decoded:
        decoded = decoded.replace("\r\n", "\n").removesuffix("\r")
    return tuple(decoded.split("\n"))


def assemble_lines(frames: Iterable[tuple[int, bytes]]) -> Iterator[LogLine]:
    """`batch_frames` for frames one at a time, line by line (for a reader that has its
    frames one by one; each line has the time of its batch)."""
    return unbatch_lines(batch_frames(([number], [payload]) for number, payload in frames))
