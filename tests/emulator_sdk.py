"""The openai SDK on an emulator, for the emulator's own tests: a client, request lines, a
batch made in one call and run to its end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openai import OpenAI

from batchledger.emulator import EmulatorServer


def sdk(server: EmulatorServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)


def request_line(custom_id: str, *, url: str = "/v1/responses", model: str = "gpt-test") -> Any:
    body = {"model": model, "input": f"Say hello to {custom_id}"}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def upload(client: OpenAI, path: Path, lines: list[Any]) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with path.open("rb") as handle:
        return client.files.create(file=handle, purpose="batch").id


def new_batch(
    client: OpenAI, tmp_path: Path, ids: list[str], *, model: str = "gpt-test", **kwargs: Any
) -> Any:
    lines = [request_line(custom_id, model=model) for custom_id in ids]
    file_id = upload(client, tmp_path / f"{ids[0]}.jsonl", lines)
    options = {"endpoint": "/v1/responses", "completion_window": "24h", **kwargs}
    return client.batches.create(input_file_id=file_id, **options)


def run_to_end(client: Any, batch_id: str) -> Any:
    """Retrieve until the batch is final; each retrieve is one step."""
    for _ in range(10):
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
    raise AssertionError(f"{batch_id} did not finish")
