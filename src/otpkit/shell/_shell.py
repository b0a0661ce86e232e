"""``otpkit shell``: an interactive session on a hidden node connected to a cluster node.

One command per line (``help`` lists them); an unknown command or a bad argument prints
one line and the session goes on. History is kept in ``~/.otpkit_history``; Tab
completes commands, and supervisor, child, job and global names. A lost connection
prints ``connection to <node> lost`` and ends the shell with status 3 - at once when
idle (a watcher thread checks every second), or at the next command.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from otpkit import admin
from otpkit.shell import _format
from otpkit.shell._client import AdminClient, LostConnection, RequestError
from otpkit.shell._commands import (
    COMMANDS,
    MAX_SECONDS,
    SHELL_ONLY,
    Options,
    UsageError,
    execute,
    help_text,
)

__all__ = ["LOST_STATUS", "Shell", "stream_events"]

#: Exit status when the connection to the target node is lost.
LOST_STATUS = 3
HISTORY_FILE = "~/.otpkit_history"
_CACHE_SECONDS = 5.0
#: Seconds a shell that lost its target waits for its own node to stop.
_CLOSE_BOUND = 8.0


def stream_events(
    client: AdminClient,
    options: Options,
    emit: Callable[[dict[str, Any]], None],
    count: int = 0,
    seconds: float = 0.0,
    stopped: Callable[[], bool] = lambda: False,
    ready: Callable[[], None] = lambda: None,
) -> int:
    """Pass the connected node's events to ``emit`` until ``count`` came, ``seconds``
    passed (0: no limit) or ``stopped()``; how many came. ``ready`` is called once the
    node sends them.

    Raises:
        LostConnection: the target went away meanwhile.
    """
    client.request("events", client.pid, True, options.scheduler)
    ready()
    deadline = time.monotonic() + seconds if seconds > 0 else None
    seen = 0
    try:
        while not stopped() and (count <= 0 or seen < count):
            wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if wait <= 0:
                break
            msg = client.receive(wait)
            if isinstance(msg, dict) and "kind" in msg and "text" in msg:
                emit(msg)
                seen += 1
    finally:
        with contextlib.suppress(RequestError, LostConnection):
            client.request("events", client.pid, False, options.scheduler, timeout=5.0)
    return seen


class Shell:
    """The interactive loop over ``client``; :meth:`run` returns the exit status."""

    def __init__(
        self,
        client: AdminClient,
        options: Options,
        out: TextIO = sys.stdout,
        history: str | None = HISTORY_FILE,
    ) -> None:
        self.client = client
        self.options = options
        self.out = out
        self.prompt = f"otpkit({client.target})> "
        self.history = os.path.expanduser(history) if history else None
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._interrupted = threading.Event()
        self._readline: Any = None
        self._tty_state: Any = None

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        self._setup_readline()
        self.client.watch(self._lost_while_idle)
        try:
            while True:
                try:
                    line = input(self.prompt)
                except EOFError:
                    self._print("")
                    return 0
                except KeyboardInterrupt:
                    self._print("")
                    continue
                try:
                    if not self.onecmd(line):
                        return 0
                except LostConnection:
                    self._print(f"connection to {self.client.target} lost", err=True)
                    return LOST_STATUS
        finally:
            self._save_history()

    def onecmd(self, line: str) -> bool:
        """Run one line; False when the shell should end."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self._print(f"bad line: {exc}")
            return True
        if not words:
            return True
        name, args = words[0], words[1:]
        try:
            if name in ("quit", "exit"):
                return False
            if name == "help":
                self._print(help_text(args[0] if args else None))
            elif name == "events":
                self._events(args)
            else:
                _, text = execute(self.client, words, self.options)
                self._print(text)
        except (UsageError, RequestError) as exc:
            self._print(str(exc))
        except KeyboardInterrupt:
            # Ctrl-C ends the command, not the session (as in bash); the node may still
            # finish what it was asked, and its late answer is dropped
            self._print("\ninterrupted")
        return True

    def _events(self, args: list[str]) -> None:
        try:
            count = int(args[0]) if args else 0
            seconds = float(args[1]) if len(args) > 1 else 0.0
            if len(args) > 2 or count < 0 or not 0 <= seconds < MAX_SECONDS:
                raise ValueError
        except ValueError:
            raise UsageError(f"usage: {SHELL_ONLY['events'][0]}") from None
        self._interrupted.clear()
        old = signal.signal(signal.SIGINT, lambda *_: self._interrupted.set())
        try:
            stream_events(
                self.client,
                self.options,
                lambda e: self._print(_format.render_event(e)),
                count,
                seconds,
                self._interrupted.is_set,
                lambda: self._print(f"(events of {self.client.target}; Ctrl-C stops)"),
            )
        finally:
            signal.signal(signal.SIGINT, old)

    def _print(self, text: str, err: bool = False) -> None:
        stream = sys.stderr if err else self.out
        print(text, file=stream, flush=True)

    def _lost_while_idle(self) -> None:
        # the main thread waits in input(): end the program from here, but only after
        # the shell's node is stopped and its scratch directory removed (bounded: a
        # stop that hangs must not keep the shell)
        self._print(f"\nconnection to {self.client.target} lost", err=True)
        self._save_history()
        if self._tty_state is not None:
            with contextlib.suppress(Exception):
                import termios  # noqa: PLC0415 - only with a terminal

                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._tty_state)
        closing = threading.Thread(target=self.client.close, name="otpkit-shell-close", daemon=True)
        closing.start()
        closing.join(_CLOSE_BOUND)
        self.client.remove_scratch()
        os._exit(LOST_STATUS)

    # ------------------------------------------------------------------ readline

    def _setup_readline(self) -> None:
        try:
            import readline  # noqa: PLC0415 - not on every platform
        except ImportError:
            return
        self._readline = readline
        if sys.stdin.isatty():
            with contextlib.suppress(Exception):
                import termios  # noqa: PLC0415

                self._tty_state = termios.tcgetattr(sys.stdin.fileno())
        if self.history:
            with contextlib.suppress(OSError):
                readline.read_history_file(self.history)
        readline.set_history_length(1000)
        readline.set_completer_delims(" \t")
        readline.set_completer(self._complete)
        readline.parse_and_bind("tab: complete")

    def _save_history(self) -> None:
        if self._readline is not None and self.history:
            with contextlib.suppress(OSError):
                self._readline.write_history_file(self.history)

    def _complete(self, text: str, state: int) -> str | None:
        try:
            options = self._completions(self._readline.get_line_buffer(), text)
        except (RequestError, LostConnection, UsageError, OSError):
            options = []
        return options[state] if state < len(options) else None

    def _completions(self, line: str, text: str) -> list[str]:
        words = line.split()
        if line.endswith(" "):
            words.append("")
        if len(words) <= 1:
            names = [*COMMANDS, *SHELL_ONLY, "exit"]
            return sorted(f"{n} " for n in names if n.startswith(text))
        command = COMMANDS.get(words[0])
        if command is None:
            if words[0] == "help":
                return sorted(n for n in [*COMMANDS, *SHELL_ONLY] if n.startswith(text))
            return []
        index = len(words) - 2
        kind = command.kinds[index] if index < len(command.kinds) else ""
        choices = self._children(words[1]) if kind == "child" else self._choices(kind)
        return sorted(c for c in choices if c.startswith(text))

    def _choices(self, kind: str) -> list[str]:
        cached = self._cache.get(kind)
        if cached is not None and time.monotonic() - cached[0] < _CACHE_SECONDS:
            return cached[1]
        values: list[str] = []
        if kind == "sup":
            tree = self.client.request("tree", timeout=5.0)
            values = ["kernel"] + [
                p for p, n in admin.walk(tree) if p and n.get("children") is not None
            ]
            values += [p.rsplit("/", 1)[-1] for p in values if "/" in p]
        elif kind == "job":
            values = [
                str(j.get("name")) for j in self.client.request("jobs", self.options.scheduler)
            ]
        elif kind == "name":
            values = [admin.id_label(r["name"]) for r in self.client.request("names")]
        elif kind == "node":
            values = [*self.client.request("nodes")["nodes"], self.client.target]
        self._cache[kind] = (time.monotonic(), values)
        return values

    def _children(self, sup: str) -> list[str]:
        data = self.client.request("which_children", sup, timeout=5.0)
        return [str(r["id"]) for r in data["children"]]


def print_json(value: Any, out: TextIO = sys.stdout) -> None:
    print(json.dumps(_format.plain(value), indent=2, sort_keys=True), file=out, flush=True)
