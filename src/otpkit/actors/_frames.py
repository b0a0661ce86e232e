"""The frames processes exchange: tuples whose first item is a tag.

Between two processes of one node they travel pickled and authenticated (``_wire``);
between nodes, the distribution layer carries the tags in ``REMOTE_TAGS`` as msgpack.
"""

from __future__ import annotations

__all__ = [
    "BYE",
    "CALL",
    "CAST",
    "EXIT",
    "FRAME_ARITY",
    "HELLO",
    "INFO",
    "LINK",
    "MSG",
    "REMOTE_TAGS",
    "REPLY",
    "STARTED",
    "SYS",
    "UNLINK",
]

# Frame tags. A frame is a tuple whose first item is its tag.
HELLO = 0  # (HELLO, pid): first frame on a connection, names the connecting process
MSG = 1  # (MSG, payload)
CALL = 2  # (CALL, ref, request)
CAST = 3  # (CAST, payload)
REPLY = 4  # (REPLY, ref, value)
LINK = 5  # (LINK,)
UNLINK = 6  # (UNLINK,)
EXIT = 7  # (EXIT, reason): an explicit exit signal, exit(pid, reason)
BYE = 8  # (BYE, reason): the sender is ending with this reason
STARTED = 9  # (STARTED, token, result): a spawned child reports the end of its init
SYS = 10  # (SYS, ref, request): answered by the runtime itself, never by the actor

#: The length of each kind of frame; anything else is dropped as malformed.
FRAME_ARITY = {
    HELLO: 2,
    MSG: 2,
    CALL: 3,
    CAST: 2,
    REPLY: 3,
    LINK: 1,
    UNLINK: 1,
    EXIT: 2,
    BYE: 2,
    STARTED: 3,
    SYS: 3,
}
#: What a process on another node may send (never HELLO, BYE or STARTED: those belong
#: to the connection and the node; SYS only for ``stop`` and ``info``, see ``_sys``).
REMOTE_TAGS = frozenset({MSG, CALL, CAST, REPLY, LINK, UNLINK, EXIT, SYS})

# Mailbox entries: (kind, sender, ...).
INFO = 100  # (INFO, None, message) - Down, ExitSignal, timer messages
