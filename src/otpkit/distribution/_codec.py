"""The wire codec of node-to-node traffic: msgpack values and length-prefixed frames.

A value that crosses nodes is one of None, bool, int (64-bit), float, str, bytes, list,
tuple, dict (keys: any hashable value of these types), :class:`~otpkit.Pid`,
:class:`~otpkit.Ref` and a timezone-aware :class:`datetime.datetime` (tzinfo a
``datetime.timezone`` or a ``zoneinfo.ZoneInfo`` with a key), nested at most
:data:`MAX_DEPTH` containers deep. It arrives equal to what was sent and of the same
type: tuples stay tuples, lists stay lists, int and tuple map keys work. Anything else
is a ``TypeError`` at :func:`encode` naming the type (subclasses too: an IntEnum, a
namedtuple, an OrderedDict); nothing is ever pickled. Four types slip through, because
msgpack's C packer packs them itself, even with ``strict_types``, without asking
``default``: ``bytearray`` and ``memoryview`` (they arrive as equal ``bytes``),
``msgpack.ExtType`` and ``msgpack.Timestamp``. Catching them would take a Python walk
of every message; code that builds msgpack objects by hand gets what it asked for.

msgpack ext type codes (msgpack's own ``-1``, the timestamp, is never sent; one that
arrives decodes as a UTC datetime):

====  ========  ==============================================================
code  value     payload
====  ========  ==============================================================
1     tuple     empty. A tuple is a msgpack *array* whose first element is this
                marker, followed by the tuple's items. Not an ext whose payload is
                the packed items: decoding that takes one nested ``unpackb`` per
                tuple level, each with its ~40 KiB unpack stack on the C stack
                (msgpack 1.2.4 segfaults at ~200 nested levels on an 8 MiB stack,
                before Python's recursion limit), and a nested pack per tuple on
                encode. As an array, the whole value is one pass of the C
                (un)packer; a marker anywhere but first in an array is an error.
2     Pid       ``>qqq`` creation, id, serial; then the node name, UTF-8.
3     Ref       ``>qH`` creation, byte length L of n; n as an L-byte big-endian
                signed int (any size); then the node name, UTF-8.
4     datetime  ``>HBBBBBIB`` year, month, day, hour, minute, second,
                microsecond, flags (bit 0: fold; bits 1-2: zone kind: 0 fixed
                offset, 1 fixed offset with a name, 2 ZoneInfo); ``>q`` the UTC
                offset in microseconds; then the zone's name or key, UTF-8. Wall
                fields and fold are sent, not the instant, so times in a DST gap
                or fold round-trip exactly. A ZoneInfo key the receiver's tz
                database lacks decodes as the sent fixed offset (the same instant)
                rather than failing the whole connection.
====  ========  ==============================================================

A frame is a 4-byte big-endian length followed by that many bytes of one msgpack
value. :class:`FrameDecoder` rejects an oversize or empty frame, bytes that are not
exactly one msgpack value, declared lengths larger than the frame (msgpack "bombs":
the unpacker's ``max_*_len`` limits are the frame's size) and nesting deeper than
:data:`MAX_DEPTH` with :class:`ProtocolError`.

Before a peer is authenticated its frames are decoded *plain* (:attr:`FrameDecoder.plain`):
the handshake's values only - None, bool, int, float, str, bytes, lists, maps and tuples
- and no ext type but the tuple marker, whose payload is empty: a Pid, a Ref, a datetime
or any other ext in such a frame is a :class:`ProtocolError` raised by the unpacker
before its payload is looked at (no zone is looked up, no object built). A peer that
has not proved the cookie makes no work but what its bytes cost msgpack's C unpacker.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgpack  # type: ignore[import-untyped]

from otpkit.actors import Pid, Ref
from otpkit.errors import FrameError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "MAX_DEPTH",
    "FrameDecoder",
    "ProtocolError",
    "decode",
    "encode",
    "encode_frame",
    "wire_reason",
]

DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
"""The largest frame :class:`FrameDecoder` accepts unless told otherwise (16 MiB)."""

MAX_DEPTH: Final = 64
"""The deepest nesting of lists, tuples and dicts that crosses nodes."""

EXT_TUPLE: Final = 1
EXT_PID: Final = 2
EXT_REF: Final = 3
EXT_DATETIME: Final = 4

_MAX_PREFIX: Final = 0xFFFFFFFF
# a packer whose output was larger than this grew its buffer: it is not pooled again
_POOLED_BUF: Final = 256 * 1024
# bytes that start a msgpack array or map header: fixmap, fixarray, array16/32, map16/32
_CONTAINER_BYTES: Final = bytes(range(0x80, 0xA0)) + b"\xdc\xdd\xde\xdf"
# above this size, walking the value is cheaper than counting header bytes
_COUNT_LIMIT: Final = 8192
_CACHE_SIZE: Final = 4096

_PID_S: Final = struct.Struct(">qqq")
_REF_S: Final = struct.Struct(">qH")
_DT_S: Final = struct.Struct(">HBBBBBIB")
_OFF_S: Final = struct.Struct(">q")
_PREFIX_S: Final = struct.Struct(">I")
_DT_HEAD: Final = _DT_S.size + _OFF_S.size

_ExtType = msgpack.ExtType
_unpackb = msgpack.unpackb
_new_tuple = tuple.__new__
_ZONE_FIXED: Final = 0
_ZONE_NAMED: Final = 2
_ZONE_INFO: Final = 4


class ProtocolError(FrameError, ValueError):
    """Bytes from a peer are not a valid frame; the connection they came on must close.

    ``reason`` says what was wrong, for the log line. A ``ValueError`` as well, so code
    that treats a malformed message as a ``ValueError`` handles a bad payload too.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


# --------------------------------------------------------------------------- encode


def _type_name(t: type) -> str:
    if t.__module__ == "builtins":
        return t.__qualname__
    return f"{t.__module__}.{t.__qualname__}"


def _short_repr(obj: Any, limit: int = 100) -> str:
    try:
        text = repr(obj)
    except Exception:  # a broken __repr__ must not hide the real error
        return f"<{_type_name(type(obj))} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cannot(obj: Any, what: str | None = None) -> TypeError:
    if what is None:
        name = _type_name(type(obj))
        what = f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    return TypeError(f"cannot send {what} across nodes: {_short_repr(obj)}")


# the tuple marker, built once: ExtType's own __new__ validates its fields in Python
_TUPLE_MARK_EXT: Final = _new_tuple(_ExtType, (EXT_TUPLE, b""))


def _encode_pid(pid: Pid) -> Any:
    try:
        data = _PID_S.pack(pid.creation, pid.id, pid.serial) + pid.node.encode()
    except (struct.error, AttributeError, UnicodeError):
        raise _cannot(
            pid, "a Pid whose node is not a str or whose creation/id/serial is not a 64-bit int"
        ) from None
    return _new_tuple(_ExtType, (EXT_PID, data))


def _encode_ref(ref: Ref) -> Any:
    n = ref.n
    try:
        nb = n.to_bytes((n.bit_length() + 8) >> 3, "big", signed=True)
        data = _REF_S.pack(ref.creation, len(nb)) + nb + ref.node.encode()
    except (struct.error, AttributeError, UnicodeError, TypeError, OverflowError):
        raise _cannot(
            ref, "a Ref whose node is not a str, creation not a 64-bit int or n not an int"
        ) from None
    return _new_tuple(_ExtType, (EXT_REF, data))


def _encode_datetime(dt: datetime) -> Any:
    tz = dt.tzinfo
    tzt = type(tz)
    if tzt is timezone:
        args = tz.__getinitargs__()  # type: ignore[union-attr]
        offset: timedelta = args[0]
        if len(args) > 1:
            kind, name = _ZONE_NAMED, args[1]
        else:
            kind, name = _ZONE_FIXED, ""
    elif tzt is ZoneInfo and tz.key is not None:  # type: ignore[union-attr]
        kind, name = _ZONE_INFO, tz.key  # type: ignore[union-attr]
        offset = dt.utcoffset()  # type: ignore[assignment]
    elif tz is None:
        raise _cannot(dt, "a naive datetime (give it a tzinfo)")
    else:
        raise _cannot(
            dt,
            f"a datetime whose tzinfo is a {_type_name(tzt)} (use datetime.timezone "
            "or zoneinfo.ZoneInfo with a key)",
        )
    off_us = (offset.days * 86400 + offset.seconds) * 1_000_000 + offset.microseconds
    data = (
        _DT_S.pack(
            dt.year,
            dt.month,
            dt.day,
            dt.hour,
            dt.minute,
            dt.second,
            dt.microsecond,
            kind | dt.fold,
        )
        + _OFF_S.pack(off_us)
        + name.encode()
    )
    return _new_tuple(_ExtType, (EXT_DATETIME, data))


def _default(obj: Any) -> Any:
    """msgpack's ``default``: what its C packer does not pack natively (strict types)."""
    t = type(obj)
    if t is tuple:
        # packed natively as an array by the same packer: no nested pack per tuple
        return [_TUPLE_MARK_EXT, *obj]
    if t is Pid:
        return _encode_pid(obj)
    if t is Ref:
        return _encode_ref(obj)
    if t is datetime:
        return _encode_datetime(obj)
    if t is int:
        raise _cannot(obj, "an int outside -2**63..2**64-1")
    raise _cannot(obj)


def _new_packer() -> Any:
    return msgpack.Packer(use_bin_type=True, strict_types=True, default=_default)


# A packer is not safe to share between threads (``default`` runs Python code, so the
# GIL can switch mid-pack): each encode takes one from this pool and puts it back.
# list.pop and list.append are atomic.
_packers: list[Any] = [_new_packer()]


def _pack(obj: Any) -> bytes:
    try:
        packer = _packers.pop()
    except IndexError:
        packer = _new_packer()
    try:
        data: bytes = packer.pack(obj)
    except ValueError as exc:  # msgpack's own limits: 511 levels (or a cycle), 4 GiB items
        _packers.append(packer)
        if "recursion limit" in str(exc):
            raise TypeError(
                f"cannot send a value nested deeper than {MAX_DEPTH} levels (or a cycle) "
                "across nodes"
            ) from None
        raise TypeError(f"cannot send this value across nodes: {exc}") from None
    except BaseException:
        _packers.append(packer)
        raise
    if len(data) <= _POOLED_BUF:
        _packers.append(packer)
    return data


def encode(obj: Any) -> bytes:
    """``obj`` as msgpack bytes; ``TypeError`` naming the type if it may not cross nodes."""
    data = _pack(obj)
    if len(data) > MAX_DEPTH and _too_deep(obj, data):
        raise TypeError(f"cannot send a value nested deeper than {MAX_DEPTH} levels across nodes")
    return data


def encode_frame(obj: Any) -> bytes:
    """``obj`` encoded and prefixed with its 4-byte big-endian length."""
    data = _pack(obj)
    size = len(data)
    if size > MAX_DEPTH and _too_deep(obj, data):
        raise TypeError(f"cannot send a value nested deeper than {MAX_DEPTH} levels across nodes")
    if size > _MAX_PREFIX:
        raise ValueError(f"a frame of {size} bytes does not fit a 4-byte length")
    return _PREFIX_S.pack(size) + data


# --------------------------------------------------------------------------- depth

_CONTAINERS: Final = frozenset({list, tuple, dict})


def _items_too_deep(items: Any, budget: int) -> bool:
    """Whether a container among ``items`` nests more than ``budget`` levels."""
    types = set(map(type, items))  # C speed over wide containers of scalars
    if types.isdisjoint(_CONTAINERS):
        return False
    if budget <= 0:
        return True
    for item in items:
        t = type(item)
        if t is list or t is tuple:
            if _items_too_deep(item, budget - 1):
                return True
        elif t is dict and (
            _items_too_deep(item.keys(), budget - 1) or _items_too_deep(item.values(), budget - 1)
        ):
            return True
    return False


def _too_deep(obj: Any, data: bytes) -> bool:
    """Whether ``obj`` (encoded as ``data``) nests more than MAX_DEPTH containers.

    Every container starts with a header byte in _CONTAINER_BYTES, so if ``data`` has
    at most MAX_DEPTH of them (counted in C) the value cannot be too deep; otherwise
    walk it, with recursion bounded by MAX_DEPTH.
    """
    if len(data) <= _COUNT_LIMIT and (
        len(data) - len(data.translate(None, _CONTAINER_BYTES)) <= MAX_DEPTH
    ):
        return False
    return _items_too_deep((obj,), MAX_DEPTH)


# --------------------------------------------------------------------------- decode


class _Marker:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<tuple marker>"


_TUPLE_MARK: Final = _Marker()
_pid_cache: dict[bytes, Pid] = {}
_zone_cache: dict[str, ZoneInfo] = {}
_fixed_cache: dict[tuple[int, str | None], timezone] = {}


def _decode_pid(data: bytes) -> Pid:
    creation, id_, serial = _PID_S.unpack_from(data)
    pid = Pid(data[24:].decode(), creation, id_, serial)
    if len(_pid_cache) >= _CACHE_SIZE:
        _pid_cache.clear()
    _pid_cache[data] = pid
    return pid


def _decode_ref(data: bytes) -> Ref:
    creation, size = _REF_S.unpack_from(data)
    end = 10 + size
    if size == 0 or len(data) < end:
        raise ProtocolError(f"Ref payload of {len(data)} bytes declares an n of {size} bytes")
    return Ref(data[end:].decode(), creation, int.from_bytes(data[10:end], "big", signed=True))


def _fixed_zone(off_us: int, name: str | None) -> timezone:
    key = (off_us, name)
    tz = _fixed_cache.get(key)
    if tz is None:
        offset = timedelta(microseconds=off_us)
        tz = timezone(offset) if name is None else timezone(offset, name)
        if len(_fixed_cache) >= _CACHE_SIZE:
            _fixed_cache.clear()
        _fixed_cache[key] = tz
    return tz


def _decode_datetime(data: bytes) -> datetime:
    year, month, day, hour, minute, second, micro, flags = _DT_S.unpack_from(data)
    (off_us,) = _OFF_S.unpack_from(data, _DT_S.size)
    kind = flags & ~1
    if kind == _ZONE_FIXED:
        if len(data) != _DT_HEAD:
            raise ProtocolError("datetime payload has bytes after a fixed offset")
        tz: timezone | ZoneInfo = _fixed_zone(off_us, None)
    elif kind == _ZONE_NAMED:
        tz = _fixed_zone(off_us, data[_DT_HEAD:].decode())
    elif kind == _ZONE_INFO:
        key = data[_DT_HEAD:].decode()
        zone = _zone_cache.get(key)
        if zone is None:
            try:
                zone = ZoneInfo(key)
            except ZoneInfoNotFoundError:
                # the sender's tz database knows a zone this one does not: keep the instant
                tz = _fixed_zone(off_us, None)
            else:
                if len(_zone_cache) >= _CACHE_SIZE:
                    _zone_cache.clear()
                _zone_cache[key] = tz = zone
        else:
            tz = zone
    else:
        raise ProtocolError(f"datetime payload has unknown flags {flags:#x}")
    return datetime(year, month, day, hour, minute, second, micro, tz, fold=flags & 1)


class _Hooks:
    """The unpacker's hooks for one decode at a time, with its count of tuple markers.

    A marker is only valid as the first element of an array (which then becomes a
    tuple); ``open`` counts the markers not yet consumed, so a stray one anywhere else
    is caught without walking the value. With ``plain`` set, any other ext is refused.
    """

    __slots__ = ("ext_hook", "list_hook", "open", "plain")

    def __init__(self) -> None:
        self.open = 0
        self.plain = False
        self.ext_hook = self._ext
        self.list_hook = self._list

    def _ext(self, code: int, data: bytes) -> Any:
        if code == EXT_TUPLE:
            if data:
                raise ProtocolError("tuple marker with a payload")
            self.open += 1
            return _TUPLE_MARK
        if self.plain:
            raise ProtocolError(f"msgpack ext type {code} before authentication")
        if code == EXT_PID:
            pid = _pid_cache.get(data)
            return _decode_pid(data) if pid is None else pid
        if code == EXT_REF:
            return _decode_ref(data)
        if code == EXT_DATETIME:
            return _decode_datetime(data)
        raise ProtocolError(f"unknown msgpack ext type {code}")

    def _list(self, items: list[Any]) -> Any:
        if items and items[0] is _TUPLE_MARK:
            self.open -= 1
            del items[0]
            return tuple(items)
        return items


_hooks: list[_Hooks] = [_Hooks()]


def _unpack(data: bytes, plain: bool = False) -> Any:
    """The value in ``data``; with ``plain``, refusing every ext but the tuple marker."""
    try:
        hooks = _hooks.pop()
    except IndexError:
        hooks = _Hooks()
    hooks.open = 0
    hooks.plain = plain
    size = len(data)
    try:
        obj = _unpackb(
            data,
            ext_hook=hooks.ext_hook,
            list_hook=hooks.list_hook,
            strict_map_key=False,
            timestamp=3,
            # every declared length is bounded by the bytes there are: a small frame
            # never makes the unpacker allocate for a huge declared str/array/map
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size >> 1,
            # plain: only the tuple marker's empty payload; a longer ext is refused by
            # the C unpacker before any hook sees it
            max_ext_len=0 if plain else size,
        )
    except ProtocolError:
        raise
    except msgpack.ExtraData:
        raise ProtocolError("trailing bytes after the msgpack value") from None
    except msgpack.StackError:
        raise ProtocolError("msgpack value nested too deep") from None
    except msgpack.FormatError:
        raise ProtocolError("not msgpack: a byte no msgpack value starts with") from None
    except Exception as exc:
        raise ProtocolError(f"undecodable msgpack: {type(exc).__name__}: {exc}") from None
    else:
        stray = hooks.open
    finally:
        _hooks.append(hooks)
    if stray:
        raise ProtocolError("tuple marker outside a tuple")
    if size > MAX_DEPTH and _too_deep(obj, data):
        raise ProtocolError(f"msgpack value nested deeper than {MAX_DEPTH} levels")
    return obj


def decode(data: bytes) -> Any:
    """The value encoded in ``data`` (exactly one); :class:`ProtocolError` if invalid."""
    if type(data) is not bytes:
        if not isinstance(data, bytearray | memoryview):
            # a peer's payload field may be anything: bytes(an int) would allocate that many
            raise ProtocolError(f"msgpack data must be bytes, not {_type_name(type(data))}")
        data = bytes(data)
    if not data:
        raise ProtocolError("empty msgpack value")
    return _unpack(data)


# --------------------------------------------------------------------------- frames


class FrameDecoder:
    """Splits a byte stream into frames and decodes each; one per connection.

    :meth:`feed` takes what the socket gave and returns the values of the frames it
    completed. It raises :class:`ProtocolError` as soon as a length prefix declares a
    frame larger than ``max_frame`` (before buffering it) or an empty one, and for a
    frame that is not exactly one valid value; the decoder then stays failed.

    ``plain`` (a peer not authenticated yet) decodes the handshake's plain values only
    (see the module's docstring); the caller clears it, and raises ``max_frame``, once
    the peer proved itself.
    """

    __slots__ = ("_buf", "_failed", "_need", "max_frame", "plain")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, *, plain: bool = False) -> None:
        if type(max_frame) is not int or not 0 < max_frame <= _MAX_PREFIX:
            raise ValueError(f"max_frame={max_frame!r}; expected an int in 1..{_MAX_PREFIX}")
        self.max_frame = max_frame
        self.plain = plain
        self._buf = bytearray()
        self._need = 4  # bytes _buf must hold before it is worth parsing again
        self._failed: str | None = None

    def feed(self, data: bytes, limit: int = 0) -> list[Any]:
        """The values of the frames that ``data`` completes, in order; with ``limit``,
        at most that many: the bytes of the next frames stay buffered, undecoded, for a
        later call (``feed(b"", limit)`` takes the next one), so that a caller can judge
        each frame before the next one costs anything."""
        if self._failed is not None:
            raise ProtocolError(f"decoder failed earlier: {self._failed}")
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []  # a large frame arriving in pieces is not re-parsed per piece
            data = bytes(buf)
            buf.clear()
        elif type(data) is not bytes:
            data = bytes(data)
        out: list[Any] = []
        pos = 0
        end = len(data)
        max_frame = self.max_frame
        plain = self.plain
        need = 4
        try:
            while end - pos >= 4:
                if limit and len(out) >= limit:
                    break  # judged later; need 4: the next call parses at once
                (size,) = _PREFIX_S.unpack_from(data, pos)
                if size > max_frame:
                    raise ProtocolError(f"frame of {size} bytes exceeds max_frame {max_frame}")
                if size == 0:
                    raise ProtocolError("empty frame")
                stop = pos + 4 + size
                if stop > end:
                    need = 4 + size
                    break
                out.append(_unpack(data[pos + 4 : stop], plain))
                pos = stop
        except ProtocolError as exc:
            self._failed = exc.reason
            raise
        if pos < end:
            self._need = need
            buf += memoryview(data)[pos:]
        return out

    @property
    def buffered(self) -> int:
        """Bytes received that do not complete a frame yet."""
        return len(self._buf)


# --------------------------------------------------------------------------- reasons


def _encodable(obj: Any) -> bool:
    try:
        encode(obj)
    except TypeError:
        return False
    return True


def _repr200(obj: Any) -> str:
    try:
        return repr(obj)[:200]
    except Exception:
        return f"<{_type_name(type(obj))} object>"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {_type_name(type(exc))}>"


def _wire_term(term: Any, depth: int) -> Any:
    if isinstance(term, BaseException):
        return ("exception", type(term).__name__, _safe_str(term))
    t = type(term)
    if t in _CONTAINERS and depth < MAX_DEPTH:
        if t is tuple:
            return tuple(_wire_term(x, depth + 1) for x in term)
        if t is list:
            return [_wire_term(x, depth + 1) for x in term]
        return {_wire_term(k, depth + 1): _wire_term(v, depth + 1) for k, v in term.items()}
    if _encodable(term):
        return term
    return ("unencodable", _repr200(term))


def wire_reason(reason: Any) -> Any:
    """An exit reason that can cross nodes.

    An encodable reason is returned unchanged; an exception becomes
    ``("exception", "TypeName", str(exc))`` and any other value that cannot cross
    ``("unencodable", repr(value)[:200])`` - inside tuples, lists and dicts too, so
    ``("shutdown", exc)`` stays a shutdown.
    """
    if _encodable(reason):
        return reason
    term = _wire_term(reason, 0)
    if _encodable(term):
        return term
    return ("unencodable", _repr200(reason))
