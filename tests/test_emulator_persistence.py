"""The emulator's state on disk (`persist`): seen by a later process, shared by two at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from emulator_sdk import new_batch, run_to_end, sdk
from helpers import jsonl
from openai import OpenAI

from batchledger.emulator import EmulatorServer


@pytest.fixture
def client(server: EmulatorServer) -> Iterator[OpenAI]:
    with sdk(server) as client:
        yield client


# Persisted state


def test_a_later_process_sees_the_batches_of_an_earlier_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    with EmulatorServer(data_dir=data_dir, persist=True) as first, sdk(first) as client:
        batch = new_batch(client, tmp_path, ["a", "b"], metadata={"ref": "r1"})
        first.state.set_line_outcomes({"b": "500"})
        assert client.batches.retrieve(batch.id).status == "in_progress"
    assert (data_dir / "state.json").exists()

    with EmulatorServer(data_dir=data_dir, persist=True) as second, sdk(second) as client:
        again = client.batches.retrieve(batch.id)
        assert (again.status, again.metadata) == ("finalizing", {"ref": "r1"})
        done = run_to_end(client, batch.id)
        assert done.request_counts.model_dump() == {"total": 2, "completed": 1, "failed": 1}
        assert [line["custom_id"] for line in jsonl(client, done.output_file_id)] == ["a"]
        assert [b.id for b in client.batches.list()] == [batch.id]


def test_time_mode_moves_on_between_processes(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    with EmulatorServer(data_dir=data_dir, persist=True, step_seconds=60.0) as first:
        with sdk(first) as client:
            batch = new_batch(client, tmp_path, ["a"])
        stored = first.state.batches[batch.id]
        assert stored.last_step_at == pytest.approx(time.time(), abs=5)

    with EmulatorServer(data_dir=data_dir, persist=True, step_seconds=60.0) as second:
        # Four steps' worth of wall-clock time pass before the second process looks.
        second.state.set_clock_offset(241)
        with sdk(second) as client:
            assert client.batches.retrieve(batch.id).status == "completed"


def test_two_processes_share_one_data_dir_at_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    with (
        EmulatorServer(data_dir=data_dir, persist=True) as watcher,
        EmulatorServer(data_dir=data_dir, persist=True) as creator,
        sdk(watcher) as watching,
        sdk(creator) as creating,
    ):
        batch = new_batch(creating, tmp_path, ["a"])
        assert watching.batches.retrieve(batch.id).status == "in_progress"
        assert creating.batches.retrieve(batch.id).status == "finalizing"
        done = run_to_end(watching, batch.id)
        assert done.status == "completed"
        assert creating.batches.retrieve(batch.id).output_file_id == done.output_file_id
        assert jsonl(creating, done.output_file_id)[0]["custom_id"] == "a"
        second = new_batch(watching, tmp_path, ["b"])
        assert {b.id for b in creating.batches.list()} == {batch.id, second.id}


def test_state_file_is_only_written_with_persist(
    server: EmulatorServer, client: OpenAI, tmp_path: Path
) -> None:
    new_batch(client, tmp_path, ["a"])
    assert not (server.data_dir / "state.json").exists()


def test_parallel_creates_on_two_processes_lose_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    with (
        EmulatorServer(data_dir=data_dir, persist=True) as one,
        EmulatorServer(data_dir=data_dir, persist=True) as two,
    ):

        def create_some(server: EmulatorServer, prefix: str) -> list[str]:
            with sdk(server) as client:
                return [new_batch(client, tmp_path, [f"{prefix}{i}"]).id for i in range(5)]

        with ThreadPoolExecutor(max_workers=2) as pool:
            made = pool.map(create_some, (one, two), ("x", "y"))
            ids = {batch_id for batch_ids in made for batch_id in batch_ids}
        with sdk(one) as client:
            assert {batch.id for batch in client.batches.list(limit=100)} == ids
    assert len(ids) == 10
