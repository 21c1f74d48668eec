"""HTTP framing helpers: streamed request bodies and responses that may stream a file."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, BinaryIO, Protocol

from .errors import ApiError

CHUNK_SIZE = 64 * 1024
MAX_CHUNK_LINE = 1024
MAX_TRAILER_LINE = 8192


class BodyError(Exception):
    """The request body is framed wrongly or the client went away while sending it."""


class Readable(Protocol):
    """The part of a buffered socket file that reading a body needs."""

    def read(self, size: int, /) -> bytes: ...

    def readline(self, size: int, /) -> bytes: ...


def _read_fixed(rfile: Readable, length: int) -> Iterator[bytes]:
    remaining = length
    while remaining > 0:
        data = rfile.read(min(CHUNK_SIZE, remaining))
        if not data:
            raise BodyError(f"request body ended {remaining} bytes early")
        remaining -= len(data)
        yield data


def _chunk_size(line: bytes) -> int:
    if not line.endswith(b"\n"):
        raise BodyError("chunk size line is missing or too long")
    # Chunk extensions (";name=value") are allowed by RFC 9112 and carry nothing we need.
    size_text = line.split(b";", 1)[0].strip()
    try:
        size = int(size_text, 16)
    except ValueError:
        raise BodyError(f"bad chunk size {size_text!r}") from None
    if size < 0:
        raise BodyError("negative chunk size")
    return size


def _skip_trailers(rfile: Readable) -> None:
    while True:
        line = rfile.readline(MAX_TRAILER_LINE)
        if line in (b"\r\n", b"\n", b""):
            return


def _read_chunked(rfile: Readable) -> Iterator[bytes]:
    while True:
        size = _chunk_size(rfile.readline(MAX_CHUNK_LINE))
        if size == 0:
            _skip_trailers(rfile)
            return
        yield from _read_fixed(rfile, size)
        if rfile.read(2) != b"\r\n":
            raise BodyError("chunk data is not followed by CRLF")


class RequestBody:
    """A request body read lazily, in chunks, framed by Content-Length or chunked coding."""

    def __init__(self, rfile: Readable, headers: Message) -> None:
        self._chunks = self._open(rfile, headers)
        self.bytes_read = 0

    @staticmethod
    def _open(rfile: Readable, headers: Message) -> Iterator[bytes]:
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(rfile)
        raw_length = headers.get("Content-Length", "0").strip() or "0"
        if not raw_length.isdigit():
            raise BodyError(f"bad Content-Length {raw_length!r}")
        return _read_fixed(rfile, int(raw_length))

    def chunks(self) -> Iterator[bytes]:
        """Yield the not yet consumed part of the body; shares position with drain()."""
        for chunk in self._chunks:
            self.bytes_read += len(chunk)
            yield chunk

    def read_all(self, limit: int) -> bytes:
        """Read a small body whole; bigger than limit is a client error."""
        parts: list[bytes] = []
        size = 0
        for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"Request body is larger than {limit} bytes.")
            parts.append(chunk)
        return b"".join(parts)

    def drain(self) -> None:
        """Consume what is left so the connection can carry the next request."""
        for _chunk in self.chunks():
            pass


def new_request_id() -> str:
    return f"req_{secrets.token_hex(16)}"


@dataclass
class Response:
    """A response whose body is either bytes in memory or an open file streamed in chunks."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: BinaryIO | None = None
    stream_length: int = 0

    @property
    def content_length(self) -> int:
        return self.stream_length if self.stream is not None else len(self.body)

    def chunks(self) -> Iterator[bytes]:
        if self.stream is None:
            yield self.body
            return
        remaining = self.stream_length
        while remaining > 0:
            data = self.stream.read(min(CHUNK_SIZE, remaining))
            if not data:
                # The file shrank under us; the client will see a short body, as with any
                # server that dies mid-response.
                return
            remaining -= len(data)
            yield data

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(payload).encode("utf-8")
    return Response(status=status, body=body, headers=dict(headers or {}))


def error_response(error: ApiError, azure: bool = False, anthropic: bool = False) -> Response:
    """The error in the flavour's shape; Anthropic's carries its request id in the body too."""
    if anthropic:
        request_id = new_request_id()
        headers = {**error.headers, "request-id": request_id, "x-request-id": request_id}
        return json_response(error.anthropic_body(request_id), error.status, headers)
    body = error.azure_body() if azure else error.body()
    return json_response(body, status=error.status, headers=error.headers)
