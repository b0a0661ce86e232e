"""The ``otpkit`` command (also ``python -m otpkit``).

``otpkit run myapp.tree:root`` starts a node that hosts the application's root: a
:class:`~otpkit.ChildSpec`, a list of them, or a function returning either. Settings come
from flags or from the environment, with names a Kubernetes manifest can set (a flag wins
over its variable):

=======================  =========================  ======================================
flag                     environment                meaning (default)
=======================  =========================  ======================================
``--name``               ``OTPKIT_NODE_NAME``       ``app@host``; default
                                                    ``<OTPKIT_APP>@<POD_IP>`` (``OTPKIT_APP``
                                                    defaults to the target's package)
(none)                   ``POD_IP``                 the address dist listens on and dials
                                                    from (default: the name's host)
``--cookie-file``        ``OTPKIT_COOKIE`` /        the dist cookie (needed with dist)
                         ``OTPKIT_COOKIE_FILE``
``--discovery``          ``OTPKIT_DISCOVERY``       ``dns-a:<service>``,
                                                    ``dns-srv:<service>``,
                                                    ``static:app@h1,app@h2`` (none)
``--dist-port``          ``OTPKIT_DIST_PORT``       dist's port (4370 with discovery; no
                                                    dist without either)
``--expected-size``      ``OTPKIT_EXPECTED_SIZE``   nodes the cluster is meant to have: a
                                                    majority is counted over at least this
                                                    many (none); needs dist
``--probe-port``         ``OTPKIT_PROBE_PORT``      port of the HTTP probes
                                                    ``/healthz/live`` and
                                                    ``/healthz/ready`` (off)
``--settle-timeout``     ``OTPKIT_SETTLE_TIMEOUT``  seconds after which the node is ready
                                                    even if not every discovered peer is
                                                    connected (30)
``--data-dir``           ``OTPKIT_DATA_DIR``        where schedulers keep their SQLite
                                                    store (``./otpkit-data``)
``--log-dir``            ``OTPKIT_LOG_DIR``         the node's log directory (a new
                                                    temporary directory)
``--grace``              ``OTPKIT_GRACE``           seconds SIGTERM may take (25)
=======================  =========================  ======================================

A missing or bad setting stops start-up with one line naming it (exit status 2).
SIGTERM (or Ctrl-C) stops the node in order: readiness answers 503, singletons hand
over, then every process ends; the exit status is 0 when that took less than the grace
period. The probes are described in ``otpkit._probes``.

``otpkit demo``, ``otpkit shell`` and the one-shot admin commands (``--connect``) are
handed to ``otpkit._demo`` and ``otpkit.admin``.
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

from otpkit._probes import ProbeServer, bind_host
from otpkit.actors._runtime import proc_stat
from otpkit.discovery import DnsA, DnsSrv, Static
from otpkit.dist import DistConfig
from otpkit.node import Node
from otpkit.registry._quorum import QuorumConfig
from otpkit.supervision._spec import ChildSpec

__all__ = ["SettingError", "Settings", "cookie_from", "main", "settings_from"]

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
    dist_host: str | None = None
    expected_size: int = 0
    probe_port: int | None = None
    settle_timeout: float = 30.0
    data_dir: str | None = None


def _pick(flag: Any, env: Mapping[str, str], key: str) -> str | None:
    if flag is not None:
        return str(flag)
    value = env.get(key)
    return value if value else None


def _port(raw: str, setting: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise SettingError(setting, f"{raw!r}: expected a port number") from None
    if not 0 < port < 65536:
        raise SettingError(setting, f"{port}: expected 1..65535")
    return port


def _seconds(raw: str, setting: str, zero_ok: bool) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(setting, f"{raw!r}: expected seconds") from None
    if value < 0 or (value == 0 and not zero_ok) or value >= 3600:
        low = "[0" if zero_ok else "(0"
        raise SettingError(setting, f"{value:g}: expected seconds in {low}, 3600)")
    return value


def _data_dir(path: str) -> str:
    """``path`` if a scheduler can keep its store there (it makes the directory)."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise SettingError("OTPKIT_DATA_DIR", f"{path!r}: {existing!r} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SettingError("OTPKIT_DATA_DIR", f"{path!r}: {existing!r} is not writable")
    return path


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


def cookie_from(cookie_file_flag: str | None, env: Mapping[str, str]) -> bytes:
    """The dist cookie: ``--cookie-file``, else ``OTPKIT_COOKIE``, else the file named by
    ``OTPKIT_COOKIE_FILE`` (a flag wins over the environment).

    Raises:
        SettingError: naming the setting that is missing or bad.
    """
    if cookie_file_flag is None and env.get("OTPKIT_COOKIE"):
        return env["OTPKIT_COOKIE"].encode()
    cookie_file = _pick(cookie_file_flag, env, "OTPKIT_COOKIE_FILE")
    if cookie_file is None:
        raise SettingError("OTPKIT_COOKIE", "missing (or set OTPKIT_COOKIE_FILE / --cookie-file)")
    try:
        with open(cookie_file, "rb") as f:
            cookie = f.read().strip()
    except OSError as exc:
        raise SettingError("OTPKIT_COOKIE_FILE", f"{cookie_file!r}: {exc.strerror}") from None
    if not cookie:
        raise SettingError("OTPKIT_COOKIE_FILE", f"{cookie_file!r} is empty")
    return cookie


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
        port = _port(raw_port, "OTPKIT_DIST_PORT")
    elif spec is not None:
        port = DEFAULT_DIST_PORT
    discovery = _discovery(spec, app, port or DEFAULT_DIST_PORT) if spec is not None else None
    cookie: bytes | None = None
    if port is not None:
        cookie = cookie_from(args.cookie_file, env)
    raw_size = _pick(args.expected_size, env, "OTPKIT_EXPECTED_SIZE")
    expected_size = 0
    if raw_size is not None:
        try:
            expected_size = int(raw_size)
        except ValueError:
            raise SettingError(
                "OTPKIT_EXPECTED_SIZE", f"{raw_size!r}: expected a number of nodes"
            ) from None
        if not 0 < expected_size <= 1000:
            raise SettingError("OTPKIT_EXPECTED_SIZE", f"{expected_size}: expected 1..1000")
        if port is None:
            raise SettingError(
                "OTPKIT_EXPECTED_SIZE",
                "counts nodes of a cluster: needs dist (set OTPKIT_DIST_PORT or OTPKIT_DISCOVERY)",
            )
    raw_probe = _pick(args.probe_port, env, "OTPKIT_PROBE_PORT")
    probe_port = None if raw_probe is None else _port(raw_probe, "OTPKIT_PROBE_PORT")
    if probe_port is not None and probe_port == port:
        raise SettingError("OTPKIT_PROBE_PORT", f"{probe_port}: the dist port too")
    raw_settle = _pick(args.settle_timeout, env, "OTPKIT_SETTLE_TIMEOUT") or "30"
    settle_timeout = _seconds(raw_settle, "OTPKIT_SETTLE_TIMEOUT", zero_ok=True)
    raw_grace = _pick(args.grace, env, "OTPKIT_GRACE") or "25"
    grace = _seconds(raw_grace, "OTPKIT_GRACE", zero_ok=False)
    log_dir = _pick(args.log_dir, env, "OTPKIT_LOG_DIR")
    data_dir = _pick(args.data_dir, env, "OTPKIT_DATA_DIR")
    return Settings(
        target,
        name,
        cookie,
        discovery,
        port,
        log_dir,
        grace,
        dist_host=env.get("POD_IP") or None,
        expected_size=expected_size,
        probe_port=probe_port,
        settle_timeout=settle_timeout,
        data_dir=None if data_dir is None else _data_dir(data_dir),
    )


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
        assert settings.cookie is not None  # settings_from asks for one with a dist port
        host = settings.dist_host or settings.name.split("@", 1)[1]
        options["dist"] = DistConfig(host, settings.dist_port, settings.cookie)
        if settings.expected_size:
            options["quorum"] = QuorumConfig(expected_size=settings.expected_size)
    if settings.discovery is not None:
        options["discovery"] = settings.discovery
    if settings.data_dir is not None:
        os.environ["OTPKIT_DATA_DIR"] = settings.data_dir  # every process of the node reads it
    probes = None
    if settings.probe_port is not None:
        try:
            probes = ProbeServer(
                settings.probe_port,
                host=bind_host(settings.dist_host),
                dist=settings.dist_port is not None,
                discovery=settings.discovery is not None,
                settle_timeout=settings.settle_timeout,
            )
        except OSError as exc:
            raise SettingError(
                "OTPKIT_PROBE_PORT", f"{settings.probe_port}: {exc.strerror}"
            ) from None
    try:
        return _serve(settings, options, probes)
    finally:
        if probes is not None:
            probes.close()


def _alive(ospid: int) -> bool:
    fields = proc_stat(ospid)
    return fields is not None and fields[0] not in (b"Z", b"X")


def _serve(settings: Settings, options: dict[str, Any], probes: ProbeServer | None) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node = Node(settings.name, **options).start()
    if probes is not None:
        probes.running(node.kernel)
    print(f"otpkit: node {settings.name} running (pid {os.getpid()})", flush=True)
    kernel = node.kernel.id
    while not stop.wait(0.5):
        if not _alive(kernel):
            # the kernel gave up (its intensity spent) or was killed: the node is gone, and a
            # pod must restart rather than keep a process that says "running"
            if probes is not None:
                probes.stopping()
            print(
                f"otpkit: node {settings.name} halted: its kernel (os pid {kernel}) is gone;"
                f" see {node.log_path}",
                file=sys.stderr,
                flush=True,
            )
            node.stop(timeout=settings.grace)
            return 1
    began = time.monotonic()
    if probes is not None:
        probes.stopping()
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
    run.add_argument(
        "--expected-size", help="nodes the cluster is meant to have (OTPKIT_EXPECTED_SIZE)"
    )
    run.add_argument("--probe-port", help="port of /healthz/live and /healthz/ready")
    run.add_argument(
        "--settle-timeout", help="seconds before ready without every peer (OTPKIT_SETTLE_TIMEOUT)"
    )
    run.add_argument("--data-dir", help="schedulers' store directory (OTPKIT_DATA_DIR)")
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
