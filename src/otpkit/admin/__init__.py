"""The admin service every dist node runs (``otpkit_admin``): what the shell and the
one-shot commands (:mod:`otpkit.shell`) ask a live node for, and the operations they run."""

from otpkit.admin._service import ACT_TIMEOUT, ADMIN_NAME, Admin, AdminError, ask_admin

__all__ = ["ACT_TIMEOUT", "ADMIN_NAME", "Admin", "AdminError", "ask_admin"]
