"""Helpers the tests share: inputs, ledger reads, server-side bytes."""

import http.client
import json
import os
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchledger.emulator import EmulatorServer

API_KEY = "sk-test-0123456789abcdefSECRET"
# Starts an emulator with the given settings (the make_server fixture).
ServerFactory = Callable[..., EmulatorServer]


def write_jsonl(path: Path, lines: int, endpoint: str = "/v1/responses", **body: Any) -> Path:
    """A valid batch input of `lines` requests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for n in range(lines):
            request = {
                "custom_id": f"request-{n}",
                "method": "POST",
                "url": endpoint,
                "body": {"model": "gpt-4o-mini", "input": f"Say hello number {n}", **body},
            }
            out.write(json.dumps(request) + "\n")
    return path


def ledger_rows(table: str = "batches") -> list[dict[str, Any]]:
    """Every row of a ledger table, read with plain sqlite3."""
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
    finally:
        conn.close()


def server_bytes(server: EmulatorServer, file_id: str) -> bytes:
    """The bytes the emulator serves for `file_id`, fetched over HTTP with the SDK."""
    from openai import OpenAI

    client = OpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0)
    return client.files.content(file_id).content


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def log_text(work: Path) -> str:
    """The text of every log file written under `work`/logs."""
    return "".join(path.read_text() for path in sorted((work / "logs").glob("*.log")))


def sdk(server: EmulatorServer) -> Any:
    """An SDK client of the test's own, for arranging state on the emulator."""
    from openai import OpenAI

    return OpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0)


def advance(server: EmulatorServer, batch_id: str, steps: int) -> str:
    """Move a batch `steps` steps on (each retrieve is one step); its status after."""
    client = sdk(server)
    status = ""
    for _ in range(steps):
        status = client.batches.retrieve(batch_id).status
    return str(status)


def complete(server: EmulatorServer, batch_id: str) -> None:
    """validating -> in_progress -> finalizing -> completed."""
    assert advance(server, batch_id, 3) == "completed"


def api_requests(server: EmulatorServer, method: str, path_prefix: str) -> int:
    """How many /v1 requests of `method` under `path_prefix` the emulator answered."""
    return sum(
        1
        for request in server.state.requests
        if request.method == method and request.path.startswith(path_prefix)
    )


def raw(
    server: EmulatorServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request with http.client, so tests control every header (or its absence): the
    status, the headers (lower-cased names) and the JSON body. A dict or list `body` is
    sent as its JSON; text, bytes or an iterable of chunks (sent chunked) as they are."""
    if isinstance(body, dict | list):
        body = json.dumps(body)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        response_headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, response_headers, json.loads(data) if data else None
    finally:
        connection.close()


def jsonl(client: Any, file_id: str | None) -> list[dict[str, Any]]:
    """The lines of a file on the emulator, each parsed."""
    assert file_id is not None
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]
