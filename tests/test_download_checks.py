"""Each provider's download holds the bytes to the size the server announced.

Behind the transport: a body cut short of its Content-Length is an error of the SDK's HTTP
library first, so no download from the emulator reaches the providers' own check. One
that does: a chunked body that also carries a Content-Length (a proxy that re-chunks a
response and keeps its header), which the HTTP library reads to its end without a word.
The server here sends just that, over real HTTP, to the real SDK of each provider.
"""

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchledger.accounts import Account
from batchledger.errors import Transient

KEY = "sk-test-0123456789abcdefSECRET"
BODY = b'{"custom_id":"req-0"}\n'  # what arrives; 100 bytes are announced


class StaleLengthServer:
    """Answers every request with BODY, chunked, under `Content-Length: 100`."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.requests = 0
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    if not (data := conn.recv(65536)):
                        break
                    request += data
                self.requests += 1
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: 100\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
                    b"\r\n" + f"{len(BODY):x}\r\n".encode() + BODY + b"\r\n0\r\n\r\n"
                )


@pytest.fixture
def stale() -> Iterator[StaleLengthServer]:
    server = StaleLengthServer()
    yield server
    server.sock.close()


def test_an_openai_download_short_of_its_announced_size_is_fetched_again_then_refused(
    isolated: Path, stale: StaleLengthServer
):
    from openai import OpenAI  # each SDK imported by its own test: a second each

    from batchledger.providers.openai import download_results

    target = isolated / "results.jsonl"
    client = OpenAI(api_key=KEY, base_url=f"{stale.base_url}/v1", max_retries=0)

    with pytest.raises(Transient, match=r"broke off 3 times \(received 22 of 100 bytes\)"):
        download_results(client, "file-abc", target)

    assert stale.requests == 3
    assert list(isolated.iterdir()) == []  # no target, no .part


def test_an_anthropic_download_short_of_its_announced_size_is_fetched_again_then_refused(
    isolated: Path, stale: StaleLengthServer, monkeypatch: pytest.MonkeyPatch
):
    from batchledger.providers.anthropic import DOWNLOAD_ATTEMPTS, AnthropicProvider

    monkeypatch.setenv("CLAUDE_KEY", KEY)
    account = Account(
        name="claude", kind="anthropic", base_url=stale.base_url, api_key_env="CLAUDE_KEY"
    )
    provider = AnthropicProvider(account, max_retries=0, timeout=10)
    target = isolated / "results.jsonl"
    results_url = f"{stale.base_url}/v1/messages/batches/msgbatch_abc/results"

    with pytest.raises(Transient, match=r"broke off 3 times \(received 22 of 100 bytes\)"):
        provider.download(results_url, target)

    assert stale.requests == DOWNLOAD_ATTEMPTS
    assert list(isolated.iterdir()) == []
