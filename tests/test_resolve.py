"""What a batch id given on the command line resolves to: `last` is the batch made most
recently here."""

from pathlib import Path

from helpers import sdk, write_jsonl

from batchledger.emulator import EmulatorServer

# --- last is the batch most recently made -------------------------------------------------


def test_last_is_the_batch_made_most_recently_here_even_after_sync(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "a.jsonl", 2)
    write_jsonl(isolated / "b.jsonl", 3)
    cli("create", "--in", "a.jsonl")
    mine = cli("create", "--in", "b.jsonl").field("batch_id")
    client = sdk(emulator)
    for n in (4, 5):
        upload = client.files.create(
            file=write_jsonl(isolated / f"e{n}.jsonl", n).open("rb"), purpose="batch"
        )
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
        )
    assert cli("sync").code == 0

    shown = cli("show", "last")

    assert shown.code == 0
    assert shown.field("batch_id") == mine


def test_last_without_batches_made_here_is_the_newest_synced(
    cli, emulator: EmulatorServer, isolated: Path
):
    client = sdk(emulator)
    made = []
    for n in (2, 3):
        upload = client.files.create(
            file=write_jsonl(isolated / f"e{n}.jsonl", n).open("rb"), purpose="batch"
        )
        made.append(
            client.batches.create(
                input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
            ).id
        )
        emulator.state.set_clock_offset(60)  # the second made a minute later
    assert cli("sync").code == 0

    assert cli("show", "last").field("batch_id") == made[-1]
