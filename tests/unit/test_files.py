"""Private files and directories (otpkit.actors._files): made 0600 and 0700 whatever the
umask, narrowed with one line when found open to others; a directory the user made is
left as it is."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from otpkit.actors._files import make_private_dir, narrow, private_file, too_open
from otpkit.quorum._actor import QuorumStore
from otpkit.quorum._core import QuorumConfig, QuorumCore, encode_state


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o000, 0o277])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_too_open_is_any_bit_beyond_the_allowed():
    assert not too_open(0o100600, 0o600)
    assert not too_open(0o100400, 0o600)
    assert too_open(0o100644, 0o600)
    assert too_open(0o100640, 0o600)
    assert too_open(0o104600, 0o600)  # setuid
    assert not too_open(0o040700, 0o700)
    assert too_open(0o042770, 0o700)


def test_missing_directories_are_made_0700_and_an_existing_one_is_left(tmp_path: Path, umask: int):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine").chmod(0o755)
    made = make_private_dir(tmp_path / "mine" / "a" / "b")
    assert made == [str(tmp_path / "mine" / "a"), str(tmp_path / "mine" / "a" / "b")]
    assert mode(tmp_path / "mine" / "a") == mode(tmp_path / "mine" / "a" / "b") == 0o700
    assert mode(tmp_path / "mine") == 0o755
    assert make_private_dir(tmp_path / "mine" / "a" / "b") == []
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        make_private_dir(tmp_path / "file" / "a")


def test_a_private_file_is_made_0600_or_narrowed_with_one_line(
    tmp_path: Path, umask: int, caplog: pytest.LogCaptureFixture
):
    new = tmp_path / "new.log"
    private_file(new, "log file")
    assert mode(new) == 0o600 and new.read_bytes() == b""
    old = tmp_path / "old.log"
    old.write_text("kept\n")
    old.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="otpkit.node"):
        private_file(old, "log file")
        private_file(old, "log file")
    assert mode(old) == 0o600 and old.read_text() == "kept\n"
    assert [r.getMessage() for r in caplog.records] == [
        f"log file {old} was mode 0644, open to others: now 0600"
    ]


def test_narrow_keeps_the_allowed_bits_and_ignores_a_missing_file(tmp_path: Path):
    f = tmp_path / "f"
    assert narrow(f, 0o600, "file") is False
    f.write_text("")
    f.chmod(0o444)
    assert narrow(f, 0o600, "file") is True
    assert mode(f) == 0o400
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o751)
    assert narrow(d, 0o700, "directory") is True
    assert mode(d) == 0o700


def test_the_quorum_store_makes_its_data_dir_private_and_narrows_a_wider_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    old = os.umask(0o022)
    try:
        data = tmp_path / "data"  # missing: made 0700 with its otpkit directory
        store = QuorumStore(str(data), "a@h")
        store.save(encode_state(QuorumCore(("a@h", 7), QuorumConfig(), 0.0)))
        assert mode(data) == mode(data / "otpkit") == 0o700
        assert mode(Path(store.path)) == 0o600
        Path(store.path).chmod(0o644)  # as another tool left it
        (data / "otpkit").chmod(0o755)
        with caplog.at_level(logging.WARNING, logger="otpkit.node"):
            again = QuorumStore(str(data), "a@h")
            loaded = again.load()
            assert loaded is not None and loaded["sid"] == 7
            again.save(loaded)
        assert mode(Path(store.path)) == 0o600 and mode(data / "otpkit") == 0o700
        assert [r.getMessage() for r in caplog.records] == [
            f"quorum store {store.path} was mode 0644, open to others: now 0600",
            f"otpkit state directory {data / 'otpkit'} was mode 0755, open to others: now 0700",
        ]
    finally:
        os.umask(old)
