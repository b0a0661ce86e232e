"""The seed's recipe, by hand: one scheduler supervisor in the whole cluster.

The blog post this project grew from runs Quantum under a ``SchedulerSupervisor`` that
is registered in Erlang's ``:global``; every pod starts one, the pods find each other
through the headless service's DNS records (libcluster), and when two copies meet after a
network split a resolver stops the duplicate. This file is that Elixir module written
in Python, line for line, on otpkit's registry (``otpkit.Singleton`` is the library
version, with a warm standby and a hand-over):

    def start_link(quantum, opts) do                  -> start_link(path)
      case :global.whereis_name(__MODULE__) do        -> registry.whereis_name(NAME)
        :undefined ->
          with {:error, {:already_started, pid}} <- do_start_link(quantum, opts) do
            Process.link(pid)                         -> otpkit.link(pid)
            {:ok, pid}
          end
        pid ->
          Process.link(pid)
          {:ok, pid}
      end
    end
    defp do_start_link(...), do: Supervisor.start_link(__MODULE__, ..., name: {:global, __MODULE__})
    def init(state) do
      :global.re_register_name(__MODULE__, self(), &resolve_global_conflict/3)
      Quantum.Supervisor.init(state)                  -> a Ticker stands in for Quantum
    end
    defp resolve_global_conflict(_name, pid_to_keep, pid_to_kill) do
      Supervisor.stop(pid_to_kill)                    -> otpkit.stop(pid_to_kill)
      pid_to_keep
    end

Run three nodes on this machine (each in its own terminal), then kill one:

    python examples/seed_recipe.py a@127.0.0.2 --peers b@127.0.0.3,c@127.0.0.4
    python examples/seed_recipe.py b@127.0.0.3 --peers a@127.0.0.2,c@127.0.0.4
    python examples/seed_recipe.py c@127.0.0.4 --peers a@127.0.0.2,b@127.0.0.3

Each prints a line per second from whichever node runs the scheduler.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

import otpkit
from otpkit import Actor, ChildSpec, Stop, Supervisor, SupFlags, discovery, registry

# run as a script: let the node's processes import this module's functions by name
sys.modules.setdefault("seed_recipe", sys.modules[__name__])

NAME = "SchedulerSupervisor"
PORT = 4370


class Ticker(Actor):
    """Stands in for Quantum: one line per second, saying where it runs."""

    def init(self, path: str | None) -> None:
        self.path = path
        otpkit.send_after(1.0, "tick")

    def handle_info(self, msg: Any) -> None:
        if msg != "tick":
            return
        line = f"{time.time():.3f} tick from {otpkit.self().node} (os pid {os.getpid()})\n"
        if self.path is None:
            print(line, end="", flush=True)
        else:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        otpkit.send_after(1.0, "tick")


class SchedulerSupervisor(Supervisor):
    """Responsible for starting the scheduled job on a single node."""

    def setup(self, path: str | None = None) -> Any:  # type: ignore[override]
        me = otpkit.self()
        # name: {:global, __MODULE__} - what Supervisor.start_link does before init
        if not registry.register_name(NAME, me):
            raise Stop(("already_started", registry.whereis_name(NAME)))
        registry.re_register_name(NAME, me, resolve_global_conflict)
        return SupFlags("one_for_one", 3, 5), [ChildSpec("ticker", Ticker, (path,))]


def start_link(path: str | None = None) -> Any:
    pid = registry.whereis_name(NAME)
    if pid is None:
        result = do_start_link(path)
        if isinstance(result, tuple) and result[0] == "already_started":
            pid = result[1]
            otpkit.link(pid)
            return pid
        return result
    otpkit.link(pid)
    return pid


def do_start_link(path: str | None) -> Any:
    try:
        return otpkit.spawn_link(SchedulerSupervisor, path)
    except otpkit.StartError as exc:
        reason = exc.reason
        if isinstance(reason, tuple) and reason[0] == "already_started" and reason[1]:
            return reason
        raise


def resolve_global_conflict(_name: Any, pid_to_keep: otpkit.Pid, pid_to_kill: otpkit.Pid) -> Any:
    otpkit.stop(pid_to_kill)
    return pid_to_keep


def app_children(path: str | None = None) -> list[ChildSpec]:
    """The application's tree: its supervisor, with the scheduler supervisor as a child
    started by ``start_link`` (so on every node it is either the one, or a link to it)."""
    scheduler = ChildSpec(
        "SchedulerSupervisor", "seed_recipe:start_link", (path,), type="supervisor"
    )
    return [
        ChildSpec("app", Supervisor, kwargs={"children": [scheduler], "intensity": 10, "period": 5})
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="this node, app@ip")
    parser.add_argument("--peers", default="", help="other nodes, app@ip,...")
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--cookie", default="seed-recipe-demo-cookie")
    parser.add_argument("--seconds", type=float, default=0, help="stop after (0: never)")
    args = parser.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    peer_set = discovery.Static([f"{p}:{args.port}" for p in peers]) if peers else None
    node = otpkit.Node(
        args.name,
        cookie=args.cookie,
        dist_port=args.port,
        discovery=peer_set,
        poll_interval=1.0,
        children=app_children(None),
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with node:
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)


if __name__ == "__main__":
    main()
