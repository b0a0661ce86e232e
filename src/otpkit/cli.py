"""The ``otpkit`` command (also ``python -m otpkit``).

``otpkit run myapp.tree:root`` starts a node that hosts the application's root: a
:class:`~otpkit.ChildSpec`, a list of them, or a function returning either. Settings come
from flags or from the environment, with names a Kubernetes manifest can set:

==========================  ===========================  ================================
flag                        environment                  meaning
==========================  ===========================  ================================
``--name``                  ``OTPKIT_NODE_NAME``         ``app@host``; default
                                                         ``<OTPKIT_APP>@<POD_IP>``
``--cookie-file``           ``OTPKIT_COOKIE`` /          the dist cookie
                            ``OTPKIT_COOKIE_FILE``
``--discovery``             ``OTPKIT_DISCOVERY``         ``dns-a:<service>``,
                                                         ``dns-srv:<service>``,
                                                         ``static:app@h1,app@h2``
``--dist-port``             ``OTPKIT_DIST_PORT``         default 4370 with discovery
``--log-dir``               ``OTPKIT_LOG_DIR``           the node's log directory
``--grace``                 ``OTPKIT_GRACE``             seconds SIGTERM may take (25)
==========================  ===========================  ================================

A missing or bad setting stops start-up with one line naming it (exit status 2).
SIGTERM (or Ctrl-C) stops the node in order: singletons hand over, then every process
ends; the exit status is 0 when that took less than the grace period.

The admin shell, the demo and the one-shot commands are not here yet.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otpkit.discovery import DnsA, DnsSrv, Static
from otpkit.node import Node
from otpkit.supervision._spec import ChildSpec

__all__ = ["SettingError", "Settings", "main", "settings_from"]

DEFAULT_DIST_PORT = 4370


class SettingError(Exception):
    """A setting of ``otpkit run`` is missing or bad; ``setting`` names it."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


@dataclass(frozen=True)
class Settings:
    """What ``otpkit run`` starts, every field checked."""

    target: str
    name: str
    cookie: bytes | None
    discovery: Any
    dist_port: int | None
    log_dir: str | None
    grace: float


def _pick(flag: Any, env: Mapping[str, str], key: str) -> str | None:
    if flag is not None:
        return str(flag)
    value = env.get(key)
    return value if value else None


def _discovery(spec: str, app: str, port: int) -> Any:
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise SettingError(
            "OTPKIT_DISCOVERY",
            f"{spec!r}: expected dns-a:<service>, dns-srv:<service> or static:<nodes>",
        )
    try:
        if kind == "dns-a":
            return DnsA(rest, app=app, port=port)
        if kind == "dns-srv":
            return DnsSrv(rest, app=app)
        if kind == "static":
            return Static([n.strip() for n in rest.split(",") if n.strip()], port=port)
    except (ValueError, TypeError) as exc:
        raise SettingError("OTPKIT_DISCOVERY", f"{spec!r}: {exc}") from exc
    raise SettingError(
        "OTPKIT_DISCOVERY", f"{spec!r}: unknown kind {kind!r}; expected dns-a, dns-srv or static"
    )


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """The checked settings of ``otpkit run`` from its flags and ``env``.

    Raises:
        SettingError: naming the first missing or bad setting.
    """
    target = args.target
    if not target or ":" not in target or target.startswith(":") or target.endswith(":"):
        raise SettingError("target", f"{target!r}: expected 'package.module:root'")
    name = _pick(args.name, env, "OTPKIT_NODE_NAME")
    if name is None:
        pod_ip = env.get("POD_IP")
        if not pod_ip:
            raise SettingError("OTPKIT_NODE_NAME", "missing (or set OTPKIT_APP and POD_IP)")
        app = env.get("OTPKIT_APP") or target.split(":", 1)[0].split(".", 1)[0]
        name = f"{app}@{pod_ip}"
    app, at, host = name.partition("@")
    if not at or not app or not host:
        raise SettingError("OTPKIT_NODE_NAME", f"{name!r}: expected 'app@host'")
    if env.get("POD_IP"):
        try:
            ipaddress.ip_address(env["POD_IP"])
        except ValueError:
            raise SettingError("POD_IP", f"{env['POD_IP']!r}: expected an IP address") from None
    raw_port = _pick(args.dist_port, env, "OTPKIT_DIST_PORT")
    spec = _pick(args.discovery, env, "OTPKIT_DISCOVERY")
    port: int | None = None
    if raw_port is not None:
        try:
            port = int(raw_port)
        except ValueError:
            raise SettingError(
                "OTPKIT_DIST_PORT", f"{raw_port!r}: expected a port number"
            ) from None
        if not 0 < port < 65536:
            raise SettingError("OTPKIT_DIST_PORT", f"{port}: expected 1..65535")
    elif spec is not None:
        port = DEFAULT_DIST_PORT
    discovery = _discovery(spec, app, port or DEFAULT_DIST_PORT) if spec is not None else None
    cookie: bytes | None = None
    if port is not None:
        cookie_file = _pick(args.cookie_file, env, "OTPKIT_COOKIE_FILE")
        if env.get("OTPKIT_COOKIE"):
            cookie = env["OTPKIT_COOKIE"].encode()
        elif cookie_file is not None:
            try:
                with open(cookie_file, "rb") as f:
                    cookie = f.read().strip()
            except OSError as exc:
                raise SettingError(
                    "OTPKIT_COOKIE_FILE", f"{cookie_file!r}: {exc.strerror}"
                ) from None
            if not cookie:
                raise SettingError("OTPKIT_COOKIE_FILE", f"{cookie_file!r} is empty")
        else:
            raise SettingError(
                "OTPKIT_COOKIE", "missing (or set OTPKIT_COOKIE_FILE / --cookie-file)"
            )
    raw_grace = _pick(args.grace, env, "OTPKIT_GRACE") or "25"
    try:
        grace = float(raw_grace)
    except ValueError:
        raise SettingError("OTPKIT_GRACE", f"{raw_grace!r}: expected seconds") from None
    if not 0 < grace < 3600:
        raise SettingError("OTPKIT_GRACE", f"{grace}: expected seconds in (0, 3600)")
    log_dir = _pick(args.log_dir, env, "OTPKIT_LOG_DIR")
    return Settings(target, name, cookie, discovery, port, log_dir, grace)


def load_root(target: str) -> list[Any]:
    """The children ``target`` names: a ChildSpec, a list of them, or a function
    returning either. Raises SettingError("target", ...)."""
    module_name, _, attr = target.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingError("target", f"{target!r}: cannot import {module_name!r} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(value, part):
            raise SettingError("target", f"{target!r}: {module_name!r} has no {attr!r}")
        value = getattr(value, part)
    if callable(value) and not isinstance(value, type):
        value = value()
    children = list(value) if isinstance(value, list | tuple) else [value]
    if not children or not all(isinstance(c, ChildSpec | Mapping) for c in children):
        raise SettingError("target", f"{target!r}: expected a ChildSpec or a list of them")
    return children


def _run(settings: Settings) -> int:
    children = load_root(settings.target)
    options: dict[str, Any] = {"children": children, "log_dir": settings.log_dir}
    if settings.dist_port is not None:
        options.update(cookie=settings.cookie, dist_port=settings.dist_port)
    if settings.discovery is not None:
        options["discovery"] = settings.discovery
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node = Node(settings.name, **options).start()
    print(f"otpkit: node {settings.name} running (pid {os.getpid()})", flush=True)
    while not stop.wait(0.5):
        pass
    began = time.monotonic()
    print(f"otpkit: stopping node {settings.name}", flush=True)
    node.stop(timeout=settings.grace)
    took = time.monotonic() - began
    print(f"otpkit: node {settings.name} stopped in {took:.1f} s", flush=True)
    return 0 if took < settings.grace else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otpkit", description="Erlang/OTP-style nodes.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start a node hosting an application's root")
    run.add_argument("target", help="package.module:root (a ChildSpec, a list, or a function)")
    run.add_argument("--name", help="app@host (OTPKIT_NODE_NAME)")
    run.add_argument("--cookie-file", help="file holding the cookie (OTPKIT_COOKIE_FILE)")
    run.add_argument("--discovery", help="dns-a:SVC | dns-srv:SVC | static:A,B (OTPKIT_DISCOVERY)")
    run.add_argument("--dist-port", help="dist port (OTPKIT_DIST_PORT)")
    run.add_argument("--log-dir", help="log directory (OTPKIT_LOG_DIR)")
    run.add_argument("--grace", help="seconds a SIGTERM stop may take (OTPKIT_GRACE)")
    return parser


def _admin_command(argv: Sequence[str]) -> bool:
    """``otpkit shell`` and the one-shots (``otpkit tree --connect HOST:PORT``...)."""
    if not argv:
        return False
    return argv[0] == "shell" or any(a == "--connect" or a.startswith("--connect=") for a in argv)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        from otpkit import _demo  # noqa: PLC0415 - only the demo needs it

        return _demo.main(argv[1:])
    if _admin_command(argv):
        from otpkit.admin import _cli  # noqa: PLC0415 - only the admin commands need it

        return _cli.main(argv, os.environ if env is None else env)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        try:
            settings = settings_from(args, os.environ if env is None else env)
            return _run(settings)
        except SettingError as exc:
            print(f"otpkit: {exc}", file=sys.stderr)
            return 2
    return 2
