"""The next release, as a test makes it: a copy of this repository's ``src/otpkit`` whose
version constants are raised (the dist protocol, the quorum's state format, the
scheduler's schema), for nodes started with the copy first on their ``PYTHONPATH``
(``NodeProc(env=...)``, ``RunCluster.source``); and the previous release, as git has it
(:func:`previous_release`): the last commit whose dist protocol is one below this code's
(:func:`release_commit` finds older ones, :func:`module_at` loads one module of any).

Each constant is defined on one line of one module; :func:`next_release` fails if a
line is not found exactly once, so a renamed constant breaks the tests that rely on it
rather than silently testing the same release twice."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

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


def _git(*args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout


def _protocol_at(commit: str) -> int | None:
    module, name = CONSTANTS["protocol"]
    try:
        text = _git("show", f"{commit}:src/otpkit/{module}")
    except subprocess.CalledProcessError:
        return None
    found = re.findall(rf"^{name} = (\d+)$", text, flags=re.MULTILINE)
    return int(found[0]) if len(found) == 1 else None


def previous_commit() -> str:
    """The commit of the previous release: the last one whose dist protocol is one below
    the working tree's - ``HEAD`` while the change that raised it is not committed, else
    the parent of the commit that raised it. Raises LookupError (no git, no such commit)."""
    return release_commit(current("protocol") - 1)


def release_commit(want: int) -> str:
    """The last commit whose dist protocol is ``want`` (below the working tree's): ``HEAD``
    if it speaks it, else the parent of the commit that raised it from ``want``. Raises
    LookupError (no git, no such commit)."""
    try:
        if _protocol_at("HEAD") == want:
            return _git("rev-parse", "HEAD").strip()
        module = CONSTANTS["protocol"][0]
        changes = _git(
            "log", "--format=%H", f"-G^{CONSTANTS['protocol'][1]} = ", "--", f"src/otpkit/{module}"
        ).split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise LookupError(f"no git history to find protocol {want} in: {exc}") from None
    for commit in changes:  # newest first: the change to this protocol, then older ones
        if _protocol_at(f"{commit}^") == want:
            return _git("rev-parse", f"{commit}^").strip()
    raise LookupError(f"no commit speaks dist protocol {want}")


def previous_release(dest: Path, commit: str | None = None) -> Path:
    """``src/otpkit`` of ``commit`` (default :func:`previous_commit`) extracted into
    ``dest/otpkit``; return ``dest`` (the tree to put on ``PYTHONPATH``)."""
    commit = commit or previous_commit()
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "src.tar"
    with open(archive, "wb") as f:
        subprocess.run(
            ["git", "-C", str(REPO_ROOT), "archive", commit, "src/otpkit"],
            stdout=f,
            check=True,
            timeout=60,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(dest / "git", filter="data")
    archive.unlink()
    shutil.move(dest / "git" / "src" / "otpkit", dest / "otpkit")
    shutil.rmtree(dest / "git")
    return dest


def module_at(commit: str, module: str, as_name: str, dest: Path) -> ModuleType:
    """The module ``module`` of ``src/otpkit`` (``"distribution/_handshake.py"``) as
    ``commit`` has it, written under ``dest`` and imported as ``as_name`` (a name of its
    own, so this code's module is left as it is). Only a module that imports nothing of
    otpkit works so."""
    path = dest / f"{as_name}.py"
    path.write_text(_git("show", f"{commit}:src/otpkit/{module}"))
    spec = importlib.util.spec_from_file_location(as_name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[as_name] = loaded  # (dataclasses look their module up there)
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        del sys.modules[as_name]
        raise
    return loaded
