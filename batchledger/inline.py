"""Anthropic's create request, streamed from byte ranges of the input: checked, then sent.

Message Batches take their requests inline: the create request's body is
`{"requests": [<line>, <line>, ...]}`. The lines are Anthropic's own request lines,
`{"custom_id": "...", "params": {...}}`, so the body is the input's bytes with a comma
before each line but the first, between a fixed prefix and suffix: it is streamed straight
from the file (through split.Segments, so a job's part or a retry's lines are sent without
a copy), never parsed into objects, and its length is known before a byte is sent.

Before that, `scan_requests` checks every line's shape without building it (see
`scan_requests` for what that proves and what it leaves to the API).
"""

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from batchledger.errors import UsageError
from batchledger.result_lines import file_offset
from batchledger.split import Segments

if TYPE_CHECKING:  # the SDK costs start-up time: imported by the caller that sends
    import anthropic

CREATE_PATH = "/v1/messages/batches"
BODY_PREFIX = b'{"requests":['
BODY_SUFFIX = b"]}"
# Bytes read at once from the input: a few of these are all the memory a scan or a send takes.
READ_BYTES = 1024 * 1024

# What a line may be, checked without parsing it: the first key custom_id, whose value is
# an id as Anthropic allows it (^[a-zA-Z0-9_-]{1,64}$: no escape can hide in it), then
# params, whose value opens an object; the line closes that object and the request's.
# Whitespace between tokens is JSON's own (space, tab, CR). The other key order (params
# first) is accepted too: there, custom_id and its id close the line.
_HEAD = re.compile(rb'[ \t\r]*\{[ \t\r]*"custom_id"[ \t\r]*:[ \t\r]*"([A-Za-z0-9_-]{1,64})"')
_PARAMS_NEXT = re.compile(rb'[ \t\r]*,[ \t\r]*"params"[ \t\r]*:[ \t\r]*\{')
_CLOSE = re.compile(rb"\}[ \t\r]*\}[ \t\r]*\Z")
_PARAMS_HEAD = re.compile(rb'[ \t\r]*\{[ \t\r]*"params"[ \t\r]*:[ \t\r]*\{')
_ID_TAIL = re.compile(
    rb'\}[ \t\r]*,[ \t\r]*"custom_id"[ \t\r]*:[ \t\r]*"([A-Za-z0-9_-]{1,64})"[ \t\r]*\}[ \t\r]*\Z'
)
# Where _CLOSE and _ID_TAIL look: the end of the line only, so that a long line costs nothing.
_TAIL_BYTES = 128
# JSON allows no raw control character but its whitespace (tab, LF, CR), in or out of strings.
_CONTROL = bytes(range(32)).replace(b"\t", b"").replace(b"\n", b"").replace(b"\r", b"")
_BLANK = b" \t\r"


@dataclass(frozen=True)
class Scanned:
    """What the scan of an input's ranges found: enough to send it and to say its size."""

    requests: int  # non-blank lines, each a request
    blank_lines: int  # lines of JSON whitespace only, sent as whitespace
    size: int  # bytes of the ranges

    @property
    def body_length(self) -> int:
        """The exact Content-Length of the create request's body."""
        commas = max(self.requests - 1, 0)
        return len(BODY_PREFIX) + self.size + commas + len(BODY_SUFFIX)


def scan_requests(path: Path, ranges: Sequence[tuple[int, int]] | None = None) -> Scanned:
    """Check that every line of `ranges` of `path` (all of it by default) is a request line.

    UsageError (exit 2) naming the first line (its number in the input) that is not, or
    that repeats an earlier line's custom_id. Blank lines are allowed (they are sent as
    JSON whitespace, which the body allows between elements); the last line may lack
    its newline.

    Proven for every line, at the cost of a few C calls per line and a pass of `translate`
    over the bytes: it is UTF-8 with no raw control character; it opens an object whose
    first key is `custom_id`, a string Anthropic accepts as an id (1 to 64 of
    `A-Za-z0-9_-`; no escape can hide in it), and whose next key is `params`, whose value
    opens an object; the line ends by closing two objects. Or the same with `params` first
    and `custom_id` last. The custom_ids are all different.

    Not proven (it would take a JSON parser, about ten times the cost): that the bytes
    between params' opening brace and the line's end are well-formed JSON, and that no
    third key follows params' object. A line wrong in one of those ways passes the scan;
    the API then refuses the whole create (HTTP 400, nothing made, nothing paid), without
    naming the line. What is in params (model, max_tokens, messages) is the API's to judge,
    request by request, as `errored` results.
    """
    global _last_scan
    stat = path.stat()
    if ranges is None:
        ranges = [(0, stat.st_size)]
    # The file as it is now (a change of its bytes changes its size or mtime), and the ranges.
    key: tuple[object, ...] = (str(path.absolute()), stat.st_dev, stat.st_ino, stat.st_size)
    key += (stat.st_mtime_ns, *ranges)
    last = _last_scan
    if last is not None and last[0] == key:
        return last[1]  # a create scans the whole input first, then its send scans it again
    scanned = _scan(path, ranges)
    _last_scan = (key, scanned)
    return scanned


# The last scan that passed, and what it scanned (scan_requests).
_last_scan: tuple[tuple[object, ...], Scanned] | None = None


def _scan(path: Path, ranges: Sequence[tuple[int, int]]) -> Scanned:
    seen: set[bytes] = set()
    requests = blanks = size = 0
    with Segments(path, ranges) as stream:
        for position, block in line_blocks(stream):
            size += len(block)
            if not block.isascii():
                try:
                    block.decode("utf-8")
                except UnicodeDecodeError as exc:
                    _refuse(path, ranges, position + exc.start, "is not UTF-8")
            if len(block.translate(None, _CONTROL)) != len(block):
                at = position + min(block.find(bytes([c])) % (len(block) + 1) for c in _CONTROL)
                _refuse(
                    path, ranges, at, "holds a raw control character, which JSON does not allow"
                )
            offset = 0
            for line in block.split(b"\n"):
                if line.strip(_BLANK):
                    custom_id = _request_id(line)
                    if custom_id is None:
                        _refuse(
                            path,
                            ranges,
                            position + offset,
                            'is not a request line {"custom_id": "...", "params": {...}}',
                        )
                    if custom_id in seen:
                        _refuse(
                            path,
                            ranges,
                            position + offset,
                            f"repeats the custom_id {custom_id.decode()!r}: "
                            "each request of a batch needs its own",
                        )
                    seen.add(custom_id)
                    requests += 1
                elif offset < len(block):
                    blanks += 1
                offset += len(line) + 1
    if requests == 0:
        raise UsageError(f"{path.name} has no request to send")
    return Scanned(requests=requests, blank_lines=blanks, size=size)


def _request_id(line: bytes) -> bytes | None:
    """The custom_id of a request line, or None if the line is not of that shape."""
    tail = line[-_TAIL_BYTES:]
    head = _HEAD.match(line)
    if head is not None:
        if _PARAMS_NEXT.match(line, head.end()) and _CLOSE.search(tail):
            return head.group(1)
        return None
    if _PARAMS_HEAD.match(line) and (found := _ID_TAIL.search(tail)) is not None:
        return found.group(1)
    return None


def _refuse(path: Path, ranges: Sequence[tuple[int, int]], position: int, what: str) -> NoReturn:
    """UsageError naming the input line at `position` (an offset into the ranges' bytes)."""
    offset = file_offset(ranges, position)
    with path.open("rb") as source:  # only on the way out: count the newlines before it
        before = 0
        left = offset
        while left > 0 and (chunk := source.read(min(left, READ_BYTES))):
            before += chunk.count(b"\n")
            left -= len(chunk)
    raise UsageError(f"line {before + 1} of {path.name} {what}")


def line_blocks(stream: Segments) -> Iterator[tuple[int, bytes]]:
    """The stream in blocks of whole lines (the last may lack its newline), with positions."""
    position = 0
    rest = b""
    while chunk := stream.read(READ_BYTES):
        if rest:
            chunk = rest + chunk
        cut = chunk.rfind(b"\n") + 1
        if cut == 0:
            rest = chunk  # a line longer than a read: keep reading it
            continue
        block, rest = (chunk, b"") if cut == len(chunk) else (chunk[:cut], chunk[cut:])
        yield position, block
        position += len(block)
    if rest:
        yield position, rest


class RequestBody:
    """The create request's body, streamed from the input: an iterable of bytes, re-iterable.

    Each iteration reads the ranges again, in blocks of about a megabyte, and yields them
    with a comma before each request line but the first: memory holds a block or two.
    `len()` is the exact Content-Length, from the scan; an input that changed since (other
    bytes, other lines) stops the body with an OSError rather than send what was not
    checked. Iterating again (the SDK retrying) sends the same bytes.
    """

    def __init__(self, path: Path, ranges: Sequence[tuple[int, int]], scanned: Scanned) -> None:
        self.path = path
        self.ranges = list(ranges)
        self.scanned = scanned

    def __len__(self) -> int:
        return self.scanned.body_length

    def __iter__(self) -> Iterator[bytes]:
        yield BODY_PREFIX
        sent = requests = 0
        with Segments(self.path, self.ranges) as stream:
            blocks = line_blocks(stream)
            if self.scanned.blank_lines == 0:
                # A comma after every newline is one before every line after the first:
                # one C call per block. After the very last newline, it would be one too many.
                ends_line = True
                for _, block in blocks:
                    sent += len(block)
                    requests += block.count(b"\n")
                    ends_line = block.endswith(b"\n")
                    if sent == self.scanned.size and ends_line:
                        yield block[:-1].replace(b"\n", b"\n,") + b"\n"
                    else:
                        yield block.replace(b"\n", b"\n,")
                if not ends_line:
                    requests += 1  # the last line, which has no newline
            else:
                for _, block in blocks:
                    sent += len(block)
                    pieces = []
                    for line in block.splitlines(keepends=True):
                        if line.strip(_BLANK + b"\n") and requests:
                            pieces.append(b",")
                        if line.strip(_BLANK + b"\n"):
                            requests += 1
                        pieces.append(line)
                    yield b"".join(pieces)
        if sent != self.scanned.size or requests != self.scanned.requests:
            raise OSError(f"{self.path} changed after it was checked: not sending it")
        yield BODY_SUFFIX


def create_batch_streaming(
    client: "anthropic.Anthropic",
    path: Path,
    ranges: Sequence[tuple[int, int]] | None = None,
    *,
    scanned: Scanned | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Create a Message Batch of the request lines in `ranges` of `path`; its MessageBatch JSON.

    The lines are checked first (scan_requests, unless `scanned` says they were), then sent
    as they are, streamed with an exact Content-Length, through the client's own `post`:
    its base URL, auth and version headers, timeout, and its errors (anthropic.APIError and
    subclasses) all stay the SDK's. Never retried by the SDK: an answer lost after the
    bytes went out may mean a batch was made, and only the caller can tell (the spec's
    lost-create rule), so a retry here could pay for one twice.
    """
    import httpx2  # the SDK's HTTP library, already imported with it

    if ranges is None:
        ranges = [(0, path.stat().st_size)]
    if scanned is None:
        scanned = scan_requests(path, ranges)
    body = RequestBody(path, ranges, scanned)
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    response = client.post(
        CREATE_PATH,
        cast_to=httpx2.Response,
        content=body,
        options={"headers": headers, "max_retries": 0}
        if timeout is None
        else {"headers": headers, "max_retries": 0, "timeout": timeout},
    )
    batch = response.json()
    if not isinstance(batch, dict):
        raise ValueError(f"the create answered {type(batch).__name__}, not a MessageBatch")
    return batch
