"""The log file: one record per API call, operation names, no key, no result content."""

import re
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from helpers import API_KEY, advance, ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer
from batchledger.paths import default_log_path

# ISO 8601 in UTC, with milliseconds and an explicit Z.
RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) \S")


def test_log_has_every_call_and_nothing_secret(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 3, instructions="PRIVATE-PROMPT-TEXT")
    created = cli("create", "--in", "in.jsonl", "--log-file", "logs/create.log")
    batch_id = created.field("batch_id")
    advance(emulator, batch_id, 2)
    status = cli("status", "--batch-id", batch_id, "--log-file", "logs/status.log")
    assert (created.code, status.code) == (0, 0)

    create_log = (isolated / "logs/create.log").read_text()
    status_log = (isolated / "logs/status.log").read_text()

    for text in (create_log, status_log):
        assert all(RECORD.match(line) for line in text.splitlines()), text
        assert API_KEY not in text and "Bearer" not in text
        assert "PRIVATE-PROMPT-TEXT" not in text and "request-0" not in text
    assert re.search(r"UPLOAD request=.*\"purpose\": \"batch\"", create_log)
    assert re.search(r"UPLOAD response=.*\"id\": \"file-", create_log)
    assert re.search(rf"CREATE_BATCH response=.*\"id\": \"{batch_id}\"", create_log)
    assert len(re.findall(r" response=", create_log)) == 2
    assert re.search(r"GET_STATUS response=.*\"status\": \"completed\"", status_log)
    saved = isolated / f"results_{batch_id}.jsonl"
    size = saved.stat().st_size
    assert f"DOWNLOAD_RESULTS saved path={saved} bytes={size}" in status_log
    assert len(re.findall(r" response=", status_log)) == 2  # GET_STATUS, DOWNLOAD_RESULTS
    assert "Say hello" not in status_log  # the output echoes the input; never logged
    # The ledger's history names the log of each run.
    by_action = {event["action"]: event["log_file"] for event in ledger_rows("history")}
    assert by_action["create"] == str(isolated / "logs/create.log")
    assert by_action["save_output"] == str(isolated / "logs/status.log")


def test_default_log_file_is_timestamped_under_logs(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 1)

    assert cli("create", "--in", "in.jsonl").code == 0

    [log] = (isolated / "logs").iterdir()
    assert re.fullmatch(r"batch_\d{8}_\d{6}\.log", log.name)
    assert "CREATE_BATCH response=" in log.read_text()


def test_key_appears_nowhere(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 2)
    created = cli("create", "--in", "in.jsonl")
    complete_out = [cli("status", "--batch-id", created.field("batch_id")) for _ in range(3)]

    outputs = created.out + created.err + "".join(r.out + r.err for r in complete_out)
    ledger_dump = repr(ledger_rows()) + repr(ledger_rows("history"))
    logs = "".join(p.read_text() for p in (isolated / "logs").iterdir())
    for text in (outputs, ledger_dump, logs):
        assert API_KEY not in text


# --- a log of its own, in UTC --------------------------------------------------------------


def test_runs_started_in_the_same_second_get_their_own_log_files(
    cli, emulator: EmulatorServer, isolated: Path, monkeypatch
):
    same = Path("logs/batch_20261201_120000.log")
    monkeypatch.setattr(sys.modules["batchledger.cli.main"], "default_log_path", lambda now: same)
    write_jsonl(isolated / "a.jsonl", 2)
    write_jsonl(isolated / "b.jsonl", 3)

    assert cli("create", "--in", "a.jsonl").code == 0
    assert cli("create", "--in", "b.jsonl").code == 0

    logs = sorted(path.name for path in (isolated / "logs").iterdir())
    assert logs == ["batch_20261201_120000.log", "batch_20261201_120000_2.log"]
    first = (isolated / "logs" / logs[0]).read_text()
    # By the inputs' full paths: an upload's name (a.<random ref>.jsonl) may end in "b.jsonl".
    assert str(isolated / "a.jsonl") in first and str(isolated / "b.jsonl") not in first


def test_log_names_and_lines_are_in_utc(cli, emulator: EmulatorServer, isolated: Path):
    east = datetime(2026, 12, 1, 9, 30, 5, tzinfo=timezone(timedelta(hours=5)))
    assert default_log_path(east) == Path("logs/batch_20261201_043005.log")
    write_jsonl(isolated / "a.jsonl", 2)

    cli("create", "--in", "a.jsonl")

    [log] = (isolated / "logs").iterdir()
    stamp = datetime.strptime(log.name, "batch_%Y%m%d_%H%M%S.log").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert all(line[:24].endswith("Z") for line in log.read_text().splitlines())
