"""The ``hopgate`` command line: keygen, grant, delegate, invoke, verify, bench, the manual.

Most cases call ``hopgate.cli.main`` in-process (fast, with capsys); the round trip,
stdin, the manual's examples and the entry point itself run ``python -m hopgate`` in a
subprocess.
"""

from __future__ import annotations

import base64
import datetime
import importlib.metadata
import json
import os
import pathlib
import shlex
import stat
import subprocess
import sys
import textwrap
import time
from typing import Optional

import pytest

import hopgate
from hopgate import Code
from hopgate.cli import build_parser, main, parse_time

NOW = 1_750_000_000
NOT_BEFORE = NOW - 1000
NOT_AFTER = NOW + 100_000
SIGNING = "hopgate-signing-key-v1"
PUBLIC = "hopgate-public-key-v1"
AUDIT = "hopgate-audit-key-v1"


def run_cli(
    *args: str, input: Optional[bytes] = None, env: Optional[dict[str, str]] = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "hopgate", *args],
        capture_output=True,
        input=input,
        env={**os.environ, **(env or {})},
    )


def write_key(path: pathlib.Path) -> hopgate.SigningKey:
    key = hopgate.SigningKey.generate()
    path.write_text(f"{SIGNING}:{key.seed().hex()}\n")
    path.chmod(0o600)
    return key


def unlabel(line: str, label: str) -> bytes:
    """The key of one ``label:HEX`` line, asserting the label."""
    name, sep, digits = line.strip().partition(":")
    assert (name, sep, len(digits)) == (label, ":", 64)
    return bytes.fromhex(digits)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error line of an argparse usage error: exit status 2, nothing on stdout, no traceback."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and "Traceback" not in err
    assert err.startswith("usage: hopgate")
    return err.splitlines()[-1]


class World:
    """Alice grants to Bob, who delegates to Carol; the files live in ``dir``."""

    def __init__(self, dir: pathlib.Path) -> None:
        self.dir = dir
        self.alice = write_key(dir / "alice.key")
        self.bob = write_key(dir / "bob.key")
        self.carol = write_key(dir / "carol.key")

    def p(self, name: str) -> str:
        return str(self.dir / name)

    def grant(self, name: str = "g.chain", *extra: str) -> str:
        args = [
            "grant", "--issuer-key", self.p("alice.key"), "--holder", self.bob.public_key.hex(),
            "--cap", "payments/*:refund", "--cap", "files/*:read", "--budget", "10000", "--unit", "usd-cents",
            "--not-before", str(NOT_BEFORE), "--not-after", str(NOT_AFTER), "--max-depth", "2",
            "-o", self.p(name), *extra,
        ]  # fmt: skip
        assert main(args) == 0
        return self.p(name)

    def delegate(self, name: str = "d.chain", *extra: str) -> str:
        parent = self.grant()
        args = [
            "delegate", parent, "--holder-key", self.p("bob.key"), "--to", self.carol.public_key.hex(),
            "--cap", "payments/stripe:refund", "--budget", "2500", "-o", self.p(name), *extra,
        ]  # fmt: skip
        assert main(args) == 0
        return self.p(name)

    def invoke(self, chain: str, name: str = "inv", timestamp: int = NOW, *extra: str) -> str:
        args = [
            "invoke", chain, "--holder-key", self.p("carol.key"), "--ability", "refund",
            "--resource", "payments/stripe", "--cost", "1200", "--timestamp", str(timestamp),
            "-o", self.p(name), *extra,
        ]  # fmt: skip
        assert main(args) == 0
        return self.p(name)

    def verify(self, *args: str) -> list[str]:
        return ["verify", *args, "--trusted", self.alice.public_key.hex(), "--now", str(NOW)]


@pytest.fixture
def world(tmp_path: pathlib.Path) -> World:
    return World(tmp_path)


# ---------------------------------------------------------------------------
# The whole flow through the real entry point
# ---------------------------------------------------------------------------


def test_round_trip_through_python_m_hopgate(tmp_path: pathlib.Path) -> None:
    def ok(*args: str) -> str:
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    alice = ok("keygen", "-o", str(tmp_path / "alice.key"), "--public").strip()
    bob = ok("keygen", "-o", str(tmp_path / "bob.key"), "--public").strip()
    carol = ok("keygen", "-o", str(tmp_path / "carol.key"), "--public").strip()
    seed = unlabel((tmp_path / "alice.key").read_text(), SIGNING)
    assert hopgate.SigningKey.from_seed(seed).public_key == unlabel(alice, PUBLIC)
    assert ok("keygen", "--public-of", str(tmp_path / "bob.key")) == bob + "\n"

    grant, chain, inv = (str(tmp_path / n) for n in ("g.chain", "d.chain", "inv"))
    ok("grant", "--issuer-key", str(tmp_path / "alice.key"), "--holder", bob, "--cap", "tools/*:call",
       "--budget", "100", "--unit", "calls", "--not-before", "-60", "--not-after", "+1h", "--max-depth", "1",
       "-o", grant)  # fmt: skip
    ok("delegate", grant, "--holder-key", str(tmp_path / "bob.key"), "--to", carol, "--budget", "10", "-o", chain)
    ok("invoke", chain, "--holder-key", str(tmp_path / "carol.key"), "--ability", "call",
       "--resource", "tools/search", "--cost", "3", "--payload-file", grant, "-o", inv)  # fmt: skip

    assert ok("verify", grant, chain, "--trusted", alice) == f"{grant}: OK\n{chain}: OK\n"
    assert ok("verify", chain, "--trusted", alice, "--invocation", inv) == f"{chain}: OK\n"

    c = hopgate.Chain.from_text((tmp_path / "d.chain").read_text().strip())
    assert len(c) == 2 and c.issuer == unlabel(alice, PUBLIC) and c.holder == unlabel(carol, PUBLIC)
    assert c.links[1].budget == 10 and c.links[1].max_depth == 0 and c.links[1].caps == (("tools/*", "call"),)
    assert 3600 - 5 <= c.links[0].not_after - int(time.time()) <= 3600


# ---------------------------------------------------------------------------
# keygen
# ---------------------------------------------------------------------------


def test_keygen_writes_a_0600_labelled_seed_and_refuses_to_overwrite(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "k.key"
    assert main(["keygen", "-o", str(path)]) == 0
    out, err = capsys.readouterr()
    text = path.read_text()
    assert len(text) == len(SIGNING) + 1 + 64 + 1 and text.endswith("\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    public = hopgate.SigningKey.from_seed(unlabel(text, SIGNING)).public_key.hex()
    assert out == "" and err == f"public key: {PUBLIC}:{public}\n"

    assert main(["keygen", "-o", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"hopgate: error: -o {path}: file exists; pass --force to overwrite a key\n"
    assert path.read_text() == text

    path.chmod(0o644)
    assert main(["keygen", "-o", str(path), "--force", "--public"]) == 0
    out, err = capsys.readouterr()
    new = path.read_text()
    assert new != text and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert out == f"{PUBLIC}:{hopgate.SigningKey.from_seed(unlabel(new, SIGNING)).public_key.hex()}\n" and err == ""

    assert main(["keygen", "--public-of", str(path)]) == 0
    assert capsys.readouterr().out == out


def test_keygen_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    out, err = capsys.readouterr()
    seed = unlabel(out, SIGNING)
    assert out == f"{SIGNING}:{seed.hex()}\n"
    assert err == f"public key: {PUBLIC}:{hopgate.SigningKey.from_seed(seed).public_key.hex()}\n"
    assert main(["keygen", "--public"]) == 2
    assert capsys.readouterr().err == "hopgate: error: --public needs -o FILE (the seed would be lost)\n"


def test_keygen_audit_key(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.key"
    assert main(["keygen", "--audit", "-o", str(path)]) == 0
    assert capsys.readouterr() == ("", "")
    key = unlabel(path.read_text(), AUDIT)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["keygen", "--audit"]) == 0
    other = unlabel(capsys.readouterr().out, AUDIT)
    assert other != key

    log = tmp_path / "gate.log"
    with hopgate.AuditLog(str(log), key=key):
        pass
    assert main(["audit", "verify", str(log), "--key-file", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {log}: 0 records")
    assert main(["audit", "verify", str(log), "--key-file", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--public-of", "k", "--public"], "--public-of FILE takes no -o, --force, --public or --audit"),
        (["--public-of", "k", "--audit"], "--public-of FILE takes no -o, --force, --public or --audit"),
        (["--public-of", "k", "-o", "x"], "--public-of FILE takes no -o, --force, --public or --audit"),
        (["--force"], "--force needs -o FILE"),
        (["--audit", "--public", "-o", "x"], "--public: an audit key is a secret key alone, it has no public key"),
    ],
)
def test_keygen_refuses_options_it_would_ignore(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["keygen", *argv]) == 2
    assert capsys.readouterr() == ("", f"hopgate: error: {message}\n")
    assert list(tmp_path.iterdir()) == []


def test_key_files_env_missing_bad_and_world_readable(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    (world.dir / "alice.key").chmod(0o644)
    assert main(["keygen", "--public-of", world.p("alice.key")]) == 0
    out, err = capsys.readouterr()
    assert out == f"{PUBLIC}:{world.alice.public_key.hex()}\n"
    assert err == (
        f"hopgate: warning: --public-of {world.p('alice.key')}: the signing key is readable by other users "
        "(mode 0644; chmod 600 it)\n"
    )

    missing = world.p("nobody.key")
    assert main(["keygen", "--public-of", missing]) == 2
    assert capsys.readouterr().err == f"hopgate: error: --public-of {missing}: No such file or directory\n"
    for text in ("abcd\n", f"{SIGNING}:abcd\n", f"{SIGNING}:{'ab' * 32}\nextra\n", f"hopgate-signing-key-v2:{'ab' * 32}\n"):
        short = world.dir / "short.key"
        short.write_text(text)
        short.chmod(0o600)
        assert main(["keygen", "--public-of", str(short)]) == 2
        assert capsys.readouterr().err == (
            f"hopgate: error: --public-of {short}: expected one line {SIGNING}:<64 hex digits>\n"
        )

    env = {k: v for k, v in os.environ.items() if k != "HOPGATE_ISSUER_KEY"}
    base = ["grant", "--holder", world.bob.public_key.hex(), "--cap", "a:b", "--budget", "1", "--unit", "u",
            "--not-before", "0", "--not-after", "10", "--max-depth", "0"]  # fmt: skip
    no_key = subprocess.run([sys.executable, "-m", "hopgate", *base], capture_output=True, text=True, env=env)
    assert no_key.returncode == 2 and no_key.stdout == ""
    assert no_key.stderr == (
        f"hopgate: error: no signing key: pass --issuer-key FILE or set HOPGATE_ISSUER_KEY ({SIGNING}:<64 hex digits>)\n"
    )
    from_env = run_cli(*base, env={"HOPGATE_ISSUER_KEY": f"{SIGNING}:{world.alice.seed().hex()}"})
    assert from_env.returncode == 0, from_env.stderr
    assert hopgate.Chain.from_text(from_env.stdout.decode().strip()).issuer == world.alice.public_key


# ---------------------------------------------------------------------------
# grant, delegate, invoke
# ---------------------------------------------------------------------------


def test_grant_fields_formats_and_times(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    meta = world.dir / "consent.json"
    meta.write_bytes(b'{"principal": "alice"}')
    text_path = world.grant("g.chain", "--session", "00112233445566778899aabbccddeeff", "--meta-file", str(meta))
    text = pathlib.Path(text_path).read_text()
    assert text.endswith("\n") and "=" not in text
    chain = hopgate.Chain.from_text(text.strip())
    link = chain.links[0]
    assert (link.issuer, link.holder) == (world.alice.public_key, world.bob.public_key)
    assert link.caps == (("payments/*", "refund"), ("files/*", "read"))
    assert (link.budget, link.unit, link.max_depth) == (10000, "usd-cents", 2)
    assert (link.not_before, link.not_after) == (NOT_BEFORE, NOT_AFTER)
    assert link.session_id == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert link.meta_digest == hopgate.blake3(b'{"principal": "alice"}')
    assert base64.urlsafe_b64decode(text.strip() + "==") == bytes(chain)

    raw_path = world.grant("g.raw", "--format", "raw", "--not-before", "2026-11-22T10:00:00Z",
                           "--not-after", "2026-11-22T12:00:00+01:00")  # fmt: skip
    raw = hopgate.Chain.from_bytes(pathlib.Path(raw_path).read_bytes())
    start = int(datetime.datetime(2026, 11, 22, 10, tzinfo=datetime.timezone.utc).timestamp())
    assert (raw.links[0].not_before, raw.links[0].not_after) == (start, start + 3600)
    assert capsys.readouterr() == ("", "")


def test_grant_to_stdout(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["grant", "--issuer-key", world.p("alice.key"), "--holder", world.bob.public_key.hex(), "--cap", "a:b",
            "--budget", "5", "--unit", "u", "--not-before", "0", "--not-after", "10", "--max-depth", "0"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and hopgate.Chain.from_text(out.strip()).links[0].caps == (("a", "b"),)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--holder", "xyz", f"--holder 'xyz': expected an Ed25519 public key: 64 hex digits, bare or as {PUBLIC}:<hex>"),
        ("--holder", "ab" * 31, f"--holder '{'ab' * 31}': expected an Ed25519 public key: 64 hex digits, bare or as {PUBLIC}:<hex>"),
        ("--holder", f"{PUBLIC}:abcd", f"--holder 'abcd': expected an Ed25519 public key: 64 hex digits, bare or as {PUBLIC}:<hex>"),
        ("--session", "abcd", "--session 'abcd': expected 32 hex digits (a session id, 16 bytes)"),
        ("--cap", "payments", "--cap 'payments': expected RESOURCE:ABILITY (for example payments/*:refund)"),
        ("--not-after", str(NOT_BEFORE), f"grant: invalid not_before: not_before ({NOT_BEFORE}) must be < not_after ({NOT_BEFORE})"),
    ],
)  # fmt: skip
def test_grant_input_errors(
    world: World, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    args = {"--holder": world.bob.public_key.hex(), "--cap": "a:b", "--not-before": str(NOT_BEFORE),
            "--not-after": str(NOT_AFTER), "--session": "00" * 16}  # fmt: skip
    args[option] = value
    argv = ["grant", "--issuer-key", world.p("alice.key"), "--budget", "1", "--unit", "u", "--max-depth", "0",
            "-o", world.p("out")]  # fmt: skip
    for k, v in args.items():
        argv += [k, v]
    assert main(argv) == 2
    assert capsys.readouterr() == ("", f"hopgate: error: {message}\n")
    assert not (world.dir / "out").exists()


def test_usage_errors_exit_2_from_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(["grant", "--budget", "-5"], capsys) == (
        "hopgate grant: error: argument --budget: '-5': expected an integer in 0..2**64-1 (u64)"
    )
    assert usage_error(["grant", "--not-before", "2026-11-22T10:00:00"], capsys) == (
        "hopgate grant: error: argument --not-before: '2026-11-22T10:00:00': an ISO-8601 time needs a zone (Z or +HH:MM)"
    )
    with pytest.raises(SystemExit) as exc:
        main(["verify"])
    assert exc.value.code == 2
    assert "the following arguments are required: CHAIN_FILE" in capsys.readouterr().err


def test_delegation_defaults(world: World) -> None:
    chain = hopgate.Chain.from_text(pathlib.Path(world.delegate()).read_text().strip())
    link = chain.links[1]
    assert len(chain) == 2 and link.holder == world.carol.public_key
    assert (link.caps, link.budget, link.unit) == ((("payments/stripe", "refund"),), 2500, "usd-cents")
    assert (link.not_before, link.not_after, link.max_depth) == (NOT_BEFORE, NOT_AFTER, 1)


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["--cap", "payments/*:refund", "--cap", "mail/*:send"], Code.SCOPE_WIDENED),
        (["--budget", "10001"], Code.BUDGET_WIDENED),
        (["--not-after", str(NOT_AFTER + 1)], Code.TIME_WIDENED),
        (["--max-depth", "2"], Code.DEPTH_EXCEEDED),
    ],
)
def test_widened_delegation_is_refused_by_name(
    world: World, capsys: pytest.CaptureFixture[str], extra: list[str], code: Code
) -> None:
    grant = world.grant()
    argv = ["delegate", grant, "--holder-key", world.p("bob.key"), "--to", world.carol.public_key.hex(),
            "-o", world.p("d.chain"), *extra]  # fmt: skip
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"hopgate: error: {grant}: delegation refused: {code.name} (code {int(code)}): ")
    assert err.count(code.name) == 1
    assert not (world.dir / "d.chain").exists()


def test_delegate_by_a_stranger_and_from_a_missing_or_malformed_file(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    grant = world.grant()
    argv = ["delegate", grant, "--holder-key", world.p("carol.key"), "--to", world.carol.public_key.hex()]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"hopgate: error: {grant}: delegation refused: BAD_SIGNATURE (code 3): the signing key is not the chain's current holder\n"
    )
    missing = world.p("missing.chain")
    assert main(["delegate", missing, "--holder-key", world.p("bob.key"), "--to", world.carol.public_key.hex()]) == 2
    assert capsys.readouterr().err == f"hopgate: error: {missing}: No such file or directory\n"
    bad = world.dir / "bad.chain"
    bad.write_bytes(b"HGC1\x00")
    assert main(["delegate", str(bad), "--holder-key", world.p("bob.key"), "--to", world.carol.public_key.hex()]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hopgate: error: {bad}: MALFORMED (code 1): ") and "n" in err and "offset 4" in err


def test_invoke_writes_a_signed_invocation(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    chain_path = world.delegate()
    payload = world.dir / "body.json"
    payload.write_bytes(b'{"order": 42}')
    text = pathlib.Path(world.invoke(chain_path, "inv", NOW, "--payload-file", str(payload),
                                     "--nonce", "ff" * 16)).read_text()  # fmt: skip
    assert text.endswith("\n") and "=" not in text
    inv = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    chain = hopgate.Chain.from_text(pathlib.Path(chain_path).read_text().strip())
    assert inv[:4] == b"HGI1" and inv[8:72] == chain.tail_signature
    assert inv[-64 - 32 : -64] == hopgate.blake3(b'{"order": 42}')
    assert inv[-64 - 32 - 16 : -64 - 32] == b"\xff" * 16
    raw = world.invoke(chain_path, "inv.raw", NOW, "--format", "raw", "--nonce", "ff" * 16, "--payload-file", str(payload))
    assert pathlib.Path(raw).read_bytes() == inv  # Ed25519 is deterministic

    gate = hopgate.Gate([world.alice.public_key])
    decision = gate.check(chain, inv, now=NOW)
    assert decision.code is Code.OK
    assert decision.reservation is not None
    decision.reservation.release()

    argv = ["invoke", chain_path, "--holder-key", world.p("carol.key"), "--ability", "refund",
            "--resource", "files/x", "--cost", "1"]  # fmt: skip
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"hopgate: error: {chain_path}: invocation refused: SCOPE_DENIED (code 13): (resource, ability) is not covered by the last link\n"
    )
    argv[-1] = "2501"
    argv[-3] = "payments/stripe"
    assert main(argv) == 2
    assert "invocation refused: COST_EXCEEDS_GRANT (code 14)" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------


def test_verify_ok_and_a_request_at_a_fresh_gate(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    chain = world.delegate()
    inv = world.invoke(chain)
    assert main(world.verify(chain)) == 0
    assert capsys.readouterr() == (f"{chain}: OK\n", "")
    for _ in range(2):  # each run is a fresh gate: the same invocation is no replay
        assert main(world.verify(chain, "--invocation", inv)) == 0
        assert capsys.readouterr() == (f"{chain}: OK\n", "")
    assert main(world.verify(chain, "--invocation", inv, "--json")) == 0
    assert json.loads(capsys.readouterr().out) == {
        "file": chain, "code": 0, "name": "OK", "reason": "allowed", "invocation": inv,
    }  # fmt: skip


def test_verify_request_failures(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    chain = world.delegate()
    stale = world.invoke(chain, "stale", NOW - 31)
    assert main(world.verify(chain, "--invocation", stale)) == 1
    assert capsys.readouterr().out == (
        f"{chain}: STALE_INVOCATION (code 15): the invocation timestamp is outside the allowed clock skew\n"
    )
    assert main(world.verify(chain, "--invocation", stale, "--skew", "31")) == 0
    capsys.readouterr()

    other = world.delegate("other.chain")  # same links but a fresh nonce: another tail signature
    inv = world.invoke(other)
    assert main(world.verify(chain, "--invocation", inv)) == 1
    assert capsys.readouterr().out == f"{chain}: BROKEN_LINK (code 4): {hopgate.REASONS[Code.BROKEN_LINK]}\n"

    garbage = world.dir / "garbage.inv"
    garbage.write_text("not*base64\n")
    assert main(world.verify(chain, "--invocation", str(garbage))) == 1
    assert capsys.readouterr().out == f"{chain}: MALFORMED (code 1): {hopgate.REASONS[Code.MALFORMED]}\n"

    assert main(world.verify(chain, chain, "--invocation", inv)) == 2
    assert capsys.readouterr() == ("", "hopgate: error: --invocation decides one request: give one chain, not 2\n")


def test_verify_binds_the_payload(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    chain = world.delegate()
    body = world.dir / "body.json"
    body.write_bytes(b'{"order": 42}')
    inv = world.invoke(chain, "inv", NOW, "--payload-file", str(body))
    assert main(world.verify(chain, "--invocation", inv, "--payload", str(body))) == 0
    assert capsys.readouterr() == (f"{chain}: OK\n", "")

    other = world.dir / "other.json"
    other.write_bytes(b'{"order": 43}')
    assert main(world.verify(chain, "--invocation", inv, "--payload", str(other))) == 1
    assert capsys.readouterr() == (f"{chain}: BAD_SIGNATURE (code 3): {hopgate.REASONS[Code.BAD_SIGNATURE]}\n", "")
    empty = world.dir / "empty"
    empty.write_bytes(b"")
    assert main(world.verify(chain, "--invocation", inv, "--payload", str(empty), "--json")) == 1
    assert json.loads(capsys.readouterr().out)["name"] == "BAD_SIGNATURE"
    # Without --payload the body is not checked: the same invocation is allowed.
    assert main(world.verify(chain, "--invocation", inv)) == 0
    capsys.readouterr()

    # From stdin (stdin named twice: test_attack_stdin_read_twice), and from a missing file.
    trusted = ["--trusted", world.alice.public_key.hex(), "--now", str(NOW)]
    done = run_cli("verify", chain, *trusted, "--invocation", inv, "--payload", "-", input=b'{"order": 42}')
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{chain}: OK\n".encode(), b"")
    done = run_cli("verify", chain, *trusted, "--invocation", inv, "--payload", "-", input=b'{"order": 4}')
    assert (done.returncode, done.stdout) == (1, f"{chain}: BAD_SIGNATURE (code 3): {hopgate.REASONS[Code.BAD_SIGNATURE]}\n".encode())
    missing = world.p("missing.json")
    assert main(world.verify(chain, "--invocation", inv, "--payload", missing)) == 2
    assert capsys.readouterr() == ("", f"hopgate: error: {missing}: No such file or directory\n")


def test_verify_require(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    chain = world.delegate()
    inv = world.invoke(chain)  # refund on payments/stripe, cost 1200
    for price in ("0", "1200"):
        assert main(world.verify(chain, "--invocation", inv, "--require", "refund", "payments/stripe", price)) == 0
        assert capsys.readouterr() == (f"{chain}: OK\n", "")
    assert main(world.verify(chain, "--invocation", inv, "--require", "refund", "payments/stripe", "1_201")) == 1
    code = Code.COST_BELOW_PRICE
    assert int(code) == 18
    assert capsys.readouterr() == (f"{chain}: COST_BELOW_PRICE (code 18): {hopgate.REASONS[code]}\n", "")
    for ability, resource in (("refund", "payments/paypal"), ("charge", "payments/stripe")):
        argv = world.verify(chain, "--invocation", inv, "--require", ability, resource, "1", "--json")
        assert main(argv) == 1
        report = json.loads(capsys.readouterr().out)
        assert (report["code"], report["name"]) == (int(Code.SCOPE_DENIED), "SCOPE_DENIED")

    # The price is a u64 and the names UTF-8, checked when the command line is parsed.
    line = usage_error(bad_command(world, "verify", "--require", "refund"), capsys)
    assert line == "hopgate verify: error: argument --require: expected 3 arguments"
    for value in (str(2**64), "-1", "1e3", "1.0"):
        argv = [*bad_command(world, "verify", "--now", str(NOW)), "--require", "refund", "payments/stripe", value]
        line = usage_error(argv, capsys)
        assert line == f"hopgate verify: error: argument --require: '{value}': {U64}"
    line = usage_error([*bad_command(world, "verify", "--now", str(NOW)), "--require", "\udcff", "r", "1"], capsys)
    assert line == "hopgate verify: error: argument --require: '\\xff': not valid UTF-8"


@pytest.mark.parametrize(
    "extra", [["--skew", "60"], ["--payload", "body.json"], ["--require", "refund", "payments/stripe", "1"]]
)
def test_request_options_without_an_invocation_are_refused(
    world: World, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    grant = world.grant()
    assert main(world.verify(grant, *extra)) == 2
    assert capsys.readouterr() == ("", f"hopgate: error: {extra[0]} applies to --invocation only\n")


def test_tampered_chain_files(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    raw = pathlib.Path(world.grant("g.raw", "--format", "raw"))
    data = bytearray(raw.read_bytes())
    flipped = world.dir / "flipped.raw"
    data[-1] ^= 0x01  # the last byte of the grant's signature
    flipped.write_bytes(bytes(data))
    assert main(world.verify(str(flipped))) == 1
    assert capsys.readouterr().out == f"{flipped}: BAD_SIGNATURE (code 3): a link or invocation signature is invalid\n"

    budget = bytearray(raw.read_bytes())
    offset = 4 + 1 + 4 + 1 + 32 + 16 + 32 + 8 + 8 + 1  # magic, n, body_len, kind, issuer, session, holder, times, depth
    assert int.from_bytes(budget[offset : offset + 8], "little") == 10000
    budget[offset + 1] ^= 0x80
    widened = world.dir / "budget.raw"
    widened.write_bytes(bytes(budget))
    assert main(world.verify(str(widened))) == 1
    assert capsys.readouterr().out.startswith(f"{widened}: BAD_SIGNATURE (code 3): ")

    truncated = world.dir / "truncated.raw"
    truncated.write_bytes(bytes(data[:-1]))
    assert main(world.verify(str(truncated), "--json")) == 1
    report = json.loads(capsys.readouterr().out)
    sig_offset = len(data) - 64
    assert (report["file"], report["code"], report["name"], report["field"], report["offset"]) == (
        str(truncated), 1, "MALFORMED", "sig", sig_offset,
    )  # fmt: skip
    assert f"offset {sig_offset}" in report["reason"]

    text = pathlib.Path(world.grant()).read_text().strip()
    bad_text = world.dir / "bad.chain"
    bad_text.write_text(text[:10] + "*" + text[11:] + "\n")
    assert main(world.verify(str(bad_text))) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{bad_text}: MALFORMED (code 1): ") and "offset 10" in out

    magic = world.dir / "magic.raw"
    magic.write_bytes(b"\xffGC1" + bytes(data[4:]))
    assert main(world.verify(str(magic), "--json")) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["code"], report["field"], report["offset"]) == (1, "magic", 0)

    empty = world.dir / "empty"
    empty.write_bytes(b"")
    assert main(world.verify(str(empty))) == 1
    assert capsys.readouterr().out == f"{empty}: MALFORMED (code 1): malformed magic at offset 0: empty input\n"


def test_verify_decision_codes_by_name(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    chain = world.delegate()
    c = hopgate.Chain.from_text(pathlib.Path(chain).read_text().strip())

    cases = [
        (["--now", str(NOT_AFTER)], Code.EXPIRED, 10),
        (["--now", str(NOT_BEFORE - 1)], Code.NOT_YET_VALID, 9),
        (["--session", "01" * 16], Code.SESSION_MISMATCH, 11),
        (["--revoked", "00" * 32, "--revoked", c.revocation_ids[1].hex()], Code.REVOKED, 12),
    ]
    for extra, code, value in cases:
        argv = ["verify", chain, "--trusted", world.alice.public_key.hex(), "--now", str(NOW), *extra]
        assert main(argv) == 1 and int(code) == value
        assert capsys.readouterr() == (f"{chain}: {code.name} (code {value}): {hopgate.REASONS[code]}\n", "")
        assert main([*argv, "--json"]) == 1
        report = json.loads(capsys.readouterr().out)
        assert (report["code"], report["name"], report["reason"]) == (value, code.name, hopgate.REASONS[code])


def test_verify_untrusted_issuer_exits_1_and_a_usage_error_2(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """UNTRUSTED_ISSUER is code 2, and a usage error exits 2: the exit status no longer
    carries the code, so the two cannot be told apart only by what is on stdout."""
    chain = world.delegate()
    untrusted = ["verify", chain, "--trusted", world.bob.public_key.hex(), "--now", str(NOW)]
    assert int(Code.UNTRUSTED_ISSUER) == 2
    assert main(untrusted) == 1
    assert capsys.readouterr() == (
        f"{chain}: UNTRUSTED_ISSUER (code 2): link 0 is not signed by a trusted issuer\n", ""
    )
    done = run_cli(*untrusted, "--json")
    assert (done.returncode, done.stderr) == (1, b"")
    assert json.loads(done.stdout) == {
        "file": chain, "code": 2, "name": "UNTRUSTED_ISSUER", "reason": "link 0 is not signed by a trusted issuer",
    }  # fmt: skip
    # Usage and read errors: exit 2 and nothing on stdout, from argparse or from the command.
    for argv in (
        [*untrusted, "--now", "yesterday"],
        [*untrusted, "--no-such-option"],
        ["verify", chain, "--trusted", "12"],
        ["verify", world.p("missing.chain"), "--trusted", world.alice.public_key.hex()],
    ):
        done = run_cli(*argv)
        assert (done.returncode, done.stdout) == (2, b""), argv
        assert b"error: " in done.stderr and b"Traceback" not in done.stderr


def test_several_chains_json_and_exit_1_for_any_refusal(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    good = world.delegate()
    raw = pathlib.Path(world.grant("g.raw", "--format", "raw")).read_bytes()
    bad = world.dir / "bad.raw"
    bad.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    short = world.dir / "short.raw"
    short.write_bytes(raw[:30])
    assert main(world.verify(good, str(bad), str(short), good, "--json")) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["file"], r["code"], r["name"]) for r in lines] == [
        (good, 0, "OK"), (str(bad), 3, "BAD_SIGNATURE"), (str(short), 1, "MALFORMED"), (good, 0, "OK"),
    ]  # fmt: skip
    assert lines[0] == {"file": good, "code": 0, "name": "OK", "reason": "allowed"}
    assert lines[2]["field"] == "body" and lines[2]["offset"] == 9
    assert main(world.verify(good, str(short), str(bad))) == 1
    assert capsys.readouterr().out == (
        f"{good}: OK\n{short}: MALFORMED (code 1): {lines[2]['reason']}\n"
        f"{bad}: BAD_SIGNATURE (code 3): {hopgate.REASONS[Code.BAD_SIGNATURE]}\n"
    )
    assert main(world.verify(good, good)) == 0
    assert capsys.readouterr().out == f"{good}: OK\n{good}: OK\n"


def test_verify_many_lines_of_one_file_and_trusted_file(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    a = pathlib.Path(world.grant("a.chain")).read_text()
    b = pathlib.Path(world.delegate("b.chain")).read_text()
    both = world.dir / "both.chains"
    both.write_text(a + "\n" + b)
    trusted = world.dir / "trusted"
    trusted.write_text(f"# issuers\n{world.bob.public_key.hex()}\n\n{PUBLIC}:{world.alice.public_key.hex()}  # alice\n")
    assert main(["verify", str(both), "--trusted-file", str(trusted), "--now", str(NOW)]) == 0
    assert capsys.readouterr().out == f"{both}:1: OK\n{both}:3: OK\n"

    trusted.write_text("nothex\n")
    assert main(["verify", str(both), "--trusted-file", str(trusted)]) == 2
    assert capsys.readouterr() == ("", f"hopgate: error: --trusted-file {trusted}:1: 'nothex': expected an Ed25519 public key: 64 hex digits, bare or as {PUBLIC}:<hex>\n")
    assert main(["verify", str(both)]) == 2
    assert capsys.readouterr() == ("", "hopgate: error: no trusted issuer: pass --trusted PUBHEX or --trusted-file FILE\n")
    assert main(["verify", str(both), "--trusted", "12"]) == 2
    assert capsys.readouterr().err == f"hopgate: error: --trusted '12': expected an Ed25519 public key: 64 hex digits, bare or as {PUBLIC}:<hex>\n"
    missing = world.p("missing.chain")
    assert main(world.verify(str(both), missing)) == 2
    assert capsys.readouterr() == ("", f"hopgate: error: {missing}: No such file or directory\n")
    assert main(world.verify("-", "-")) == 2
    assert capsys.readouterr().err == "hopgate: error: stdin (-) can be read only once: CHAIN_FILE and CHAIN_FILE both name it\n"


def test_verify_from_stdin(world: World) -> None:
    a = pathlib.Path(world.grant("a.chain")).read_text()
    b = pathlib.Path(world.delegate("b.chain")).read_text()
    trusted = ["--trusted", world.alice.public_key.hex(), "--now", str(NOW)]
    done = run_cli("verify", "-", *trusted, input=(a + b).encode())
    assert (done.returncode, done.stdout, done.stderr) == (0, b"<stdin>:1: OK\n<stdin>:2: OK\n", b"")
    done = run_cli("verify", "-", *trusted, "--now", str(NOT_AFTER), input=b.encode())
    assert (done.returncode, done.stdout) == (1, b"<stdin>: EXPIRED (code 10): a link has expired\n")
    raw = bytes(hopgate.Chain.from_text(b.strip()))
    done = run_cli("verify", "-", *trusted, "--json", input=raw)
    assert done.returncode == 0
    assert json.loads(done.stdout) == {"file": "<stdin>", "code": 0, "name": "OK", "reason": "allowed"}
    done = run_cli("delegate", "-", "--holder-key", world.p("carol.key"), "--to", world.bob.public_key.hex(),
                   "--max-depth", "0", input=b.encode())  # fmt: skip
    assert done.returncode == 0
    assert len(hopgate.Chain.from_text(done.stdout.decode().strip())) == 3


def test_verify_progress_bar(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    text = pathlib.Path(world.grant()).read_text()
    many = world.dir / "many.chains"
    many.write_text(text * 5000)
    assert main(world.verify(str(many), "--progress")) == 0
    out, err = capsys.readouterr()
    assert out.count(": OK\n") == 5000 and out.splitlines()[4999] == f"{many}:5000: OK"
    assert err.startswith("\rverifying 5000 chains [") and err.endswith("chains/s\n")
    assert "[##############################] 100.0%" in err
    assert main(world.verify(str(many))) == 0  # stderr is no terminal here: no bar
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------
# Times, bench, audit still there
# ---------------------------------------------------------------------------


def test_parse_time() -> None:
    assert parse_time("1750000000") == 1_750_000_000
    assert parse_time("now", now=NOW) == NOW
    assert parse_time("+3600", now=NOW) == NOW + 3600
    assert parse_time("-60", now=NOW) == NOW - 60
    assert parse_time("+90m", now=NOW) == NOW + 5400
    assert parse_time("+2h", now=NOW) == NOW + 7200
    assert parse_time("+7d", now=NOW) == NOW + 7 * 86400
    assert parse_time("2025-06-15T15:06:40Z") == 1_750_000_000
    assert parse_time("2025-06-15T17:06:40+02:00") == 1_750_000_000
    for bad in ("yesterday", "2025-06-15T15:06:40", "+1w", "1.5", ""):
        with pytest.raises(ValueError):
            parse_time(bad, now=NOW)
    with pytest.raises(ValueError, match="out of range"):
        parse_time("-60", now=10)
    with pytest.raises(ValueError, match="out of range"):
        parse_time(str(2**64))


def test_bench_quick(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--quick", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == ""
    assert lines[0].startswith(f"# hopgate bench ({hopgate.BACKEND if hopgate.BACKEND == 'reference' else 'native, hash backend'}")
    assert lines[1].split() == ["bench", "case", "µs/item", "items/s"]
    rows = [line.split()[0] for line in lines[2:]]
    assert rows == ["verify_batch", "verify_chains", "gate", "gate", "blake3_many", "sha256_many"]
    for line in lines[2:]:
        per, rate = float(line.split()[-2]), float(line.split()[-1].replace(",", ""))
        assert per > 0 and rate > 0


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    expected = f"hopgate {importlib.metadata.version('hopgate')} (backend {hopgate.BACKEND})\n"
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr() == (expected, "")
    done = run_cli("--version")
    assert (done.returncode, done.stdout.decode(), done.stderr) == (0, expected, b"")


# ---------------------------------------------------------------------------
# The manual: --help, the module docstring and the README say the same, and their examples run
# ---------------------------------------------------------------------------

COMMANDS = [["keygen"], ["grant"], ["delegate"], ["invoke"], ["verify"], ["bench"], ["audit", "verify"],
            ["audit", "spending"]]  # fmt: skip


def help_text(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0 and err == ""
    return out


def shell_commands(text: str, indent: str) -> list[str]:
    """The ``hopgate`` command lines of ``text`` that start with ``indent``, each with the
    lines that its trailing backslashes continue."""
    commands: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith(indent + "hopgate "):
            command = line
            while command.endswith("\\"):
                command += "\n" + next(lines)
            commands.append(textwrap.dedent(command))
    return commands


def readme_command_line() -> str:
    """The ``sh`` block of README's "Command line" section."""
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = readme.partition("\n## Command line\n")[2].partition("\n## ")[0]
    block = section.partition("```sh\n")[2].partition("```")[0]
    assert block
    return block


def test_help_is_a_manual(capsys: pytest.CaptureFixture[str]) -> None:
    import hopgate.cli

    top = help_text(capsys)
    assert hopgate.cli.__doc__ is not None
    summary, _, manual = hopgate.cli.__doc__.partition("\n\n")
    assert top.startswith("usage: hopgate [-h] [--version] COMMAND ...\n\n" + summary + "\n")
    assert top.rstrip().endswith(manual.rstrip())  # the docstring is the epilog: one manual
    walkthrough = shell_commands(top, "  ")
    for command in COMMANDS:
        assert any(line.startswith(f"hopgate {' '.join(command)} ") for line in walkthrough), command
    assert "hopgate --version" in walkthrough
    assert walkthrough == shell_commands(readme_command_line(), "")  # the README shows the same
    statuses = top.partition("\nExit status:\n")[2]
    assert [line.split()[0] for line in statuses.splitlines() if line[:3].strip()] == ["0", "1", "2", "130", "141"]

    for command in COMMANDS:
        page = help_text(capsys, *command)
        examples = page.partition("\nexample")[2].partition("\n\n")[0]
        assert examples.startswith(("s:\n", ":\n")), command
        bare = [line.partition("  #")[0] for line in walkthrough]
        for line in shell_commands(examples, "  "):
            assert line.partition("  #")[0] in bare, (command, line)  # so each runs in test_the_manuals_examples_run
        statuses = page.partition("\nexit status:\n")[2].partition("\n\n")[0]
        numbers = [line.split()[0] for line in statuses.splitlines() if line[:3].strip()]
        assert numbers == (["0", "1", "2", "130"] if command[0] in ("verify", "audit") else ["0", "2", "130"]), command
    codes = help_text(capsys, "verify").partition("\ndecision codes (docs/SPEC.md §4):\n")[2]
    for code in Code:
        assert f"  {int(code):>2}  {code.name} " in codes


def test_the_manuals_examples_run(tmp_path: pathlib.Path) -> None:
    """Every command of the manual's examples, in order, in an empty directory, with
    ``hopgate`` on PATH; the audit log is what a gate writes for the request they sign."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "hopgate"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m hopgate "$@"\n')
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    (work / "body.json").write_bytes(b'{"q": "hopgate"}')
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for command in shell_commands(readme_command_line(), ""):
        if command.startswith("hopgate audit") and not (work / "gate.log").exists():
            key = bytes.fromhex((work / "audit.key").read_text().strip().partition(":")[2])
            issuer = bytes.fromhex((work / "alice.pub").read_text().strip().partition(":")[2])
            chain = hopgate.Chain.from_text((work / "worker.txt").read_text().strip())
            invocation = hopgate.from_text((work / "call.txt").read_text().strip())
            with hopgate.AuditLog(str(work / "gate.log"), key=key) as log:
                decision = hopgate.Gate([issuer], audit=log).check(chain, invocation, payload=b'{"q": "hopgate"}')
                assert decision.code is Code.OK and decision.reservation is not None
                decision.reservation.commit(2)
        done = subprocess.run(["sh", "-c", command], cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        if command.startswith("hopgate verify"):
            assert done.stdout.endswith("OK\n") and "code" not in done.stdout
        if command.startswith("hopgate audit spending"):  # the request's 2, on both links
            assert done.stdout.startswith("gate.log: 2 records, 2 accounts with settlements\n")
            assert [line.split()[1:3] for line in done.stdout.splitlines()[2:]] == [["2", "0"], ["2", "0"]]


# ---------------------------------------------------------------------------
# Attacks: a key file taken for another kind, a number out of range, odd bytes.
# Each is a usage error (exit status 2) naming the option or file, never a traceback.
# ---------------------------------------------------------------------------


def public_key_file(world: World, name: str, key: hopgate.SigningKey) -> str:
    """A public-key file as ``hopgate keygen -o K --public > NAME`` writes it (mode 0600, so
    that no file-mode warning can stand in for the refusal)."""
    path = world.dir / name
    path.write_text(f"{PUBLIC}:{key.public_key.hex()}\n")
    path.chmod(0o600)
    return str(path)


def test_attack_verify_skew_out_of_range(world: World) -> None:
    chain = world.delegate()
    inv = world.invoke(chain)
    base = ["verify", chain, "--trusted", world.alice.public_key.hex(), "--now", str(NOW), "--invocation", inv]
    for skew in (str(2**63), str(2**64), str(2**64 - 1), "-1", "2**63", "1e3"):
        done = run_cli(*base, "--skew", skew)
        assert (done.returncode, done.stdout) == (2, b""), skew
        assert b"Traceback" not in done.stderr
        assert done.stderr.decode().splitlines()[-1] == (
            f"hopgate verify: error: argument --skew: '{skew}': expected an integer in 0..2**63-1 "
            "(seconds; twice the skew is the replay window, a u64)"
        )
    done = run_cli(*base, "--skew", str(2**63 - 1))  # the bound itself: the gate takes it
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{chain}: OK\n".encode(), b"")


def test_attack_public_key_file_as_issuer_key(world: World) -> None:
    made = run_cli("keygen", "-o", world.p("agent.key"), "--public")
    assert made.returncode == 0
    pub = world.dir / "agent.pub"
    pub.write_bytes(made.stdout)  # hopgate keygen -o agent.key --public > agent.pub
    for mode in (0o644, 0o600):
        pub.chmod(mode)
        done = run_cli(
            "grant", "--issuer-key", str(pub), "--holder", world.bob.public_key.hex(), "--cap", "a:b",
            "--budget", "1", "--unit", "u", "--not-before", "0", "--not-after", "10", "--max-depth", "0",
            "-o", world.p("g.chain"),
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (2, b"")
        assert done.stderr.decode() == (
            f"hopgate: error: --issuer-key {pub}: holds a public key ({PUBLIC}), not a signing key\n"
        )
        assert not (world.dir / "g.chain").exists()


def test_attack_public_key_file_as_holder_key(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    grant = world.grant()
    chain = world.delegate()
    bob_pub = public_key_file(world, "bob.pub", world.bob)
    carol_pub = public_key_file(world, "carol.pub", world.carol)
    attempts = [
        (["delegate", grant, "--holder-key", bob_pub, "--to", world.carol.public_key.hex()], "--holder-key", bob_pub),
        (["invoke", chain, "--holder-key", carol_pub, "--ability", "refund", "--resource", "payments/stripe",
          "--cost", "1"], "--holder-key", carol_pub),
        (["keygen", "--public-of", carol_pub], "--public-of", carol_pub),
    ]  # fmt: skip
    for argv, option, path in attempts:
        assert main(argv) == 2
        assert capsys.readouterr() == (
            "", f"hopgate: error: {option} {path}: holds a public key ({PUBLIC}), not a signing key\n"
        )


def test_attack_public_key_in_the_environment(world: World) -> None:
    base = ["grant", "--holder", world.bob.public_key.hex(), "--cap", "a:b", "--budget", "1", "--unit", "u",
            "--not-before", "0", "--not-after", "10", "--max-depth", "0"]  # fmt: skip
    done = run_cli(*base, env={"HOPGATE_ISSUER_KEY": f"{PUBLIC}:{world.bob.public_key.hex()}"})
    assert (done.returncode, done.stdout) == (2, b"")
    assert done.stderr == f"hopgate: error: $HOPGATE_ISSUER_KEY: holds a public key ({PUBLIC}), not a signing key\n".encode()
    done = run_cli(*base, env={"HOPGATE_ISSUER_KEY": world.alice.seed().hex()})
    assert (done.returncode, done.stdout) == (2, b"")
    assert done.stderr == (
        "hopgate: error: $HOPGATE_ISSUER_KEY: an unlabelled key (64 hex digits) could be a signing key or a public "
        f"key, so it is refused; if it holds a signing key (secret seed), set it to {SIGNING}:<its 64 hex digits>\n"
    ).encode()
    odd = os.fsdecode(b"\xff" * 64)  # environment bytes that are not UTF-8
    done = run_cli(*base, env={"HOPGATE_ISSUER_KEY": odd})
    assert (done.returncode, done.stdout) == (2, b"") and b"Traceback" not in done.stderr
    assert done.stderr == f"hopgate: error: $HOPGATE_ISSUER_KEY: expected one line {SIGNING}:<64 hex digits>\n".encode()


FIX = "label it: "


def test_attack_unlabelled_hex_key_file_is_refused_until_labelled(world: World) -> None:
    old = world.dir / "old key"  # a space: the command in the message quotes the name
    old.write_text(world.alice.seed().hex() + "\n")  # what keygen wrote before key files had labels
    old.chmod(0o600)
    done = run_cli("keygen", "--public-of", str(old))
    assert (done.returncode, done.stdout) == (2, b"")
    fix = f"printf '{SIGNING}:%s\\n' \"$(tr -d ' \\t\\r\\n' < '{old}')\" > '{old}'"
    assert done.stderr.decode() == (
        f"hopgate: error: --public-of {old}: an unlabelled key (64 hex digits) could be a signing key or a "
        f"public key, so it is refused; if it holds a signing key (secret seed), {FIX}{fix}\n"
    )
    subprocess.run(["sh", "-c", fix], check=True)  # the command the message gives, in POSIX sh
    assert old.read_text() == f"{SIGNING}:{world.alice.seed().hex()}\n"
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    done = run_cli("keygen", "--public-of", str(old))
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{PUBLIC}:{world.alice.public_key.hex()}\n".encode(), b"")


def test_attack_unlabelled_raw_key_file_is_refused_until_labelled(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = world.dir / "raw.key"
    raw.write_bytes(world.bob.seed())  # 32 bytes: a seed or a public key, nobody can tell
    raw.chmod(0o600)
    grant = world.grant()
    argv = ["delegate", grant, "--holder-key", str(raw), "--to", world.carol.public_key.hex(), "-o", world.p("d")]
    assert main(argv) == 2
    fix = f"printf '{SIGNING}:%s\\n' \"$(od -An -v -tx1 {raw} | tr -d ' \\n')\" > {raw}"
    assert capsys.readouterr() == ("", (
        f"hopgate: error: --holder-key {raw}: an unlabelled key (32 raw bytes) could be a signing key or a public "
        f"key, so it is refused; if it holds a signing key (secret seed), {FIX}{fix}\n"
    ))  # fmt: skip
    assert not (world.dir / "d").exists()
    subprocess.run(["sh", "-c", fix], check=True)
    assert raw.read_text() == f"{SIGNING}:{world.bob.seed().hex()}\n"
    assert main(argv) == 0
    assert hopgate.Chain.from_text(pathlib.Path(world.p("d")).read_text().strip()).holder == world.carol.public_key


def test_attack_audit_key_file_as_signing_key(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    audit = world.p("audit.key")
    assert main(["keygen", "--audit", "-o", audit]) == 0
    argv = ["grant", "--issuer-key", audit, "--holder", world.bob.public_key.hex(), "--cap", "a:b", "--budget", "1",
            "--unit", "u", "--not-before", "0", "--not-after", "10", "--max-depth", "0"]  # fmt: skip
    assert main(argv) == 2
    assert capsys.readouterr() == ("", f"hopgate: error: --issuer-key {audit}: holds an audit key ({AUDIT}), not a signing key\n")
    assert main(["keygen", "--public-of", audit]) == 2
    assert capsys.readouterr().err == f"hopgate: error: --public-of {audit}: holds an audit key ({AUDIT}), not a signing key\n"


def test_attack_signing_or_public_key_file_as_audit_key(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    key = os.urandom(32)
    log = world.p("gate.log")
    with hopgate.AuditLog(log, key=key):
        pass
    pub = public_key_file(world, "alice.pub", world.alice)
    for path, label, kind in ((world.p("alice.key"), SIGNING, "a signing key"), (pub, PUBLIC, "a public key")):
        assert main(["audit", "verify", log, "--key-file", path]) == 2
        assert capsys.readouterr() == ("", f"hopgate: error: --key-file {path}: holds {kind} ({label}), not an audit key\n")
    # Unlabelled audit keys, as applications of AuditLog write them, still verify.
    for name, data in (("raw", key), ("hex", (key.hex() + "\n").encode()), ("labelled", f"{AUDIT}:{key.hex()}".encode())):
        key_file = world.dir / name
        key_file.write_bytes(data)
        key_file.chmod(0o600)
        assert main(["audit", "verify", log, "--key-file", str(key_file)]) == 0, name
        assert capsys.readouterr().out.startswith(f"OK: {log}: 0 records")


def test_attack_signing_key_where_a_public_key_is_expected(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    secret = world.alice.seed().hex()
    grant = world.grant()
    trusted = world.dir / "trusted"
    trusted.write_text((world.dir / "alice.key").read_text())  # a signing-key file as the trusted list
    attempts = [
        (["grant", "--issuer-key", world.p("alice.key"), "--holder", f"{SIGNING}:{secret}", "--cap", "a:b",
          "--budget", "1", "--unit", "u", "--not-before", "0", "--not-after", "10", "--max-depth", "0"], "--holder"),
        (["delegate", grant, "--holder-key", world.p("bob.key"), "--to", f"{SIGNING}:{secret}"], "--to"),
        (["verify", grant, "--trusted", f"{SIGNING}:{secret}"], "--trusted"),
        (["verify", grant, "--trusted", f"{AUDIT}:{secret}"], "--trusted"),
        (["verify", grant, "--trusted-file", str(trusted)], f"--trusted-file {trusted}:1:"),
    ]  # fmt: skip
    for argv, option in attempts:
        assert main(argv) == 2
        out, err = capsys.readouterr()
        label = AUDIT if f"{AUDIT}:" in " ".join(argv) else SIGNING
        kind = "an audit key" if label == AUDIT else "a signing key"
        assert (out, err) == ("", (
            f"hopgate: error: {option}: that is {kind} ({label}), a secret, not a public key "
            "(hopgate keygen --public-of FILE prints the public key of a signing key)\n"
        ))  # fmt: skip
        assert secret not in err


def test_attack_oversized_or_unreadable_key_file(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    big = world.dir / "big.key"
    big.write_text((world.dir / "alice.key").read_text() + " " * 5000)
    big.chmod(0o600)
    assert main(["keygen", "--public-of", str(big)]) == 2
    assert capsys.readouterr().err == f"hopgate: error: --public-of {big}: more than 4096 bytes: not a key file\n"
    assert main(["keygen", "--public-of", str(world.dir)]) == 2
    assert capsys.readouterr().err == f"hopgate: error: --public-of {world.dir}: Is a directory\n"
    assert main(["keygen", "-o", str(world.dir), "--force"]) == 2
    assert capsys.readouterr() == ("", f"hopgate: error: -o {world.dir}: is a directory\n")


def bad_command(world: World, command: str, option: str, value: str) -> list[str]:
    """A command line that is valid but for ``option value``."""
    chain = world.p("d.chain") if (world.dir / "d.chain").exists() else world.delegate()
    inv = world.p("inv") if (world.dir / "inv").exists() else world.invoke(chain)
    base = {
        "grant": ["grant", "--issuer-key", world.p("alice.key"), "--holder", world.bob.public_key.hex(), "--cap",
                  "a:b", "--budget", "1", "--unit", "u", "--not-before", "0", "--not-after", "10", "--max-depth", "0"],
        "delegate": ["delegate", chain, "--holder-key", world.p("carol.key"), "--to", world.bob.public_key.hex()],
        "invoke": ["invoke", chain, "--holder-key", world.p("carol.key"), "--ability", "refund", "--resource",
                   "payments/stripe", "--cost", "1"],
        "verify": ["verify", chain, "--trusted", world.alice.public_key.hex(), "--invocation", inv],
    }[command]  # fmt: skip
    if option in base:
        i = base.index(option)
        return [*base[:i], option, value, *base[i + 2 :]]
    return [*base, option, value]


U64 = "expected an integer in 0..2**64-1 (u64)"
U8 = "expected an integer in 0..255 (u8)"
SKEW = "expected an integer in 0..2**63-1 (seconds; twice the skew is the replay window, a u64)"
TIME = "out of range: unix seconds in 0..2**64-1 (u64)"
NUMERIC = [
    ("grant", "--budget", U64, 2**64 - 1), ("grant", "--max-depth", U8, 255),
    ("grant", "--not-before", TIME, 2**64 - 1), ("grant", "--not-after", TIME, 2**64 - 1),
    ("delegate", "--budget", U64, 2**64 - 1), ("delegate", "--max-depth", U8, 255),
    ("delegate", "--not-before", TIME, 2**64 - 1), ("delegate", "--not-after", TIME, 2**64 - 1),
    ("invoke", "--cost", U64, 2**64 - 1), ("invoke", "--timestamp", TIME, 2**64 - 1),
    ("verify", "--now", TIME, 2**64 - 1), ("verify", "--skew", SKEW, 2**63 - 1),
]  # fmt: skip


@pytest.mark.parametrize(("command", "option", "message", "bound"), NUMERIC)
def test_attack_numeric_option_out_of_range(
    world: World, capsys: pytest.CaptureFixture[str], command: str, option: str, message: str, bound: int
) -> None:
    # Times read -N as N seconds ago, so -1 is a valid time; before 1970 is their -1.
    below = f"-{NOW + 10**9}" if message == TIME else "-1"
    above = [str(bound + 1), str(2**64), "9" * 5000]
    if message == TIME:
        above += [f"+{2**64}", f"+{bound}d"]
    for value in (below, *above):
        line = usage_error(bad_command(world, command, option, value), capsys)
        assert line == f"hopgate {command}: error: argument {option}: '{value}': {message}", value
    dest = option[2:].replace("-", "_")
    if message == TIME:  # -1 is one second ago, the relative form the help documents
        before = int(time.time())
        value = getattr(build_parser().parse_args(bad_command(world, command, option, "-1")), dest)
        assert before - 1 <= value <= int(time.time()) - 1
    # The bound itself is taken by the parser.
    assert getattr(build_parser().parse_args(bad_command(world, command, option, str(bound))), dest) == bound


def test_numeric_bounds_are_what_the_library_takes(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    top = str(2**64 - 1)
    argv = ["grant", "--issuer-key", world.p("alice.key"), "--holder", world.bob.public_key.hex(), "--cap", "a:*",
            "--budget", top, "--unit", "u", "--not-before", "0", "--not-after", top, "--max-depth", "255",
            "-o", world.p("top.chain")]  # fmt: skip
    assert main(argv) == 0
    link = hopgate.Chain.from_text(pathlib.Path(world.p("top.chain")).read_text().strip()).links[0]
    assert (link.budget, link.not_after, link.max_depth) == (2**64 - 1, 2**64 - 1, 255)
    argv = ["invoke", world.p("top.chain"), "--holder-key", world.p("bob.key"), "--ability", "x", "--resource", "a",
            "--cost", top, "--timestamp", top, "-o", world.p("top.inv")]  # fmt: skip
    assert main(argv) == 0
    assert main(["verify", world.p("top.chain"), "--trusted", world.alice.public_key.hex(), "--now", str(2**64 - 2),
                 "--invocation", world.p("top.inv"), "--skew", str(2**63 - 1)]) == 0  # fmt: skip
    assert capsys.readouterr() == (f"{world.p('top.chain')}: OK\n", "")


@pytest.mark.parametrize("value", ["1e3", "0x10", "+5", " 5", "5 ", "1__0", "_1", "1_", "١٢", "²", "", "1.0", "-0"])
def test_attack_integer_spellings(world: World, capsys: pytest.CaptureFixture[str], value: str) -> None:
    line = usage_error(bad_command(world, "grant", "--budget", value), capsys)
    assert line == f"hopgate grant: error: argument --budget: {value!r}: {U64}"


def test_integer_underscores_and_leading_zeros(world: World) -> None:
    args = build_parser().parse_args(bad_command(world, "grant", "--budget", "10_000"))
    assert args.budget == 10_000
    args = build_parser().parse_args(bad_command(world, "grant", "--max-depth", "0" * 50 + "255"))
    assert args.max_depth == 255


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("²", "expected unix seconds, ISO-8601 with a zone (2026-11-22T10:00:00Z), now, or +SECONDS"),
        ("+١٢", "expected unix seconds, ISO-8601 with a zone (2026-11-22T10:00:00Z), now, or +SECONDS"),
        ("٢٠٢٦-11-22T10:00:00Z", "expected unix seconds, ISO-8601 with a zone (2026-11-22T10:00:00Z), now, or +SECONDS"),
        ("1969-12-31T23:59:59Z", TIME),
        ("1970-01-01T00:00:00+01:00", TIME),
        ("+" + "9" * 5000, TIME),
        ("-" + "9" * 5000, TIME),
        ("2026-11-22T10:00:00", "an ISO-8601 time needs a zone (Z or +HH:MM)"),
    ],
)
def test_attack_time_spellings(world: World, capsys: pytest.CaptureFixture[str], value: str, reason: str) -> None:
    line = usage_error(bad_command(world, "grant", "--not-before", value), capsys)
    assert line == f"hopgate grant: error: argument --not-before: {value!r}: {reason}"


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("grant", "--unit", "usd\udcff"),
        ("grant", "--cap", "a:\udcff"),
        ("delegate", "--cap", "\udcff:b"),
        ("invoke", "--ability", "\udcffx"),
        ("invoke", "--resource", "payments/\udcff"),
    ],
)
def test_attack_arguments_that_are_not_utf8(
    world: World, capsys: pytest.CaptureFixture[str], command: str, option: str, value: str
) -> None:
    """Bytes in argv that do not decode reach Python as lone surrogates; they are refused by option."""
    line = usage_error(bad_command(world, command, option, value), capsys)
    shown = os.fsencode(value).decode("utf-8", "backslashreplace")
    assert line == f"hopgate {command}: error: argument {option}: '{shown}': not valid UTF-8"


def test_attack_file_name_that_is_not_utf8(world: World) -> None:
    odd = world.dir / os.fsdecode(b"g\xff.chain")
    odd.write_text(pathlib.Path(world.grant()).read_text())
    strict = {"PYTHONIOENCODING": "utf-8"}  # stdout refuses surrogates, as under most UTF-8 locales
    done = run_cli("verify", str(odd), "--trusted", world.alice.public_key.hex(), "--now", str(NOW), env=strict)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{world.dir}/g\\xff.chain: OK\n".encode(), b"")


def test_attack_stdin_read_twice(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    grant = world.grant()
    attempts = [
        (["delegate", "-", "--holder-key", world.p("bob.key"), "--to", world.carol.public_key.hex(),
          "--meta-file", "-"], "CHAIN_FILE and --meta-file both"),
        (["invoke", "-", "--holder-key", world.p("bob.key"), "--ability", "refund", "--resource", "payments/x",
          "--cost", "1", "--payload-file", "-"], "CHAIN_FILE and --payload-file both"),
        (["verify", "-", "--trusted", world.alice.public_key.hex(), "--invocation", "-"],
         "CHAIN_FILE and --invocation both"),
        (["verify", grant, "-", "-", "--trusted", world.alice.public_key.hex()], "CHAIN_FILE and CHAIN_FILE both"),
        (["verify", grant, "--trusted", world.alice.public_key.hex(), "--invocation", "-", "--payload", "-"],
         "--invocation and --payload both"),
        (["verify", "-", "--trusted", world.alice.public_key.hex(), "--invocation", "-", "--payload", "-"],
         "CHAIN_FILE and --invocation and --payload all"),
    ]  # fmt: skip
    for argv, named in attempts:
        assert main(argv) == 2
        assert capsys.readouterr() == ("", f"hopgate: error: stdin (-) can be read only once: {named} name it\n")
