"""A dist-enabled node driven over stdin/stdout by the dist tests.

Usage: python -m tests.harness.node_driver NAME PORT LOG_DIR [COOKIE] [--dns-a SERVICE
--ns IP [--ns-port PORT] [--poll SECONDS] [--prune-after N] [--dns-timeout SECONDS]]
[--tls CERT KEY] [--debug] [--singleton POLICY FILE | --scheduler CONFIG | --seed FILE]. Prints
{"ready": ...} once started, then answers one JSON line per command line (see
``handle``). Pids travel as [node, creation, id, serial].

With ``--dns-a`` the node finds its peers through ``DnsA(SERVICE, app=<NAME's app>,
port=PORT)`` asking the nameserver ``IP#PORT`` every ``--poll`` seconds.

With ``--tls CERT KEY`` every dist link is TLS, both ways: the node presents CERT (with
KEY) and accepts only peers whose certificate CERT signs (a self-signed CERT: the same
one), checked against the peer's IP address.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import signal
import ssl
import sys
import time
from typing import Any

import otpkit
from otpkit import Actor, discovery, dist, registry
from otpkit.discovery import DISCOVERY_NAME
from tests.harness.processes import REPO_ROOT

#: The op sets beside this driver's own (``OPS[name] = fn(node, cmd)``), imported when
#: an op is not one of ``handle``'s.
OP_MODULES = (
    "tests.harness.registry_ops",
    "tests.harness.singleton_ops",
    "tests.harness.scheduler_ops",
    "tests.harness.bench_ops",
)
SEED_RECIPE = REPO_ROOT / "examples" / "seed_recipe.py"


class Echo(Actor):
    def init(self) -> None:
        self.seen: list[Any] = []

    def handle_call(self, request, from_):
        if request == "seen":
            return self.seen
        if request == "whoami":
            return [otpkit.self().node, os.getpid()]
        if isinstance(request, list) and request and request[0] == "call":
            target = otpkit.Pid(*request[1])
            try:
                return ["ok", otpkit.call(target, request[2], timeout=5)]
            except otpkit.Exit as exc:
                return ["exit", str(exc.reason)]
        if request == "crash":
            raise ValueError("boom")
        return ["echo", request]

    def handle_cast(self, msg):
        self.seen.append(["cast", msg])

    def handle_info(self, msg):
        self.seen.append(["info", msg])


def pid_of(fields: list[Any]) -> otpkit.Pid:
    return otpkit.Pid(*fields)


def fields(pid: otpkit.Pid | None) -> list[Any] | None:
    return None if pid is None else [pid.node, pid.creation, pid.id, pid.serial]


def out(obj: Any) -> None:
    print(json.dumps(obj, default=repr), flush=True)


def handle(node: otpkit.Node, echo: otpkit.Pid, cmd: dict[str, Any]) -> Any:
    op = cmd["op"]
    if op == "nodes":
        return dist.nodes()
    if op == "hidden_nodes":
        return dist.hidden_nodes()
    if op == "dist_versions":
        return dist.versions()
    if op == "connect":
        dist.connect_node(cmd["name"], cmd["host"], cmd["port"])
        return "ok"
    if op == "pids":
        return node.os_pids()
    if op == "discovery_peers":
        return otpkit.call(DISCOVERY_NAME, "peers", timeout=cmd.get("t", 5))
    if op == "monitor_nodes":
        dist.monitor_nodes(True)
        return "ok"
    if op == "call":
        try:
            return ["ok", otpkit.call(pid_of(cmd["pid"]), cmd["req"], timeout=cmd.get("t", 5))]
        except otpkit.Exit as exc:
            return ["exit", str(exc.reason)]
        except otpkit.CallTimeout:
            return ["timeout"]
    if op == "send":
        otpkit.send(pid_of(cmd["pid"]), cmd["msg"])
        return "ok"
    if op == "cast":
        otpkit.cast(pid_of(cmd["pid"]), cmd["msg"])
        return "ok"
    if op == "monitor":
        ref = otpkit.monitor(pid_of(cmd["pid"]))
        return repr(ref)
    if op == "link":
        otpkit.link(pid_of(cmd["pid"]))
        return "ok"
    if op == "exit":
        otpkit.exit(pid_of(cmd["pid"]), cmd["reason"])
        return "ok"
    if op == "recv":
        try:
            msg = node.receive(cmd.get("t", 10))
        except TimeoutError:
            return ["timeout"]
        return [type(msg).__name__, repr(msg)]
    if op == "spawn":
        return fields(node.spawn(Echo))
    if op == "register":
        return registry.register_name(cmd["name"], pid_of(cmd["pid"]), cmd.get("resolve"))
    if op == "re_register":
        return registry.re_register_name(cmd["name"], pid_of(cmd["pid"]), cmd.get("resolve"))
    if op == "unregister":
        registry.unregister_name(cmd["name"])
        return "ok"
    if op == "whereis":
        return fields(registry.whereis_name(cmd["name"]))
    if op == "names":
        return sorted(registry.registered_names())
    if op == "gsync":
        return registry.sync(cmd.get("t", 30))
    if op == "gsend":
        try:
            return fields(registry.send(cmd["name"], cmd["msg"]))
        except otpkit.NoSuchName as exc:
            return ["NoSuchName", str(exc)]
    if op == "ginfo":
        return otpkit.call(registry.GLOBAL_NAME, ("info",))
    if op == "send_bad":
        try:
            otpkit.send(pid_of(cmd["pid"]), {1, 2})
        except TypeError as exc:
            return ["TypeError", str(exc)]
        return ["sent"]
    for module in OP_MODULES:
        ops = importlib.import_module(module).OPS
        if op in ops:
            return ops[op](node, cmd)
    raise ValueError(op)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.harness.node_driver")
    p.add_argument("name")
    p.add_argument("port", type=int)
    p.add_argument("log_dir")
    p.add_argument("cookie", nargs="?", default="test-cookie-0123456789")
    p.add_argument("--dns-a", metavar="SERVICE", help="discover peers by DnsA(SERVICE)")
    p.add_argument("--ns", metavar="IP", help="the nameserver DnsA asks")
    p.add_argument("--ns-port", type=int, default=53)
    p.add_argument("--dns-timeout", type=float, default=1.0)
    p.add_argument("--poll", type=float, default=5.0, help="discovery poll_interval")
    p.add_argument("--prune-after", type=int, default=3)
    p.add_argument(
        "--singleton",
        nargs=2,
        metavar=("POLICY", "FILE"),
        help="boot with a Singleton 'single' of a Marker child writing to FILE",
    )
    p.add_argument(
        "--seed", metavar="FILE", help="boot with examples/seed_recipe.py's tree, ticks to FILE"
    )
    p.add_argument(
        "--scheduler", metavar="CONFIG", help="boot with a Scheduler described by a JSON file"
    )
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="TLS for every dist link")
    p.add_argument("--debug", action="store_true", help="the node logs at DEBUG")
    return p.parse_args(argv)


def tls_config(name: str, port: int, cookie: str, cert: str, key: str) -> dist.DistConfig:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    server.load_verify_locations(cert)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks the name: the peer's IP
    client.load_cert_chain(cert, key)
    client.load_verify_locations(cert)
    host = name.split("@", 1)[1]
    return dist.DistConfig(host, port, cookie.encode(), server_ssl=server, client_ssl=client)


def load_seed_recipe() -> Any:
    """examples/seed_recipe.py (not a package), loaded from its file as the module
    ``seed_recipe``: the node's processes, forked from this one, import its
    ``"seed_recipe:..."`` child specs by that name (as when the recipe runs as a script)."""
    spec = importlib.util.spec_from_file_location("seed_recipe", SEED_RECIPE)
    assert spec is not None and spec.loader is not None, SEED_RECIPE
    module = importlib.util.module_from_spec(spec)
    sys.modules["seed_recipe"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    args = parse_args(sys.argv[1:])
    name, port = args.name, args.port
    options: dict[str, Any] = {}
    if args.dns_a:
        options = {
            "discovery": discovery.DnsA(
                args.dns_a,
                app=name.split("@", 1)[0],
                port=port,
                nameserver=args.ns,
                nameserver_port=args.ns_port,
                timeout=args.dns_timeout,
            ),
            "poll_interval": args.poll,
            "prune_after": args.prune_after,
        }
    if args.tls:
        options["dist"] = tls_config(name, port, args.cookie, *args.tls)
    if args.singleton:
        from tests.harness.singleton_ops import (  # noqa: PLC0415 - only for singleton runs
            singleton_spec,
        )

        options["children"] = [singleton_spec(args.singleton[1], policy=args.singleton[0])]
    if args.scheduler:
        from tests.harness.scheduler_ops import (  # noqa: PLC0415 - only for scheduler runs
            scheduler_spec,
        )

        options["children"] = [scheduler_spec(args.scheduler)]
    if args.seed:
        options["children"] = load_seed_recipe().app_children(args.seed)
    if args.debug:
        options["log_level"] = logging.DEBUG
    node = otpkit.Node(
        name, cookie=args.cookie, dist_port=port, log_dir=args.log_dir, **options
    ).start()
    serve(node, name)


def serve(node: otpkit.Node, name: str) -> None:
    """Report the started node ready, then answer the JSON ops on stdin until EOF or
    SIGTERM, and stop the node in order."""
    echo = node.spawn(Echo, name="echo")
    out(
        {
            "ready": name,
            "echo": [echo.node, echo.creation, echo.id, echo.serial],
            "pids": node.os_pids(),
            "main": os.getpid(),
            "port": node.dist_port,
            "started": time.time(),
        }
    )
    # SIGTERM (a pod's termination): stop the node in order - singletons hand over
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for raw in sys.stdin:
            line = raw.strip()
            if not line:
                continue
            try:
                out({"ok": handle(node, echo, json.loads(line))})
            except Exception as exc:  # report, keep serving
                out({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        node.stop()


if __name__ == "__main__":
    main()
