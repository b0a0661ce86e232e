"""The node's log writer and formats (``actors/_logs.py``), with real forked processes
and a real socket pair: records arrive whole whatever their size and however many
processes send at once; printed lines become records; bad data is a record saying so,
never a crash of the writer."""

from __future__ import annotations

import io
import json
import logging
import os
import sys

import pytest

from otpkit.actors import _logs
from tests.harness.polling import wait_for


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected():
    handler = Collect()
    logger = logging.getLogger("logs_test")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    stdio = logging.getLogger("otpkit.stdio")
    stdio.addHandler(handler)
    stdio.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        stdio.removeHandler(handler)
        stdio.setLevel(logging.NOTSET)


def _child(body) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            # as a node process: its records go to the writer (not the test's handler)
            logging.getLogger("logs_test").handlers[:] = []
            logging.getLogger("logs_test").propagate = True
            body()
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def test_records_of_forked_processes_arrive_whole_and_in_each_process_s_order(collected):
    writer = _logs.LogWriter("n@127.0.0.1")
    try:
        big = "y" * 50_000

        def body() -> None:
            root = logging.getLogger()
            root.handlers[:] = [_logs.SinkHandler()]
            log = logging.getLogger("logs_test")
            for i in range(20):
                try:
                    raise ValueError(f"{os.getpid()}-{i}-{big}-end")
                except ValueError:
                    log.exception("record %d", i)

        pids = [_child(body) for _ in range(4)]
        writer.forked()
        for pid in pids:
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        wait_for(lambda: len(collected.records) == 80, 20, "80 records")
        by_pid: dict[int, list[str]] = {}
        for record in collected.records:
            assert record.exc_text is not None
            assert record.exc_text.endswith(f"{record.process}-{record.msg.split()[1]}-{big}-end")
            assert record.node == "n@127.0.0.1"  # type: ignore[attr-defined]
            by_pid.setdefault(record.process, []).append(record.getMessage())
        assert sorted(by_pid) == sorted(pids)
        for messages in by_pid.values():
            assert messages == [f"record {i}" for i in range(20)]
    finally:
        writer.close()


def test_a_record_longer_than_the_limit_keeps_its_end(collected):
    record = logging.makeLogRecord(
        {"name": "logs_test", "levelno": 20, "msg": "a" * 100 + "z" * 100_000}
    )
    decoded = _logs.decode(_logs.encode(record), "n")
    assert decoded is not None
    assert decoded.getMessage().endswith("z" * 1000)
    assert decoded.getMessage().startswith("[")
    assert len(decoded.getMessage()) <= _logs.MAX_RECORD // 2 + 40


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa4name\x01", b"\xa3abc"],
)
def test_what_is_not_a_record_decodes_to_none(data):
    assert _logs.decode(data, "n") is None


def test_printed_lines_become_records_with_the_process_s_tags(collected):
    stream = _logs.LineStream("logs_test", logging.INFO, 1)
    _logs.set_tags(job="every5", tick="2026-12-05T12:00:00Z")
    try:
        stream.write("one\ntw")
        assert [r.getMessage() for r in collected.records] == ["one"]
        stream.write("o\n" + "x" * (_logs.MAX_LINE + 10))
        stream.flush()  # no record: the line has not ended
        assert len(collected.records) == 3
        stream.buffer.write(" é".encode())
        stream.drain()
        encoded = _logs.decode(_logs.encode(collected.records[0]), "n")
    finally:
        _logs.set_tags(job=None, tick=None)
    messages = [r.getMessage() for r in collected.records]
    assert messages == ["one", "two", "x" * _logs.MAX_LINE, "x" * 10 + " é"]
    assert encoded is not None
    assert (encoded.job, encoded.tick) == ("every5", "2026-12-05T12:00:00Z")  # type: ignore[attr-defined]


def test_descriptor_output_is_read_line_by_line(collected):
    writer = _logs.LogWriter("n@127.0.0.1")
    try:
        pid = _child(lambda: os.write(writer.stdio_fd, b"from C\npartial"))
        writer.forked()
        os.waitpid(pid, 0)
        wait_for(lambda: len(collected.records) == 2, 10, "two stdio lines")
        assert [r.getMessage() for r in collected.records] == ["from C", "partial"]
        assert {r.name for r in collected.records} == {"otpkit.stdio"}
    finally:
        writer.close()


def test_a_log_file_when_asked(tmp_path):
    path = tmp_path / "n.log"
    writer = _logs.LogWriter("n@127.0.0.1", str(path))
    try:

        def body() -> None:
            logging.getLogger().handlers[:] = [_logs.SinkHandler()]
            logging.getLogger("logs_test").warning("to the file")

        pid = _child(body)
        writer.forked()
        os.waitpid(pid, 0)
        wait_for(lambda: path.exists() and "to the file" in path.read_text(), 10, "the line")
    finally:
        writer.close()
    line = path.read_text().splitlines()[0]
    assert " WARNING n@127.0.0.1 " in line and line.endswith("logs_test: to the file")


def _record(**extra) -> logging.LogRecord:
    try:
        raise KeyError("k")
    except KeyError:
        exc_info = sys.exc_info()
    record = logging.makeLogRecord(
        {"name": "x.y", "levelno": 40, "levelname": "ERROR", "msg": "m %d", "args": (1,)}
    )
    record.exc_info = exc_info
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_the_text_format():
    text = _logs.text_formatter("n@h").format(_record(actor="otpkit_quorum", job="j", tick="t"))
    first, *rest = text.splitlines()
    assert first.endswith(f" ERROR n@h otpkit_quorum[{os.getpid()}] x.y: [job=j tick=t] m 1")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "KeyError: 'k'"


def test_the_json_format_is_one_parseable_line():
    line = _logs.json_formatter("n@h").format(_record(job="j"))
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "ERROR" and data["logger"] == "x.y" and data["message"] == "m 1"
    assert data["node"] == "n@h" and data["job"] == "j" and data["time"].endswith("Z")
    assert data["exc_info"].endswith("KeyError: 'k'")


def test_a_handler_that_fails_does_not_end_the_writer(collected):
    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "first" in record.getMessage():
                raise RuntimeError("broken handler")

    broken = Broken()
    logger = logging.getLogger("logs_test")
    logger.addHandler(broken)
    writer = _logs.LogWriter("n@127.0.0.1")
    try:

        def body() -> None:
            logging.getLogger().handlers[:] = [_logs.SinkHandler()]
            logging.getLogger("logs_test").warning("first")
            logging.getLogger("logs_test").warning("second")

        pid = _child(body)
        writer.forked()
        os.waitpid(pid, 0)
        # the first record broke a handler (the other handler still had it); the
        # writer went on to the second
        wait_for(lambda: len(collected.records) == 2, 10, "both records")
        assert [r.getMessage() for r in collected.records] == ["first", "second"]
    finally:
        logger.removeHandler(broken)
        writer.close()


def test_a_large_record_of_wide_characters_arrives_cut_to_its_end(collected):
    writer = _logs.LogWriter("n@127.0.0.1")
    try:
        wide = "é" * 100_000 + "end"

        def body() -> None:
            logging.getLogger().handlers[:] = [_logs.SinkHandler()]
            logging.getLogger("logs_test").warning("%s", wide)
            logging.getLogger("logs_test").warning("after")

        pid = _child(body)
        writer.forked()
        os.waitpid(pid, 0)
        wait_for(lambda: len(collected.records) == 2, 10, "both records")
        first = collected.records[0].getMessage()
        assert first.endswith("é" * 1000 + "end") and "bytes cut" in first
        assert len(first.encode()) <= _logs.MAX_RECORD // 2 + 40
        assert collected.records[1].getMessage() == "after"
    finally:
        writer.close()


def test_an_unwritable_stream_write_is_a_type_error():
    stream = _logs.LineStream("logs_test", logging.INFO, 1)
    with pytest.raises(TypeError):
        stream.write(b"bytes")  # type: ignore[arg-type]
    assert isinstance(stream, io.TextIOBase)
