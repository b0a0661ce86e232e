"""Run inside a network namespace by the Thespian-door test as ``python -m
tests.harness.evil_pickle_probe SPEC``: send a pickle that would create a file to every
given TCP port and abstract Unix socket; print what each connection did."""

from __future__ import annotations

import json
import os
import pickle
import socket
import sys
from concurrent.futures import ThreadPoolExecutor


class Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def payloads(path: str) -> list[bytes]:
    raw = pickle.dumps(Evil(path))
    thespian_framed = b"%d>" % len(raw) + raw
    tagged = len(raw + b"x" * 32).to_bytes(4, "big") + b"x" * 32 + raw
    return [thespian_framed, raw, tagged]


def probe(family: int, address, data: bytes) -> str:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(address)
    except OSError as exc:
        return f"connect-failed:{type(exc).__name__}"
    try:
        sock.sendall(data)
        reply = sock.recv(100)
        return "closed" if not reply else "replied"
    except TimeoutError:
        return "no-answer"
    except OSError as exc:
        return f"io:{type(exc).__name__}"
    finally:
        sock.close()


def main() -> None:
    spec = json.loads(sys.argv[1])
    jobs = {}
    with ThreadPoolExecutor(max_workers=32) as pool:
        for data in payloads(spec["path"]):
            for host, port in spec["tcp"]:
                jobs[f"tcp {host}:{port} {data[:6]!r}"] = pool.submit(
                    probe, socket.AF_INET, (host, port), data
                )
            for name in spec["unix"]:
                jobs[f"unix {name} {data[:6]!r}"] = pool.submit(
                    probe, socket.AF_UNIX, "\0" + name, data
                )
    print(json.dumps({key: job.result() for key, job in jobs.items()}))


if __name__ == "__main__":
    main()
