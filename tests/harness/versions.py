"""The next release, as a test makes it: a copy of this repository's ``src/otpkit`` whose
version constants are raised (the dist protocol, the quorum's state format, the
scheduler's schema), for nodes started with the copy first on their ``PYTHONPATH``
(``NodeProc(env=...)``, ``RunCluster.source``).

Each constant is defined on one line of one module; :func:`next_release` fails if a
line is not found exactly once, so a renamed constant breaks the tests that rely on it
rather than silently testing the same release twice."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.harness.processes import REPO_ROOT

#: (module under ``src/otpkit``, constant): what a release raises when its dist
#: protocol, quorum store or scheduler store changes.
CONSTANTS = {
    "protocol": ("distribution/_handshake.py", "PROTOCOL_VERSION"),
    "state": ("quorum/_core.py", "STATE_FORMAT"),
    "schema": ("scheduler/_store.py", "SCHEMA_VERSION"),
}


def current(what: str, source: Path = REPO_ROOT / "src") -> int:
    """The value of the constant ``what`` (a key of :data:`CONSTANTS`) in ``source``."""
    module, name = CONSTANTS[what]
    text = (source / "otpkit" / module).read_text()
    found = re.findall(rf"^{name} = (\d+)$", text, flags=re.MULTILINE)
    assert len(found) == 1, f"{name} is not defined once in {module}: {found}"
    return int(found[0])


def next_release(
    dest: Path, raise_by: dict[str, int] | None = None, source: Path = REPO_ROOT / "src"
) -> Path:
    """Copy ``source``'s ``otpkit`` (default: this repository's) into ``dest/otpkit``
    with each constant of ``raise_by`` (default: all three by one) raised by its amount;
    return ``dest`` (the tree to put on ``PYTHONPATH``)."""
    raise_by = {what: 1 for what in CONSTANTS} if raise_by is None else raise_by
    shutil.copytree(
        source / "otpkit", dest / "otpkit", ignore=shutil.ignore_patterns("__pycache__")
    )
    for what, step in raise_by.items():
        module, name = CONSTANTS[what]
        path = dest / "otpkit" / module
        value = current(what, source)
        text, count = re.subn(
            rf"^{name} = {value}$", f"{name} = {value + step}", path.read_text(), flags=re.M
        )
        assert count == 1, f"{name} = {value} not found once in {path}"
        path.write_text(text)
        assert current(what, dest) == value + step
    return dest
