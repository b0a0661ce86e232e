"""The frames between the processes of one node (``actors/_wire.py``): the frame reader,
the per-connection challenge and keys (``Channel``), the bound on unproven connections
and the rate-limited refusal line. Pure: two channels talk through byte strings.

At the end, a process's runtime (``actors/_runtime.py``) on real sockets, in this
process and without actors: the order of a connection's frames when handling one of
them writes, the accepts of one event, and the challenges a busy process moves on
between two messages."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import logging
import os
import pickle
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from otpkit.actors import _runtime, _wire
from otpkit.actors._frames import HELLO, MSG, SYS
from otpkit.actors._pid import Pid
from otpkit.actors._runtime import NodeIdentity, RemoteHooks, Runtime, address_of, name_address
from otpkit.actors._wire import (
    MAX_FRAME,
    NONCE_LEN,
    PROOF_LEN,
    Channel,
    FrameReader,
    RateLog,
    Unproven,
    encode,
    seal,
    sign,
    verify,
)
from otpkit.errors import FrameError

try:  # optional: not a dependency of the project
    from hypothesis import given, settings
    from hypothesis import strategies as st

    HAVE_HYPOTHESIS = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_HYPOTHESIS = False

KEY = b"k" * 32
ADDRESS = "\0otpkit/a@127.0.0.1/7/100.200"


def frame(obj: Any, key: bytes = KEY) -> bytes:
    return seal(encode(obj), _wire._mac(key))


# --------------------------------------------------------------------------------------
# FrameReader: frames tagged under one key
# --------------------------------------------------------------------------------------

OBJECTS: list[Any] = [
    "hello",
    ("ok", 1, [2.5, None]),
    {"nested": {"k": (1, 2)}, "b": b"\x00\xff" * 10},
    list(range(40)),
    "",
]
STREAM = b"".join(frame(o) for o in OBJECTS)

_RECORDED: list[Any] = []


def _record(x: Any) -> Any:
    _RECORDED.append(x)
    return x


class _SideEffect:
    """Unpickling this calls _record: shows whether a frame was ever unpickled."""

    def __reduce__(self) -> Any:
        return (_record, ("unpickled",))


def frame_with_tag(body: bytes, tag: bytes) -> bytes:
    return struct.pack(">I", len(tag) + len(body)) + tag + body


def test_frame_layout() -> None:
    """4-byte big-endian length of tag + body, then keyed BLAKE2b of the body, then the
    pickle."""
    body = pickle.dumps(("x", 1), protocol=pickle.HIGHEST_PROTOCOL)
    tag = hashlib.blake2b(body, key=KEY, digest_size=32).digest()
    assert frame(("x", 1)) == struct.pack(">I", 32 + len(body)) + tag + body


def test_one_frame_one_chunk() -> None:
    assert FrameReader(KEY).feed(frame(("ok", 42))) == [("ok", 42)]


def test_several_frames_in_one_chunk() -> None:
    assert FrameReader(KEY).feed(STREAM) == OBJECTS


def test_empty_feed() -> None:
    reader = FrameReader(KEY)
    assert reader.feed(b"") == []
    assert reader.feed(frame(1)) == [1]
    assert reader.feed(b"") == []


def test_byte_by_byte_yields_each_frame_on_its_last_byte() -> None:
    reader = FrameReader(KEY)
    ends = set(itertools.accumulate(len(frame(o)) for o in OBJECTS))
    got: list[Any] = []
    for i in range(len(STREAM)):
        out = reader.feed(STREAM[i : i + 1])
        if i + 1 in ends:
            assert len(out) == 1
        else:
            assert out == []
        got += out
    assert got == OBJECTS


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 13, 31, 32, 33, 36, 37, 64, 100, 1000])
def test_fixed_size_chunks(size: int) -> None:
    reader = FrameReader(KEY)
    got: list[Any] = []
    for i in range(0, len(STREAM), size):
        got += reader.feed(STREAM[i : i + size])
    assert got == OBJECTS


def test_every_three_way_split_of_two_frames() -> None:
    stream = frame(("a", 1)) + frame(["b", 2.0])
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            reader = FrameReader(KEY)
            got = reader.feed(stream[:i]) + reader.feed(stream[i:j]) + reader.feed(stream[j:])
            assert got == [("a", 1), ["b", 2.0]], (i, j)


@pytest.mark.parametrize("index", [0, 1, 15, 31])
def test_tampered_tag_raises(index: int) -> None:
    bad = bytearray(frame("secret"))
    bad[4 + index] ^= 0x01
    with pytest.raises(FrameError, match="does not verify"):
        FrameReader(KEY).feed(bytes(bad))


def test_tampered_body_raises() -> None:
    bad = bytearray(frame("secret"))
    bad[-1] ^= 0x80
    with pytest.raises(FrameError, match="does not verify"):
        FrameReader(KEY).feed(bytes(bad))


def test_tampered_frame_split_across_chunks_raises_on_completion() -> None:
    bad = bytearray(frame("payload"))
    bad[10] ^= 0x10
    reader = FrameReader(KEY)
    assert reader.feed(bytes(bad[:20])) == []
    with pytest.raises(FrameError):
        reader.feed(bytes(bad[20:]))


def test_a_frame_under_another_key_is_never_unpickled() -> None:
    body = pickle.dumps(_SideEffect())
    _RECORDED.clear()
    for tag in (
        bytes(32),
        hashlib.blake2b(body, key=b"o" * 32, digest_size=32).digest(),
        hmac.digest(KEY, body, "sha256"),
    ):
        with pytest.raises(FrameError):
            FrameReader(KEY).feed(frame_with_tag(body, tag))
    assert _RECORDED == []
    assert FrameReader(KEY).feed(seal(body, _wire._mac(KEY))) == ["unpickled"]
    assert _RECORDED == ["unpickled"]
    _RECORDED.clear()


@pytest.mark.parametrize("size", [MAX_FRAME + 1, 0xFFFFFFFF, 0, 31])
def test_length_out_of_bounds_raises_on_the_header(size: int) -> None:
    with pytest.raises(FrameError, match=f"frame length {size} "):
        FrameReader(KEY).feed(struct.pack(">I", size))


def test_a_frame_that_does_not_unpickle_is_dropped_alone() -> None:
    body = b"\x80\x05not a pickle."
    stream = seal(body, _wire._mac(KEY)) + frame("after")
    assert FrameReader(KEY).feed(stream) == ["after"]


def test_sign_and_verify_use_the_node_key() -> None:
    blob = sign(b"body")
    assert verify(blob) == b"body"
    with pytest.raises(FrameError, match="does not verify"):
        verify(blob[:-1] + b"x")
    with pytest.raises(FrameError, match="shorter than its tag"):
        verify(b"short")


# --------------------------------------------------------------------------------------
# Channel: the challenge, and frames bound to their connection and direction
# --------------------------------------------------------------------------------------


class Pair:
    """A listening and a connecting channel joined by two in-memory byte streams;
    ``to_l``/``to_c`` hold what each end wrote and the other has not read yet."""

    def __init__(self, address: str = ADDRESS) -> None:
        self.l = Channel(address, listening=True)
        self.c = Channel(address, listening=False)
        self.to_c = bytearray(self.l.take_output())  # the listener's nonce, at accept
        self.to_l = bytearray()
        self.at_l: list[Any] = []
        self.at_c: list[Any] = []

    def send_c(self, obj: Any) -> None:
        self.to_l += self.c.send(encode(obj))

    def send_l(self, obj: Any) -> None:
        self.to_c += self.l.send(encode(obj))

    def run(self, chunk: int = 1 << 20) -> None:
        """Deliver everything both ways, ``chunk`` bytes at a time, until quiet."""
        while self.to_c or self.to_l:
            if self.to_c:
                data, self.to_c = bytes(self.to_c[:chunk]), self.to_c[chunk:]
                self.at_c += self.c.feed(data)
                self.to_l += self.c.take_output()
            if self.to_l:
                data, self.to_l = bytes(self.to_l[:chunk]), self.to_l[chunk:]
                self.at_l += self.l.feed(data)
                self.to_c += self.l.take_output()


def test_challenge_then_frames_both_ways() -> None:
    p = Pair()
    assert len(p.to_c) == NONCE_LEN  # all the listener says before a proof
    assert not p.c.ready and not p.l.ready
    p.send_c(("hello", 1))  # before the nonce: waits in the channel
    assert p.to_l == b"" and p.c.queued()
    p.run()
    assert p.c.ready and p.l.ready and p.c.proven and p.l.proven
    assert p.at_l == [("hello", 1)]
    p.send_c("two")
    p.send_l("back")
    p.run()
    assert p.at_l == [("hello", 1), "two"] and p.at_c == ["back"]


@pytest.mark.parametrize("chunk", [1, 2, 7, 16, 17, 47, 48, 49, 80])
def test_any_chunking_of_the_challenge(chunk: int) -> None:
    p = Pair()
    for i in range(3):
        p.send_c(("c", i))
    p.run(chunk)
    p.send_l("l")
    p.run(chunk)
    assert p.at_l == [("c", 0), ("c", 1), ("c", 2)] and p.at_c == ["l"]


def test_a_listener_frame_written_before_the_proof_waits_for_it() -> None:
    """A name's listener queues its HELLO at accept; it leaves only after the proof."""
    p = Pair()
    p.send_l(("HELLO", "pid"))
    assert bytes(p.to_c) == p.to_c[:NONCE_LEN] and len(p.to_c) == NONCE_LEN
    p.run()
    assert p.at_c == [("HELLO", "pid")]


def test_the_connecting_end_reads_no_frame_before_the_listeners_proof() -> None:
    """A listener that is no process of the node (anyone may bind a free abstract name)
    cannot make the connecting end unpickle or buffer anything."""
    c = Channel(ADDRESS, listening=False)
    c.feed(b"n" * NONCE_LEN)
    assert c.ready and not c.proven
    assert len(c.take_output()) == NONCE_LEN + PROOF_LEN
    with pytest.raises(FrameError, match="listener's proof"):
        c.feed(b"p" * PROOF_LEN + frame("x"))


def test_a_connector_without_the_key_is_refused_after_48_bytes() -> None:
    listener = Channel(ADDRESS, listening=True)
    listener.take_output()
    assert listener.need() == NONCE_LEN + PROOF_LEN
    assert listener.feed(b"\0" * 47) == []
    with pytest.raises(FrameError, match="does not verify"):
        listener.feed(b"\0" * (100 * 1024 * 1024))
    assert not listener.proven and listener.take_output() == b""


def test_an_unproven_listener_holds_the_challenge_bytes_only() -> None:
    listener = Channel(ADDRESS, listening=True)
    for _ in range(47):
        listener.feed(b"x")
    assert len(listener._hs) == 47
    assert listener._reader is None  # no frame buffer before the proof


def test_the_old_frame_format_is_refused() -> None:
    """A frame tagged with the node's key itself - what a name's listener used to send
    anyone who connected, ``(HELLO, pid)`` - is no answer to the challenge."""
    body = pickle.dumps((0, "pid"), protocol=pickle.HIGHEST_PROTOCOL)
    old = struct.pack(">I", 32 + len(body)) + sign(body)
    with pytest.raises(FrameError, match="not from this node"):
        Channel(ADDRESS, listening=True).feed(old)


def test_frames_taken_from_one_connection_are_refused_on_another() -> None:
    """A replay: everything a connecting end wrote on one connection, written as it is
    on another connection to the same address, fails the challenge; and its frames,
    after a genuine answer, fail their tags."""
    first = Pair()
    first.send_c(("HELLO", "victim"))
    first.send_c(("MSG", "x"))
    nonce_l = bytes(first.to_c)
    first.c.feed(nonce_l)
    first.to_c.clear()
    captured = first.c.take_output()
    answer, frames = captured[: NONCE_LEN + PROOF_LEN], captured[NONCE_LEN + PROOF_LEN :]
    assert first.l.feed(captured) == [("HELLO", "victim"), ("MSG", "x")]

    second = Pair()  # a fresh connection: a fresh listener nonce
    with pytest.raises(FrameError, match="not from this node"):
        second.l.feed(captured)

    third = Pair()  # a genuine answer, then the captured frames
    third.c.feed(bytes(third.to_c))
    good = third.c.take_output()
    assert third.l.feed(good) == []
    with pytest.raises(FrameError, match="does not verify"):
        third.l.feed(frames)
    assert answer != good[: NONCE_LEN + PROOF_LEN]


def test_a_frame_is_refused_in_the_other_direction() -> None:
    p = Pair()
    p.run()
    reflected = p.c.send(encode(("EXIT", "kill")))
    with pytest.raises(FrameError, match="does not verify"):
        p.c.feed(reflected)


def test_the_proof_binds_the_listening_address() -> None:
    """A connecting end fooled into answering an impostor's nonce (relayed from another
    socket) proves nothing at the real address."""
    real = Channel("\0otpkit/a@h/7/1.1", listening=True)
    fooled = Channel("\0otpkit/a@h/7/2.2", listening=False)
    fooled.feed(real.take_output())
    with pytest.raises(FrameError, match="not from this node"):
        real.feed(fooled.take_output())


def test_another_node_key_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = Channel(ADDRESS, listening=True)
    nonce = listener.take_output()
    monkeypatch.setattr(_wire, "_key", b"x" * 32)
    stranger = Channel(ADDRESS, listening=False)
    stranger.feed(nonce)
    answer = stranger.take_output()
    monkeypatch.undo()
    with pytest.raises(FrameError):
        listener.feed(answer)


def test_nonces_are_fresh() -> None:
    assert len({Channel(ADDRESS, listening=True).take_output() for _ in range(100)}) == 100


if HAVE_HYPOTHESIS:

    @settings(max_examples=150, deadline=None)
    @given(
        msgs=st.lists(
            st.tuples(st.booleans(), st.binary(max_size=300) | st.text(max_size=50)),
            max_size=8,
        ),
        chunk=st.integers(min_value=1, max_value=200),
    )
    def test_random_traffic_arrives_in_order(msgs: list[tuple[bool, Any]], chunk: int) -> None:
        p = Pair()
        to_l, to_c = [], []
        for from_c, value in msgs:
            if from_c:
                p.send_c(value)
                to_l.append(value)
            elif p.l.ready:  # a listener writes only on a proven connection
                p.send_l(value)
                to_c.append(value)
            p.run(chunk)
        assert p.at_l == to_l and p.at_c == to_c


# --------------------------------------------------------------------------------------
# Unproven connections, refusals
# --------------------------------------------------------------------------------------


def test_unproven_strangers_push_out_only_strangers() -> None:
    u = Unproven(strangers=3, kin=2)
    assert u.add(10, stranger=False) is None
    assert [u.add(fd, stranger=True) for fd in (1, 2, 3)] == [None, None, None]
    assert u.add(4, stranger=True) == 1
    assert u.add(5, stranger=True) == 2
    assert u.count(True) == 3 and u.count(False) == 1
    assert u.add(11, stranger=False) is None
    assert u.add(12, stranger=False) == 10


def test_unproven_done_frees_a_place() -> None:
    u = Unproven(strangers=2, kin=2)
    u.add(1, True)
    u.add(2, True)
    u.done(1)
    assert u.add(3, True) is None
    assert u.add(4, True) == 2


def test_rate_log_one_line_per_period_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    rate = RateLog(logging.getLogger("test.wire"), every=60.0)
    with caplog.at_level(logging.WARNING, "test.wire"):
        assert rate.warning("refused %s", "a", now=0.0)
        for t in range(1, 30):
            assert not rate.warning("refused %s", "b", now=float(t))
        assert rate.warning("refused %s", "c", now=61.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused a", "refused c (29 more since the last such line)"]


# --------------------------------------------------------------------------------------
# A process's runtime on real sockets (this OS process, its own node; no actors)
# --------------------------------------------------------------------------------------


@pytest.fixture
def rt() -> Iterator[Runtime]:
    r = Runtime(NodeIdentity(f"unit{os.getpid()}@127.0.0.1", secrets.randbits(31)))
    try:
        yield r
    finally:
        for conn in list(r._conns.values()):
            r._close(conn)
        for lsock, _, _ in r._listeners.values():
            _runtime.own_socket(lsock, on=False)
            lsock.close()


def connect(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5.0)
    sock.connect(address)
    return sock


def bind(address: str) -> socket.socket:
    """A listener at ``address`` that never accepts: a peer busy in a handler."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(address)
    sock.listen(8)
    return sock


def fake_pid(r: Runtime, n: int, node: str | None = None) -> Pid:
    return Pid(node or r.node.name, r.node.creation, 4_000_000 + n, n)


def open_to(r: Runtime, sender: Pid) -> tuple[socket.socket, Channel]:
    """A connection to ``r`` that proved the key and introduced itself as ``sender``."""
    address = address_of(r.pid)
    sock = connect(address)
    chan = Channel(address, listening=False)
    assert r.pump(5.0)  # accepted: the nonce is written
    while not chan.ready:
        chan.feed(sock.recv(chan.need()))
    sock.sendall(chan.take_output() + chan.send(encode((HELLO, sender))))
    return sock, chan


SEQ = 60
PAD = b"p" * 2000  # SEQ frames after the request: more than one read takes


def sys_then_messages(r: Runtime, sock: socket.socket, chan: Channel) -> list[Any]:
    """Write a ``sys`` request (answered by the runtime itself, at once) and SEQ messages
    behind it in one go, then let ``r`` read them; returns the messages, in the order
    they reached the mailbox."""
    data = chan.send(encode((SYS, r.make_ref(), ("info",))))
    data += b"".join(chan.send(encode((MSG, ("seq", i, PAD)))) for i in range(SEQ))
    assert len(data) > 65536  # RECV_SIZE: the request's read leaves some unread
    sock.sendall(data)
    deadline = time.monotonic() + 5.0
    got: list[Any] = []
    while len(got) < SEQ and time.monotonic() < deadline:
        r.pump(0.1)
        got = [m[2][1] for m in r.mailbox if m[0] == MSG]
    return got


def test_a_sys_reply_on_a_new_connection_keeps_the_frames_in_order(rt: Runtime) -> None:
    """The reply to a ``sys`` request goes on a new connection to the requester, whose
    challenge is not answered yet (the requester is busy): the reply waits in it, and
    the frames that followed the request stay behind the ones read with it (a write
    that waited read the same connection again, and put later frames first)."""
    peer = fake_pid(rt, 1)
    with bind(address_of(peer)):
        sock, chan = open_to(rt, peer)
        with contextlib.closing(sock):
            started = time.monotonic()
            got = sys_then_messages(rt, sock, chan)
            took = time.monotonic() - started
    assert got == list(range(SEQ))
    reply_conn = rt._out[peer]
    assert reply_conn.chan.queued()  # the reply waits for the requester's challenge
    assert took < rt.handshake_wait, took  # and the read did not wait for it


def test_a_write_that_reads_while_a_frame_is_handled_keeps_the_frames_in_order(
    rt: Runtime,
) -> None:
    """A ``sys`` request from another node is answered through the remote hooks, whose
    write may wait and read this process's sockets (dist's does, on a new connection):
    the connection being read is not read again inside it."""
    waited: list[float] = []

    class Pumping(RemoteHooks):
        def send(self, r: Runtime, dst: Pid, frame: tuple[Any, ...], watch: bool = False) -> bool:
            started = time.monotonic()
            r.pump(0.05)
            waited.append(time.monotonic() - started)
            return True

    before = _runtime._remote_hooks
    _runtime.set_remote_hooks(Pumping())
    try:
        sock, chan = open_to(rt, fake_pid(rt, 3, node="elsewhere@127.0.0.1"))
        with contextlib.closing(sock):
            got = sys_then_messages(rt, sock, chan)
    finally:
        _runtime.set_remote_hooks(before)
    assert got == list(range(SEQ))
    # the connection under way was left out of the wait, not reported at once each time
    assert waited and waited[0] >= 0.04, waited


def test_one_event_accepts_at_most_64_connections(rt: Runtime) -> None:
    socks = [connect(address_of(rt.pid)) for _ in range(100)]
    try:
        (fd,) = rt._listeners
        rt._on_ready(fd, select.POLLIN)
        assert len(rt._conns) == 64
        rt._on_ready(fd, select.POLLIN)
        assert len(rt._conns) == 100
    finally:
        for sock in socks:
            sock.close()


def whereis_raw(address: str, out: list[Any]) -> None:
    """What ``Runtime.whereis`` does, in a thread: the challenge, then the name's pid."""
    try:
        with connect(address) as sock:
            chan = Channel(address, listening=False)
            while True:
                data = sock.recv(4096)
                if not data:
                    out.append("closed")
                    return
                frames = chan.feed(data)
                sock.sendall(chan.take_output())
                if frames:
                    out.append(frames[0][1])
                    return
    except OSError as exc:
        out.append(exc)


def test_a_busy_process_finishes_a_names_challenge_before_its_next_message(
    rt: Runtime,
) -> None:
    """The name's listener sends its nonce at accept; before the next message of its
    mailbox, the process waits for the answer (at most ``challenge_grace``) and sends the
    pid - not after the whole mailbox."""
    assert rt.register("svc")
    rt.challenge_grace = 2.0  # the thread below answers at once; a loaded machine lags
    out: list[Any] = []
    asker = threading.Thread(target=whereis_raw, args=(name_address(rt.node, "svc"), out))
    asker.start()
    try:
        assert rt.pump(5.0)  # accepted, the nonce written; the connection is pending
        assert len(rt._pending) == 1
        rt.tend_challenges()
        assert not rt._pending
    finally:
        asker.join(5.0)
    assert out == [rt.pid]


def test_a_busy_process_waits_for_a_silent_peer_once(rt: Runtime) -> None:
    """A new outbound connection whose listener does not answer (a busy peer): the wait
    before the next message lasts the grace, then a rest starts (no wait at all), and
    nothing pending means no wait."""
    t0 = time.monotonic()
    rt.tend_challenges()
    assert time.monotonic() - t0 < 0.01
    rt.challenge_grace = 0.05
    first, second = fake_pid(rt, 4), fake_pid(rt, 5)
    with bind(address_of(first)), bind(address_of(second)):
        conn = rt.connection_to(first)
        assert conn is not None and conn.fd in rt._pending
        t0 = time.monotonic()
        rt.tend_challenges()
        assert 0.04 <= time.monotonic() - t0 < 1.0
        rt.challenge_grace = 5.0
        assert rt.connection_to(second) is not None  # in the rest: not waited for
        t0 = time.monotonic()
        rt.tend_challenges()
        assert time.monotonic() - t0 < 0.5
        assert len(rt._pending) == 2  # still moved on between messages, without a wait
