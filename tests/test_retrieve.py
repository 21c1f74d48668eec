"""`retrieve`: refuse what is not completed; save byte for byte; warn on overwrite."""

from pathlib import Path

from helpers import advance, complete, ledger_rows, server_bytes, write_jsonl

from batchledger.emulator import EmulatorServer


def create(cli, path: Path) -> str:
    write_jsonl(path, 4)
    result = cli("create", "--in", str(path))
    assert result.code == 0, result.err
    return result.field("batch_id")


def test_retrieve_of_a_running_batch_exits_3_and_writes_nothing(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = create(cli, isolated / "in.jsonl")

    result = cli("retrieve", "--batch-id", batch_id, "--out", "out/res.jsonl")

    assert result.code == 3
    assert result.out == ""
    assert result.err == (
        f"batchledger: error: batch {batch_id} is in_progress, not completed; nothing was saved\n"
    )
    assert not (isolated / "out").exists()
    assert sorted(p.name for p in isolated.iterdir()) == ["in.jsonl", "logs"]
    [row] = ledger_rows()
    assert row["output_path"] is None and row["status"] == "in_progress"
    assert ledger_rows("history")[-1]["action"] == "retrieve_refused"


def test_retrieve_of_a_failed_batch_exits_3(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = create(cli, isolated / "in.jsonl")
    emulator.state.set_outcome(batch_id, "failed")
    advance(emulator, batch_id, 1)

    result = cli("retrieve", "--batch-id", batch_id)

    assert result.code == 3
    assert "is failed, not completed" in result.err


def test_retrieve_saves_byte_identical_output_to_out(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = create(cli, isolated / "in.jsonl")
    complete(emulator, batch_id)

    result = cli("retrieve", "--batch-id", batch_id, "--out", "nested/dir/my_results.jsonl")

    assert result.code == 0, result.err
    target = isolated / "nested/dir/my_results.jsonl"
    expected = server_bytes(emulator, emulator.state.batches[batch_id].output_file_id)
    assert target.read_bytes() == expected
    assert result.out == f"saved: nested/dir/my_results.jsonl ({len(expected)} bytes)\n"
    assert result.err == ""
    assert [p.name for p in target.parent.iterdir()] == ["my_results.jsonl"]  # no temp left
    [row] = ledger_rows()
    assert (row["output_path"], row["output_bytes"]) == (str(target), len(expected))
    assert row["output_saved_at"].endswith("Z")
    assert ledger_rows("history")[-1]["action"] == "save_output"


def test_retrieve_default_name_and_overwrite_warning(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = create(cli, isolated / "in.jsonl")
    complete(emulator, batch_id)
    target = isolated / f"results_{batch_id}.jsonl"
    target.write_text("stale\n")

    result = cli("retrieve", "--batch-id", batch_id)

    assert result.code == 0, result.err
    expected = server_bytes(emulator, emulator.state.batches[batch_id].output_file_id)
    assert target.read_bytes() == expected
    assert result.out == f"saved: results_{batch_id}.jsonl ({len(expected)} bytes)\n"
    assert result.err == (
        f"batchledger: warning: overwrote existing file results_{batch_id}.jsonl\n"
    )


# --- --out may name a folder ------------------------------------------------------------


def test_retrieve_into_an_existing_folder_saves_under_the_default_name(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    complete(emulator, batch_id)
    (isolated / "out").mkdir()

    result = cli("retrieve", "--batch-id", batch_id, "--out", "out")

    assert result.code == 0, result.err
    assert result.out.startswith(f"saved: out/results_{batch_id}.jsonl")
    assert (isolated / "out" / f"results_{batch_id}.jsonl").stat().st_size > 0
