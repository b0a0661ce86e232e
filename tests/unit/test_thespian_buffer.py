"""Thespian's receive buffer as otpkit replaces it (``actors/_system.py``): the same
results as Thespian's own on its messages, a size refused on the header, a budget for
the larger messages of a process, and the patch in place."""

from __future__ import annotations

import itertools
import pickle

import pytest
from thespian.system.transport import TCPTransport, streamBuffer

from otpkit.actors import _system
from otpkit.actors._system import (
    THESPIAN_BUFFER_BUDGET,
    THESPIAN_MAX_MESSAGE,
    THESPIAN_SMALL_MESSAGE,
    ReceiveBuffer,
)

MESSAGES = [("ACK",), ("addr", {"k": list(range(50))}), "x" * 3000, b"\0" * 20000]


def packets(obj: object) -> bytes:
    return bytes(streamBuffer.toSendBuffer(obj))


def feed_all(buf: object, data: bytes, chunk: int) -> list[object]:
    """Feed ``data`` as Thespian does (never more than ``remainingAmount`` at once, a
    fresh buffer for what follows a message); the messages completed."""
    out = []
    pos = 0
    while pos < len(data):
        want = min(chunk, buf.remainingAmount())  # type: ignore[attr-defined]
        buf.addMore(data[pos : pos + want])  # type: ignore[attr-defined]
        pos += want
        if buf.isDone():  # type: ignore[attr-defined]
            obj, extra = buf.completed()  # type: ignore[attr-defined]
            out.append(obj)
            rest = extra + data[pos:]
            buf = type(buf)(pickle.loads)
            data, pos = rest, 0
    return out


@pytest.mark.parametrize("chunk", [1, 3, 20, 1000, 1 << 20])
def test_same_messages_as_thespians_buffer(chunk: int) -> None:
    stream = b"".join(packets(m) for m in MESSAGES)
    ours = feed_all(ReceiveBuffer(pickle.loads), stream, chunk)
    theirs = feed_all(streamBuffer.ReceiveBuffer(pickle.loads), stream, chunk)
    assert ours == theirs == MESSAGES


def test_bytes_past_the_message_are_its_extra() -> None:
    first, second = packets("one"), packets("two")
    buf = ReceiveBuffer(pickle.loads)
    buf.addMore(first[:5])
    buf.addMore(first[5:] + second[:7])
    assert buf.isDone() and buf.remainingAmount() == 0
    assert buf.completed() == ("one", second[:7])
    assert buf.completed() == ("one", second[:7])  # Thespian may ask twice
    buf.removeExtra()
    assert buf.completed() == ("one", b"")


def test_empty_until_bytes_come() -> None:
    buf = ReceiveBuffer(pickle.loads)
    assert buf.is_empty() and not buf.isDone() and buf.remainingAmount() == 20
    assert buf.completed() is None
    buf.addMore(b"12")
    assert not buf.is_empty()


@pytest.mark.parametrize("size", [THESPIAN_MAX_MESSAGE + 1, 100 * 1024 * 1024, 10**11])
def test_an_oversize_message_is_refused_on_its_header(size: int) -> None:
    buf = ReceiveBuffer(pickle.loads)
    with pytest.raises(ValueError, match=f"{size} bytes refused"):
        buf.addMore(f"{size}>".encode() + b"\0" * 7)
    assert not buf.isDone() and buf.remainingAmount() == 20  # nothing more is read
    assert _system._reserved == 0


def test_the_largest_message_is_taken() -> None:
    body = pickle.dumps(b"\0" * (THESPIAN_MAX_MESSAGE - 100))
    data = f"{len(body)}>".encode() + body
    assert len(body) <= THESPIAN_MAX_MESSAGE
    assert feed_all(ReceiveBuffer(pickle.loads), data, 65536) == [pickle.loads(body)]


@pytest.mark.parametrize("head", [b"1" * 13, b"x" * 13, b"12a>", b"-5>", b" 5>", b"\xd9\xa1>"])
def test_a_bad_header_is_refused(head: bytes) -> None:
    buf = ReceiveBuffer(pickle.loads)
    with pytest.raises(ValueError, match="Thespian header"):
        for i in range(len(head)):
            buf.addMore(head[i : i + 1])


def test_large_messages_share_a_budget_small_ones_do_not() -> None:
    assert _system._reserved == 0
    large = THESPIAN_MAX_MESSAGE

    def header_read() -> ReceiveBuffer:
        buf = ReceiveBuffer(pickle.loads)
        buf.addMore(f"{large}>".encode())
        return buf

    held = [header_read() for _ in range(THESPIAN_BUFFER_BUDGET // large)]
    over = ReceiveBuffer(pickle.loads)
    with pytest.raises(ValueError, match="buffered already"):
        over.addMore(f"{large}>".encode())
    for size in (1, THESPIAN_SMALL_MESSAGE):
        ReceiveBuffer(pickle.loads).addMore(f"{size}>".encode())  # always taken
    held.pop()  # a closed connection gives its share back
    again = header_read()
    del again, held
    assert _system._reserved == 0


def test_a_completed_message_gives_its_share_back() -> None:
    body = pickle.dumps(b"\0" * 10000)
    buf = ReceiveBuffer(pickle.loads)
    buf.addMore(f"{len(body)}>".encode())
    assert _system._reserved == len(body)
    buf.addMore(body)
    buf.completed()
    assert _system._reserved == 0


def test_thespians_transport_reads_through_it() -> None:
    _system.patch_thespian()
    assert TCPTransport.ReceiveBuffer is ReceiveBuffer
    incoming = TCPTransport.TCPIncoming(None, None)
    assert isinstance(incoming._rData, ReceiveBuffer)
    assert incoming._rData._deserialize == _system.SignedPickle.loads
    incoming._openSock = None  # nothing to close


def test_chunks_grow_one_buffer() -> None:
    """Linear: each chunk is appended in place, never copied with the rest."""
    buf = ReceiveBuffer(pickle.loads)
    buf.addMore(f"{THESPIAN_MAX_MESSAGE}>".encode())
    first = buf._buf
    for _ in itertools.repeat(None, 64):
        buf.addMore(b"\0" * 1024)
    assert buf._buf is first and len(first) == THESPIAN_MAX_MESSAGE
