"""The admin client: ``otpkit shell`` (interactive) and the one-shot commands
(``otpkit tree --connect HOST:PORT``). It joins a cluster as a hidden node and asks the
admin service (:mod:`otpkit.admin`) of the node it connects to."""

from otpkit.shell._cli import main
from otpkit.shell._format import plain

__all__ = ["main", "plain"]
