"""The ``hopgate`` command line: keygen, grant, delegate, invoke, verify, bench.

Most cases call ``hopgate.cli.main`` in-process (fast, with capsys); the round trip,
stdin and the entry point itself run ``python -m hopgate`` in a subprocess.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import pathlib
import stat
import subprocess
import sys
import time
from typing import Optional

import pytest

import hopgate
from hopgate import Code
from hopgate.cli import main, parse_time

NOW = 1_750_000_000
NOT_BEFORE = NOW - 1000
NOT_AFTER = NOW + 100_000


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
    path.write_text(key.seed().hex() + "\n")
    path.chmod(0o600)
    return key


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
    seed = bytes.fromhex((tmp_path / "alice.key").read_text())
    assert hopgate.SigningKey.from_seed(seed).public_key.hex() == alice
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
    assert len(c) == 2 and c.issuer.hex() == alice and c.holder.hex() == carol
    assert c.links[1].budget == 10 and c.links[1].max_depth == 0 and c.links[1].caps == (("tools/*", "call"),)
    assert 3600 - 5 <= c.links[0].not_after - int(time.time()) <= 3600


# ---------------------------------------------------------------------------
# keygen
# ---------------------------------------------------------------------------


def test_keygen_writes_a_0600_seed_and_refuses_to_overwrite(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "k.key"
    assert main(["keygen", "-o", str(path)]) == 0
    out, err = capsys.readouterr()
    text = path.read_text()
    assert len(text) == 65 and text.endswith("\n") and int(text, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    public = hopgate.SigningKey.from_seed(bytes.fromhex(text)).public_key.hex()
    assert out == "" and err == f"public key: {public}\n"

    assert main(["keygen", "-o", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"hopgate: error: -o {path}: file exists; pass --force to overwrite a signing key\n"
    assert path.read_text() == text

    path.chmod(0o644)
    assert main(["keygen", "-o", str(path), "--force", "--public"]) == 0
    out, err = capsys.readouterr()
    new = path.read_text()
    assert new != text and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert out == hopgate.SigningKey.from_seed(bytes.fromhex(new)).public_key.hex() + "\n" and err == ""

    assert main(["keygen", "--public-of", str(path)]) == 0
    assert capsys.readouterr().out == out


def test_keygen_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    out, err = capsys.readouterr()
    seed = bytes.fromhex(out)
    assert len(seed) == 32 and out == seed.hex() + "\n"
    assert err == f"public key: {hopgate.SigningKey.from_seed(seed).public_key.hex()}\n"
    assert main(["keygen", "--public"]) == 2
    assert capsys.readouterr().err == "hopgate: error: --public needs -o FILE (the seed would be lost)\n"


def test_key_files_raw_env_missing_bad_and_world_readable(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    raw = world.dir / "raw.key"
    raw.write_bytes(world.alice.seed())
    raw.chmod(0o600)
    assert main(["keygen", "--public-of", str(raw)]) == 0
    assert capsys.readouterr().out == world.alice.public_key.hex() + "\n"

    (world.dir / "alice.key").chmod(0o644)
    assert main(["keygen", "--public-of", world.p("alice.key")]) == 0
    out, err = capsys.readouterr()
    assert out == world.alice.public_key.hex() + "\n"
    assert err == (
        f"hopgate: warning: --public-of {world.p('alice.key')}: the signing key is readable by other users "
        "(mode 0644; chmod 600 it)\n"
    )

    missing = world.p("nobody.key")
    assert main(["keygen", "--public-of", missing]) == 2
    assert capsys.readouterr().err == f"hopgate: error: --public-of {missing}: No such file or directory\n"
    short = world.dir / "short.key"
    short.write_text("abcd\n")
    short.chmod(0o600)
    assert main(["keygen", "--public-of", str(short)]) == 2
    assert capsys.readouterr().err == (
        f"hopgate: error: --public-of {short}: expected a seed of 64 hex digits (or 32 raw bytes)\n"
    )

    env = {k: v for k, v in os.environ.items() if k != "HOPGATE_ISSUER_KEY"}
    base = ["grant", "--holder", world.bob.public_key.hex(), "--cap", "a:b", "--budget", "1", "--unit", "u",
            "--not-before", "0", "--not-after", "10", "--max-depth", "0"]  # fmt: skip
    no_key = subprocess.run([sys.executable, "-m", "hopgate", *base], capture_output=True, text=True, env=env)
    assert no_key.returncode == 2 and no_key.stdout == ""
    assert no_key.stderr == "hopgate: error: no signing key: pass --issuer-key FILE or set HOPGATE_ISSUER_KEY (64 hex digits)\n"
    from_env = run_cli(*base, env={"HOPGATE_ISSUER_KEY": world.alice.seed().hex()})
    assert from_env.returncode == 0
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
        ("--holder", "xyz", "--holder 'xyz': expected 64 hex digits (an Ed25519 public key, 32 bytes)"),
        ("--holder", "ab" * 31, f"--holder '{'ab' * 31}': expected 64 hex digits (an Ed25519 public key, 32 bytes)"),
        ("--session", "abcd", "--session 'abcd': expected 32 hex digits (a session id, 16 bytes)"),
        ("--cap", "payments", "--cap 'payments': expected RESOURCE:ABILITY (for example payments/*:refund)"),
        ("--not-before", "2026-11-22T10:00:00", "--not-before '2026-11-22T10:00:00': an ISO-8601 time needs a zone (Z or +HH:MM)"),
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
    with pytest.raises(SystemExit) as exc:
        main(["grant", "--budget", "-5"])
    assert exc.value.code == 2
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
    assert main(world.verify(chain, "--invocation", stale)) == 15
    assert capsys.readouterr().out == f"{chain}: STALE_INVOCATION (the invocation timestamp is outside the allowed clock skew)\n"
    assert main(world.verify(chain, "--invocation", stale, "--skew", "31")) == 0
    capsys.readouterr()

    other = world.delegate("other.chain")  # same links but a fresh nonce: another tail signature
    inv = world.invoke(other)
    assert main(world.verify(chain, "--invocation", inv)) == 4
    assert capsys.readouterr().out == f"{chain}: BROKEN_LINK ({hopgate.REASONS[Code.BROKEN_LINK]})\n"

    garbage = world.dir / "garbage.inv"
    garbage.write_text("not*base64\n")
    assert main(world.verify(chain, "--invocation", str(garbage))) == 1
    assert capsys.readouterr().out == f"{chain}: MALFORMED ({hopgate.REASONS[Code.MALFORMED]})\n"

    assert main(world.verify(chain, chain, "--invocation", inv)) == 2
    assert capsys.readouterr() == ("", "hopgate: error: --invocation decides one request: give one chain, not 2\n")


def test_tampered_chain_files(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    raw = pathlib.Path(world.grant("g.raw", "--format", "raw"))
    data = bytearray(raw.read_bytes())
    flipped = world.dir / "flipped.raw"
    data[-1] ^= 0x01  # the last byte of the grant's signature
    flipped.write_bytes(bytes(data))
    assert main(world.verify(str(flipped))) == 3
    assert capsys.readouterr().out == f"{flipped}: BAD_SIGNATURE (a link or invocation signature is invalid)\n"

    budget = bytearray(raw.read_bytes())
    offset = 4 + 1 + 4 + 1 + 32 + 16 + 32 + 8 + 8 + 1  # magic, n, body_len, kind, issuer, session, holder, times, depth
    assert int.from_bytes(budget[offset : offset + 8], "little") == 10000
    budget[offset + 1] ^= 0x80
    widened = world.dir / "budget.raw"
    widened.write_bytes(bytes(budget))
    assert main(world.verify(str(widened))) == 3
    capsys.readouterr()

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
    assert out.startswith(f"{bad_text}: MALFORMED (") and "offset 10" in out

    magic = world.dir / "magic.raw"
    magic.write_bytes(b"\xffGC1" + bytes(data[4:]))
    assert main(world.verify(str(magic), "--json")) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["code"], report["field"], report["offset"]) == (1, "magic", 0)

    empty = world.dir / "empty"
    empty.write_bytes(b"")
    assert main(world.verify(str(empty))) == 1
    assert capsys.readouterr().out == f"{empty}: MALFORMED (malformed magic at offset 0: empty input)\n"


def test_verify_decision_codes_by_name(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    chain = world.delegate()
    c = hopgate.Chain.from_text(pathlib.Path(chain).read_text().strip())
    untrusted = ["verify", chain, "--trusted", world.bob.public_key.hex(), "--now", str(NOW)]
    assert main(untrusted) == 2
    assert capsys.readouterr() == (f"{chain}: UNTRUSTED_ISSUER (link 0 is not signed by a trusted issuer)\n", "")

    cases = [
        (["--now", str(NOT_AFTER)], Code.EXPIRED, 10),
        (["--now", str(NOT_BEFORE - 1)], Code.NOT_YET_VALID, 9),
        (["--session", "01" * 16], Code.SESSION_MISMATCH, 11),
        (["--revoked", "00" * 32, "--revoked", c.revocation_ids[1].hex()], Code.REVOKED, 12),
    ]
    for extra, code, value in cases:
        argv = ["verify", chain, "--trusted", world.alice.public_key.hex(), "--now", str(NOW), *extra]
        assert main(argv) == code == value
        assert capsys.readouterr() == (f"{chain}: {code.name} ({hopgate.REASONS[code]})\n", "")


def test_several_chains_json_and_first_nonzero_exit(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    good = world.delegate()
    raw = pathlib.Path(world.grant("g.raw", "--format", "raw")).read_bytes()
    bad = world.dir / "bad.raw"
    bad.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    short = world.dir / "short.raw"
    short.write_bytes(raw[:30])
    assert main(world.verify(good, str(bad), str(short), good, "--json")) == 3
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["file"], r["code"], r["name"]) for r in lines] == [
        (good, 0, "OK"), (str(bad), 3, "BAD_SIGNATURE"), (str(short), 1, "MALFORMED"), (good, 0, "OK"),
    ]  # fmt: skip
    assert lines[0] == {"file": good, "code": 0, "name": "OK", "reason": "allowed"}
    assert lines[2]["field"] == "body" and lines[2]["offset"] == 9
    assert main(world.verify(good, str(short), str(bad))) == 1
    assert capsys.readouterr().out == (
        f"{good}: OK\n{short}: MALFORMED ({lines[2]['reason']})\n{bad}: BAD_SIGNATURE ({hopgate.REASONS[Code.BAD_SIGNATURE]})\n"
    )


def test_verify_many_lines_of_one_file_and_trusted_file(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    a = pathlib.Path(world.grant("a.chain")).read_text()
    b = pathlib.Path(world.delegate("b.chain")).read_text()
    both = world.dir / "both.chains"
    both.write_text(a + "\n" + b)
    trusted = world.dir / "trusted"
    trusted.write_text(f"# issuers\n{world.bob.public_key.hex()}\n\n{world.alice.public_key.hex()}  # alice\n")
    assert main(["verify", str(both), "--trusted-file", str(trusted), "--now", str(NOW)]) == 0
    assert capsys.readouterr().out == f"{both}:1: OK\n{both}:3: OK\n"

    trusted.write_text("nothex\n")
    assert main(["verify", str(both), "--trusted-file", str(trusted)]) == 2
    assert capsys.readouterr() == ("", f"hopgate: error: --trusted-file {trusted}:1: 'nothex': expected 64 hex digits (an Ed25519 public key, 32 bytes)\n")
    assert main(["verify", str(both)]) == 2
    assert capsys.readouterr() == ("", "hopgate: error: no trusted issuer: pass --trusted PUBHEX or --trusted-file FILE\n")
    assert main(["verify", str(both), "--trusted", "12"]) == 2
    assert capsys.readouterr().err == "hopgate: error: --trusted '12': expected 64 hex digits (an Ed25519 public key, 32 bytes)\n"
    missing = world.p("missing.chain")
    assert main(world.verify(str(both), missing)) == 2
    assert capsys.readouterr() == ("", f"hopgate: error: {missing}: No such file or directory\n")
    assert main(world.verify("-", "-")) == 2
    assert capsys.readouterr().err == "hopgate: error: stdin (-) can be read only once\n"


def test_verify_from_stdin(world: World) -> None:
    a = pathlib.Path(world.grant("a.chain")).read_text()
    b = pathlib.Path(world.delegate("b.chain")).read_text()
    trusted = ["--trusted", world.alice.public_key.hex(), "--now", str(NOW)]
    done = run_cli("verify", "-", *trusted, input=(a + b).encode())
    assert (done.returncode, done.stdout, done.stderr) == (0, b"<stdin>:1: OK\n<stdin>:2: OK\n", b"")
    done = run_cli("verify", "-", *trusted, "--now", str(NOT_AFTER), input=b.encode())
    assert (done.returncode, done.stdout) == (10, b"<stdin>: EXPIRED (a link has expired)\n")
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


def test_top_level_help_lists_every_command() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    for command in ("keygen", "grant", "delegate", "invoke", "verify", "bench", "audit"):
        assert command in done.stdout.decode()
    import hopgate.cli

    assert hopgate.cli.__doc__ is not None
    for command in ("keygen", "grant", "delegate", "invoke", "verify", "bench", "audit verify"):
        assert f"``hopgate {command}" in hopgate.cli.__doc__
