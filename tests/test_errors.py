"""Every row of the exit-code table: its code and one line on stderr."""

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    API_KEY,
    advance,
    api_requests,
    free_port,
    ledger_rows,
    log_text,
    write_jsonl,
)

from batchledger.emulator import EmulatorServer, Fault
from batchledger.ledger import open_ledger


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.code == code, (result.code, result.out, result.err)
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("batchledger: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["create", "--in", "in.jsonl"],
        ["status", "--batch-id", "batch_abc"],
        ["retrieve", "--batch-id", "batch_abc"],
    ],
)
def test_missing_api_key_exits_2(cli, isolated: Path, monkeypatch, args):
    write_jsonl(isolated / "in.jsonl", 1)
    monkeypatch.delenv("OPENAI_API_KEY")

    result = cli(*args)

    assert_one_line_error(result, 2, "OPENAI_API_KEY is not set")
    assert not (isolated.parent / "ledger.db").exists()


def test_missing_input_exits_2(cli, isolated: Path):
    assert_one_line_error(cli("create", "--in", "nope.jsonl"), 2, "nope.jsonl does not exist")


def test_directory_input_exits_2(cli, isolated: Path):
    (isolated / "folder").mkdir()
    assert_one_line_error(cli("create", "--in", "folder"), 2, "is a directory")


def test_unreadable_input_exits_2(cli, isolated: Path):
    if os.geteuid() == 0:
        # root reads any file; /proc/self/mem opens but cannot be read at offset 0.
        path = "/proc/self/mem"
    else:
        unreadable = isolated / "secret.jsonl"
        unreadable.write_text("{}\n")
        unreadable.chmod(0)
        path = str(unreadable)

    assert_one_line_error(cli("create", "--in", path), 2, "cannot read input file")


def test_empty_input_exits_2(cli, isolated: Path):
    (isolated / "empty.jsonl").write_bytes(b"")
    assert_one_line_error(cli("create", "--in", "empty.jsonl"), 2, "is empty")


def test_a_pipe_as_input_exits_2(cli, isolated: Path):
    os.mkfifo(isolated / "pipe.jsonl")
    assert_one_line_error(cli("create", "--in", "pipe.jsonl"), 2, "is not a regular file")


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "pipe"])
def test_a_bad_input_is_reported_before_anything_else(
    cli, isolated: Path, monkeypatch: pytest.MonkeyPatch, kind: str
):
    path = isolated / "in.jsonl"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pipe":
        os.mkfifo(path)
    monkeypatch.delenv("OPENAI_API_KEY")  # the input is looked at before the key

    result = cli("create", "--in", "in.jsonl")

    assert result.code == 2
    assert "OPENAI_API_KEY" not in result.err
    assert not (isolated.parent / "ledger.db").exists()
    assert not (isolated / "logs").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "required: COMMAND"),
        (["launch"], "invalid choice: 'launch'"),
        (["create"], "required: --in"),
        (["status"], "one of the arguments --batch-id --all is required"),
        (["status", "--batch-id", "b", "--all"], "not allowed with argument"),
        (["retrieve"], "required: --batch-id"),
        (["list", "--limit", "0"], "at least 1"),
        (["create", "--in", "x", "--max-retries", "many"], "whole number"),
        (["create", "--in", "x", "--bogus"], "unrecognized arguments: --bogus"),
        (["status", "--all", "--out", "x.jsonl"], "cannot be used with --all"),
    ],
)
def test_bad_arguments_exit_2(cli, args, fragment):
    assert_one_line_error(cli(*args), 2, fragment)


def test_help_exits_0(cli):
    result = cli("--help")
    assert result.code == 0
    for command in ("create", "status", "retrieve", "list"):
        assert command in result.out


def test_unknown_batch_id_is_an_api_error(cli, emulator: EmulatorServer):
    result = cli("status", "--batch-id", "batch_doesnotexist")

    assert_one_line_error(result, 1, "GET_STATUS failed with HTTP 404", "batch_doesnotexist")
    assert ledger_rows() == []


def test_server_4xx_on_create(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 1)

    result = cli("create", "--in", "in.jsonl", "--completion-window", "1h")

    assert_one_line_error(result, 1, "CREATE_BATCH failed with HTTP 400")
    [row] = ledger_rows()  # the upload is recorded, so a retry can find it
    assert row["batch_id"] is None and row["input_file_id"].startswith("file-")


def test_server_5xx_after_retries(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 1)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/files$", status=500, times=100))

    result = cli("create", "--in", "in.jsonl", "--max-retries", "1")

    assert_one_line_error(result, 1, "UPLOAD failed with HTTP 500", "try again later")
    assert api_requests(emulator, "POST", "/v1/files") == 2  # one try, one retry
    assert emulator.state.batches == {}


def test_connection_refused(cli, isolated: Path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")

    result = cli("status", "--batch-id", "batch_abc", "--max-retries", "0")

    assert_one_line_error(result, 1, "GET_STATUS could not reach http://127.0.0.1:")
    log = next((isolated / "logs").iterdir()).read_text()
    assert "Traceback" in log  # the stack goes to the log, not the terminal


def test_wrong_key_is_401(cli, isolated: Path, monkeypatch):
    with EmulatorServer(host="127.0.0.1", port=0, api_key="sk-the-right-one") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        result = cli("status", "--batch-id", "batch_abc")

    assert_one_line_error(result, 1, "HTTP 401", "check OPENAI_API_KEY")


def test_unusable_ledger_exits_1_and_is_left_alone(cli, isolated: Path, emulator: EmulatorServer):
    ledger = Path(os.environ["BATCHLEDGER_DB"])
    ledger.write_bytes(b"this is not a sqlite database, it is a text file" * 100)
    before = ledger.read_bytes()
    write_jsonl(isolated / "in.jsonl", 1)

    for args in (["list"], ["create", "--in", "in.jsonl"]):
        assert_one_line_error(cli(*args), 1, "is not a readable SQLite ledger")
    assert ledger.read_bytes() == before
    assert emulator.state.files == {}


def test_retrieve_of_a_batch_not_completed_is_refused_with_exit_3(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    advance(emulator, batch_id, 1)  # in_progress; retrieve's own look moves it to finalizing

    result = cli("retrieve", "--batch-id", batch_id)

    assert_one_line_error(result, 3, batch_id, "is finalizing, not completed; nothing was saved")
    assert [(row["status"], row["output_path"]) for row in ledger_rows()] == [("finalizing", None)]
    assert sorted(path.name for path in isolated.iterdir() if path.is_file()) == ["in.jsonl"]


def test_a_second_create_of_the_same_input_is_refused_with_exit_3(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")

    result = cli("create", "--in", "in.jsonl")

    assert_one_line_error(result, 3, "already submitted as", batch_id, "--force")
    assert [row["batch_id"] for row in ledger_rows()] == [batch_id]
    assert api_requests(emulator, "POST", "/v1/files") == 1


def test_connection_dropped_without_response(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 1)
    emulator.state.add_fault(Fault(method="GET", path=r"^/v1/batches/", drop_request=True, times=9))

    result = cli("status", "--batch-id", "batch_x", "--max-retries", "0")

    assert_one_line_error(result, 1, "GET_STATUS could not reach")


def test_socket_helper_port_is_free():
    port = free_port()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("key", [f"{API_KEY} ", f"{API_KEY}\n", "sk-tést-0123456789"])
def test_a_malformed_key_is_a_usage_error_and_never_shown(cli, isolated: Path, monkeypatch, key):
    write_jsonl(isolated / "in.jsonl", 1)
    monkeypatch.setenv("OPENAI_API_KEY", key)

    result = cli("create", "--in", "in.jsonl")

    assert_one_line_error(result, 2, "OPENAI_API_KEY holds spaces, line breaks or non-ASCII")
    assert key.strip() not in result.err


def test_the_key_is_blanked_out_wherever_it_would_show(
    cli, isolated: Path, monkeypatch, emulator: EmulatorServer
):
    # A misconfigured base URL that holds the key: the server's 404 names the path it got.
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url.replace("/v1", f"/{API_KEY}/v1"))

    result = cli("status", "--batch-id", "batch_abc", "--max-retries", "0")

    assert_one_line_error(result, 1, "HTTP 404", "[API key]")
    log = next((isolated / "logs").iterdir()).read_text()
    assert "Traceback" in log and "[API key]" in log
    assert API_KEY not in log and API_KEY not in result.err


def test_a_key_pasted_where_a_path_goes_is_not_printed_back(cli, isolated: Path):
    # The provider's messages are blanked where they become ours; this one is the project's
    # own, and only the last line of defence (main's) stands between it and the terminal.
    result = cli("create", "--in", API_KEY)

    assert_one_line_error(result, 2, "input file [API key] does not exist")
    assert API_KEY not in result.err


def test_an_unusable_log_file_is_a_usage_error(cli, isolated: Path, emulator: EmulatorServer):
    (isolated / "taken").mkdir()
    result = cli("status", "--batch-id", "batch_abc", "--log-file", "taken")
    assert_one_line_error(result, 2, "cannot write the log file taken")


# --- the key never reaches the ledger -----------------------------------------------------


def test_an_api_error_that_echoes_the_key_is_stored_without_it(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)
    emulator.state.add_fault(
        Fault(
            method="POST",
            path=r"^/v1/batches$",
            status=400,
            message=f"Invalid request from key {API_KEY}: endpoint not allowed",
        )
    )

    result = cli("create", "--in", "in.jsonl")

    assert result.code == 1
    assert "[API key]" in result.err and API_KEY not in result.err + result.out
    dump = "\n".join(sqlite3.connect(os.environ["BATCHLEDGER_DB"]).iterdump())
    assert "endpoint not allowed" in dump and API_KEY not in dump
    assert API_KEY not in log_text(isolated)


# --- every input a user can type gets a one-line error --------------------------------


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e12", "soon"])
def test_a_bad_lock_timeout_is_a_usage_error(cli, isolated: Path, monkeypatch, value: str):
    ledger = open_ledger(Path(os.environ["BATCHLEDGER_DB"]))
    assert ledger is not None
    ledger.close()
    monkeypatch.setenv("BATCHLEDGER_LOCK_TIMEOUT", value)

    result = cli("list")

    assert result.code == 2
    assert result.err.startswith("batchledger: error: BATCHLEDGER_LOCK_TIMEOUT must be")
    assert len(result.err.splitlines()) == 1


def test_a_deleted_working_directory_is_a_usage_error(isolated: Path):
    gone = isolated / "gone"
    gone.mkdir()
    code = (
        "import os, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]);"
        "from batchledger.cli import main; sys.exit(main(['list']))"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, str(gone)], capture_output=True, text=True, timeout=60
    )

    assert child.returncode == 2
    assert child.stderr == (
        "batchledger: error: the working directory no longer exists; cd into one that does\n"
    )
