"""``otpkit shell --connect HOST:PORT`` and the one-shot commands.

``otpkit shell --connect HOST:PORT`` opens an interactive session; ``otpkit COMMAND
[ARGS] --connect HOST:PORT [--json]`` runs one command (``nodes``, ``tree``,
``which_children``, ``count_children``, ``names``, ``whereis``, ``jobs``, ``job``,
``run``, ``activate``, ``deactivate``, ``restart``, ``terminate``, ``kill``,
``events``) and prints its answer, as text or as JSON. ``HOST:PORT`` is any cluster
node's dist address (``NAME@HOST:PORT`` skips asking the node its name).

The cookie follows ``otpkit run``'s rules (:func:`otpkit.settings.cookie_from`): the file
named by ``--cookie-file``, else ``OTPKIT_COOKIE``, else the file ``OTPKIT_COOKIE_FILE``.

Exit status: 0 done; 1 the command failed (its one line on stderr); 2 a missing or bad
setting or usage (``otpkit: <SETTING>: <problem>``); 3 the node could not be reached,
refused the handshake (a wrong cookie), or the connection was lost.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from otpkit.settings import SettingError, cookie_from

__all__ = ["main"]

CONNECT_STATUS = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"otpkit: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="otpkit", add_help=False)
    p.add_argument("command")
    p.add_argument("args", nargs="*")
    p.add_argument("--connect", help="HOST:PORT (or NAME@HOST:PORT) of a cluster node")
    p.add_argument("--cookie-file", help="file holding the cookie (OTPKIT_COOKIE_FILE)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.add_argument("--scheduler", help="the scheduler's name")  # default: Options'
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to connect")
    p.add_argument("--count", type=int, default=0, help="events: stop after this many")
    p.add_argument("--for", dest="seconds", type=float, default=0.0, help="events: seconds")
    return p


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    # imported here: a bad setting is reported without starting anything heavy
    from otpkit.shell import _commands  # noqa: PLC0415
    from otpkit.shell._client import (  # noqa: PLC0415
        ConnectError,
        LostConnection,
        RequestError,
        connect,
        parse_target,
    )
    from otpkit.shell._shell import (  # noqa: PLC0415
        LOST_STATUS,
        Shell,
        print_json,
        stream_events,
    )

    try:
        args = _parser().parse_intermixed_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    command = args.command
    known = {"shell", "events", "help", *_commands.COMMANDS}
    try:
        if command not in known:
            raise SettingError(
                "command", f"{command!r}: expected one of {', '.join(sorted(known))}"
            )
        if command == "help":
            print(_commands.help_text(args.args[0] if args.args else None))
            return 0
        if not args.connect:
            raise SettingError("--connect", "missing: HOST:PORT of a cluster node")
        try:
            parse_target(args.connect)
        except ValueError as exc:
            raise SettingError("--connect", str(exc)) from None
        limit = _commands.MAX_SECONDS
        if not (math.isfinite(args.timeout) and 0 < args.timeout < limit):
            raise SettingError(
                "--timeout", f"{args.timeout}: expected seconds > 0, below {limit:g}"
            )
        if not (math.isfinite(args.seconds) and 0 <= args.seconds < limit):
            raise SettingError(
                "--for", f"{args.seconds}: expected seconds >= 0 (0: no limit), below {limit:g}"
            )
        if args.count < 0:
            raise SettingError("--count", f"{args.count}: expected a count >= 0 (0: no limit)")
        # the words are checked before anything is started or dialled
        if command in ("shell", "events") and args.args:
            raise _commands.UsageError(f"{command}: unexpected {args.args[0]!r}")
        if command in _commands.COMMANDS:
            _commands.check_usage([command, *args.args])
        cookie = cookie_from(args.cookie_file, env)
    except (SettingError, _commands.UsageError) as exc:
        print(f"otpkit: {exc}", file=sys.stderr)
        return 2
    options = _commands.Options(**({} if args.scheduler is None else {"scheduler": args.scheduler}))
    try:
        client = connect(args.connect, cookie, timeout=args.timeout)
    except ConnectError as exc:
        print(f"otpkit: {exc}", file=sys.stderr)
        return CONNECT_STATUS
    try:
        if command == "shell":
            print(f"connected to {client.target} as hidden node {client.node.name}", flush=True)
            return Shell(client, options).run()
        if command == "events":
            emit: Any = print_json if args.json else (lambda e: print(_format_event(e), flush=True))
            stream_events(client, options, emit, args.count, args.seconds)
            return 0
        value, text = _commands.execute(client, [command, *args.args], options)
        if args.json:
            print_json(value)
        else:
            print(text, flush=True)
        return 0
    except (_commands.UsageError, RequestError) as exc:
        print(f"otpkit: {command}: {exc}", file=sys.stderr)
        return 1
    except LostConnection:
        print(f"otpkit: connection to {client.target} lost", file=sys.stderr)
        return LOST_STATUS
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def _format_event(event: Mapping[str, Any]) -> str:
    from otpkit.shell._format import render_event  # noqa: PLC0415

    return render_event(event)
