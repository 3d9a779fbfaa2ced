"""Several processes that audit: one log each in one directory (``audit_worker_log``),
verified and summed together (``audit_verify_logs``, ``hopgate audit verify DIR``,
``hopgate audit spending DIR``), with real processes: gates of both implementations
side by side, a worker killed with SIGKILL, uvicorn with two workers; and the refusal
a second process meets on one plain ``AuditLog`` path.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import httpx
import pytest

import hopgate
import hopgate.reference
from hopgate._audit import FRAME_OVERHEAD, HEADER_LEN, log_records

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
ISSUER = hopgate.SigningKey.from_seed(b"\x11" * 32)
AGENT = hopgate.SigningKey.from_seed(b"\x22" * 32)
HOLDER = hopgate.SigningKey.from_seed(b"\x33" * 32)
REQUIRE = ("call", "api/x", 1)
NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[A-Za-z0-9._-]+-(?P<pid>\d+)-[0-9a-f]{8}\.log$")

# One worker process: its own log in DIRECTORY through a gate of IMPL; for request j, a
# cost of 10 * index + j + 1, committed whole, committed less one, or released (j % 3);
# then the same invocation again, refused as a replay (a gate record without a
# settlement). Prints what it wrote; with "hold", waits to be killed instead of closing.
WORKER = textwrap.dedent(
    """
    import json, sys, time
    import hopgate, hopgate.reference
    directory, key, impl, index, chain, count, mode = sys.argv[1:]
    mod = hopgate if impl == "native" else hopgate.reference
    holder = hopgate.SigningKey.from_seed(b"\\x33" * 32)
    issuer = hopgate.SigningKey.from_seed(b"\\x11" * 32)
    signing = hopgate.Chain.from_bytes(bytes.fromhex(chain))
    log = mod.audit_worker_log(directory, key=bytes.fromhex(key))
    gate = mod.Gate([issuer.public_key], audit=log)
    deciding = mod.Chain.from_bytes(bytes.fromhex(chain))
    now = int(time.time())
    spent = commits = releases = 0
    for j in range(int(count)):
        cost = 10 * int(index) + j + 1
        invocation = signing.invoke(holder, "call", "api/x", cost, timestamp=now)
        decision = gate.check(deciding, invocation, now, require=("call", "api/x", 1))
        assert decision.code is hopgate.Code.OK, decision
        if j % 3 == 2:
            decision.held.release()
            releases += 1
        else:
            decision.held.commit(cost - j % 3)
            spent += cost - j % 3
            commits += 1
        again = gate.check(deciding, invocation, now, require=("call", "api/x", 1))
        assert again.code is hopgate.Code.REPLAY, again
    print(json.dumps({"log": str(log.path), "spent": spent, "commits": commits, "releases": releases,
                      "records": len(log)}), flush=True)
    if mode == "hold":
        time.sleep(120)
    log.close()
    """
)


def make_chain() -> hopgate.Chain:
    """ISSUER -> AGENT -> HOLDER: two accounts, each charged by every settlement."""
    now = int(time.time())
    grant = hopgate.Chain.grant(ISSUER, AGENT.public_key, [("api/*", "call")], 10**9, "usd", now - 600, now + 3600, 2)
    return grant.delegate(AGENT, HOLDER.public_key, budget=10**8)


def start_worker(directory: pathlib.Path, impl: str, index: int, chain: hopgate.Chain, count: int,
                 mode: str = "run") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(directory), KEY.hex(), impl, str(index), bytes(chain).hex(), str(count), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(worker: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    answer: dict[str, Any] = json.loads(out)
    return answer


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HOPGATE_AUDIT_KEY"}
    return subprocess.run([sys.executable, "-m", "hopgate", *args], capture_output=True, text=True, env=env)


@dataclass
class Logs:
    """A directory that four worker processes (two of each implementation) audited into."""

    directory: pathlib.Path
    key_file: pathlib.Path
    chain: hopgate.Chain
    workers: list[dict[str, Any]]

    def copy(self, to: pathlib.Path) -> pathlib.Path:
        return pathlib.Path(shutil.copytree(self.directory, to / "logs"))


COUNT = 7  # requests per worker: 3 records each (a decision, its settlement, a replay)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Logs:
    root = tmp_path_factory.mktemp("workers")
    directory = root / "logs"
    directory.mkdir()
    key_file = root / "audit.key"
    key_file.write_text(f"hopgate-audit-key-v1:{KEY.hex()}\n")
    key_file.chmod(0o600)
    chain = make_chain()
    running = [start_worker(directory, impl, i, chain, COUNT) for i, impl in
               enumerate(["native", "reference", "native", "reference"])]
    answers = [finish(worker) | {"pid": worker.pid} for worker in running]
    return Logs(directory, key_file, chain, answers)


def test_each_process_writes_a_log_of_its_own(logs: Logs) -> None:
    files = sorted(p.name for p in logs.directory.iterdir())
    assert files == sorted(pathlib.Path(w["log"]).name for w in logs.workers) and len(files) == 4
    for worker in logs.workers:
        name = pathlib.Path(worker["log"]).name
        match = NAME.match(name)
        assert match is not None and int(match["pid"]) == worker["pid"], name
        assert worker["records"] == 3 * COUNT


def expected_spending(workers: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "spent": sum(w["spent"] for w in workers),
        "overrun": 0,
        "reserved": sum(sum(10 * i + j + 1 for j in range(COUNT)) for i in range(len(workers))),
        "commits": sum(w["commits"] for w in workers),
        "releases": sum(w["releases"] for w in workers),
        "forfeits": 0,
    }


def test_cli_verifies_and_sums_the_directory(logs: Logs) -> None:
    verified = run_cli("audit", "verify", str(logs.directory), "--key-file", str(logs.key_file))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    lines = verified.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith("OK: ") for line in lines)
    assert lines[-1].startswith(f"OK: {logs.directory}: 4 logs, {4 * 3 * COUNT} records, ")

    as_json = json.loads(run_cli("audit", "verify", str(logs.directory), "--key-file", str(logs.key_file),
                                 "--json").stdout)
    assert as_json["ok"] is True and as_json["records"] == 4 * 3 * COUNT
    assert {pathlib.Path(p).name: v["records"] for p, v in as_json["logs"].items()} == {
        pathlib.Path(w["log"]).name: 3 * COUNT for w in logs.workers
    }

    summed = run_cli("audit", "spending", str(logs.directory), "--key-file", str(logs.key_file), "--json")
    assert summed.returncode == 0, summed.stderr
    report = json.loads(summed.stdout)
    assert (report["records"], report["logs"], report["unreadable"]) == (4 * 3 * COUNT, 4, 0)
    want = expected_spending(logs.workers)
    assert report["accounts"] == {account.hex(): want for account in logs.chain.revocation_ids}
    text = run_cli("audit", "spending", str(logs.directory), "--key-file", str(logs.key_file))
    assert text.returncode == 0
    assert text.stdout.startswith(f"{logs.directory}: {4 * 3 * COUNT} records in 4 logs, 2 accounts with settlements\n")


@pytest.mark.parametrize("impl", [hopgate, hopgate.reference], ids=["native", "reference"])
def test_python_api_verifies_and_sums_the_directory(logs: Logs, impl: ModuleType) -> None:
    report = impl.audit_verify_logs(logs.directory, key=KEY)
    assert report.ok and not report.copies and report.records == 4 * 3 * COUNT
    assert [p.name for p in report.logs] == sorted(p.name for p in logs.directory.iterdir())
    summary = report.spending()
    want = expected_spending(logs.workers)
    for account in logs.chain.revocation_ids:
        entry = summary.accounts[account]
        got = {name: getattr(entry, name) for name in want}
        assert got == want
    # Files, a directory and a file named twice (read once) give the same answer.
    files = sorted(logs.directory.iterdir())
    again = impl.audit_verify_logs([files[0], logs.directory, str(files[0])], key=KEY)
    assert again.logs.keys() == report.logs.keys() and again.records == report.records
    # The wrong key: every log is refused at its header.
    wrong = impl.audit_verify_logs(logs.directory, key=OTHER_KEY)
    assert not wrong.ok and len(wrong.problems) == 4
    assert all(r.first_bad is None for r in wrong.logs.values())
    with pytest.raises(hopgate.AuditError):
        wrong.spending()


def frame_ends(path: pathlib.Path) -> list[int]:
    """The offset after each frame of a log."""
    ends, end = [], HEADER_LEN
    with open(path, "rb") as f:
        for body in log_records(f, path.stat().st_size):
            end += len(body) + FRAME_OVERHEAD
            ends.append(end)
    return ends


def test_a_damaged_log_is_named(logs: Logs, tmp_path: pathlib.Path) -> None:
    directory = logs.copy(tmp_path)
    victim = sorted(directory.iterdir())[2]
    data = bytearray(victim.read_bytes())
    data[frame_ends(victim)[4] + 4 + 3] ^= 0x01  # inside record 5's body
    victim.write_bytes(bytes(data))
    (directory / "notes.txt").write_text("not a log\n")

    verified = run_cli("audit", "verify", str(directory), "--key-file", str(logs.key_file))
    assert verified.returncode == 1
    lines = verified.stdout.splitlines()
    assert f"{victim}: BAD at record 5 (offset {frame_ends(victim)[4]}): " in verified.stdout
    assert f"{directory / 'notes.txt'}: BAD at the header (offset 0): " in verified.stdout
    assert sum(line.startswith("OK: ") for line in lines) == 3
    assert lines[-1] == f"BAD: {directory}: 2 of 5 logs do not verify"
    as_json = json.loads(run_cli("audit", "verify", str(directory), "--key-file", str(logs.key_file),
                                 "--json").stdout)
    assert as_json["ok"] is False
    assert {pathlib.Path(p).name for p, v in as_json["logs"].items() if not v["ok"]} == {victim.name, "notes.txt"}
    assert as_json["logs"][str(victim)]["first_bad"] == 5

    summed = run_cli("audit", "spending", str(directory), "--key-file", str(logs.key_file))
    assert summed.returncode == 1 and summed.stdout == ""
    assert f"{victim}: BAD at record 5 " in summed.stderr and "notes.txt: BAD at the header" in summed.stderr


def test_a_copied_log_is_refused(logs: Logs, tmp_path: pathlib.Path) -> None:
    """A copy in the directory (a backup, or the beginning of a log) would count its
    settlements twice: refused by name. Hidden files are not read."""
    directory = logs.copy(tmp_path)
    original = sorted(directory.iterdir())[1]
    shutil.copyfile(original, directory / "backup.log")
    prefix = original.read_bytes()[: frame_ends(original)[5]]  # records 0..5: two settlements
    (directory / "start.log").write_bytes(prefix)
    shutil.copyfile(original, directory / ".hidden.log")

    report = hopgate.audit_verify_logs(directory, key=KEY)
    assert not report.ok and all(r.ok for r in report.logs.values())
    assert dict(report.copies) == {
        directory / "backup.log": hopgate.LogCopy(original, 3 * COUNT, COUNT),
        directory / "start.log": hopgate.LogCopy(original, 6, 2),
    }
    with pytest.raises(hopgate.AuditError, match="backup.log: BAD: a copy of"):
        report.spending()
    verified = run_cli("audit", "verify", str(directory), "--key-file", str(logs.key_file))
    assert verified.returncode == 1
    assert f"{directory / 'start.log'}: BAD: a copy of {original}: its first 6 records, 2 settlements" in verified.stdout
    assert ".hidden.log" not in verified.stdout
    assert run_cli("audit", "spending", str(directory), "--key-file", str(logs.key_file)).returncode == 1


def test_a_killed_worker_leaves_a_log_that_verifies(tmp_path: pathlib.Path) -> None:
    """SIGKILL after its appends: nothing acknowledged is lost, and its replacement
    writes a log of its own. An empty file (a process killed between creating its log
    and writing the header) is a log without records."""
    directory = tmp_path / "logs"
    directory.mkdir()
    chain = make_chain()
    held = start_worker(directory, "native", 0, chain, COUNT, mode="hold")
    assert held.stdout is not None
    line = held.stdout.readline()
    held.send_signal(signal.SIGKILL)
    held.wait(timeout=60)
    assert held.returncode == -signal.SIGKILL
    killed = json.loads(line)
    replacement = finish(start_worker(directory, "reference", 1, chain, COUNT))
    assert replacement["log"] != killed["log"]
    (directory / "20000101T000000.000000Z-host-1-00000000.log").touch()

    report = hopgate.audit_verify_logs(directory, key=KEY)
    assert report.ok and len(report.logs) == 3 and report.records == 2 * 3 * COUNT
    spent = report.spending().accounts[chain.revocation_ids[0]].spent
    assert spent == killed["spent"] + replacement["spent"]


@pytest.mark.parametrize("impl", [hopgate, hopgate.reference], ids=["native", "reference"])
def test_worker_log_failures_are_loud_and_leave_nothing(
    impl: ModuleType, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.CRITICAL, logger="hopgate.audit"):
        with pytest.raises(FileNotFoundError):
            impl.audit_worker_log(tmp_path / "missing", key=KEY)
        with pytest.raises(hopgate.InputError):
            impl.audit_worker_log(tmp_path, key=b"short")
    assert list(tmp_path.iterdir()) == []
    lines = [r for r in caplog.records if r.name == "hopgate.audit"]
    assert [r.levelno for r in lines] == [logging.CRITICAL, logging.CRITICAL]
    assert f"process {os.getpid()} cannot open an audit log of its own in {tmp_path / 'missing'}" in lines[0].getMessage()
    # Two logs in one process are two files; each verifies on its own.
    with impl.audit_worker_log(tmp_path, key=KEY) as a, impl.audit_worker_log(tmp_path, key=KEY) as b:
        assert a.path != b.path and a.path.parent == b.path.parent == tmp_path
        a.append(b"a")
    assert hopgate.audit_verify_logs(tmp_path, key=KEY).records == 1


# ---------------------------------------------------------------------------
# One plain log, two processes
# ---------------------------------------------------------------------------

OPENER = textwrap.dedent(
    """
    import sys
    import hopgate, hopgate.reference
    mod = hopgate if sys.argv[2] == "native" else hopgate.reference
    try:
        mod.AuditLog(sys.argv[1], key=bytes(range(32)))
    except BaseException as e:
        print(type(e).__name__)
        print(e)
        sys.exit(1)
    print("opened")
    """
)


def second_opener(path: pathlib.Path, impl: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-c", OPENER, str(path), impl], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout


@pytest.mark.parametrize("holder", ["native", "reference"])
@pytest.mark.parametrize("second", ["native", "reference"])
def test_a_second_process_on_one_plain_log_is_refused(holder: str, second: str, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gate.log"
    impl = hopgate if holder == "native" else hopgate.reference
    with impl.AuditLog(path, key=KEY):
        status, out = second_opener(path, second)
        assert status == 1, out
        kind, message = out.splitlines()[:2]
        assert kind == "OSError"
        assert message == (
            f"cannot lock {path}: the log is already open for appending (by this or another process); "
            "one log has one writer: give each process its own with hopgate.audit_worker_log(directory, key=...)"
        )
    assert second_opener(path, second) == (0, "opened\n")  # once the first has closed it


def test_the_refusal_names_the_per_worker_log(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gate.log"
    with hopgate.AuditLog(path, key=KEY):
        status, out = second_opener(path, "native")
    assert status == 1 and "audit_worker_log" in out


# ---------------------------------------------------------------------------
# A real server: uvicorn --workers 2
# ---------------------------------------------------------------------------

APP = textwrap.dedent(
    """
    import os
    import hopgate
    from hopgate.asgi import GateMiddleware

    async def served(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-pid", str(os.getpid()).encode())]})
        await send({"type": "http.response.body", "body": b"ok"})

    log = hopgate.audit_worker_log(os.environ["AUDIT_DIR"], key=bytes(range(32)))
    gate = hopgate.Gate([bytes.fromhex(os.environ["ISSUER"])], audit=log)
    app = GateMiddleware(served, gate, require={("POST", "/x"): ("call", "api/x", 2)})
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def uvicorn_workers(tmp_path: pathlib.Path) -> Iterator[tuple[str, pathlib.Path, subprocess.Popen[str]]]:
    directory = tmp_path / "logs"
    directory.mkdir()
    (tmp_path / "gated_app.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "AUDIT_DIR": str(directory), "ISSUER": ISSUER.public_key.hex(),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gated_app:app", "--workers", "2", "--port", str(port), "--log-level",
         "warning"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while len(list(directory.iterdir())) < 2 or not _answers(url):
            assert server.poll() is None and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.1)
        yield url, directory, server
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.post(f"{url}/x", timeout=2).status_code == 401  # no headers: MALFORMED
    except httpx.HTTPError:
        return False


def test_uvicorn_workers_each_audit_into_the_directory(
    uvicorn_workers: tuple[str, pathlib.Path, subprocess.Popen[str]], tmp_path: pathlib.Path
) -> None:
    url, directory, server = uvicorn_workers
    chain = make_chain()
    served = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(12):
            invocation = chain.invoke(HOLDER, "call", "api/x", 3)
            headers = {"Hopgate-Chain": chain.to_text(), "Hopgate-Invocation": hopgate.to_text(invocation)}
            response = client.post("/x", headers=headers)
            assert response.status_code == 200 and response.headers["hopgate-decision"] == "OK"
            served += 1
    server.send_signal(signal.SIGINT)
    server.wait(timeout=30)
    files = sorted(directory.iterdir())
    assert len(files) == 2 and all(NAME.match(f.name) for f in files)
    key_file = tmp_path / "audit.key"
    key_file.write_text(f"hopgate-audit-key-v1:{KEY.hex()}\n")
    key_file.chmod(0o600)
    assert run_cli("audit", "verify", str(directory), "--key-file", str(key_file)).returncode == 0
    report = json.loads(run_cli("audit", "spending", str(directory), "--key-file", str(key_file), "--json").stdout)
    assert report["logs"] == 2
    # Each served request committed the route's price (2) of its reservation (3).
    assert {a: (v["spent"], v["commits"]) for a, v in report["accounts"].items()} == {
        account.hex(): (2 * served, served) for account in chain.revocation_ids
    }
