"""The dist wire codec (ARCHITECTURE.md, *Messages between nodes*): values arrive equal
and of the same type, anything else is a TypeError at the sender naming the type, and bad
bytes from a peer - garbage, oversize or empty frames, msgpack bombs, deep nesting - are
a ProtocolError, never a crash."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import math
import os
import random
import struct
import threading
import time
import tracemalloc
import zoneinfo
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgpack
import pytest

from otpkit import Pid, Ref
from otpkit.distribution import _codec
from otpkit.distribution._codec import (
    EXT_DATETIME,
    EXT_PID,
    EXT_REF,
    EXT_TUPLE,
    MAX_DEPTH,
    FrameDecoder,
    ProtocolError,
    decode,
    encode,
    encode_frame,
    wire_reason,
)
from otpkit.errors import OtpkitError

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    HAVE_HYPOTHESIS = True
except ImportError:  # not installed on every CI image
    HAVE_HYPOTHESIS = False

PID = Pid("app@10.0.0.1", 1234567, 4242, 98765)
PID2 = Pid("app@10.0.0.2", 7654321, 4343, 12)
REF = Ref("app@10.0.0.1", 1234567, (0x3FFF_FFFF_FFFF_FFFF << 32) | 77)
UTC_DT = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)


def zone(key: str) -> ZoneInfo:
    try:
        return ZoneInfo(key)
    except ZoneInfoNotFoundError:
        pytest.skip("no tz database: install tzdata (pip) or the OS zoneinfo package")


def assert_same(got: Any, want: Any, path: str = "value") -> None:
    """Equal, and of the same type all the way down (1 == 1.0 == True would pass ==)."""
    assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, float) and math.isnan(want):
        assert math.isnan(got), path
        return
    assert got == want, path
    if type(want) in (list, tuple):
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{i}]")
    elif type(want) is dict:
        got_keys = {k: k for k in got}
        for k, w in want.items():
            assert_same(got_keys[k], k, f"{path} key {k!r}")
            assert_same(got[k], w, f"{path}[{k!r}]")
    elif type(want) is datetime:
        assert got.fold == want.fold, path
        assert type(got.tzinfo) is type(want.tzinfo), path
        if isinstance(want.tzinfo, ZoneInfo):
            assert got.tzinfo.key == want.tzinfo.key, path
        else:
            assert got.utcoffset() == want.utcoffset(), path
            assert got.tzname() == want.tzname(), path


def round_trip(value: Any) -> Any:
    got = decode(encode(value))
    assert_same(got, value)
    (framed,) = FrameDecoder().feed(encode_frame(value))
    assert_same(framed, value)
    return got


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        1,
        -1,
        127,
        128,
        -33,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        0.0,
        -0.0,
        1.5,
        1e308,
        math.inf,
        -math.inf,
        math.nan,
        "",
        "héllo wörld ✓",
        "\x00",
        "x" * 100_000,
        b"",
        b"\x00\xff\xc1",
        bytes(range(256)) * 300,
        [],
        (),
        {},
        [1, 2, 3],
        (1, 2, 3),
        (1,),
        ((),),
        [()],
        ([],),
        {"a": 1},
    ],
    ids=lambda v: repr(v)[:24],
)
def test_scalars_and_empty_containers_round_trip(value: Any) -> None:
    round_trip(value)


def test_tuples_stay_tuples_and_lists_stay_lists() -> None:
    value = [(1, [2, (3, [4, ()])]), [(), []], ("a", ("b", ("c",)))]
    round_trip(value)
    round_trip(tuple(value))
    # a list whose first element is a tuple is still a list
    round_trip([(1, 2), 3])
    round_trip([[(), 1]])
    # wide ones (array16 and array32 headers)
    round_trip(tuple(range(20)))
    round_trip(tuple(range(70_000)))
    round_trip(list(range(70_000)))


def test_dict_keys_of_every_allowed_type() -> None:
    value = {
        1: "int",
        -(2**63): "min",
        2**64 - 1: "max",
        (1, 2): "tuple",
        ("nested", (3, (4,))): "nested tuple",
        (): "empty tuple",
        None: "none",
        False: "bool",
        1.5: "float",
        b"raw": "bytes",
        "s": "str",
        PID: "pid",
        REF: "ref",
        UTC_DT: "datetime",
        (PID, REF, UTC_DT): "tuple of ext",
    }
    got = round_trip(value)
    assert got[(1, 2)] == "tuple"
    assert got[PID] == "pid"


def test_pid_ref_datetime_in_keys_and_values_nested() -> None:
    value = {
        "deliver": ("deliver", PID, PID2, (1, REF, ("call", 42))),
        (PID, 1): [REF, {UTC_DT: PID2}],
        REF: {"at": UTC_DT, "who": [PID, (PID2,)]},
    }
    round_trip(value)


@pytest.mark.parametrize(
    "pid",
    [
        PID,
        Pid("", 0, 0, 0),
        Pid("ñode@höst", -1, 2**63 - 1, -(2**63)),
        Pid("a" * 300, 1, 2, 3),
    ],
    ids=repr,
)
def test_pid_round_trips(pid: Pid) -> None:
    got = round_trip(pid)
    assert (got.node, got.creation, got.id, got.serial) == (
        pid.node,
        pid.creation,
        pid.id,
        pid.serial,
    )
    assert hash(got) == hash(pid)


@pytest.mark.parametrize("n", [0, 1, -1, 127, 128, -129, 2**64, 2**94 + 5, -(2**200), 2**4000])
def test_ref_n_of_any_size_round_trips(n: int) -> None:
    ref = Ref("app@h", 99, n)
    got = round_trip(ref)
    assert got.n == n
    assert round_trip({ref: [ref]}) == {ref: [ref]}


def test_datetime_fixed_offsets_round_trip() -> None:
    for tz in (
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(-timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)),
        timezone(timedelta(seconds=1, microseconds=1)),
        timezone(timedelta(hours=1), "CET"),
        timezone(timedelta(0), "Zulu"),
    ):
        dt = datetime(2026, 3, 29, 2, 30, 15, 999999, tzinfo=tz)
        got = round_trip(dt)
        assert got.tzinfo == tz
        assert got.tzname() == dt.tzname()
    assert round_trip(UTC_DT).tzinfo is UTC
    round_trip(datetime(1, 1, 1, tzinfo=UTC))
    round_trip(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-1))))


def test_datetime_zoneinfo_round_trips_by_key_with_fold_and_gap() -> None:
    paris, new_york = zone("Europe/Paris"), zone("America/New_York")
    cases = [
        datetime(2026, 7, 1, 12, 0, 0, 1, tzinfo=paris),
        # the repeated hour: same wall time, two instants
        datetime(2021, 11, 7, 1, 30, tzinfo=new_york, fold=0),
        datetime(2021, 11, 7, 1, 30, tzinfo=new_york, fold=1),
        # the skipped hour: wall fields are sent, so it is not normalised away
        datetime(2021, 3, 14, 2, 30, tzinfo=new_york),
        datetime(2026, 1, 1, tzinfo=zone("UTC")),
    ]
    for dt in cases:
        got = round_trip(dt)
        assert got.tzinfo is dt.tzinfo  # ZoneInfo's cache: the very same zone object
        assert (got.replace(tzinfo=None), got.fold) == (dt.replace(tzinfo=None), dt.fold)
        assert got.utcoffset() == dt.utcoffset()
    fold0, fold1 = (decode(encode(d)) for d in cases[1:3])
    assert fold0.timestamp() != fold1.timestamp()


def test_a_zone_unknown_to_the_receiver_keeps_the_instant() -> None:
    dt = datetime(2026, 7, 1, 12, 0, tzinfo=zone("Europe/Paris"))
    data = encode(dt).replace(b"Europe/Paris", b"Mars/Olympus")
    got = decode(data)
    assert got.tzinfo == timezone(timedelta(hours=2))
    assert got == dt


def test_nan_and_negative_zero_keep_their_bits() -> None:
    assert math.copysign(1.0, decode(encode(-0.0))) == -1.0
    assert math.isnan(decode(encode([math.nan]))[0])


def test_encode_frame_is_the_length_prefixed_encoding() -> None:
    value = ("send", PID, PID2, b"payload")
    frame = encode_frame(value)
    assert frame[:4] == struct.pack(">I", len(encode(value)))
    assert frame[4:] == encode(value)


def test_ext_codes_on_the_wire() -> None:
    """The documented codes, so a reader of a packet capture can rely on them."""
    raw = msgpack.unpackb(encode((PID, REF, UTC_DT)), strict_map_key=False)
    assert raw[0] == msgpack.ExtType(EXT_TUPLE, b"")
    assert [x.code for x in raw[1:]] == [EXT_PID, EXT_REF, EXT_DATETIME]
    assert msgpack.unpackb(encode([1, (2,)])) == [1, [msgpack.ExtType(EXT_TUPLE, b""), 2]]


def test_concurrent_encode_and_decode_from_many_threads() -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        value = ("w", i, [Ref("n@h", i, i << 70), (PID, {i: (i,)})], UTC_DT)
        try:
            for _ in range(2000):
                assert_same(decode(encode(value)), value)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# --------------------------------------------------------------------------- refused at the sender


class MyFloat(float):
    pass


class MyStr(str):
    pass


class Color(enum.IntEnum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Plain:
    pass


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class OddZone(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "ODD"


class MyDatetime(datetime):
    pass


REFUSED: list[tuple[Any, str]] = [
    ({1, 2}, "cannot send a set across nodes: {1, 2}"),
    (frozenset({1}), "frozenset"),
    (object(), "cannot send an object across nodes"),
    (Plain(), "test_dist_codec.Plain"),
    (Point(1, 2), "test_dist_codec.Point"),
    (ValueError("boom"), "ValueError"),
    (MyFloat(1.5), "test_dist_codec.MyFloat"),
    (MyStr("s"), "test_dist_codec.MyStr"),
    (Color.RED, "test_dist_codec.Color"),
    (1 + 2j, "complex"),
    (Decimal("1.5"), "decimal.Decimal"),
    (2**64, "an int outside -2**63..2**64-1"),
    (-(2**63) - 1, "an int outside"),
    (datetime(2026, 1, 1), "a naive datetime"),
    (date(2026, 1, 1), "datetime.date"),
    (timedelta(1), "datetime.timedelta"),
    (datetime(2026, 1, 1, tzinfo=OddZone()), "tzinfo is a test_dist_codec.OddZone"),
    (MyDatetime(2026, 1, 1, tzinfo=UTC), "test_dist_codec.MyDatetime"),
    (Pid("n", "1", 2, 3), "a Pid whose"),  # type: ignore[arg-type]
    (Pid(b"n", 1, 2, 3), "a Pid whose"),  # type: ignore[arg-type]
    (Pid("n", 2**63, 2, 3), "a Pid whose"),
    (Ref("n", 1, 1.5), "a Ref whose"),  # type: ignore[arg-type]
    (Ref(None, 1, 1), "a Ref whose"),  # type: ignore[arg-type]
    (BrokenRepr(), "test_dist_codec.BrokenRepr object"),
    (print, "builtin_function_or_method"),
    (range(3), "range"),
    ({"k": {1, 2}}, "set"),
    ([1, (2, [3, {4: Plain()}])], "Plain"),
    ({frozenset(): 1}, "frozenset"),
    (collections.namedtuple("Pair", "a b")(1, 2), "test_dist_codec.Pair"),
    (collections.OrderedDict(a=1), "collections.OrderedDict"),
    (collections.defaultdict(list), "collections.defaultdict"),
    (type("MyList", (list,), {})([1]), "test_dist_codec.MyList"),
    (type("MyBytes", (bytes,), {})(b"x"), "test_dist_codec.MyBytes"),
    (Color, "enum.EnumType"),
]


@pytest.mark.parametrize(("value", "fragment"), REFUSED, ids=lambda v: type(v).__name__)
def test_disallowed_values_are_a_type_error_naming_the_type(value: Any, fragment: str) -> None:
    with pytest.raises(TypeError, match="across nodes") as info:
        encode(value)
    assert fragment in str(info.value)
    with pytest.raises(TypeError, match="across nodes"):
        encode_frame(("send", PID, value))


def test_zoneinfo_without_a_key_is_refused() -> None:
    paths = [os.path.join(d, "Europe", "Paris") for d in zoneinfo.TZPATH]
    path = next((p for p in paths if os.path.isfile(p)), None)
    if path is None:
        pytest.skip("no zone file to load: install the OS zoneinfo package")
    with open(path, "rb") as f:
        keyless = ZoneInfo.from_file(f)
    with pytest.raises(TypeError, match=r"tzinfo is a zoneinfo\.ZoneInfo"):
        encode(datetime(2026, 1, 1, tzinfo=keyless))


def test_an_encoder_failure_leaves_the_encoder_usable() -> None:
    for _ in range(3):
        with pytest.raises(TypeError):
            encode([1, 2, {3}])
        assert decode(encode([1, (2,)])) == [1, (2,)]


# --------------------------------------------------------------------------- nesting


def nested(depth: int, kind: str = "list") -> Any:
    value: Any = 0
    for i in range(depth):
        if kind == "mixed":
            value = [value] if i % 3 == 0 else (value,) if i % 3 == 1 else {i: value}
        elif kind == "tuple":
            value = (value,)
        else:
            value = [value]
    return value


@pytest.mark.parametrize("kind", ["list", "tuple", "mixed"])
def test_nesting_up_to_max_depth_crosses(kind: str) -> None:
    round_trip(nested(MAX_DEPTH, kind))
    # wide and deep at once: the walk is not fooled by a shallow first element
    round_trip([0] * 200 + [nested(MAX_DEPTH - 1, kind)])


@pytest.mark.parametrize("kind", ["list", "tuple", "mixed"])
def test_nesting_deeper_than_max_depth_is_refused_at_the_sender(kind: str) -> None:
    with pytest.raises(TypeError, match=f"deeper than {MAX_DEPTH}"):
        encode(nested(MAX_DEPTH + 1, kind))
    with pytest.raises(TypeError, match=f"deeper than {MAX_DEPTH}"):
        encode_frame([1, "x" * 10_000, nested(MAX_DEPTH + 1, kind)])


def test_depth_counts_dict_keys() -> None:
    deep_key = nested(MAX_DEPTH, "tuple")
    with pytest.raises(TypeError, match="deeper"):
        encode({deep_key: 1})
    round_trip({nested(MAX_DEPTH - 1, "tuple"): 1})


def test_absurd_nesting_and_cycles_are_a_type_error_not_a_crash() -> None:
    with pytest.raises(TypeError, match="deeper than 64 levels"):
        encode(nested(100_000))
    with pytest.raises(TypeError, match="deeper than 64 levels"):
        encode(nested(100_000, "tuple"))
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(TypeError, match="or a cycle"):
        encode(cyclic)


def raw_nested(depth: int, header: bytes = b"\x91", leaf: bytes = b"\xc0") -> bytes:
    return header * depth + leaf


def test_decoding_deep_nesting_is_a_protocol_error() -> None:
    assert decode(raw_nested(MAX_DEPTH, leaf=b"\x00")) == nested(MAX_DEPTH)
    for data in (
        raw_nested(MAX_DEPTH + 1),
        raw_nested(100_000),
        raw_nested(100_000, b"\x81\xc0"),  # maps nested in map values
        raw_nested(MAX_DEPTH + 1, b"\x92\xc7\x00\x01"),  # tuples: marker + one item
        raw_nested(100_000, b"\x92\xc7\x00\x01"),
        raw_nested(100_000, b"\xdd\x00\x00\x00\x01"),  # array32 headers
    ):
        with pytest.raises(ProtocolError, match="nested"):
            decode(data)
        decoder = FrameDecoder()
        with pytest.raises(ProtocolError, match="nested"):
            decoder.feed(struct.pack(">I", len(data)) + data)


def test_decoding_deep_nesting_inside_a_large_frame() -> None:
    # past the size where header bytes are counted the decoded value is walked instead
    blob = bytes(range(256)) * 100
    assert_same(decode(msgpack.packb([blob, nested(MAX_DEPTH - 1)])), [blob, nested(MAX_DEPTH - 1)])
    with pytest.raises(ProtocolError, match="nested"):
        decode(msgpack.packb([blob, nested(MAX_DEPTH)]))
    with pytest.raises(ProtocolError, match="nested"):
        decode(msgpack.packb([{"k": nested(MAX_DEPTH)}, blob]))


# --------------------------------------------------------------------------- frames


def frames_of(values: list[Any]) -> bytes:
    return b"".join(encode_frame(v) for v in values)


VALUES: list[Any] = [
    ("hello", "a@h", 1, b"\x00" * 32, False),
    ("send", PID, PID2, encode({"k": [1, (2, REF)]})),
    ("tick",),
    {1: UTC_DT, (2, 3): None},
    "x" * 70_000,
    [],
]


def test_frame_decoder_handles_any_chunking() -> None:
    stream = frames_of(VALUES)
    rng = random.Random(7)
    for trial in range(200):
        decoder = FrameDecoder()
        got: list[Any] = []
        pos = 0
        while pos < len(stream):
            step = 1 if trial == 0 else rng.choice([1, 2, 3, 5, 64, 4096, 100_000])
            got.extend(decoder.feed(stream[pos : pos + step]))
            pos += step
        assert_same(got, VALUES)
        assert decoder.buffered == 0


def test_frame_decoder_keeps_a_partial_frame_for_later() -> None:
    frame = encode_frame(("tick",))
    decoder = FrameDecoder()
    assert decoder.feed(frame + frame[:3]) == [("tick",)]
    assert decoder.buffered == 3
    assert decoder.feed(frame[3:] + frame) == [("tick",), ("tick",)]
    assert decoder.feed(b"") == []
    assert decoder.feed(bytearray(frame)) == [("tick",)]
    assert decoder.feed(memoryview(frame)) == [("tick",)]


def test_oversize_frame_is_refused_at_its_header() -> None:
    decoder = FrameDecoder(max_frame=1024)
    assert decoder.feed(encode_frame(b"x" * 1000)) == [b"x" * 1000]
    # only the 4-byte prefix has arrived: refused now, nothing buffered for it
    with pytest.raises(ProtocolError, match="exceeds max_frame"):
        decoder.feed(struct.pack(">I", 1025))
    assert decoder.buffered == 0
    with pytest.raises(ProtocolError, match="exceeds max_frame"):
        FrameDecoder().feed(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError, match="exceeds max_frame"):
        FrameDecoder().feed(struct.pack(">I", 16 * 1024 * 1024 + 1))


def test_decoder_stays_failed_after_a_protocol_error() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError, match="failed earlier"):
        decoder.feed(encode_frame(1))


def test_protocol_error_is_an_otpkit_error_with_a_reason() -> None:
    with pytest.raises(ProtocolError) as info:
        FrameDecoder().feed(b"\x00\x00\x00\x00")
    assert isinstance(info.value, OtpkitError)
    assert isinstance(info.value, ValueError)
    assert info.value.reason == "empty frame"


def body(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def ext(code: int, data: bytes) -> bytes:
    """An ext8 value (any code, also the negative ones msgpack.ExtType refuses)."""
    return b"\xc7" + struct.pack(">Bb", len(data), code) + data


BAD_FRAMES: list[tuple[str, bytes, str]] = [
    ("empty frame", b"\x00\x00\x00\x00", "empty frame"),
    ("never-used byte 0xc1", body(b"\xc1"), "not msgpack"),
    ("truncated value", body(b"\x93\x01\x02"), "undecodable"),
    ("truncated str", body(b"\xa5abc"), "undecodable"),
    ("trailing bytes", body(b"\x01\x02"), "trailing bytes"),
    ("two values", body(encode(1) + encode("x")), "trailing bytes"),
    ("invalid utf-8", body(b"\xa2\xff\xfe"), "undecodable"),
    ("unknown ext", body(ext(42, b"x")), "unknown msgpack ext type 42"),
    ("negative ext", body(ext(-7, b"x")), "unknown msgpack ext type -7"),
    ("stray tuple marker", body(b"\x92\x01" + ext(EXT_TUPLE, b"")), "tuple marker"),
    ("top-level marker", body(ext(EXT_TUPLE, b"")), "tuple marker"),
    ("marker as map value", body(b"\x81\x01" + ext(EXT_TUPLE, b"")), "tuple marker"),
    ("marker with payload", body(b"\x91" + ext(EXT_TUPLE, b"x")), "tuple marker"),
    ("short pid", body(ext(EXT_PID, b"\x00" * 10)), "undecodable"),
    ("pid bad utf-8", body(ext(EXT_PID, b"\x00" * 24 + b"\xff")), "undecodable"),
    ("short ref", body(ext(EXT_REF, b"\x00" * 5)), "undecodable"),
    ("ref n missing", body(ext(EXT_REF, struct.pack(">qH", 1, 9) + b"ab")), "Ref payload"),
    ("ref empty n", body(ext(EXT_REF, struct.pack(">qH", 1, 0) + b"ab")), "Ref payload"),
    ("short datetime", body(ext(EXT_DATETIME, b"\x07\xea\x01")), "undecodable"),
    (
        "datetime month 13",
        body(ext(EXT_DATETIME, struct.pack(">HBBBBBIBq", 2026, 13, 1, 0, 0, 0, 0, 0, 0))),
        "undecodable",
    ),
    (
        "datetime offset of a day",
        body(
            ext(EXT_DATETIME, struct.pack(">HBBBBBIBq", 2026, 1, 1, 0, 0, 0, 0, 0, 86400 * 10**6))
        ),
        "undecodable",
    ),
    (
        "datetime unknown zone kind",
        body(ext(EXT_DATETIME, struct.pack(">HBBBBBIBq", 2026, 1, 1, 0, 0, 0, 0, 6, 0))),
        "unknown flags",
    ),
    (
        "datetime bad zone key",
        body(ext(EXT_DATETIME, struct.pack(">HBBBBBIBq", 2026, 1, 1, 0, 0, 0, 0, 4, 0) + b"../x")),
        "undecodable",
    ),
    ("unhashable key", body(b"\x81\x91\x01\x02"), "undecodable"),
    ("map as key", body(b"\x81\x80\x02"), "undecodable"),
    ("tuple key holding a list", body(b"\x81\x92" + ext(EXT_TUPLE, b"") + b"\x90\x02"), "undecod"),
]


@pytest.mark.parametrize(("name", "frame", "match"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_bad_frames_are_protocol_errors(name: str, frame: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        FrameDecoder().feed(frame)
    # also after good frames, and when split across feeds
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(1)) == [1]
    with pytest.raises(ProtocolError, match=match):
        for i in range(len(frame)):
            decoder.feed(frame[i : i + 1])
    if frame[:4] != b"\x00\x00\x00\x00":
        with pytest.raises(ProtocolError, match=match):
            decode(frame[4:])


# --------------------------------------------------------------------------- before authentication


HELLO = ("hello", "a@10.0.0.1", 5, b"\x01" * 32, False, ["10.0.0.1", 4370], 3)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(PID, id="pid"),
        pytest.param(REF, id="ref"),
        pytest.param(UTC_DT, id="datetime-utc"),
        pytest.param(datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2), "X")), id="named"),
        pytest.param(msgpack.ExtType(99, b"x"), id="unknown-ext"),
        pytest.param(msgpack.Timestamp(1, 0), id="msgpack-timestamp"),
        pytest.param(msgpack.ExtType(EXT_DATETIME, b""), id="empty-datetime-ext"),
    ],
)
def test_a_plain_decoder_refuses_every_ext_but_the_tuple_marker(value: Any) -> None:
    frame = encode_frame((*HELLO, value))
    with pytest.raises(ProtocolError, match="ext"):
        FrameDecoder(4096, plain=True).feed(frame)
    if not isinstance(value, msgpack.ExtType):  # the same frame, once authenticated
        assert FrameDecoder(4096).feed(frame)


def test_a_plain_decoder_refuses_aware_datetimes_without_a_zone_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pre-auth attack of issue 13: frames full of aware datetimes, each naming a zone
    no tz database has (each a ZoneInfo lookup). Before authentication none is looked
    up, and the frame fails at its first ext."""
    looked_up: list[str] = []

    def zone_info(key: str) -> Any:
        looked_up.append(key)
        raise ZoneInfoNotFoundError(key)

    monkeypatch.setattr(_codec, "ZoneInfo", zone_info)
    payload = struct.pack(">HBBBBBIBq", 2026, 1, 1, 0, 0, 0, 0, 4, 0)
    dts = [msgpack.ExtType(EXT_DATETIME, payload + f"Nowhere/Z{i}".encode()) for i in range(40)]
    frame = encode_frame(("hello", *dts))
    with pytest.raises(ProtocolError, match="ext"):
        FrameDecoder(4096, plain=True).feed(frame)
    assert looked_up == []
    FrameDecoder(4096).feed(frame)  # authenticated: each is looked up (and kept as offsets)
    assert len(looked_up) == 40


def test_a_plain_decoder_takes_the_handshakes_values() -> None:
    frames = [HELLO, ("challenge", "b@h", 1, b"\2" * 32, None, 3), ("ok", b"\3" * 32)]
    frames += [("refuse", "reason", 3), ("x", [1, [2.5, None]], {"k": (1, (2,))})]
    decoder = FrameDecoder(4096, plain=True)
    assert_same(decoder.feed(b"".join(map(encode_frame, frames))), frames)


def test_frames_are_judged_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """``feed(data, 1)`` decodes one frame and leaves the next ones undecoded in its
    buffer: a caller that closes the connection on the first bad frame never pays for
    the others (the old decoder decoded every frame of a 64 KiB read first)."""
    decoded: list[bytes] = []
    unpack = _codec._unpack

    def counting(data: bytes, plain: bool = False) -> Any:
        decoded.append(data)
        return unpack(data, plain)

    monkeypatch.setattr(_codec, "_unpack", counting)
    bad = encode_frame((*HELLO, PID))
    stream = encode_frame(("junk", 1)) + bad * 20
    decoder = FrameDecoder(4096, plain=True)
    assert decoder.feed(stream, 1) == [("junk", 1)]
    assert len(decoded) == 1 and decoder.buffered == len(bad) * 20
    with pytest.raises(ProtocolError, match="ext"):
        decoder.feed(b"", 1)
    assert len(decoded) == 2
    # good frames: one per call, in order, whatever the chunks
    decoder = FrameDecoder(4096, plain=True)
    stream = b"".join(encode_frame(("n", i)) for i in range(5))
    got = decoder.feed(stream[:7], 1) + decoder.feed(stream[7:], 1)
    while frame := decoder.feed(b"", 1):
        got += frame
    assert got == [("n", i) for i in range(5)]
    assert decoder.buffered == 0


def test_a_decoder_leaves_plain_mode_once_the_peer_proved_itself() -> None:
    decoder = FrameDecoder(4096, plain=True)
    stream = encode_frame(("ok", b"\3" * 32)) + encode_frame(("send", PID, REF, UTC_DT))
    assert decoder.feed(stream, 1) == [("ok", b"\3" * 32)]
    decoder.plain, decoder.max_frame = False, 1 << 20
    assert_same(decoder.feed(b""), [("send", PID, REF, UTC_DT)])


def test_decode_refuses_empty_input_and_non_bytes() -> None:
    with pytest.raises(ProtocolError):
        decode(b"")
    # a peer's payload field may be anything: bytes(2**40) would allocate a TiB
    for bogus in (2**40, "\x01", None, [1], (1,)):
        with pytest.raises(ProtocolError, match="must be bytes"):
            decode(bogus)  # type: ignore[arg-type]
    assert decode(bytearray(b"\x01")) == 1
    assert decode(memoryview(b"\x91\x01")) == [1]


def test_msgpack_timestamp_from_a_peer_arrives_as_utc_datetime() -> None:
    got = decode(msgpack.packb(msgpack.Timestamp(1_800_000_000, 5000)))
    assert got == datetime.fromtimestamp(1_800_000_000, UTC) + timedelta(microseconds=5)
    assert got.tzinfo is UTC


BOMBS: list[tuple[str, bytes]] = [
    ("str32 of 2 GiB", b"\xdb\x80\x00\x00\x00"),
    ("bin32 of 4 GiB", b"\xc6\xff\xff\xff\xff"),
    ("array32 of 4G items", b"\xdd\xff\xff\xff\xff"),
    ("map32 of 4G pairs", b"\xdf\xff\xff\xff\xff"),
    ("ext32 of 4 GiB", b"\xc9\xff\xff\xff\xff\x02"),
    ("array16 of 65535 in 100 bytes", b"\xdc\xff\xff"),
    ("nested array32 headers", b"\x91\xdd\x7f\xff\xff\xff"),
    ("map key is a 2 GiB str", b"\x81\xdb\x80\x00\x00\x00"),
]


@pytest.mark.parametrize(("name", "head"), BOMBS, ids=[b[0] for b in BOMBS])
def test_msgpack_bombs_are_refused_fast_with_bounded_memory(name: str, head: bytes) -> None:
    frame = body(head + b"\x00" * (100 - len(head)))
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(ProtocolError):
            FrameDecoder().feed(frame)
        with pytest.raises(ProtocolError):
            decode(frame[4:])
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 1024 * 1024, f"{name}: peak {peak} bytes"


def test_large_declared_lengths_within_the_frame_still_work() -> None:
    value = ["x" * 100_000, b"y" * 100_000, list(range(10_000)), {i: i for i in range(5000)}]
    round_trip(value)


def test_random_garbage_is_only_ever_a_protocol_error() -> None:
    rng = random.Random(1234)
    good = frames_of(VALUES[:4])
    for _ in range(3000):
        if rng.random() < 0.5:
            payload = rng.randbytes(rng.randrange(1, 64))
        else:  # a valid frame's body with a few bytes changed
            payload = bytearray(good[4 : 4 + rng.randrange(1, len(good) - 4)])
            for _ in range(rng.randrange(1, 4)):
                payload[rng.randrange(len(payload))] = rng.randrange(256)
            payload = bytes(payload)
        with contextlib.suppress(ProtocolError):
            FrameDecoder().feed(body(payload))


# --------------------------------------------------------------------------- exit reasons


def test_wire_reason_keeps_encodable_reasons() -> None:
    for reason in ("normal", "shutdown", ("shutdown", {"why": [1, PID]}), "killed", None, 3):
        assert wire_reason(reason) is reason


def test_wire_reason_summarises_exceptions_and_unencodables() -> None:
    assert wire_reason(ValueError("bad value")) == ("exception", "ValueError", "bad value")
    assert wire_reason(KeyError("k")) == ("exception", "KeyError", "'k'")
    assert wire_reason({1, 2}) == ("unencodable", "{1, 2}")
    plain = Plain()
    assert wire_reason([*range(1000), plain]) == [*range(1000), ("unencodable", repr(plain)[:200])]
    huge = {str(i) for i in range(1000)}
    summary = wire_reason(huge)
    assert summary[0] == "unencodable"
    assert len(summary[1]) == 200
    assert summary[1] == repr(huge)[:200]


def test_wire_reason_keeps_the_shape_of_a_shutdown() -> None:
    assert wire_reason(("shutdown", RuntimeError("x"))) == (
        "shutdown",
        ("exception", "RuntimeError", "x"),
    )
    assert wire_reason(["a", {"k": {1}}]) == ["a", {"k": ("unencodable", "{1}")}]


def test_wire_reason_is_always_encodable() -> None:
    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("nope")

    deep_exc: Any = ValueError("deep")
    for _ in range(MAX_DEPTH):
        deep_exc = (deep_exc,)
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    for reason in (BadStr(), BrokenRepr(), deep_exc, cyclic, [Plain()] * 3, nested(MAX_DEPTH + 5)):
        decode(encode(wire_reason(reason)))
    kind, name, text = wire_reason(BadStr())
    assert (kind, name) == ("exception", "BadStr")
    assert text.startswith("<unprintable ") and text.endswith("BadStr>")


# --------------------------------------------------------------------------- properties

if HAVE_HYPOTHESIS:
    ZONE_KEYS = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]

    def _zones() -> Any:
        fixed = st.builds(
            timezone,
            st.integers(-(86400 * 10**6) + 1, 86400 * 10**6 - 1).map(
                lambda us: timedelta(microseconds=us)
            ),
        )
        named = st.builds(
            timezone,
            st.integers(-23 * 60, 23 * 60).map(lambda m: timedelta(minutes=m)),
            st.text(max_size=8),
        )
        try:
            keyed = [ZoneInfo(k) for k in ZONE_KEYS]
        except ZoneInfoNotFoundError:
            keyed = []
        return st.one_of(st.just(UTC), fixed, named, *map(st.just, keyed))

    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False),
        st.text(),
        st.binary(),
        st.builds(
            Pid,
            st.text(),
            st.integers(-(2**63), 2**63 - 1),
            st.integers(-(2**63), 2**63 - 1),
            st.integers(-(2**63), 2**63 - 1),
        ),
        st.builds(Ref, st.text(), st.integers(-(2**63), 2**63 - 1), st.integers()),
        st.datetimes(timezones=_zones()),
    )
    keys = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5),
            st.lists(inner, max_size=5).map(tuple),
            st.dictionaries(keys, inner, max_size=5),
        ),
        max_leaves=30,
    )

    @given(values)
    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_property_every_allowed_value_round_trips(value: Any) -> None:
        round_trip(value)

    @given(st.lists(values, min_size=1, max_size=5), st.lists(st.integers(1, 50), max_size=30))
    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_property_frames_survive_any_chunking(batch: list[Any], cuts: list[int]) -> None:
        stream = frames_of(batch)
        decoder = FrameDecoder()
        got: list[Any] = []
        pos = 0
        for cut in [*cuts, len(stream)]:
            got.extend(decoder.feed(stream[pos : pos + cut]))
            pos += cut
        got.extend(decoder.feed(stream[pos:]))
        assert_same(got, batch)

    @given(st.binary(min_size=1, max_size=200))
    @settings(max_examples=2000, deadline=None)
    def test_property_garbage_is_only_ever_a_protocol_error(data: bytes) -> None:
        with contextlib.suppress(ProtocolError):
            decode(data)
        with contextlib.suppress(ProtocolError):
            FrameDecoder(max_frame=1 << 20).feed(data)

else:

    def test_property_every_allowed_value_round_trips() -> None:
        pytest.importorskip("hypothesis")

    def test_property_frames_survive_any_chunking() -> None:
        pytest.importorskip("hypothesis")

    def test_property_garbage_is_only_ever_a_protocol_error() -> None:
        pytest.importorskip("hypothesis")
