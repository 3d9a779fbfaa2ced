"""The audit log: receipts, every single-byte change found at its record,
torn tails repaired on open, a writer killed with SIGKILL at random points, the
gate's records, the CLI, and native == reference byte for byte."""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import time
from types import ModuleType
from typing import Any

import blake3
import pytest

import hopgate
import hopgate.reference as ref
from hopgate import AuditError, Code, GateRecord, InputError

from craft import NOW, L, build, invocation
from test_gate import ISSUER, chain3, inv

KEY = bytes(range(32))
HEADER = 32
OVERHEAD = 4 + 32 + 32


def bodies(n: int) -> list[bytes]:
    return [bytes((i * 7 + j) % 256 for j in range((i * 37) % 150)) for i in range(n)]


def frame_offsets(records: list[bytes]) -> list[int]:
    offsets, at = [], HEADER
    for b in records:
        offsets.append(at)
        at += len(b) + OVERHEAD
    return offsets


def write(impl: ModuleType, path: pathlib.Path, records: list[bytes]) -> list[Any]:
    with impl.AuditLog(path, key=KEY, fsync=False) as log:
        receipts = list(log.append_many(records[: len(records) // 2]))
        receipts += [log.append(r) for r in records[len(records) // 2 :]]
    return receipts


def test_round_trip_and_reopen(impl: ModuleType, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.log"
    records = bodies(9)
    receipts = write(impl, path, records)
    assert [r.index for r in receipts] == list(range(9))
    with impl.AuditLog(path, key=KEY) as log:
        assert len(log) == 9 and log.recovered == 0 and not log.closed
        assert log.head == receipts[-1].chain
        assert log.read() == records
        assert log.read(3, 5) == records[3:5]
        assert all(log.verify_receipt(r) for r in receipts)
        more = log.append(b"after reopen")
        expected = blake3.blake3(receipts[-1].chain + blake3.blake3(b"after reopen").digest()).digest()
        assert (more.index, more.chain) == (9, expected)
        report = log.verify()
        assert report.ok and report.records == 10 and report.bytes == path.stat().st_size
    assert log.closed
    with pytest.raises(InputError, match="closed"):
        log.append(b"x")
    assert str(impl.audit_verify(path, key=KEY)).startswith("OK: 10 records")


def test_native_and_reference_write_the_same_bytes(tmp_path: pathlib.Path) -> None:
    records = bodies(40) + [b"", b"\x00" * 2000]
    write(hopgate, tmp_path / "n.log", records)
    write(ref, tmp_path / "r.log", records)
    assert (tmp_path / "n.log").read_bytes() == (tmp_path / "r.log").read_bytes()
    # Each reads and verifies the other's file.
    with ref.AuditLog(tmp_path / "n.log", key=KEY) as log:
        assert log.read() == records and log.verify().ok
    with hopgate.AuditLog(tmp_path / "r.log", key=KEY) as nlog:
        assert nlog.read() == records and nlog.verify().ok


def test_receipts_verify_and_forgeries_fail(impl: ModuleType, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.log"
    receipts = write(impl, path, bodies(5))
    good = receipts[2]
    assert good.is_authentic(KEY)
    assert impl.Receipt.from_bytes(bytes(good)) == good and len(bytes(good)) == 72
    flip = bytearray(bytes(good))
    forged = []
    for pos in (0, 8, 39, 40, 71):  # index, chain, tag
        f = bytearray(flip)
        f[pos] ^= 1
        forged.append(impl.Receipt.from_bytes(bytes(f)))
    other_key = impl.Receipt(good.index, good.chain, blake3.blake3(b"HGR1" + good.index.to_bytes(8, "little") + good.chain, key=b"\x01" * 32).digest())
    beyond = impl.Receipt(99, good.chain, good.tag)
    with impl.AuditLog(path, key=KEY) as log:
        assert log.verify_receipt(good)
        for f in forged + [other_key, beyond]:
            assert not log.verify_receipt(f), f
    assert not other_key.is_authentic(KEY)
    with pytest.raises(InputError):
        impl.Receipt.from_bytes(bytes(71))
    with pytest.raises(InputError):
        impl.Receipt(0, b"short", bytes(32))


def test_every_single_byte_change_is_found_at_its_record(impl: ModuleType, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.log"
    records = bodies(7)
    write(impl, path, records)
    clean = path.read_bytes()
    offsets = frame_offsets(records)
    changed = tmp_path / "changed.log"
    rng = random.Random(4)
    for pos in range(len(clean)):
        data = bytearray(clean)
        data[pos] ^= rng.randrange(1, 256)
        changed.write_bytes(bytes(data))
        report = impl.audit_verify(changed, key=KEY)
        assert not report.ok, pos
        if pos < HEADER:
            assert report.first_bad is None and report.offset == 0, pos
        else:
            record = max(i for i, o in enumerate(offsets) if o <= pos)
            assert (report.first_bad, report.offset, report.records) == (record, offsets[record], record), pos


def test_reports_agree_between_implementations(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.log"
    records = bodies(6)
    write(hopgate, path, records)
    clean = path.read_bytes()
    rng = random.Random(9)
    for _ in range(150):
        data = bytearray(clean)
        what = rng.randrange(3)
        if what == 0:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif what == 1:
            del data[rng.randrange(len(data)) :]
        else:
            data += bytes(rng.randrange(1, 80))
        path.write_bytes(bytes(data))
        assert hopgate.audit_verify(path, key=KEY) == ref.audit_verify(path, key=KEY)


def test_torn_tails_are_repaired_on_open(impl: ModuleType, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.log"
    records = bodies(5)
    write(impl, path, records)
    clean = path.read_bytes()
    last = frame_offsets(records)[-1]
    for cut in range(last + 1, len(clean), 7):
        path.write_bytes(clean[:cut])
        report = impl.audit_verify(path, key=KEY)
        assert (report.first_bad, report.offset) == (4, last) and "torn" in (report.reason or "")
        with impl.AuditLog(path, key=KEY) as log:
            assert (len(log), log.recovered) == (4, cut - last)
            assert log.read() == records[:4]
        assert path.read_bytes() == clean[:last]
    # A zero-filled tail (a power cut after the file grew).
    path.write_bytes(clean + bytes(100))
    with impl.AuditLog(path, key=KEY) as log:
        assert (len(log), log.recovered) == (5, 100)
    path.write_bytes(clean[: last + 20] + bytes(len(clean) - last - 20))
    with impl.AuditLog(path, key=KEY) as log:
        assert len(log) == 4
    assert impl.audit_verify(path, key=KEY).ok


def test_damage_is_refused_and_the_file_left_alone(impl: ModuleType, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.log"
    records = bodies(5)
    write(impl, path, records)
    clean = path.read_bytes()
    last = frame_offsets(records)[-1]
    data = bytearray(clean)
    data[last + 6] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(AuditError) as e:
        impl.AuditLog(path, key=KEY)
    assert (e.value.record, e.value.offset) == (4, last)
    assert path.read_bytes() == bytes(data)
    path.write_bytes(clean)
    with pytest.raises(AuditError) as e:
        impl.AuditLog(path, key=b"\x09" * 32)
    assert e.value.record is None and "another key" in str(e.value)
    path.write_bytes(b"#!/bin/sh\necho this is not an audit log\n")
    with pytest.raises(AuditError, match="magic"):
        impl.AuditLog(path, key=KEY)


def test_one_writer_and_bad_arguments(impl: ModuleType, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.log"
    log = impl.AuditLog(path, key=KEY)
    with pytest.raises(OSError, match="already open"):
        impl.AuditLog(path, key=KEY)
    log.close()
    log.close()
    impl.AuditLog(path, key=KEY, fsync=0.5).close()
    for bad_key in (b"k" * 31, b"k" * 33):
        with pytest.raises(InputError, match="key"):
            impl.AuditLog(path, key=bad_key)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(InputError, match="fsync"):
            impl.AuditLog(path, key=KEY, fsync=bad)
    with pytest.raises(TypeError, match="fsync"):
        impl.AuditLog(path, key=KEY, fsync="always")
    with pytest.raises(OSError):
        impl.AuditLog(tmp_path / "no" / "such" / "dir.log", key=KEY)


def test_progress_is_reported_and_can_stop_verification(impl: ModuleType, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.log"
    write(impl, path, [bytes(4000)] * 2500 + [b"end"])
    seen: list[tuple[int, int]] = []
    report = impl.audit_verify(path, key=KEY, progress=lambda done, total: seen.append((done, total)))
    assert report.ok and seen and seen[-1] == (path.stat().st_size,) * 2
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        impl.audit_verify(path, key=KEY, progress=stop)


CHILD = textwrap.dedent(
    """
    import sys, random
    import {module} as impl
    path, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    log = impl.AuditLog(path, key=bytes(range(32)), fsync=False)
    i = len(log)
    while True:
        n = rng.choice([1, 1, 3, 40])
        recs = [b"record %d " % (i + k) * (1 + (i + k) % 9) for k in range(n)]
        log.append_many(recs)
        i += n
        sys.stdout.write("%d\\n" % i)
        sys.stdout.flush()
    """
)


def expected_record(i: int) -> bytes:
    return b"record %d " % i * (1 + i % 9)


@pytest.mark.parametrize("module", ["hopgate", "hopgate.reference"])
def test_writer_killed_at_random_points_loses_no_acknowledged_record(module: str, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "crash.log"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(module=module))
    rng = random.Random(11)
    acknowledged = 0
    for trial in range(8):
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), str(trial)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        # Wait for the first acknowledgement, then let it run a random while.
        first = child.stdout.readline()
        assert first, "the child wrote nothing"
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
        lines = [first] + rest.splitlines()
        acknowledged = max(acknowledged, max(int(x) for x in lines if x.strip()))
        with hopgate.AuditLog(path, key=KEY) as log:
            assert len(log) >= acknowledged, (trial, len(log), acknowledged)
            assert log.read(0, acknowledged) == [expected_record(i) for i in range(acknowledged)]
            acknowledged = len(log)
        assert hopgate.audit_verify(path, key=KEY).ok
    assert acknowledged > 0


def test_gate_appends_one_record_per_decision(impl: ModuleType, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gate.log"
    log = impl.AuditLog(path, key=KEY)
    g = impl.Gate([ISSUER.public_key], audit=log)
    assert g.audit is log
    c = chain3()
    good = inv(c)
    d = g.check(c, good, now=NOW)
    assert d.allowed and d.receipt is not None and d.receipt.index == 0
    assert log.verify_receipt(d.receipt)
    d.reservation.commit()  # record 1: the settlement
    replay = g.check(c, good, now=NOW)
    assert replay.code is Code.REPLAY and replay.receipt.index == 2
    requests = [inv(c), b"garbage", inv(c, cost=10_000)]
    codes, reservations, receipts = g.check_batch([c, c, c], requests, now=NOW, receipts=True)
    assert list(codes) == [Code.OK, Code.MALFORMED, Code.COST_EXCEEDS_GRANT]
    assert [r.index for r in receipts] == [3, 4, 5]
    reservations[0].release()  # record 6
    last = inv(c, cost=7)
    codes2, reservations2 = g.check_batch([c], [last], now=NOW)
    with reservations2[0]:  # leaving the block unsettled forfeits: record 8
        pass
    assert len(log) == 9
    bodies_ = log.read()
    decoded = [GateRecord.from_bytes(bodies_[i]) for i in (0, 2, 3, 4, 5, 7)]
    assert [r.code for r in decoded] == [Code.OK, Code.REPLAY, Code.OK, Code.MALFORMED, Code.COST_EXCEEDS_GRANT, Code.OK]
    assert all(r.now == NOW for r in decoded)
    assert decoded[0].chain_digest == blake3.blake3(bytes(c)).digest()
    assert decoded[0].invocation_digest == blake3.blake3(good).digest()
    assert decoded[3].invocation_digest == blake3.blake3(b"garbage").digest()
    settled = [impl.SettleRecord.from_bytes(bodies_[i]) for i in (1, 6, 8)]
    accounts = tuple(c.revocation_ids)
    assert settled == [
        impl.SettleRecord(impl.Settlement.COMMIT, 5, 5, blake3.blake3(good).digest(), accounts),
        impl.SettleRecord(impl.Settlement.RELEASE, 5, 0, blake3.blake3(requests[0]).digest(), accounts),
        impl.SettleRecord(impl.Settlement.FORFEIT, 7, 7, blake3.blake3(last).digest(), accounts),
    ]
    assert log.verify().ok
    # Without a log there are no receipts.
    plain = impl.Gate([ISSUER.public_key])
    assert plain.check(c, inv(c), now=NOW).receipt is None
    assert plain.audit is None
    log.close()


def test_settlement_records_sum_to_the_ledger(impl: ModuleType, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gate.log"
    log = impl.AuditLog(path, key=KEY)
    g = impl.Gate([ISSUER.public_key], audit=log)
    c = chain3()
    rng = random.Random(11)
    for _ in range(40):
        d = g.check(c, inv(c, cost=rng.choice([1, 2, 3])), now=NOW)
        if not d.allowed:
            continue
        choice = rng.randrange(4)
        if choice == 0:
            d.reservation.release()
        elif choice == 1:
            with pytest.raises(hopgate.OverrunError):
                d.reservation.commit(d.reservation.amount + 1)
        elif choice == 2:
            d.reservation.commit(rng.randrange(d.reservation.amount + 1))
        else:
            with d.reservation:
                pass
    from hopgate._audit import log_records, spending

    log.close()
    report = hopgate.audit_verify(path, key=KEY)
    with open(path, "rb") as f:
        summary = spending(log_records(f, report.bytes))
    assert summary.unreadable == 0
    for account_id, state in g.ledger.accounts().items():
        assert summary.accounts[account_id].spent == state.spent
        assert summary.accounts[account_id].overrun == state.overrun


def test_spending_skips_other_applications_records(tmp_path: pathlib.Path) -> None:
    # AuditLog.append takes any bytes: a record starting with "S" is not a settlement.
    from hopgate._audit import log_records, spending

    path = tmp_path / "gate.log"
    c = chain3()
    with hopgate.AuditLog(path, key=KEY) as log:
        log.append(b"Started nightly job")
        g = hopgate.Gate([ISSUER.public_key], audit=log)
        held = g.check(c, inv(c, cost=5), now=NOW).reservation
        assert held is not None
        held.commit(3)
        log.append(b"S")
    report = hopgate.audit_verify(path, key=KEY)
    with open(path, "rb") as f:
        summary = spending(log_records(f, report.bytes))
    assert summary.unreadable == 2
    assert {a: s.spent for a, s in summary.accounts.items()} == dict.fromkeys(c.revocation_ids, 3)
    key_file = tmp_path / "key"
    key_file.write_text(f"hopgate-audit-key-v1:{KEY.hex()}\n")
    key_file.chmod(0o600)
    out = run_cli("audit", "spending", str(path), "--key-file", str(key_file))
    assert out.returncode == 0 and "2 records start like a settlement" in out.stdout, out.stderr


def test_attack_refusals_are_not_synced_one_by_one(impl: ModuleType, tmp_path: pathlib.Path) -> None:
    log = impl.AuditLog(tmp_path / "gate.log", key=KEY, fsync=True)
    g = impl.Gate([ISSUER.public_key], audit=log)
    stranger = impl.SigningKey.from_seed(bytes([99]) * 32)
    c = chain3()
    untrusted = impl.Chain.grant(stranger, stranger.public_key, [("*", "*")], budget=5, unit="u",
                                 not_before=NOW - 10, not_after=NOW + 10, max_depth=0)
    for _ in range(3):
        assert g.check(untrusted, untrusted.invoke(stranger, "a", "r", 1, timestamp=NOW), now=NOW).code is Code.UNTRUSTED_ISSUER
        assert log.unsynced
    assert g.check(c, b"garbage", now=NOW).code is Code.MALFORMED
    assert log.unsynced
    # The trusted issuer's key is public: a link 0 naming it, signed by anyone else.
    forged = build([L(signer=stranger, holder=stranger.public_key, issuer=ISSUER.public_key)])
    forged_inv = invocation(stranger, forged.sigs[-1])
    for _ in range(3):
        assert g.check(forged.data, forged_inv, now=NOW).code is Code.BAD_SIGNATURE
        assert log.unsynced
    d = g.check(c, inv(c), now=NOW)
    assert d.allowed and not log.unsynced, "an allowed decision syncs everything before it"
    d.reservation.release()
    assert not log.unsynced, "a settlement record is synced"
    # A captured request replayed (no key needed): refused, and not synced alone.
    captured = inv(c, nonce=b"r" * 16)
    first = g.check(c, captured, now=NOW)
    assert first.allowed and first.reservation is not None
    first.reservation.release()
    assert not log.unsynced
    for _ in range(3):
        assert g.check(c, captured, now=NOW).code is Code.REPLAY
        assert log.unsynced
    log.close()


def test_gate_refuses_when_the_record_cannot_be_written(impl: ModuleType, tmp_path: pathlib.Path) -> None:
    log = impl.AuditLog(tmp_path / "gate.log", key=KEY)
    g = impl.Gate([ISSUER.public_key], audit=log)
    c = chain3()
    log.close()
    with pytest.raises(InputError, match="closed"):
        g.check(c, inv(c), now=NOW)
    # The reservation made for the decision was released: nothing is held.
    accounts = g.ledger.accounts()
    assert accounts and all(a.reserved == 0 and a.spent == 0 for a in accounts.values())


def test_gate_logs_agree_between_implementations(tmp_path: pathlib.Path) -> None:
    c = chain3()
    rng = random.Random(5)
    requests = []
    for i in range(60):
        r = inv(c, cost=rng.choice([1, 5, 50]), nonce=bytes([i % 40]) * 16)
        if i % 13 == 0:
            r = r[:-1] + bytes([r[-1] ^ 1])
        requests.append(r)
    for module, name in ((hopgate, "n.log"), (ref, "r.log")):
        settle = random.Random(6)
        with module.AuditLog(tmp_path / name, key=KEY) as log:
            g = module.Gate([ISSUER.public_key], audit=log)
            for start in range(0, 60, 7):
                _, reservations = g.check_batch([c] * len(requests[start : start + 7]), requests[start : start + 7], now=NOW)
                for r in reservations:
                    if r is None:
                        continue
                    how = settle.randrange(4)
                    if how == 0:
                        r.commit()
                    elif how == 1:
                        r.commit(settle.randrange(r.amount + 1))
                    elif how == 2:
                        r.release()
                    else:
                        with r:
                            pass
    assert (tmp_path / "n.log").read_bytes() == (tmp_path / "r.log").read_bytes()


def test_gate_rejects_a_foreign_log(tmp_path: pathlib.Path) -> None:
    with ref.AuditLog(tmp_path / "r.log", key=KEY) as log:
        with pytest.raises(InputError, match="native"):
            hopgate.Gate([ISSUER.public_key], audit=log)  # type: ignore[arg-type]
    with hopgate.AuditLog(tmp_path / "n.log", key=KEY) as nlog:
        with pytest.raises(InputError, match="reference"):
            ref.Gate([ISSUER.public_key], audit=nlog)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hopgate", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def test_cli_audit_verify(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.log"
    records = bodies(6)
    write(hopgate, path, records)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    ok = run_cli("audit", "verify", str(path), "--key-file", str(key_file))
    assert ok.returncode == 0 and ok.stdout.startswith("OK: ") and "6 records" in ok.stdout
    hex_key = tmp_path / "key.hex"
    hex_key.write_text(KEY.hex() + "\n")
    assert run_cli("audit", "verify", str(path), "--key-file", str(hex_key)).returncode == 0
    assert run_cli("audit", "verify", str(path), env={"HOPGATE_AUDIT_KEY": KEY.hex()}).returncode == 0
    with_bar = run_cli("audit", "verify", str(path), "--key-file", str(key_file), "--progress")
    assert with_bar.returncode == 0 and "100.0%" in with_bar.stderr

    data = bytearray(path.read_bytes())
    data[frame_offsets(records)[3] + 4] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = run_cli("audit", "verify", str(path), "--key-file", str(key_file))
    assert bad.returncode == 1 and "record 3" in bad.stdout
    as_json = json.loads(run_cli("audit", "verify", str(path), "--key-file", str(key_file), "--json").stdout)
    assert as_json["ok"] is False and as_json["first_bad"] == 3 and as_json["offset"] == frame_offsets(records)[3]

    env = {k: v for k, v in os.environ.items() if k != "HOPGATE_AUDIT_KEY"}
    no_key = subprocess.run([sys.executable, "-m", "hopgate", "audit", "verify", str(path)], capture_output=True, text=True, env=env)
    assert no_key.returncode == 2 and "no key" in no_key.stderr
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    assert "64 hex digits" in run_cli("audit", "verify", str(path), "--key-file", str(short)).stderr
    missing = run_cli("audit", "verify", str(tmp_path / "missing.log"), "--key-file", str(key_file))
    assert missing.returncode == 2 and "missing.log" in missing.stderr


def test_cli_audit_spending(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gate.log"
    c = chain3()
    with hopgate.AuditLog(path, key=KEY) as log:
        g = hopgate.Gate([ISSUER.public_key], audit=log)
        held = [g.check(c, inv(c, cost=5), now=NOW).reservation for _ in range(3)]
        assert all(r is not None for r in held)
        held[0].commit(4)  # type: ignore[union-attr]
        held[1].release()  # type: ignore[union-attr]
        with pytest.raises(hopgate.OverrunError):
            held[2].commit(6)  # type: ignore[union-attr]
        spent = {account: state.spent for account, state in g.ledger.accounts().items()}
    key_file = tmp_path / "key"
    key_file.write_text(f"hopgate-audit-key-v1:{KEY.hex()}\n")
    key_file.chmod(0o600)
    out = run_cli("audit", "spending", str(path), "--key-file", str(key_file), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["records"] == 6
    assert {bytes.fromhex(k): v["spent"] for k, v in report["accounts"].items()} == spent == dict.fromkeys(c.revocation_ids, 10)
    root = report["accounts"][c.revocation_ids[0].hex()]
    assert (root["overrun"], root["commits"], root["releases"], root["forfeits"]) == (1, 2, 1, 0)
    text = run_cli("audit", "spending", str(path), "--key-file", str(key_file))
    assert text.returncode == 0 and c.revocation_ids[-1].hex() in text.stdout and "3 accounts" in text.stdout
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    bad = run_cli("audit", "spending", str(path), "--key-file", str(key_file))
    assert bad.returncode == 1 and "record 5" in bad.stderr
