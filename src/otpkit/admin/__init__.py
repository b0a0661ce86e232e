"""The admin service every dist node runs (``otpkit_admin``): what the shell and the
one-shot commands (:mod:`otpkit.shell`) ask a live node for, and the operations they run."""

from otpkit.admin._service import ACT_TIMEOUT, ADMIN_NAME, Admin, AdminError, ask_admin
from otpkit.admin._views import (
    NO_ANSWER,
    ROOT_NAMES,
    Found,
    child_rows,
    find_child,
    find_supervisor,
    fmt_time,
    id_label,
    parse_pid,
    pid_text,
    singleton_rows,
    snapshot,
    tree_node_name,
    walk,
)

__all__ = [
    "ACT_TIMEOUT",
    "ADMIN_NAME",
    "Admin",
    "AdminError",
    "ask_admin",
]

# the shapes of its answers, shared with the shell that draws them
__all__ += [
    "NO_ANSWER",
    "ROOT_NAMES",
    "Found",
    "child_rows",
    "find_child",
    "find_supervisor",
    "fmt_time",
    "id_label",
    "parse_pid",
    "pid_text",
    "singleton_rows",
    "snapshot",
    "tree_node_name",
    "walk",
]
