"""The settings of ``otpkit run`` and the cookie rule the admin commands share.

Settings come from flags or from the environment, with names a Kubernetes manifest can
set (a flag wins over its variable):

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
``--log-format``         ``OTPKIT_LOG_FORMAT``      ``text`` or ``json``: one line per
                                                    record on stderr (text)
``--log-level``          ``OTPKIT_LOG_LEVEL``       DEBUG, INFO, WARNING or ERROR (INFO)
``--log-dir``            ``OTPKIT_LOG_DIR``         also write ``<dir>/<name>.log``, in the
                                                    text format (no file)
``--probe-bind``         ``OTPKIT_PROBE_BIND``      the addresses the probe port binds,
                                                    comma-separated (the node's own
                                                    address, and 127.0.0.1 unless that is
                                                    loopback)
``--grace``              ``OTPKIT_GRACE``           seconds SIGTERM may take (25)
=======================  =========================  ======================================

A missing or bad setting raises :class:`SettingError` naming it (``otpkit run`` prints it
as one line and exits with status 2).

The cookie is at least :data:`MIN_COOKIE` bytes (``otpkit cookie new`` prints a fresh
one), and a cookie file must not be readable by others (as ssh refuses a private key):
0600, or 0440 for the group of a Kubernetes Secret mounted with ``fsGroup``.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from otpkit.discovery import DnsA, DnsSrv, Static

__all__ = ["DEFAULT_DIST_PORT", "SettingError", "Settings", "cookie_from", "settings_from"]

DEFAULT_DIST_PORT = 4370
LOG_FORMATS = ("text", "json")
LOG_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}
#: The shortest cookie (the rule of ``distribution``'s DistConfig, which this layer does
#: not import: a unit test keeps the two equal).
MIN_COOKIE = 16


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
    log_format: str = "text"
    log_level: int = logging.INFO
    probe_bind: tuple[str, ...] = ()


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
        SettingError: naming the setting that is missing or bad: no cookie, one shorter
            than :data:`MIN_COOKIE` bytes, a file that cannot be read, is empty, or is
            readable by others.
    """
    if cookie_file_flag is None and env.get("OTPKIT_COOKIE"):
        cookie = env["OTPKIT_COOKIE"].encode()
        if len(cookie) < MIN_COOKIE:
            raise SettingError("OTPKIT_COOKIE", _too_short(len(cookie)))
        return cookie
    cookie_file = _pick(cookie_file_flag, env, "OTPKIT_COOKIE_FILE")
    if cookie_file is None:
        raise SettingError("OTPKIT_COOKIE", "missing (or set OTPKIT_COOKIE_FILE / --cookie-file)")
    try:
        with open(cookie_file, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & stat.S_IROTH:
                raise SettingError(
                    "OTPKIT_COOKIE_FILE",
                    f"{cookie_file!r} is readable by others (mode {stat.S_IMODE(mode):04o}): "
                    "chmod o-r it (0600, or 0440 for a group)",
                )
            cookie = f.read().strip()
    except OSError as exc:
        raise SettingError("OTPKIT_COOKIE_FILE", f"{cookie_file!r}: {exc.strerror}") from None
    if not cookie:
        raise SettingError("OTPKIT_COOKIE_FILE", f"{cookie_file!r} is empty")
    if len(cookie) < MIN_COOKIE:
        raise SettingError("OTPKIT_COOKIE_FILE", f"{cookie_file!r}: {_too_short(len(cookie))}")
    return cookie


def _too_short(size: int) -> str:
    return (
        f"the cookie is {size} bytes: at least {MIN_COOKIE} are needed "
        "(make one with `otpkit cookie new`)"
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
    log_format = _pick(getattr(args, "log_format", None), env, "OTPKIT_LOG_FORMAT") or "text"
    if log_format not in LOG_FORMATS:
        raise SettingError("OTPKIT_LOG_FORMAT", f"{log_format!r}: expected text or json")
    raw_level = _pick(getattr(args, "log_level", None), env, "OTPKIT_LOG_LEVEL") or "INFO"
    if raw_level.upper() not in LOG_LEVELS:
        raise SettingError(
            "OTPKIT_LOG_LEVEL", f"{raw_level!r}: expected one of {', '.join(LOG_LEVELS)}"
        )
    raw_bind = _pick(getattr(args, "probe_bind", None), env, "OTPKIT_PROBE_BIND")
    probe_bind = () if raw_bind is None else _addresses(raw_bind, "OTPKIT_PROBE_BIND")
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
        log_format=log_format,
        log_level=LOG_LEVELS[raw_level.upper()],
        probe_bind=probe_bind,
    )


def _addresses(raw: str, setting: str) -> tuple[str, ...]:
    out = []
    for part in raw.split(","):
        text = part.strip().strip("[]")
        try:
            out.append(str(ipaddress.ip_address(text)))
        except ValueError:
            raise SettingError(setting, f"{part.strip()!r}: expected an IP address") from None
    if not out:
        raise SettingError(setting, "expected at least one address")
    return tuple(dict.fromkeys(out))
