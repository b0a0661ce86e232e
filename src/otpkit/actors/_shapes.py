"""Message shapes: what a system process accepts, checked before it acts on a message.

A system process (the registry, the quorum, a scheduler's worker, ...) serves messages
from any node holding the cookie, and a hidden node (the shell, or anything that has the
cookie) may send it any msgpack value. Each such process declares the shapes it accepts
as a :class:`Protocol` - one :class:`Shape` per tag: the tuple's first element and the
kind of each field after it - and checks every message against it before a handler
touches a field. A message that does not fit gets :func:`bad_request` as the reply of a
call, or is dropped with one rate-limited log line (:class:`DropLog`); it never crashes
the process. The declarations are plain data, so the fuzz suite generates its malformed
messages from them and follows them when they change.

Kinds of fields: a Python type (``int`` - never ``bool`` -, ``float``, ``str``, ``bytes``,
``bool``, ``dict``, :class:`Pid`, :class:`Ref`, ...), or one of :class:`Int`,
:class:`Num`, :class:`Str`, :class:`Seq`, :class:`Tup`, :class:`Map`, :class:`Opt`,
:class:`Either`, :class:`Const`, or :data:`ANY`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

#: The longest text of a value a problem quotes.
_QUOTE = 60
#: Bounds of a 64-bit integer: anything a store or a timer can hold.
INT64 = 1 << 63


@dataclass(frozen=True)
class Int:
    """An ``int`` (not a ``bool``) in ``[lo, hi]``."""

    lo: int = -INT64
    hi: int = INT64 - 1


@dataclass(frozen=True)
class Num:
    """An ``int`` or ``float`` (not a ``bool``, not NaN) in ``[lo, hi]``."""

    lo: float = -1e18
    hi: float = 1e18


@dataclass(frozen=True)
class Str:
    """A ``str`` of at most ``max_len`` characters (and at least ``min_len``)."""

    max_len: int = 1024
    min_len: int = 0


@dataclass(frozen=True)
class Seq:
    """A ``list`` or ``tuple`` of at most ``max_len`` items, each of kind ``item``."""

    item: Kind
    max_len: int = 10_000


@dataclass(frozen=True)
class Tup:
    """A ``tuple`` or ``list`` of exactly these kinds, in order."""

    items: tuple[Kind, ...]


@dataclass(frozen=True)
class Map:
    """A ``dict`` of at most ``max_len`` entries whose keys and values have these kinds."""

    key: Kind
    value: Kind
    max_len: int = 10_000


@dataclass(frozen=True)
class Opt:
    """``None`` or a value of kind ``kind``."""

    kind: Kind


@dataclass(frozen=True)
class Either:
    """A value of one of ``kinds``."""

    kinds: tuple[Kind, ...]


@dataclass(frozen=True)
class Const:
    """One of the given values (compared with ``==``, types checked)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: Any value (the handler copes with whatever it is, e.g. a user's payload).
ANY = _Any()

Kind: TypeAlias = "type | Int | Num | Str | Seq | Tup | Map | Opt | Either | Const | _Any"


def _quote(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails is still quoted by its type
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _QUOTE else text[: _QUOTE - 3] + "..."


def problem(value: Any, kind: Kind) -> str | None:
    """Why ``value`` is not of ``kind``, or None if it is."""
    if isinstance(kind, type):
        if kind is int:
            ok = type(value) is int
        elif kind is float:
            ok = type(value) is int or (type(value) is float and not math.isnan(value))
        else:
            ok = isinstance(value, kind) and not (kind is not bool and type(value) is bool)
        return None if ok else f"{_quote(value)} is not {kind.__name__}"
    if isinstance(kind, Int):
        if type(value) is not int:
            return f"{_quote(value)} is not int"
        if not kind.lo <= value <= kind.hi:
            return f"{_quote(value)} is outside {kind.lo}..{kind.hi}"
        return None
    if isinstance(kind, Num):
        if type(value) not in (int, float) or (type(value) is float and math.isnan(value)):
            return f"{_quote(value)} is not a number"
        if not kind.lo <= value <= kind.hi:
            return f"{_quote(value)} is outside {kind.lo:g}..{kind.hi:g}"
        return None
    if isinstance(kind, Str):
        if type(value) is not str:
            return f"{_quote(value)} is not str"
        if not kind.min_len <= len(value) <= kind.max_len:
            return f"a str of {len(value)} characters (allowed {kind.min_len}..{kind.max_len})"
        return None
    if isinstance(kind, Seq):
        if not isinstance(value, list | tuple):
            return f"{_quote(value)} is not a list"
        if len(value) > kind.max_len:
            return f"a list of {len(value)} items (at most {kind.max_len})"
        for i, item in enumerate(value):
            why = problem(item, kind.item)
            if why is not None:
                return f"item {i}: {why}"
        return None
    if isinstance(kind, Tup):
        if not isinstance(value, list | tuple):
            return f"{_quote(value)} is not a tuple"
        if len(value) != len(kind.items):
            return f"a tuple of {len(value)} items (expected {len(kind.items)})"
        for i, (item, item_kind) in enumerate(zip(value, kind.items, strict=True)):
            why = problem(item, item_kind)
            if why is not None:
                return f"item {i}: {why}"
        return None
    if isinstance(kind, Map):
        if not isinstance(value, dict):
            return f"{_quote(value)} is not a dict"
        if len(value) > kind.max_len:
            return f"a dict of {len(value)} entries (at most {kind.max_len})"
        for key, item in value.items():
            why = problem(key, kind.key) or problem(item, kind.value)
            if why is not None:
                return f"entry {_quote(key)}: {why}"
        return None
    if isinstance(kind, Opt):
        return None if value is None else problem(value, kind.kind)
    if isinstance(kind, Either):
        whys = [problem(value, k) for k in kind.kinds]
        return None if None in whys else " and ".join(w for w in whys if w)
    if isinstance(kind, Const):
        for allowed in kind.values:
            if type(value) is type(allowed) and value == allowed:
                return None
        return f"{_quote(value)} is not one of {', '.join(map(repr, kind.values))}"
    if isinstance(kind, _Any):
        return None
    raise TypeError(f"not a kind of field: {kind!r}")


@dataclass(frozen=True)
class Shape:
    """One message: ``(tag, *fields)``; the last ``optional`` fields may be left out, and
    with ``more`` a later version may append fields (they are not checked)."""

    tag: str
    fields: tuple[Kind, ...] = ()
    optional: int = 0
    more: bool = False

    def problem(self, msg: tuple[Any, ...] | list[Any]) -> str | None:
        """Why ``msg`` (whose tag is this shape's) does not fit, or None."""
        given = len(msg) - 1
        most = len(self.fields)
        least = most - self.optional
        if given < least or (given > most and not self.more):
            want = str(most) if least == most else f"{least}..{most}"
            return f"{self.tag!r} with {given} fields (expected {want})"
        for i, (value, kind) in enumerate(zip(msg[1:], self.fields, strict=False)):
            why = problem(value, kind)
            if why is not None:
                return f"{self.tag!r} field {i + 1}: {why}"
        return None


class Protocol:
    """The shapes one process accepts, by tag.

    ``owner`` names the process in problems and logs (``"quorum call"``). A message is a
    ``tuple`` (or, with ``lists``, a ``list``) whose first element is a ``str`` tag.
    """

    def __init__(self, owner: str, *shapes: Shape, lists: bool = False) -> None:
        self.owner = owner
        self.lists = lists
        self.shapes: Mapping[str, Shape] = {s.tag: s for s in shapes}
        if len(self.shapes) != len(shapes):
            raise ValueError(f"{owner}: a tag declared twice")

    def problem(self, msg: Any) -> str | None:
        """Why ``msg`` is not a message this process accepts, or None."""
        if not (type(msg) is tuple or (self.lists and type(msg) is list)) or not msg:
            return f"{_quote(msg)} is not a tagged tuple"
        tag = msg[0]
        if type(tag) is not str:
            return f"tag {_quote(tag)} is not str"
        shape = self.shapes.get(tag)
        if shape is None:
            return f"unknown {self.owner} {_quote(tag)}"
        return shape.problem(msg)

    def __contains__(self, tag: object) -> bool:
        return tag in self.shapes


def bad_request(owner: str, why: str) -> tuple[str, str]:
    """The reply to a call that does not fit: ``("error", "bad <owner>: <why>")``."""
    return ("error", f"bad {owner}: {why}")


@dataclass
class DropLog:
    """Logs dropped messages: the first of each ``every`` seconds at WARNING with how many
    were dropped since, the rest at DEBUG, so a flood costs one line a minute."""

    logger: logging.Logger
    every: float = 60.0
    _last: float = field(default=-1e18)
    _since: int = 0

    def dropped(self, who: str, msg: Any, why: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self._last >= self.every:
            more = f" ({self._since} more dropped since the last line)" if self._since else ""
            self.logger.warning("%s: dropped %s: %s%s", who, _quote(msg), why, more)
            self._last, self._since = now, 0
        else:
            self._since += 1
            self.logger.debug("%s: dropped %s: %s", who, _quote(msg), why)
