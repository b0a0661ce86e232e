"""Actors on Thespian with OTP failure semantics.

The first ``__all__`` block is the user's API (re-exported by :mod:`otpkit`). The second
is the internal surface the other layers of otpkit build on - the runtime, the frames
processes exchange, the local actor system, ``/proc`` reading - never the private
modules themselves (``tests/unit/test_layers.py`` checks it).
"""

from otpkit.actors import _shapes as shapes
from otpkit.actors._actor import IGNORE, NOREPLY, Actor, Stop
from otpkit.actors._api import (
    call,
    cancel_timer,
    cast,
    demonitor,
    exit,
    link,
    make_ref,
    monitor,
    multi_call,
    process_info,
    register,
    reply,
    runtime,
    self,
    send,
    send_after,
    spawn,
    spawn_link,
    stop,
    trap_exit,
    unlink,
    unregister,
    whereis,
)
from otpkit.actors._client import ClientRuntime
from otpkit.actors._files import make_private_dir, narrow, private_file
from otpkit.actors._frames import (
    BYE,
    CALL,
    CAST,
    EXIT,
    FRAME_ARITY,
    HELLO,
    INFO,
    LINK,
    MSG,
    REMOTE_TAGS,
    REPLY,
    STARTED,
    SYS,
    UNLINK,
)
from otpkit.actors._host import reason_of
from otpkit.actors._loader import load_object
from otpkit.actors._logs import (
    LogWriter,
    drain_stdio,
    json_formatter,
    set_tags,
    text_formatter,
)
from otpkit.actors._pid import Down, ExitSignal, From, Pid, Ref, is_normal_exit
from otpkit.actors._proc import proc_stat, process_alive, process_start_ticks
from otpkit.actors._runtime import (
    NodeIdentity,
    RemoteHooks,
    Runtime,
    SysStop,
    address_of,
    close_in_children,
    name_address,
    node_pgid,
    own_socket,
    set_node_pgid,
    set_remote_hooks,
)
from otpkit.actors._runtime import current as current_runtime
from otpkit.actors._runtime import set_current as set_current_runtime
from otpkit.actors._stream import StreamEnd, read_frames
from otpkit.actors._system import (
    LocalSystem,
    halt_local_system,
    pids_in_group,
    start_local_system,
)
from otpkit.actors._wire import Channel as LocalChannel
from otpkit.actors._wire import RateLog, is_stranger
from otpkit.actors._wire import Unproven as UnprovenConnections
from otpkit.actors._wire import encode as encode_local_frame

__all__ = [
    "IGNORE",
    "NOREPLY",
    "Actor",
    "Down",
    "ExitSignal",
    "From",
    "Pid",
    "Ref",
    "Stop",
    "call",
    "cancel_timer",
    "cast",
    "demonitor",
    "exit",
    "is_normal_exit",
    "link",
    "make_ref",
    "monitor",
    "multi_call",
    "process_info",
    "register",
    "reply",
    "self",
    "send",
    "send_after",
    "spawn",
    "spawn_link",
    "stop",
    "trap_exit",
    "unlink",
    "unregister",
    "whereis",
]

# the internal surface (see the module's docstring)
__all__ += [
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
    "ClientRuntime",
    "LocalChannel",
    "LocalSystem",
    "LogWriter",
    "NodeIdentity",
    "RateLog",
    "RemoteHooks",
    "Runtime",
    "StreamEnd",
    "SysStop",
    "UnprovenConnections",
    "address_of",
    "close_in_children",
    "current_runtime",
    "drain_stdio",
    "encode_local_frame",
    "halt_local_system",
    "is_stranger",
    "json_formatter",
    "load_object",
    "make_private_dir",
    "name_address",
    "narrow",
    "node_pgid",
    "own_socket",
    "pids_in_group",
    "private_file",
    "proc_stat",
    "process_alive",
    "process_start_ticks",
    "read_frames",
    "reason_of",
    "runtime",
    "set_current_runtime",
    "set_node_pgid",
    "set_remote_hooks",
    "set_tags",
    "shapes",
    "start_local_system",
    "text_formatter",
]
