"""The Python API (issue 23), used only through `import batchledger`: against the emulator
over real HTTP, as the command-line tests are."""

import _thread
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import api_requests, complete, ledger_rows, server_bytes, write_jsonl

import batchledger as bl
from batchledger.emulator import EmulatorServer, Fault

SOURCE = Path(__file__).resolve().parents[1]
QUICK = {"interval": 0.01, "max_interval": 0.05}  # the emulator moves a step per look-up


def custom_ids(rows: list[bl.ResultRow]) -> list[str | None]:
    return [row["custom_id"] for row in rows]


def test_create_wait_results_in_input_order_printing_nothing(
    emulator: EmulatorServer, isolated: Path, capsys: pytest.CaptureFixture[str]
):
    write_jsonl(isolated / "in.jsonl", 5)
    emulator.state.set_line_outcomes({"request-3": "500"})

    with bl.open() as ledger:
        run = ledger.create("in.jsonl", metadata={"team": "search"})
        assert isinstance(run, bl.Batch)
        assert run.status == "validating" and run.id.startswith("batch_")
        run.wait(**QUICK)
        rows = list(run.results())

    assert run.status == "completed"
    assert run.request_counts == {"total": 5, "completed": 4, "failed": 1}
    assert custom_ids(rows) == [f"request-{n}" for n in range(5)]
    assert [row["line"] for row in rows] == [1, 2, 3, 4, 5]
    assert [row["status"] for row in rows] == ["ok", "ok", "ok", "error", "ok"]
    assert rows[0]["response"] is not None and rows[0]["response"]["status_code"] == 200
    assert rows[0]["error"] is None
    assert rows[3]["error"] is not None and rows[3]["response"]["status_code"] == 500
    [row] = ledger_rows()
    assert row["batch_id"] == run.id and row["status"] == "completed"
    assert row["output_path"] == str(isolated / f"results_{run.id}.jsonl")
    assert json.loads(row["metadata"]) == {"team": "search"}
    assert capsys.readouterr() == ("", "")  # nothing printed unless asked


def test_wait_with_progress_draws_on_stderr_only(
    emulator: EmulatorServer, isolated: Path, capsys: pytest.CaptureFixture[str]
):
    write_jsonl(isolated / "in.jsonl", 2)
    with bl.open() as ledger:
        run = ledger.create("in.jsonl").wait(progress=True, **QUICK)

    out, err = capsys.readouterr()
    assert out == ""
    assert f"{run.id} completed: 2/2 done, 0 failed, 100 %" in err


def test_input_over_the_accounts_max_requests_is_a_job(
    emulator: EmulatorServer, isolated: Path, monkeypatch: pytest.MonkeyPatch
):
    (isolated.parent / "accounts.toml").write_text(
        f'[accounts.small]\nbase_url = "{emulator.base_url}"\nmax_requests = 2\n'
    )
    write_jsonl(isolated / "in.jsonl", 5)

    with bl.open(account="small") as ledger:
        run = ledger.create("in.jsonl")
        assert isinstance(run, bl.Job)
        assert run.id.startswith("job_") and run.status == "running"
        run.wait(**QUICK)
        rows = list(run.results())

    assert run.status == "done"
    assert run.request_counts == {"total": 5, "completed": 5, "failed": 0}
    assert custom_ids(rows) == [f"request-{n}" for n in range(5)]
    assert {row["status"] for row in rows} == {"ok"}
    assert len(emulator.state.batches) == 3  # 2 + 2 + 1 requests
    [job] = ledger_rows("jobs")
    assert job["job_id"] == run.id and job["status"] == "done"
    assert [row["account"] for row in ledger_rows()] == ["small"] * 3


def test_retry_sends_the_failed_requests_again_and_the_results_hold_their_answers(
    emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 4)
    emulator.state.set_line_outcomes({"request-1": "500", "request-2": "missing"}, times=1)

    with bl.open() as ledger:
        run = ledger.create("in.jsonl").wait(**QUICK)
        assert [row["status"] for row in run.results()] == ["ok", "error", "missing", "ok"]
        retry = run.retry()
        assert isinstance(retry, bl.Job)
        retry.wait(**QUICK)
        rows = list(run.results())
        nothing_left = run.retry()

    assert [row["status"] for row in rows] == ["ok"] * 4
    assert custom_ids(rows) == [f"request-{n}" for n in range(4)]
    assert retry.request_counts["total"] == 2
    assert nothing_left is None  # nothing to retry: nothing sent
    assert len(emulator.state.batches) == 2


def test_a_lost_create_answer_still_makes_one_batch(emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", drop_request=True))

    with bl.open() as ledger:
        run = ledger.create("in.jsonl")

    assert len(emulator.state.batches) == 1  # not a second, paid-for batch
    assert api_requests(emulator, "POST", "/v1/batches") == 1
    [row] = ledger_rows()
    assert row["batch_id"] == run.id == next(iter(emulator.state.batches))


def test_a_create_cut_off_earlier_is_recovered_not_sent_again(
    emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", drop_request=True))
    with bl.open(max_retries=0) as ledger, pytest.raises(bl.Transient):
        ledger.create("in.jsonl")

    with bl.open() as ledger:
        again = ledger.create("in.jsonl")

    assert len(emulator.state.batches) == 1
    assert again.id == next(iter(emulator.state.batches))
    assert "cut off" in again.warnings[0]


def test_get_last_ids_and_prefixes(emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "a.jsonl", 1)
    write_jsonl(isolated / "b.jsonl", 2)

    with bl.open() as ledger:
        first = ledger.create("a.jsonl")
        second = ledger.create("b.jsonl")
        last = ledger.get("last")
        by_id = ledger.get(first.id)
        by_prefix = ledger.get(first.id.removeprefix("batch_")[:12])

    assert isinstance(last, bl.Batch) and last.id == second.id
    assert by_id.id == first.id and by_prefix.id == first.id
    assert by_id.row["input_path"] == str(isolated / "a.jsonl")


def test_list_filters(emulator: EmulatorServer, isolated: Path):
    for name, lines in (("a", 1), ("b", 2), ("c", 3)):
        write_jsonl(isolated / f"{name}.jsonl", lines)

    with bl.open() as ledger:
        a = ledger.create("a.jsonl", metadata={"team": "search"}).wait(**QUICK)
        b = ledger.create("b.jsonl", metadata={"team": "ads"})
        c = ledger.create("c.jsonl", metadata={"team": "search"})
        everything = ledger.list()
        completed = ledger.list(status="completed")
        live = ledger.list(status=["validating", "in_progress"])
        search = ledger.list(metadata={"team": "search"})
        recent = ledger.list(since="7d")
        future = ledger.list(since="2999-01-01")
        other_account = ledger.list(account="demo")
        newest = ledger.list(limit=1)

    assert [run.id for run in everything] == [c.id, b.id, a.id]  # newest first
    assert [run.id for run in completed] == [a.id]
    assert [run.id for run in live] == [c.id, b.id]
    assert [run.id for run in search] == [c.id, a.id]
    assert len(recent) == 3 and future == [] and other_account == []
    assert [run.id for run in newest] == [c.id]


def test_typed_errors(emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 2)

    with bl.open() as ledger:
        with pytest.raises(bl.UsageError, match="no-such"):
            ledger.create("no-such.jsonl")
        with pytest.raises(bl.NotInLedger):
            ledger.get("last")  # nothing made yet
        run = ledger.create("in.jsonl")
        with pytest.raises(bl.Refused, match="already"):
            ledger.create("in.jsonl")  # sent already: not paid for twice
        with pytest.raises(bl.Refused, match="not saved yet"):
            run.results()
        with pytest.raises(bl.WaitTimeout):
            run.wait(timeout=0, interval=5)
        elsewhere = ledger.get("batch_unknown")  # made elsewhere? the API is asked
        assert not elsewhere.recorded and elsewhere.status == "unknown"
        with pytest.raises(bl.NotFound):
            elsewhere.refresh()
        with pytest.raises(bl.NotInLedger):
            ledger.get("zzz")  # a prefix of nothing
        with pytest.raises(bl.UsageError, match="not a status"):
            ledger.list(status="done-ish")
        with pytest.raises(bl.UsageError, match="since"):
            ledger.list(since="last tuesday")
        run.wait(**QUICK)
        with pytest.raises(bl.Refused, match="nothing to cancel"):
            run.cancel()

    # Each is one of the errors the command line maps to its exit codes.
    assert issubclass(bl.NotInLedger, bl.UsageError)
    assert all(
        issubclass(error, bl.BatchledgerError)
        for error in (bl.UsageError, bl.Refused, bl.NotFound, bl.Transient, bl.WaitTimeout)
    )
    assert len(emulator.state.batches) == 1


def test_cancel_then_wait_until_cancelled(emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 2)
    with bl.open() as ledger:
        run = ledger.create("in.jsonl").cancel()
        assert run.status == "cancelling"
        run.wait(**QUICK)

    assert run.status == "cancelled"
    assert ledger_rows()[0]["status"] == "cancelled"


def test_export_and_to_pandas(emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 3)
    with bl.open() as ledger:
        run = ledger.create("in.jsonl").wait(**QUICK)
        written = run.export(format="jsonl")
        frame = run.to_pandas()

    assert written == isolated / f"export_{run.id}.jsonl"
    exported = [json.loads(line) for line in written.read_text().splitlines()]
    assert [row["custom_id"] for row in exported] == ["request-0", "request-1", "request-2"]
    assert list(frame.columns) == ["line", "custom_id", "status", "response", "error"]
    assert list(frame["custom_id"]) == ["request-0", "request-1", "request-2"]
    assert list(frame["status"]) == ["ok"] * 3


def test_results_follow_the_input_order_whatever_the_results_order(
    emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2_000)
    with bl.open() as ledger:
        run = ledger.create("in.jsonl").wait(**QUICK)
        assert run.output_path is not None
        # The provider may write its results in any order (Anthropic's does).
        lines = run.output_path.read_bytes().splitlines(keepends=True)
        random.Random(7).shuffle(lines)
        run.output_path.write_bytes(b"".join(lines))
        rows = list(run.results())

    assert custom_ids(rows) == [f"request-{n}" for n in range(2_000)]
    assert {row["status"] for row in rows} == {"ok"}


def test_usage_estimate_and_sync(emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 3, max_output_tokens=10)
    with bl.open() as ledger:
        estimate = ledger.estimate("in.jsonl")
        assert not (isolated.parent / "ledger.db").exists()  # nothing recorded
        ledger.create("in.jsonl").wait(**QUICK)
        [line] = ledger.usage(by="model")
        synced = ledger.sync()

    assert estimate.requests == 3 and estimate.batches == 1
    assert isinstance(line, bl.UsageLine)
    assert line.group == "gpt-4o-mini" and line.batches == 1 and line.requests == 3
    assert isinstance(synced, bl.SyncReport) and synced.unchanged == 1


def test_works_inside_a_running_event_loop(emulator: EmulatorServer, isolated: Path):
    # A notebook's cell runs inside an event loop: the API is plain synchronous code.
    write_jsonl(isolated / "in.jsonl", 2)

    async def cell() -> list[bl.ResultRow]:
        with bl.open() as ledger:
            return list(ledger.create("in.jsonl").wait(**QUICK).results())

    assert len(asyncio.run(cell())) == 2


def test_import_batchledger_loads_no_sdk_until_a_call_needs_it(isolated: Path):
    code = (
        "import sys, batchledger as bl\n"
        "loaded = lambda: sorted(m for m in ('openai', 'anthropic') if m in sys.modules)\n"
        "print(loaded())\n"
        "with bl.open() as ledger:\n"
        "    ledger.list(); print(loaded())\n"
        "print('batchledger.api.client' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True
    )

    assert run.stdout.splitlines() == ["[]", "[]", "True"]
    bare = subprocess.run(
        [sys.executable, "-c", "import sys, batchledger; print('batchledger.api' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert bare.stdout.strip() == "False"  # the API's modules load at its first use


def test_every_public_name_has_a_docstring():
    for name in bl.__all__:
        value = getattr(bl, name)
        if name != "__version__":
            assert (value.__doc__ or "").strip(), f"{name} has no docstring"
    for handle in (bl.Batch, bl.Job, bl.BatchLedger):
        for name in dir(handle):
            if not name.startswith("_"):
                member = getattr(handle, name)
                assert (member.__doc__ or "").strip(), f"{handle.__name__}.{name}"


def test_the_example_script_runs_offline_on_the_demo_account_and_type_checks(
    isolated: Path,
):
    example = SOURCE / "examples" / "api_example.py"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENAI_", "BATCHLEDGER_ACCOUNT"))
    }
    run = subprocess.run(
        [sys.executable, str(example), str(SOURCE / "examples" / "requests.jsonl")],
        capture_output=True,
        text=True,
        env=env,
        cwd=isolated,
        timeout=120,
    )
    mypy = subprocess.run(
        [str(Path(sys.executable).parent / "mypy"), "--strict", str(example)],
        capture_output=True,
        text=True,
        cwd=SOURCE,
    )

    assert run.returncode == 0, run.stderr
    assert "status: completed" in run.stdout
    assert "request-1: ok" in run.stdout
    assert mypy.returncode == 0, mypy.stdout


@pytest.mark.parametrize(
    ("line", "status", "body", "error"),
    [
        (
            {"custom_id": "a", "result": {"type": "succeeded", "message": {"id": "msg_1"}}},
            "ok",
            {"id": "msg_1"},
            None,
        ),
        (
            {
                "custom_id": "a",
                "result": {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {"type": "invalid_request_error", "message": "bad"},
                    },
                },
            },
            "error",
            None,
            {"code": "invalid_request_error", "message": "bad"},
        ),
        (
            {"custom_id": "a", "result": {"type": "expired"}},
            "error",
            None,
            {"code": "batch_expired", "message": "the request was expired"},
        ),
        (
            {
                "custom_id": "a",
                "response": None,
                "error": {"code": "batch_expired", "message": "x"},
            },
            "error",
            None,
            {"code": "batch_expired", "message": "x"},
        ),
    ],
)
def test_anthropic_and_openai_result_lines_come_out_as_the_same_row(
    line: dict[str, object], status: str, body: object, error: object
):
    # Anthropic's results are wired by another module; their lines map here already.
    from batchledger.api.result_rows import row_of

    row = row_of(line, 1)

    assert row["status"] == status and row["error"] == error
    assert (row["response"] or {}).get("body") == body


def test_the_readme_api_example_runs_offline(isolated: Path):
    text = (SOURCE / "README.md").read_text(encoding="utf-8")
    code = text.split("<!-- api -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    shutil.copytree(SOURCE / "examples", isolated / "examples")
    env = {name: value for name, value in os.environ.items() if not name.startswith("OPENAI_")}

    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=isolated,
        timeout=120,
    )

    assert run.returncode == 0, run.stderr
    assert " completed {'total': 3, 'completed': 3, 'failed': 0}" in run.stdout
    assert "1 request-1 ok None" in run.stdout
    assert "completed: 3/3 done" in run.stderr  # progress=True: on stderr


def test_follow_yields_the_handle_after_every_check_until_final(
    emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)
    with bl.open() as ledger:
        run = ledger.create("in.jsonl")
        assert isinstance(run, bl.Batch)
        seen = [checked.status for checked in run.follow(save=False, **QUICK)]

    assert seen == ["in_progress", "finalizing", "completed"]  # a step per look-up
    assert run.output_path is None  # save=False: nothing saved
    assert ledger_rows()[0]["status"] == "completed"


def test_an_anthropic_account_through_the_api_gives_rows_in_input_order_and_retries(
    make_server, isolated: Path, monkeypatch: pytest.MonkeyPatch
):
    key = "sk-ant-api-test-SECRET"
    server = make_server(flavor="anthropic", api_key=key)
    (isolated.parent / "accounts.toml").write_text(
        f'[accounts.claude]\nkind = "anthropic"\nbase_url = "{server.base_url}"\n'
        'api_key_env = "CLAUDE_KEY"\n'
    )
    monkeypatch.setenv("CLAUDE_KEY", key)
    with (isolated / "in.jsonl").open("w") as out:
        for n in range(6):
            params = {
                "model": "claude-haiku-4-5",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"hello {n}"}],
            }
            out.write(json.dumps({"custom_id": f"req-{n}", "params": params}) + "\n")
    # once each: req-2 overloaded (sent again by retry), req-4 invalid (not sent again)
    server.state.set_line_outcomes({"req-2": "529", "req-4": "400"}, times=None)

    with bl.open(account="claude") as ledger:
        with pytest.raises(bl.UsageError, match="--endpoint does not apply"):
            ledger.create("in.jsonl", endpoint="/v1/chat/completions")
        run = ledger.create("in.jsonl")
        assert isinstance(run, bl.Batch) and run.id.startswith("msgbatch_")
        run.wait(**QUICK)
        rows = list(run.results())
        server.state.clear_line_outcomes()
        again = run.retry()
        assert again is not None
        again.wait(**QUICK)
        merged = list(run.results())

    assert run.status == "completed"
    assert custom_ids(rows) == [f"req-{n}" for n in range(6)]
    assert [row["status"] for row in rows] == ["ok", "ok", "error", "ok", "error", "ok"]
    assert rows[2]["error"] is not None and rows[2]["response"] is None
    assert custom_ids(merged) == [f"req-{n}" for n in range(6)]
    assert [row["status"] for row in merged] == ["ok", "ok", "ok", "ok", "error", "ok"]
    assert [row["account"] for row in ledger_rows()] == ["claude", "claude"]


def test_sweep_follows_every_batch_until_none_is_left_and_saves_them(
    emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "a.jsonl", 1)
    write_jsonl(isolated / "b.jsonl", 2)
    with bl.open() as ledger:
        assert ledger.sweep() is None  # no ledger yet: nothing to follow, nothing made
        assert not ledger.path.exists()
        made = {ledger.create("a.jsonl").id, ledger.create("b.jsonl").id}
        rounds = []
        while (swept := ledger.sweep(concurrency=2)) is not None:
            assert isinstance(swept, bl.SweepReport)
            assert swept.skipped == [] and swept.jobs == []
            rounds.append({report.batch_id: report.batch["status"] for report in swept.reports})
            assert len(rounds) < 20

    assert set(rounds[0]) == made
    assert set(rounds[-1].values()) == {"completed"}
    rows = ledger_rows()
    assert {row["status"] for row in rows} == {"completed"}
    for row in rows:
        assert row["output_path"] == str(isolated / f"results_{row['batch_id']}.jsonl")
        assert Path(row["output_path"]).exists()


def test_a_sweep_interrupted_in_a_session_leaves_its_later_downloads_working(
    emulator: EmulatorServer, isolated: Path
):
    # Ctrl-C in a notebook stops a sweep: its downloads in flight stop at their next chunk
    # (the client stays open in a session, so nothing else stops them). The session goes
    # on, and a download it asks for later is not taken for one of those.
    write_jsonl(isolated / "in.jsonl", 200)
    stall = Fault(path=r"/content$", stall_after_bytes=500, delay=1.0)

    def interrupt_once_downloading() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if list(isolated.glob(".*.part")):
                _thread.interrupt_main()  # as Ctrl-C does
                return
            time.sleep(0.01)

    with bl.open() as ledger:
        run = ledger.create("in.jsonl")
        complete(emulator, run.id)
        emulator.state.add_fault(stall)
        threading.Thread(target=interrupt_once_downloading, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            ledger.sweep()
        assert not list(isolated.glob("results_*"))

        # At once, while the sweep's worker may still be in its stalled read.
        try:
            run.retrieve()
        except KeyboardInterrupt:
            pytest.fail("the download was stopped as one of the interrupted sweep's")
        # The sweep's worker stops at its next chunk (it does not finish its download) and
        # removes its temporary file.
        deadline = time.monotonic() + 10
        while list(isolated.glob(".*.part")) or "save_output_interrupted" not in [
            event["action"] for event in run.history()
        ]:
            assert time.monotonic() < deadline, [event["action"] for event in run.history()]
            time.sleep(0.01)

    saved = isolated / f"results_{run.id}.jsonl"
    assert saved.read_bytes() == server_bytes(
        emulator, emulator.state.batches[run.id].output_file_id
    )


def test_prune_deletes_the_files_of_saved_batches_and_a_dry_run_only_looks(
    emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)
    with bl.open() as ledger:
        assert ledger.prune().items == []  # no ledger: nothing asked, nothing made
        run = ledger.create("in.jsonl").wait(**QUICK)
        too_new = ledger.prune(older_than="2000-01-01")
        looked = ledger.prune(dry_run=True)
        done = ledger.prune()
        again = ledger.prune()

    assert too_new.items == [] and too_new.kept_unsaved == 0
    assert isinstance(looked, bl.PrunePlan) and all(
        isinstance(item, bl.PruneItem) for item in looked.items
    )
    assert [(item.batch_id, item.kind, item.outcome) for item in looked.items] == [
        (run.id, "input", "would delete"),
        (run.id, "output", "would delete"),
    ]
    assert [(item.kind, item.outcome) for item in done.items] == [
        ("input", "deleted"),
        ("output", "deleted"),
    ]
    assert all(item.freed > 0 for item in done.items)
    assert again.items == []
    [row] = ledger_rows()
    assert row["input_file_gone_at"] is not None and row["output_file_gone_at"] is not None
    assert Path(row["output_path"]).exists()  # the saved results stay


def test_listing_reads_rows_and_json_straight_from_the_ledger_with_jobs_among_batches(
    emulator: EmulatorServer, isolated: Path
):
    (isolated.parent / "accounts.toml").write_text(
        f'[accounts.small]\nbase_url = "{emulator.base_url}"\nmax_requests = 2\n'
    )
    write_jsonl(isolated / "one.jsonl", 1)
    write_jsonl(isolated / "three.jsonl", 3)
    with bl.open(account="small") as ledger:
        empty = ledger.listing()
        assert (empty.rows(), list(empty.json_documents()), empty.count()) == ([], [], 0)
        batch = ledger.create("one.jsonl", metadata={"team": "search"})
        job = ledger.create("three.jsonl")
        everything = ledger.listing()
        rows = everything.rows(("batch_id", "status", "created_at", "recorded_at"))
        documents = [json.loads(doc) for doc in everything.json_documents()]
        counted, in_use = everything.count(), everything.accounts_in_use()
        newest = ledger.listing(limit=1)
        newest_rows, newest_docs = newest.rows(), list(newest.json_documents())
        tagged = ledger.listing(metadata={"team": "search"}).rows()
        with_parts = ledger.listing(parts=True).rows(("batch_id", "created_at", "recorded_at"))
        with pytest.raises(bl.UsageError, match="'finished' is not a status"):
            ledger.listing(status="finished")

    assert isinstance(everything, bl.Listing) and not everything.filtered
    assert isinstance(job, bl.Job) and isinstance(batch, bl.Batch)
    # Newest first (made in the same second here: a batch before a job on a tie).
    by_id = {row.get("job_id") or row["batch_id"]: row for row in rows}
    assert len(rows) == 2 and set(by_id) == {job.id, batch.id}
    assert set(by_id[batch.id]) == {"batch_id", "status", "created_at", "recorded_at"}
    assert by_id[job.id]["parts_total"] == 2 and by_id[job.id]["status"] == "running"
    docs = {doc.get("job_id") or doc["batch_id"]: doc for doc in documents}
    assert len(documents) == 2 and set(docs) == {job.id, batch.id}
    assert docs[batch.id]["metadata"] == {"team": "search"}  # a JSON column as an object
    assert counted == 1  # the batches that match: a job's parts are left out
    assert in_use == {"small": 3}
    assert [row.get("job_id") or row["batch_id"] for row in newest_rows] == [
        (rows[0].get("job_id") or rows[0]["batch_id"])
    ]
    assert newest.limit == 1 and len(newest_docs) == 1
    assert [row["batch_id"] for row in tagged] == [batch.id]
    assert len([row for row in with_parts if "job_id" not in row]) == 3  # the parts too


def test_accounts_and_places(emulator: EmulatorServer, isolated: Path):
    (isolated.parent / "accounts.toml").write_text(
        f'[accounts.small]\nbase_url = "{emulator.base_url}"\nmax_requests = 2\n'
    )
    write_jsonl(isolated / "in.jsonl", 1)
    with bl.open() as ledger:
        before = ledger.places()
        ledger.create("in.jsonl")
        after = {place["what"]: place for place in ledger.places()}
        accounts = {account["name"]: account for account in ledger.accounts()}
    with bl.open(account="small") as ledger:
        ledger.create("in.jsonl", force=True)
    (isolated.parent / "accounts.toml").write_text("")
    with bl.open(account="demo") as ledger:
        gone = {account["name"]: account for account in ledger.accounts()}

    assert [place["what"] for place in before] == ["ledger", "accounts", "logs"]
    assert before[0] == {"what": "ledger", "path": str(ledger.path), "exists": False}
    assert after["ledger"]["exists"] and after["accounts"]["exists"]
    assert after["logs"]["path"] == str(isolated / "logs") and after["logs"]["exists"]
    assert accounts["default"]["batches"] == 1 and accounts["default"]["key_set"] is True
    assert accounts["small"]["max_requests"] == 2 and accounts["small"]["batches"] == 0
    assert accounts["small"]["base_url"] == emulator.base_url
    assert accounts["demo"]["kind"] == "emulator" and accounts["demo"]["key_set"] is None
    assert gone["default"]["batches"] == 1  # the built-in default is still named
    assert gone["small"] == {  # no longer named: only what the ledger knows
        "name": "small",
        "kind": None,
        "base_url": None,
        "api_key_env": None,
        "key_set": None,
        "batches": 1,
        "profile": None,
        "max_requests": None,
        "max_bytes": None,
        "completion_windows": None,
    }


def test_results_of_an_input_edited_in_place_to_the_same_size_end_in_an_error(
    emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 4)
    with bl.open() as ledger:
        run = ledger.create("in.jsonl")
        run.wait(**QUICK)
        assert len(list(run.results())) == 4  # as sent: every row, no error
        text = source.read_bytes()
        source.write_bytes(text.replace(b"Say hello number 2", b"Say HELLO number 2"))
        assert source.stat().st_size == len(text)

        rows = run.results()
        first = next(rows)  # rows stream: the change is known once every line was read
        with pytest.raises(bl.UsageError, match="has changed since it was sent"):
            list(rows)
        stopped = run.results()
        next(stopped)
        stopped.close()  # one that stops early is not told: the input is hashed to its end

    assert first["custom_id"] == "request-0"
