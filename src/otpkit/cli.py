"""The ``otpkit`` command (also ``python -m otpkit``).

``otpkit run myapp.tree:root`` starts a node that hosts the application's root: a
:class:`~otpkit.ChildSpec`, a list of them, or a function returning either. Its settings
(flags, and variables a Kubernetes manifest can set) are described in :mod:`otpkit.settings`.

A missing or bad setting stops start-up with one line naming it (exit status 2).
SIGTERM (or Ctrl-C) stops the node in order: readiness answers 503, singletons hand
over, then every process ends; the exit status is 0 when that took less than the grace
period. The probes are described in ``otpkit.node._probes``.

``otpkit cookie new`` prints a fresh cookie: 32 random bytes as URL-safe text, for
``OTPKIT_COOKIE`` or a cookie file (e.g. ``kubectl create secret generic myapp-cookie
--from-literal=cookie="$(otpkit cookie new)"``).

``otpkit demo``, ``otpkit shell`` and the one-shot admin commands (``--connect``) are
handed to :mod:`otpkit.demo` and :mod:`otpkit.shell`.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import prometheus_client

from otpkit.actors import (
    json_formatter,
    load_object,
    make_private_dir,
    private_file,
    proc_stat,
    text_formatter,
)
from otpkit.distribution import DistConfig
from otpkit.errors import LoadError, NodeError
from otpkit.node import Node, ProbeServer, probe_hosts
from otpkit.quorum import QuorumConfig, StoreError
from otpkit.settings import SettingError, Settings, settings_from
from otpkit.supervision import ChildSpec

__all__ = ["load_root", "main"]


def load_root(target: str) -> list[Any]:
    """The children ``target`` names: a ChildSpec, a list of them, or a function
    returning either. Raises SettingError("target", ...)."""
    try:
        value: Any = load_object(target)
    except LoadError as exc:  # "'t': cannot import 'm' (...)", "'t': 'm' has no 'a'"
        raise SettingError("target", str(exc)) from None
    if callable(value) and not isinstance(value, type):
        value = value()
    children = list(value) if isinstance(value, list | tuple) else [value]
    if not children or not all(isinstance(c, ChildSpec | Mapping) for c in children):
        raise SettingError("target", f"{target!r}: expected a ChildSpec or a list of them")
    return children


def _logging(settings: Settings) -> None:
    """This program's logging, where every record of the node is written once: stderr
    (what ``kubectl logs`` shows), in the chosen format, and the log file if one is
    asked for."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    node = settings.name
    stderr = logging.StreamHandler(sys.stderr)
    fmt = json_formatter(node) if settings.log_format == "json" else text_formatter(node)
    stderr.setFormatter(fmt)
    root.addHandler(stderr)
    if settings.log_dir is not None:
        make_private_dir(settings.log_dir)
        path = os.path.join(settings.log_dir, f"{node}.log")
        try:
            private_file(path, "log file")
            file = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            raise SettingError("OTPKIT_LOG_DIR", f"{path}: {exc.strerror or exc}") from None
        file.setFormatter(text_formatter(node))
        root.addHandler(file)
    root.setLevel(settings.log_level)


def _own_address(settings: Settings) -> str:
    """The node's own address: the pod's IP, else its name's host (resolved)."""
    host = settings.dist_host or settings.name.split("@", 1)[1]
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SettingError(
            "OTPKIT_PROBE_BIND", f"cannot resolve {host!r} ({exc}): set the addresses"
        ) from None
    return str(infos[0][4][0])


def _run(settings: Settings) -> int:
    children = load_root(settings.target)
    # this program's only registry is the node's: its counters need no _created series
    # (half of /metrics' size otherwise)
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    options: dict[str, Any] = {"children": children, "log_level": settings.log_level}
    # the quorum's store, beside the schedulers' (their default is ./otpkit-data too)
    options["data_dir"] = settings.data_dir or "otpkit-data"
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
        hosts = probe_hosts(_own_address(settings), settings.probe_bind)
        try:
            probes = ProbeServer(
                settings.probe_port,
                hosts=hosts,
                dist=settings.dist_port is not None,
                discovery=settings.discovery is not None,
                settle_timeout=settings.settle_timeout,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:  # an address that is not this host's
                raise SettingError(
                    "OTPKIT_PROBE_BIND", f"{','.join(hosts)}: {exc.strerror}"
                ) from None
            raise SettingError(
                "OTPKIT_PROBE_PORT", f"{settings.probe_port}: {exc.strerror}"
            ) from None
    try:
        _logging(settings)
        return _serve(settings, options, probes)
    finally:
        if probes is not None:
            probes.close()


def _find(reason: Any, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` exception inside a (nested) exit reason, or None."""
    if isinstance(reason, kind):
        return reason
    if isinstance(reason, tuple | list):
        for part in reason:
            found = _find(part, kind)
            if found is not None:
                return found
    return None


def _alive(ospid: int) -> bool:
    fields = proc_stat(ospid)
    return fields is not None and fields[0] not in (b"Z", b"X")


def _serve(settings: Settings, options: dict[str, Any], probes: ProbeServer | None) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        node = Node(settings.name, **options).start()
    except NodeError as exc:
        # a store the node cannot use is one line naming the file, not a traceback
        store = _find(exc.reason, StoreError)
        print(f"otpkit: {store if store is not None else exc}", file=sys.stderr)
        return 1
    if probes is not None:
        probes.running(node.kernel, node.metrics)
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
                " see the node's log",
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
    run.add_argument("--probe-port", help="port of /healthz/live, /healthz/ready and /metrics")
    run.add_argument(
        "--settle-timeout", help="seconds before ready without every peer (OTPKIT_SETTLE_TIMEOUT)"
    )
    run.add_argument("--data-dir", help="schedulers' store directory (OTPKIT_DATA_DIR)")
    run.add_argument(
        "--log-dir", help="also write <dir>/<name>.log (OTPKIT_LOG_DIR; default: no file)"
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="one line per record on stderr, text or JSON (OTPKIT_LOG_FORMAT; text)",
    )
    run.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="the lowest level written (OTPKIT_LOG_LEVEL; INFO)",
    )
    run.add_argument(
        "--probe-bind",
        help="addresses of the probe port, comma-separated (OTPKIT_PROBE_BIND; the node's"
        " own address and 127.0.0.1)",
    )
    run.add_argument("--grace", help="seconds a SIGTERM stop may take (OTPKIT_GRACE)")
    cookie = sub.add_parser("cookie", help="make a dist cookie")
    cookie_sub = cookie.add_subparsers(dest="action", required=True)
    cookie_sub.add_parser("new", help="print a fresh cookie (32 random bytes, URL-safe text)")
    return parser


def _admin_command(argv: Sequence[str]) -> bool:
    """``otpkit shell`` and the one-shots (``otpkit tree --connect HOST:PORT``...)."""
    if not argv:
        return False
    return argv[0] == "shell" or any(a == "--connect" or a.startswith("--connect=") for a in argv)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        from otpkit import demo  # noqa: PLC0415 - only the demo needs it

        return demo.main(argv[1:])
    if _admin_command(argv):
        from otpkit import shell  # noqa: PLC0415 - only the admin commands need it

        return shell.main(argv, os.environ if env is None else env)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        try:
            settings = settings_from(args, os.environ if env is None else env)
            return _run(settings)
        except SettingError as exc:
            print(f"otpkit: {exc}", file=sys.stderr)
            return 2
    if args.command == "cookie":
        print(secrets.token_urlsafe(32))
        return 0
    return 2
