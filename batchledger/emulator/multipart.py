"""A small streaming multipart/form-data reader (RFC 7578), since `cgi` left the stdlib.

The body arrives as an iterator of byte chunks of any size. Part bodies are handed on in
chunks too, so a part of any size passes through with memory bounded by about one chunk
plus the boundary length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value

MAX_HEADER_LINE = 8 * 1024
MAX_HEADER_LINES = 32


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass(frozen=True)
class PartInfo:
    """The headers of one part: its form field name and, for file parts, the filename."""

    name: str | None
    filename: str | None
    content_type: str | None


def boundary_from_content_type(value: str | None) -> bytes:
    """Return the boundary of a multipart/form-data Content-Type header value."""
    message = Message()
    message["content-type"] = value or ""
    if message.get_content_type() != "multipart/form-data":
        raise MultipartError(f"expected Content-Type multipart/form-data, got {value!r}")
    boundary = message.get_boundary()
    # RFC 2046 limits a boundary to 70 characters; an empty one cannot delimit anything.
    if not boundary or len(boundary) > 200:
        raise MultipartError("the multipart boundary is missing or invalid")
    return boundary.encode("latin-1", errors="replace")


def _part_info(header_lines: list[bytes]) -> PartInfo:
    message = Message()
    for line in header_lines:
        key, sep, value = line.decode("utf-8", errors="replace").partition(":")
        if not sep:
            raise MultipartError(f"malformed part header {line!r}")
        message[key.strip()] = value.strip()
    raw_name = message.get_param("name", header="content-disposition")
    name = None if raw_name is None else collapse_rfc2231_value(raw_name)
    content_type: str | None = message["content-type"]
    return PartInfo(name=name, filename=message.get_filename(), content_type=content_type)


class MultipartReader:
    """Pull parts one by one with next_part(), then stream that part with iter_part()."""

    def __init__(self, chunks: Iterable[bytes], boundary: bytes) -> None:
        self._chunks = iter(chunks)
        # Seeding the buffer with CRLF lets the first boundary (which has no CRLF before
        # it when there is no preamble) be found by the same delimiter search as the rest.
        self._buf = bytearray(b"\r\n")
        self._delimiter = b"\r\n--" + boundary
        self._started = False
        self._part_open = False
        self._done = False

    def _fill(self) -> bool:
        """Append the next non-empty chunk to the buffer; False at the end of the body."""
        for chunk in self._chunks:
            if chunk:
                self._buf += chunk
                return True
        return False

    def _until_delimiter(self) -> Iterator[bytes]:
        """Yield bytes up to the next delimiter, consume it and mark the part as read."""
        keep = len(self._delimiter) - 1
        while True:
            # Bytes leave the buffer before they are yielded, so a consumer that stops early
            # leaves the reader in a consistent state.
            index = self._buf.find(self._delimiter)
            if index >= 0:
                data = bytes(self._buf[:index])
                del self._buf[: index + len(self._delimiter)]
                self._part_open = False
                if data:
                    yield data
                return
            # Hold back a tail that could be the start of a delimiter split across chunks.
            if len(self._buf) > keep:
                data = bytes(self._buf[:-keep])
                del self._buf[:-keep]
                yield data
            if not self._fill():
                raise MultipartError("body ended before the closing boundary")

    def _read_line(self) -> bytes:
        while (index := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > MAX_HEADER_LINE:
                raise MultipartError("part header line too long")
            if not self._fill():
                raise MultipartError("body ended inside part headers")
        line = bytes(self._buf[:index])
        del self._buf[: index + 2]
        return line

    def _at_final_boundary(self) -> bool:
        """After a delimiter: True for the closing "--", else consume the rest of its line."""
        while len(self._buf) < 2 and self._fill():
            pass
        if self._buf.startswith(b"--"):
            return True
        # RFC 2046 allows linear whitespace ("transport padding") after a boundary.
        if self._read_line().strip(b" \t"):
            raise MultipartError("unexpected bytes after a boundary")
        return False

    def _read_headers(self) -> list[bytes]:
        lines: list[bytes] = []
        while line := self._read_line():
            if len(lines) >= MAX_HEADER_LINES:
                raise MultipartError("too many part headers")
            lines.append(line)
        return lines

    def next_part(self) -> PartInfo | None:
        """Move to the next part, skipping any unread rest of the current one."""
        if self._done:
            return None
        if not self._started or self._part_open:
            # Skips the preamble on the first call and an unread part body later.
            for _skipped in self._until_delimiter():
                pass
            self._started = True
        if self._at_final_boundary():
            self._done = True
            return None
        info = _part_info(self._read_headers())
        self._part_open = True
        return info

    def iter_part(self) -> Iterator[bytes]:
        """Yield the body of the current part in chunks."""
        if not self._part_open:
            return
        yield from self._until_delimiter()

    def read_text(self, limit: int) -> str:
        """Read the current part whole as UTF-8; for small form fields."""
        data = bytearray()
        for chunk in self.iter_part():
            data += chunk
            if len(data) > limit:
                raise MultipartError(f"form field longer than {limit} bytes")
        return data.decode("utf-8", errors="replace")
