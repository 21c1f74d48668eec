"""A local clock off from the server's (20 minutes ahead or behind) never makes a second
batch: a lost create answer and a cut-off create are found all the same."""

from pathlib import Path

import pytest
from helpers import ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer, Fault

SKEWS = pytest.mark.parametrize(
    "skew", [-1200, 1200], ids=["clock-20min-ahead", "clock-20min-behind"]
)


def batches_made(server: EmulatorServer) -> int:
    return len(server.state.batches)


# --- a skewed clock never makes a second batch ------------------------------------------


@SKEWS
def test_a_lost_create_answer_is_found_whatever_the_local_clock(
    cli, emulator: EmulatorServer, isolated: Path, skew: int
):
    # The server's clock 20 minutes behind ours is our clock 20 minutes ahead of it.
    emulator.state.set_clock_offset(skew)
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", drop_request=True))

    result = cli("create", "--in", "in.jsonl")

    assert result.code == 0, result.err
    assert batches_made(emulator) == 1
    [batch_id] = emulator.state.batches
    assert result.field("batch_id") == batch_id
    assert [row["batch_id"] for row in ledger_rows()] == [batch_id]


@SKEWS
def test_a_cut_off_create_is_found_by_the_sweep_whatever_the_local_clock(
    cli, emulator: EmulatorServer, isolated: Path, skew: int
):
    emulator.state.set_clock_offset(skew)
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", drop_request=True))
    assert cli("create", "--in", "in.jsonl", "--max-retries", "0").code == 1

    swept = cli("status", "--all")
    again = cli("create", "--in", "in.jsonl")

    assert swept.code == 0, swept.err
    [batch_id] = emulator.state.batches
    assert f"found {batch_id}" in swept.err
    assert again.code == 3  # a duplicate of the batch the sweep found, not a second one
    assert batches_made(emulator) == 1
