"""`export`: every input request with its result, joined by custom_id, as CSV or JSONL."""

import csv
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from helpers import complete, ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer
from batchledger.emulator.lifecycle import ERROR_MODEL
from batchledger.emulator.synth import EMBEDDING_DIMENSIONS
from batchledger.export import ExportCounts, csv_chunks, export_rows


def write_requests(path: Path, endpoint: str, bodies: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for n, body in enumerate(bodies):
            line = {"custom_id": f"req-{n}", "method": "POST", "url": endpoint, "body": body}
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


def run_batch(cli: Any, emulator: EmulatorServer, path: Path, endpoint: str) -> str:
    created = cli("create", "--in", str(path), "--endpoint", endpoint)
    assert created.code == 0, created.err
    batch_id = created.field("batch_id")
    complete(emulator, batch_id)
    assert cli("status", "--batch-id", batch_id).code == 0
    return batch_id


def saved_results(batch_id: str) -> dict[str, dict[str, Any]]:
    """The saved output and error lines, by custom_id, read straight from the files."""
    row = next(row for row in ledger_rows() if row["batch_id"] == batch_id)
    results = {}
    for kind in ("output", "error"):
        if row[f"{kind}_path"]:
            for line in Path(row[f"{kind}_path"]).read_text().splitlines():
                record = json.loads(line)
                results[record["custom_id"]] = record
    return results


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_responses_export_matches_the_input_and_results_row_by_row(
    cli, emulator: EmulatorServer, isolated: Path
):
    prompts = ['Say "hi", then bye', "Grüße aus Köln, 日本", "fail me", "plain"]
    bodies = [{"model": "gpt-4o-mini", "input": prompt} for prompt in prompts]
    bodies[2]["model"] = ERROR_MODEL  # the emulator answers it with a 400 in the error file
    path = write_requests(isolated / "in.jsonl", "/v1/responses", bodies)
    batch_id = run_batch(cli, emulator, path, "/v1/responses")
    results = saved_results(batch_id)
    assert len(results) == 4

    result = cli("export", batch_id)

    assert result.code == 0, result.err
    target = isolated / f"export_{batch_id}.csv"
    size = target.stat().st_size
    assert result.out == (
        f"exported: export_{batch_id}.csv ({size} bytes; 4 requests: 3 ok, 1 error, 0 missing)\n"
    )
    raw = target.read_bytes()
    assert raw.count(b"\r\n") == 5 and b"\n" not in raw.replace(b"\r\n", b"")
    rows = read_csv(target)
    assert list(rows[0]) == [
        "line",
        "custom_id",
        "status",
        "http_status",
        "text",
        "input_tokens",
        "output_tokens",
        "error_code",
        "error_message",
    ]
    inputs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [row["custom_id"] for row in rows] == [line["custom_id"] for line in inputs]
    for number, (row, request) in enumerate(zip(rows, inputs, strict=True), start=1):
        found = results[request["custom_id"]]
        response = found["response"]
        assert row["line"] == str(number)
        assert row["http_status"] == str(response["status_code"])
        if response["status_code"] == 200:
            body = response["body"]
            assert row["status"] == "ok"
            assert row["text"] == body["output"][0]["content"][0]["text"]
            assert row["input_tokens"] == str(body["usage"]["input_tokens"])
            assert row["output_tokens"] == str(body["usage"]["output_tokens"])
            assert (row["error_code"], row["error_message"]) == ("", "")
        else:
            error = response["body"]["error"]
            assert (row["status"], row["text"]) == ("error", "")
            assert (row["error_code"], row["error_message"]) == (error["code"], error["message"])
    assert 'Say "hi", then bye' in rows[0]["text"]
    assert "Grüße aus Köln, 日本" in rows[1]["text"]


def test_chat_and_embeddings_and_missing_results(cli, emulator: EmulatorServer, isolated: Path):
    chat = write_requests(
        isolated / "chat.jsonl",
        "/v1/chat/completions",
        [
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Hi {n}"}]}
            for n in range(3)
        ],
    )
    chat_id = run_batch(cli, emulator, chat, "/v1/chat/completions")
    embed = write_requests(
        isolated / "embed.jsonl",
        "/v1/embeddings",
        [{"model": "text-embedding-3-small", "input": f"text {n}"} for n in range(2)],
    )
    embed_id = run_batch(cli, emulator, embed, "/v1/embeddings")
    # one answer lost from the saved output: its request is `missing`
    output = Path(next(row for row in ledger_rows() if row["batch_id"] == chat_id)["output_path"])
    kept = [line for line in output.read_text().splitlines() if '"req-1"' not in line]
    output.write_text("\n".join(kept) + "\n")

    chat_rows = json.loads(
        "["
        + ",".join(cli("export", chat_id, "--format", "jsonl", "--out", "-").out.splitlines())
        + "]"
    )
    results = saved_results(chat_id)
    assert [(row["custom_id"], row["status"]) for row in chat_rows] == [
        ("req-0", "ok"),
        ("req-1", "missing"),
        ("req-2", "ok"),
    ]
    assert (
        chat_rows[0]["text"]
        == (results["req-0"]["response"]["body"]["choices"][0]["message"]["content"])
    )
    assert (
        chat_rows[0]["input_tokens"]
        == (results["req-0"]["response"]["body"]["usage"]["prompt_tokens"])
    )
    assert chat_rows[1]["http_status"] is None and chat_rows[1]["text"] is None

    exported = cli("export", embed_id, "--out", "sheets/embed.csv")
    assert exported.code == 0, exported.err
    rows = read_csv(isolated / "sheets" / "embed.csv")
    assert [row["text"] for row in rows] == [str(EMBEDDING_DIMENSIONS)] * 2
    again = cli("export", embed_id, "--out", "sheets/embed.csv")
    assert "overwrote existing file" in again.err


def test_export_of_results_not_saved_is_refused(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 2)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")

    running = cli("export", batch_id)
    assert (running.code, running.out) == (3, "")
    assert f"'batchledger retrieve --batch-id {batch_id}'" in running.err

    complete(emulator, batch_id)
    assert cli("status", "--batch-id", batch_id, "--no-auto-save").code == 0
    unsaved = cli("export", batch_id)
    assert (unsaved.code, unsaved.out) == (3, "")
    assert "are not saved; run 'batchledger retrieve" in unsaved.err
    assert len(unsaved.err.splitlines()) == 1
    assert not list(isolated.glob("export_*"))


def fabricated_batch(folder: Path, requests: int) -> tuple[Path, list[Path]]:
    """An input of `requests` lines and an output answering all but every tenth."""
    folder.mkdir()
    input_path, output_path = folder / "in.jsonl", folder / "out.jsonl"
    with input_path.open("w") as inputs, output_path.open("w") as outputs:
        for n in range(requests):
            inputs.write(
                f'{{"custom_id":"r{n}","method":"POST","url":"/v1/responses","body":{{}}}}\n'
            )
            if n % 10:
                body = {
                    "object": "response",
                    "output_text": f"answer {n} " + "x" * 200,
                    "usage": {"input_tokens": 5, "output_tokens": 50},
                }
                result = {"custom_id": f"r{n}", "response": {"status_code": 200, "body": body}}
                outputs.write(json.dumps(result) + "\n")
    return input_path, [output_path]


def peak_export_memory(input_path: Path, results: list[Path]) -> tuple[int, ExportCounts]:
    counts = ExportCounts()
    tracemalloc.start()
    try:
        for _chunk in csv_chunks(export_rows(input_path, results, counts)):
            pass
        return tracemalloc.get_traced_memory()[1], counts
    finally:
        tracemalloc.stop()


def test_export_memory_does_not_grow_with_the_batch(tmp_path: Path):
    small = peak_export_memory(*fabricated_batch(tmp_path / "small", 5_000))
    large = peak_export_memory(*fabricated_batch(tmp_path / "large", 50_000))

    assert large[1].rows == 50_000 and large[1].by_status["missing"] == 5_000
    assert large[0] < 4 * 1024 * 1024, large[0]
    assert large[0] < 2 * small[0], (small[0], large[0])


@pytest.mark.parametrize("missing", ["input", "output"])
def test_export_needs_its_files_on_disk(
    cli, emulator: EmulatorServer, isolated: Path, missing: str
):
    write_jsonl(isolated / "in.jsonl", 1)
    batch_id = run_batch(cli, emulator, isolated / "in.jsonl", "/v1/responses")
    row = ledger_rows()[0]
    Path(row[f"{missing}_path"]).unlink()

    result = cli("export", batch_id)

    assert result.code == (2 if missing == "input" else 3), result.err
    assert len(result.err.splitlines()) == 1
    if missing == "output":
        assert "--force' first" in result.err
    assert not list(isolated.glob("export_*"))


def test_export_refuses_an_input_changed_since_it_was_sent(
    cli, emulator: EmulatorServer, isolated: Path
):
    # Rows are the input's lines joined to their answers: lines added since would be
    # exported as requests that were never sent.
    source = write_jsonl(isolated / "in.jsonl", 2)
    batch_id = run_batch(cli, emulator, source, "/v1/responses")
    write_jsonl(isolated / "in.jsonl", 3)

    result = cli("export", batch_id)

    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"batchledger: error: the input of batch {batch_id} ({source}) has changed since it "
        "was sent\n"
    )
    assert not list(isolated.glob("export_*"))


@pytest.mark.parametrize("split", [False, True], ids=["batch", "job"])
def test_export_refuses_an_input_edited_in_place_to_the_same_size(
    cli, emulator: EmulatorServer, isolated: Path, split: bool
):
    # Same size, other bytes: a request's text changed since it was sent. Its sha256, taken
    # beside the export, tells; the export is refused before its file is in place.
    source = write_jsonl(isolated / "in.jsonl", 4)
    if split:
        created = cli("create", "--in", "in.jsonl", "--max-requests", "2")
        assert created.code == 0, created.err
        exported_id = created.out.splitlines()[0].removeprefix("job_id: ")
        for _ in range(4):
            for batch_id in list(emulator.state.batches):
                emulator.state.advance(batch_id)
        assert cli("status", "--all").code == 0
    else:
        exported_id = run_batch(cli, emulator, source, "/v1/responses")
    text = source.read_bytes()
    edited = text.replace(b"Say hello number 3", b"Say HELLO number 3")
    assert len(edited) == len(text) and edited != text
    source.write_bytes(edited)
    (isolated / "rows.csv").write_bytes(b"an export made before\n")

    result = cli("export", exported_id, "--out", "rows.csv")

    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"batchledger: error: the input {source} has changed since it was sent (same size, "
        "other bytes); nothing was exported\n"
    )
    assert (isolated / "rows.csv").read_bytes() == b"an export made before\n"
    assert not list(isolated.glob(".rows.csv*"))


def test_an_input_replaced_by_rename_during_an_export_is_not_mixed_with_the_one_sent(
    cli, emulator: EmulatorServer, isolated: Path, monkeypatch: pytest.MonkeyPatch
):
    # Editors save by renaming a new file over the old one. The export reads and hashes the
    # one file it opened, the one sent, whatever is renamed over its path meanwhile.
    from batchledger import export

    source = write_jsonl(isolated / "in.jsonl", 4)
    batch_id = run_batch(cli, emulator, source, "/v1/responses")
    index_results = export.build_index

    def build_index_then_replace(index, results):
        index_results(index, results)
        edited = isolated / "in.jsonl.new"
        edited.write_bytes(source.read_bytes().replace(b'"request-2"', b'"REQUEST-2"'))
        os.replace(edited, source)  # while the export is under way

    monkeypatch.setattr(export, "build_index", build_index_then_replace)

    result = cli("export", batch_id, "--out", "rows.csv")

    assert result.code == 0, result.err
    rows = read_csv(isolated / "rows.csv")
    assert [row["custom_id"] for row in rows] == [f"request-{n}" for n in range(4)]
    assert {row["status"] for row in rows} == {"ok"}  # every line joined to its answer
    assert b'"REQUEST-2"' in source.read_bytes()  # the path holds the edited file now


def test_an_input_that_cannot_be_read_is_a_usage_error_not_a_failed_save(
    cli, emulator: EmulatorServer, isolated: Path, monkeypatch: pytest.MonkeyPatch
):
    source = write_jsonl(isolated / "in.jsonl", 2)
    batch_id = run_batch(cli, emulator, source, "/v1/responses")
    real_open = Path.open

    def refuse_the_input(path: Path, *args, **kwargs):  # root reads any file: refuse it here
        if path == source:
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse_the_input)

    result = cli("export", batch_id, "--out", "rows.csv")

    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"batchledger: error: cannot read input file {source}: Permission denied\n"
    )
    assert not (isolated / "rows.csv").exists()


def test_export_of_a_job_refuses_an_input_changed_since_it_was_split(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 4)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "2")
    job_id = created.out.splitlines()[0].removeprefix("job_id: ")
    for batch_id in list(emulator.state.batches):
        complete(emulator, batch_id)
    assert cli("status", "--all").code == 0
    write_jsonl(isolated / "in.jsonl", 5)

    result = cli("export", job_id)

    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"batchledger: error: the input of job {job_id} ({source}) is gone or has changed\n"
    )
    assert not list(isolated.glob("export_*"))
