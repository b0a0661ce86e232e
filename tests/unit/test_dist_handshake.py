"""The dist handshake's order (``distribution/_handshake.py``, protocol 4): the dialer
proves first, an acceptor sends nothing that depends on the cookie before the dialer's
proof whatever the hello says, the previous release's handshake (protocol 3, its code
as git has it) links with this one either way, a protocol 2 peer is refused either way
without a proof, and the failure log that keeps unauthenticated failures to one line per
address a minute."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import otpkit
from otpkit import cli, settings
from otpkit.distribution import _handshake
from otpkit.distribution._handshake import (
    BAD_COOKIE,
    PROTOCOL_VERSION,
    Acceptor,
    Dialer,
    FailureLog,
    HandshakeError,
)
from tests.harness import versions

COOKIE = b"unit-test-cookie-0123456789"
OTHER = b"another-cookie-0123456789"
A, B = "a@10.0.0.1", "b@10.0.0.2"


@pytest.fixture
def fixed_nonces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every nonce made is the same, so two runs differ only by what they were given."""
    monkeypatch.setattr(_handshake, "new_nonce", lambda: b"\x07" * 32)


def run(
    dialer: Dialer,
    acceptor: Acceptor,
    hidden: bool | str = False,
    listen: tuple[str, int] = ("10.0.0.1", 4370),
) -> list[tuple[Any, ...]]:
    """Both sides of a handshake, frame by frame; the frames the acceptor sent."""
    sent: list[tuple[Any, ...]] = []
    challenge = acceptor.on_hello(dialer.hello(hidden, listen))
    sent.append(challenge)
    ack, up = dialer.on_frame(challenge)
    assert ack is not None and not up
    acceptor.on_ack(ack)
    ok = acceptor.ok()
    sent.append(ok)
    assert dialer.on_frame(ok) == (None, True)
    return sent


def test_the_dialer_proves_first_then_the_acceptor() -> None:
    dialer = Dialer(COOKIE, A, 5, B)
    acceptor = Acceptor(COOKIE, B, 9)
    challenge, ok = run(dialer, acceptor)
    assert challenge[0] == "challenge" and challenge[4] is None  # no proof in it
    assert challenge[5] == PROTOCOL_VERSION == 4
    assert ok[0] == "ok" and len(ok[1]) == 32
    assert dialer.proven
    assert (dialer.peer_name, dialer.peer_creation, dialer.version) == (B, 9, 4)
    assert acceptor.peer is not None and (acceptor.peer.name, acceptor.peer.creation) == (A, 5)


@pytest.mark.parametrize("dialer_cookie", [OTHER, COOKIE[:-1], b""])
def test_a_dialer_without_the_cookie_is_refused_and_never_gets_the_acceptors_proof(
    dialer_cookie: bytes,
) -> None:
    dialer = Dialer(dialer_cookie, A, 5, B)
    acceptor = Acceptor(COOKIE, B, 9)
    ack, _ = dialer.on_frame(acceptor.on_hello(dialer.hello(False, ("10.0.0.1", 1))))
    assert ack is not None
    with pytest.raises(HandshakeError) as err:
        acceptor.on_ack(ack)
    assert err.value.kind == "cookie" and err.value.detail == BAD_COOKIE


def test_the_dialer_checks_the_acceptors_proof_before_the_link_is_up() -> None:
    dialer = Dialer(COOKIE, A, 5, B)
    liar = Acceptor(OTHER, B, 9)  # took the dialer's ack without knowing the cookie
    ack, _ = dialer.on_frame(liar.on_hello(dialer.hello(False, ("10.0.0.1", 1))))
    assert ack is not None
    for ok in [liar.ok(), ("ok",), ("ok", b"\0" * 32), ("ok", "x")]:
        with pytest.raises(HandshakeError) as err:
            dialer.on_frame(ok)
        assert err.value.kind == "cookie"
    assert not dialer.proven


def test_a_refusal_after_the_dialers_proof_is_the_dialers_to_log() -> None:
    dialer = Dialer(COOKIE, A, 5, B)
    acceptor = Acceptor(COOKIE, B, 9)
    dialer.on_frame(acceptor.on_hello(dialer.hello(False, ("10.0.0.1", 1))))
    with pytest.raises(HandshakeError) as err:
        dialer.on_frame(("refuse", BAD_COOKIE))
    assert (err.value.kind, err.value.detail) == ("refused", BAD_COOKIE)


def test_a_dialer_sends_no_proof_to_a_node_that_is_not_the_one_dialled() -> None:
    dialer = Dialer(COOKIE, A, 5, B)
    impostor = Acceptor(COOKIE, "c@10.0.0.3", 9)
    with pytest.raises(HandshakeError) as err:
        dialer.on_frame(impostor.on_hello(dialer.hello(False, ("10.0.0.1", 1))))
    assert err.value.kind == "cookie" and "wrong node" in err.value.detail
    assert err.value.send is None


# --------------------------------------------------------------------------- no oracle

HELLOS = [
    pytest.param(PROTOCOL_VERSION, id="v4"),
    pytest.param(PROTOCOL_VERSION + 4, id="newer"),
    pytest.param(3, id="v3"),
    pytest.param(2, id="v2"),
    pytest.param(1, id="v1-named"),
    pytest.param(None, id="unversioned"),
    pytest.param("3", id="garbage-version"),
    pytest.param(2**40, id="huge-version"),
]


def _hello(version: object) -> tuple[Any, ...]:
    hello = ("hello", A, 5, b"\x01" * 32, False, ["10.0.0.1", 4370])
    return hello if version is None else (*hello, version)


def _answers(cookie: bytes, hello: tuple[Any, ...], ack: tuple[Any, ...]) -> list[Any]:
    """Everything an acceptor holding ``cookie`` sends to a caller who says ``hello``
    and then ``ack`` (a frame, or how it ended)."""
    acceptor = Acceptor(cookie, B, 9)
    out: list[Any] = []
    try:
        out.append(acceptor.on_hello(hello))
        acceptor.on_ack(ack)
        out.append(acceptor.ok())
    except HandshakeError as exc:
        out.append((exc.kind, exc.send))
    return out


@pytest.mark.parametrize("version", HELLOS)
@pytest.mark.usefixtures("fixed_nonces")
def test_an_acceptor_sends_nothing_that_depends_on_the_cookie_before_the_dialers_proof(
    version: object,
) -> None:
    """Whatever the hello names, two acceptors holding different cookies answer a caller
    without the cookie byte for byte the same: nothing it receives can be tested
    against a guess offline."""
    hello = _hello(version)
    for ack in [("ack", b"\0" * 32), ("ack", b""), ("ok",), ("refuse", "x", 1)]:
        assert _answers(COOKIE, hello, ack) == _answers(OTHER, hello, ack)


@pytest.mark.parametrize(
    ("version", "kind", "sends"),
    [
        (2, "version", ("refuse", _handshake.refusal_reason(4, 2), 4)),  # two behind
        (1, "version", ("refuse", _handshake.refusal_reason(4, 1), 4)),
        (None, "version", ("refuse", _handshake.refusal_reason(4, 1), 4)),
        ("3", "malformed", None),
    ],
)
def test_what_an_acceptor_answers_an_older_or_a_bad_hello(
    version: object, kind: str, sends: object
) -> None:
    with pytest.raises(HandshakeError) as err:
        Acceptor(COOKIE, B, 9).on_hello(_hello(version))
    assert (err.value.kind, err.value.send) == (kind, sends)


@pytest.mark.parametrize(
    "hello",
    [
        ("hello", "no-at-sign", 5, b"\1" * 32, False, ["h", 1], 3),
        ("hello", A + "\nforged", 5, b"\1" * 32, False, ["h", 1], 3),
        ("hello", A, -1, b"\1" * 32, False, ["h", 1], 3),
        ("hello", A, 5, b"\1" * 31, False, ["h", 1], 3),
        ("hello", A, 5, b"\1" * 32, None, ["h", 1], 3),
        ("hello", A, 5, b"\1" * 32, False, ["h", 70000], 3),
        ("hello", A, 5, b"\1" * 32, False, ["h", "1"], 3),
        ("hello", A, 5, b"\1" * 32, False, ("h", 1), 3),
        ("hello", A, 5, b"\1" * 32, False),
        ("ack", b"\1" * 32),
    ],
)
def test_a_malformed_hello_is_refused(hello: tuple[Any, ...]) -> None:
    with pytest.raises(HandshakeError) as err:
        Acceptor(COOKIE, B, 9).on_hello(hello)
    assert err.value.kind == "malformed" and err.value.send is None


def test_a_hello_listening_at_a_long_host_name_is_taken() -> None:
    """Without POD_IP a node listens at its name's host part, which a node name may have
    up to 190 characters long: a hello naming such a host is a hello (a DNS name has at
    most 253 characters; one longer is not)."""
    name = "app@scheduler-worker-0.scheduler-worker-headless.my-namespace.svc.cluster.local"
    host = name.split("@")[1]
    acceptor = Acceptor(COOKIE, B, 9)
    run(Dialer(COOKIE, name, 5, B), acceptor, listen=(host, 4370))
    assert acceptor.peer is not None and acceptor.peer.listen == (host, 4370)
    longest = ".".join(["h" * 63] * 4)[:253]
    hello = ("hello", A, 5, b"\1" * 32, False, [longest, 1], 3)
    assert Acceptor(COOKIE, B, 9).on_hello(hello)[0] == "challenge"
    with pytest.raises(HandshakeError) as err:
        Acceptor(COOKIE, B, 9).on_hello(("hello", A, 5, b"\1" * 32, False, [longest + "h", 1], 3))
    assert err.value.kind == "malformed"


# --------------------------------------------------------------------------- protocols 3 and 2


@pytest.fixture(scope="module")
def v3(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """``_handshake`` of the previous release (protocol 3), as git has it."""
    try:
        commit = versions.release_commit(3)
    except LookupError as exc:
        pytest.skip(f"needs the repository's git history: {exc}")
    dest = tmp_path_factory.mktemp("v3")
    module = versions.module_at(commit, "distribution/_handshake.py", "_handshake_v3", dest)
    assert module.PROTOCOL_VERSION == 3
    return module


SIDES = [
    pytest.param("v3", "this", id="v3-dials-v4"),
    pytest.param("this", "v3", id="v4-dials-v3"),
    pytest.param("own=3", "this", id="own3-dials-v4"),
    pytest.param("this", "own=3", id="v4-dials-own3"),
]


def _side(kind: str, role: str, v3: ModuleType, cookie: bytes) -> Any:
    """A ``role`` (Dialer, Acceptor) of this code, of this code told it speaks protocol 3
    (``own=3``), or of the previous release's module."""
    name, creation = (A, 5) if role == "Dialer" else (B, 9)
    args = (cookie, name, creation, B) if role == "Dialer" else (cookie, name, creation)
    if kind == "v3":
        return getattr(v3, role)(*args)
    own = {"own": 3} if kind == "own=3" else {}
    return getattr(_handshake, role)(*args, **own)


@pytest.mark.parametrize(("dialer_kind", "acceptor_kind"), SIDES)
def test_protocol_4_and_protocol_3_link_whichever_dials(
    v3: ModuleType, dialer_kind: str, acceptor_kind: str
) -> None:
    """A rolling update from the previous release: a protocol 3 side and this code
    complete the handshake either way, each side knowing the other's protocol; neither
    takes a wrong cookie."""
    dialer = _side(dialer_kind, "Dialer", v3, COOKIE)
    acceptor = _side(acceptor_kind, "Acceptor", v3, COOKIE)
    challenge, ok = run(dialer, acceptor)
    assert challenge[4] is None  # the dialer proves first, as in protocol 3
    assert dialer.proven and len(ok[1]) == 32
    assert acceptor.peer.version == dialer.own and dialer.version == acceptor.own
    assert {dialer.own, acceptor.own} == {3, 4}
    errors = (HandshakeError, v3.HandshakeError)
    dialer = _side(dialer_kind, "Dialer", v3, OTHER)
    acceptor = _side(acceptor_kind, "Acceptor", v3, COOKIE)
    ack, _ = dialer.on_frame(acceptor.on_hello(dialer.hello(False, ("10.0.0.1", 1))))
    with pytest.raises(errors) as err:
        acceptor.on_ack(ack)
    assert err.value.kind == "cookie"
    dialer = _side(dialer_kind, "Dialer", v3, COOKIE)
    liar = _side(acceptor_kind, "Acceptor", v3, OTHER)  # took the ack without the cookie
    dialer.on_frame(liar.on_hello(dialer.hello(False, ("10.0.0.1", 1))))
    with pytest.raises(errors) as err:
        dialer.on_frame(liar.ok())
    assert err.value.kind == "cookie" and not dialer.proven


class V2Acceptor:
    """A protocol 2 acceptor as that release answered (its proof first, in its challenge)."""

    def __init__(self, cookie: bytes, name: str, creation: int) -> None:
        self.cookie, self.name, self.creation = cookie, name, creation
        self.nonce = b"\x02" * 32

    def challenge(self, hello: tuple[Any, ...]) -> tuple[Any, ...]:
        _, name, creation, nonce, _hidden, _listen, version = hello
        self.peer = (name, creation, nonce, version)
        return ("challenge", self.name, self.creation, self.nonce, self._proof("acceptor"), 2)

    def _proof(self, role: str) -> bytes:
        name, creation, nonce, version = self.peer
        return _handshake.proof(
            self.cookie, role, nonce, self.nonce, name, creation, self.name, self.creation,
            (version, 2),
        )  # fmt: skip


def test_a_protocol_2_hello_is_refused_with_its_version_and_no_proof() -> None:
    """Protocol 2 is two behind: its hello gets the version refusal (the same bytes
    whatever the cookie), not a challenge, and no dial back is asked of the node."""
    hello = ("hello", A, 5, b"\x01" * 32, False, ["10.0.0.1", 4370], 2)
    sent = []
    for cookie in (COOKIE, OTHER):
        with pytest.raises(HandshakeError) as err:
            Acceptor(cookie, B, 9).on_hello(hello)
        assert (err.value.kind, err.value.version) == ("version", 2)
        sent.append(err.value.send)
    assert sent[0] == sent[1] == ("refuse", _handshake.refusal_reason(4, 2), 4)
    assert "only, not 2: full restart needed" in sent[0][1]


def test_a_protocol_2_acceptor_gets_a_refusal_instead_of_an_ack() -> None:
    """This node dials a protocol 2 node: its challenge carries its proof first, and this
    side answers with the version refusal - no ack, no proof of this side's - whether or
    not that node holds the cookie."""
    for cookie in (COOKIE, OTHER):
        dialer = Dialer(COOKIE, A, 5, B)
        old = V2Acceptor(cookie, B, 9)
        with pytest.raises(HandshakeError) as err:
            dialer.on_frame(old.challenge(dialer.hello(False, ("10.0.0.1", 1))))
        assert (err.value.kind, err.value.version) == ("version", 2)
        assert err.value.send == ("refuse", _handshake.refusal_reason(4, 2), 4)
        assert not dialer.proven and dialer.stage == "challenge"


def test_a_version_refusal_either_way() -> None:
    dialer = Dialer(COOKIE, A, 5, B)
    challenge = ("challenge", B, 9, b"\3" * 32, b"\4" * 32, 1)
    with pytest.raises(HandshakeError) as err:
        dialer.on_frame(challenge)
    assert err.value.kind == "version" and err.value.version == 1
    assert err.value.send == ("refuse", _handshake.refusal_reason(4, 1), 4)
    dialer = Dialer(COOKIE, A, 5, B)
    with pytest.raises(HandshakeError) as err:
        dialer.on_frame(("refuse", _handshake.refusal_reason(5, 3), 5))
    assert (err.value.kind, err.value.version) == ("refused version", 5)
    acceptor = Acceptor(COOKIE, B, 9)
    acceptor.on_hello(_hello(4))
    with pytest.raises(HandshakeError) as err:
        acceptor.on_ack(("refuse", "too old", 4))
    assert (err.value.kind, err.value.version) == ("refused version", 4)


@pytest.mark.parametrize(
    "frame",
    [("ok",), ("ack", b"x"), ("challenge",), ("challenge", B, 9, b"short", None, 3), ("tick",)],
)
def test_a_dialer_refuses_frames_out_of_order(frame: tuple[Any, ...]) -> None:
    with pytest.raises(HandshakeError) as err:
        Dialer(COOKIE, A, 5, B).on_frame(frame)
    assert err.value.kind == "malformed" and err.value.send is None


def test_the_cookie_rule() -> None:
    assert _handshake.cookie_problem(b"x" * 16) == ""
    assert "5 bytes" in _handshake.cookie_problem(b"short")
    assert "otpkit cookie new" in _handshake.cookie_problem(b"short")
    assert "bytes, not str" in _handshake.cookie_problem("a-str-cookie-0123456")


# --------------------------------------------------------------------------- failure log


def test_one_loud_line_per_source_a_minute_with_the_count_since() -> None:
    log = FailureLog(every=60.0)
    assert log.note("10.0.0.5", 0.0) == 0  # the first: loud
    assert [log.note("10.0.0.5", t) for t in (1.0, 2.0, 59.9)] == [None, None, None]
    assert log.note("10.0.0.6", 3.0) == 0  # another source: its own count
    assert log.note("10.0.0.5", 60.0) == 3  # loud again, with how many were quiet
    assert log.note("10.0.0.5", 61.0) is None
    assert log.note("10.0.0.5", 500.0) == 1


def test_the_failure_log_is_bounded() -> None:
    log = FailureLog(every=60.0, sources=4, loud=1000)
    for i in range(100):
        assert log.note(f"10.0.1.{i}", float(i) / 100) == 0
    assert len(log._seen) == 4
    assert log.note("10.0.1.99", 0.995) is None  # the newest are remembered


def test_many_sources_cannot_make_every_line_loud() -> None:
    log = FailureLog(every=60.0, loud=10)
    loud = [log.note(f"10.0.2.{i}", 1.0) for i in range(50)]
    assert sum(x is not None for x in loud) == 10
    # a quiet source is loud in a later window, with its count
    assert log.note("10.0.2.40", 30.0) is None
    assert log.note("10.0.2.40", 61.0) == 2


# --------------------------------------------------------------------------- the cookie


def test_otpkit_run_and_the_node_share_the_cookies_minimum() -> None:
    assert settings.MIN_COOKIE == _handshake.MIN_COOKIE == 16


def test_a_short_cookie_is_refused_by_the_node_with_one_line() -> None:
    with pytest.raises(
        ValueError, match=r"^the dist cookie is 6 bytes: at least 16 .*otpkit cookie new"
    ):
        otpkit.Node("a@127.0.0.1", cookie="secret", dist_port=0)
    assert otpkit.Node("a@127.0.0.1", cookie="s" * 16, dist_port=0).dist_config is not None


WEAK = [
    ({"OTPKIT_COOKIE": "secret"}, "otpkit: OTPKIT_COOKIE: the cookie is 6 bytes: at least 16"),
    ({"OTPKIT_COOKIE_FILE": "{short}"}, "otpkit: OTPKIT_COOKIE_FILE: '{short}': the cookie is 5"),
    (
        {"OTPKIT_COOKIE_FILE": "{open}"},
        "otpkit: OTPKIT_COOKIE_FILE: '{open}' is readable by others (mode 0644)",
    ),
]


@pytest.mark.parametrize(("env", "says"), WEAK, ids=["short", "short-file", "open-file"])
def test_otpkit_run_refuses_a_weak_cookie_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], env: dict[str, str], says: str
) -> None:
    files = {"short": tmp_path / "short", "open": tmp_path / "open"}
    files["short"].write_text("short\n")
    files["short"].chmod(0o600)
    files["open"].write_text("x" * 40)
    files["open"].chmod(0o644)
    names = {k: str(v) for k, v in files.items()}
    env = {k: v.format(**names) for k, v in env.items()}
    env |= {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_DIST_PORT": "4370"}
    assert cli.main(["run", "tests.harness.otpkit_run_app:root"], env) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(says.format(**names)), err


def test_the_one_shots_refuse_a_short_cookie_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"OTPKIT_COOKIE": "secret"}
    assert cli.main(["nodes", "--connect", "127.0.0.1:9"], env) == 2
    assert capsys.readouterr().err.splitlines() == [
        "otpkit: OTPKIT_COOKIE: the cookie is 6 bytes: at least 16 are needed "
        "(make one with `otpkit cookie new`)"
    ]


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o440, 0o640])
def test_a_cookie_file_readable_by_its_owner_or_group_is_taken(tmp_path: Path, mode: int) -> None:
    f = tmp_path / "cookie"
    f.write_text("k" * 32 + "\n")
    f.chmod(mode)  # a Kubernetes Secret with fsGroup: 0440
    assert settings.cookie_from(None, {"OTPKIT_COOKIE_FILE": str(f)}) == b"k" * 32


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o444])
def test_a_cookie_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    f = tmp_path / "cookie"
    f.write_text("k" * 32)
    f.chmod(mode)
    with pytest.raises(settings.SettingError, match=f"readable by others \\(mode {mode:04o}\\)"):
        settings.cookie_from(None, {"OTPKIT_COOKIE_FILE": str(f)})


def test_otpkit_cookie_new_prints_32_random_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    cookies = []
    for _ in range(3):
        assert cli.main(["cookie", "new"], {}) == 0
        (line,) = capsys.readouterr().out.splitlines()
        cookies.append(line)
        assert len(base64.urlsafe_b64decode(line + "=")) == 32
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", line)
    assert len(set(cookies)) == 3
