"""What an input would be sent as and what it would cost, without sending anything.

The plan is create's own: one batch, or the parts `split.plan_parts` cuts at the account's
limits (or --max-requests / --max-bytes). The tokens come from `tokens` (counted offline),
the prices from `prices` (batch rates). No key, no network, no ledger.
"""

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from batchledger.details import FROM_BYTES, CostEstimate
from batchledger.errors import Refused
from batchledger.ledger import InputFile, Ledger, Table
from batchledger.prices import KeptPrices, PriceList, Quote
from batchledger.split import plan_parts, split_wanted
from batchledger.threads import start_thread
from batchledger.tokens import BYTES_PER_TOKEN, Counter, InputCount, count_input
from batchledger.usage import PER_TOKENS


@dataclass(frozen=True)
class PlannedPart:
    index: int
    first_line: int
    last_line: int
    requests: int
    bytes: int


@dataclass
class ModelEstimate:
    """One model's requests, tokens and cost range."""

    model: str
    requests: int
    bytes: int
    input_tokens: int
    estimated: bool  # bytes / 4: no tokenizer known for the model
    max_output_tokens: int  # the sum of the requests' caps
    uncapped: int  # requests with no output cap: their output, and so the upper cost, unbounded
    quote: Quote | None  # None: no price known

    @property
    def cost_input(self) -> float | None:
        """The input tokens' cost (the least the requests can cost)."""
        if self.quote is None:
            return None
        return self.input_tokens * self.quote.price.input / PER_TOKENS

    @property
    def cost_max(self) -> float | None:
        """Input plus every output token the requests allow; None if unbounded or unpriced."""
        low = self.cost_input
        if low is None or self.uncapped or self.quote is None:
            return None
        return low + self.max_output_tokens * self.quote.price.output / PER_TOKENS


@dataclass
class Estimate:
    path: Path
    bytes: int
    requests: int
    limits: tuple[int, int]  # (requests, bytes) per batch: the account's, or the options'
    parts: list[PlannedPart] = field(default_factory=list)  # empty: one plain batch
    models: list[ModelEstimate] = field(default_factory=list)
    unreadable: int = 0  # lines that are not a request object (estimated as bytes / 4)

    @property
    def batches(self) -> int:
        return len(self.parts) or 1

    @property
    def cost_input(self) -> float | None:
        return _total(model.cost_input for model in self.models)

    @property
    def cost_max(self) -> float | None:
        return _total(model.cost_max for model in self.models)


def _total(costs: Iterable[float | None]) -> float | None:
    """The sum of the models' costs; None if any is unknown."""
    known = list(costs)
    return None if None in known else sum(cost or 0.0 for cost in known)


def estimate_input(
    path: Path,
    *,
    limits: tuple[int, int],
    max_requests: int | None = None,
    max_bytes: int | None = None,
    prices: PriceList | None = None,
    token_limits: Mapping[str, int] | None = None,
    max_tokens: int | None = None,
) -> Estimate:
    """Count `path` (one streaming pass), plan it as create would (a second, newline-only
    pass if it is split; one that counts tokens again under a token budget: the account's
    `token_limits`, or `max_tokens`), and price it."""
    prices = prices or PriceList()
    counted = count_input(path)
    input_ = InputFile(path=path, size=counted.bytes, sha256="", lines=counted.lines)
    split = split_wanted(input_, limits, max_requests, max_bytes)
    result = Estimate(
        path=path,
        bytes=counted.bytes,
        requests=counted.lines,
        limits=split or limits,
        unreadable=counted.unreadable,
    )
    token_parts = None
    if token_limits or max_tokens is not None:  # issue 22: cut by counted tokens, as create
        from batchledger.token_budget import plan_parts_by_tokens

        planned = plan_parts_by_tokens(
            path,
            max_requests=(split or limits)[0],
            max_bytes=(split or limits)[1],
            limits=token_limits or {},
            max_tokens=max_tokens,
        )
        if split is not None or len(planned.parts) > 1:
            token_parts = planned.parts
            result.limits = split or limits
    if token_parts is None and split is not None:
        token_parts = plan_parts(path, max_requests=split[0], max_bytes=split[1])
    if token_parts is not None:
        result.parts = [
            PlannedPart(
                index=part.index,
                first_line=part.first_line,
                last_line=part.first_line + part.requests - 1,
                requests=part.requests,
                bytes=part.size,
            )
            for part in token_parts
        ]
    result.models = _priced(counted, prices)
    return result


def estimate_ranges(
    path: Path, ranges: Sequence[tuple[int, int]], prices: PriceList | None = None
) -> CostEstimate:
    """The counted estimate of the lines within `ranges` of `path` (the lines a retry sends
    again), as `estimate_input` counts and prices a whole input."""
    counter = Counter()
    with path.open("rb") as stream:
        for start, end in ranges:  # whole lines
            stream.seek(start)
            at = start
            while at < end and (line := stream.readline(end - at)):
                counter.add(line)
                at += len(line)
    models = _priced(counter.result, prices or PriceList())
    return CostEstimate(
        input_tokens=sum(model.input_tokens for model in models),
        cost_min=_total(model.cost_input for model in models),
        cost_max=_total(model.cost_max for model in models),
    )


def _priced(counted: InputCount, prices: PriceList) -> list[ModelEstimate]:
    return [
        ModelEstimate(
            model=name,
            requests=count.requests,
            bytes=count.bytes,
            input_tokens=count.input_tokens,
            estimated=count.estimated,
            max_output_tokens=count.max_output_tokens,
            uncapped=count.uncapped,
            quote=prices.quote(name),
        )
        for name, count in sorted(counted.models.items())
    ]


def check_budget(estimate: Estimate, max_cost: float) -> None:
    """Refused (exit 3) unless the upper estimate is known and at most `max_cost`."""
    high = estimate.cost_max
    if high is not None and high <= max_cost:
        return
    if high is not None:
        low = estimate.cost_input or 0.0
        raise Refused(
            f"the estimate is {money(low)} to {money(high)}, above --max-cost "
            f"{money(max_cost)}; nothing was sent"
        )
    unpriced = [model.model for model in estimate.models if model.quote is None]
    if unpriced:
        raise Refused(
            f"no price for {', '.join(unpriced)}, so the cost cannot be held under "
            f"--max-cost {money(max_cost)}; give prices with --prices FILE; nothing was sent"
        )
    uncapped = sum(model.uncapped for model in estimate.models)
    raise Refused(
        f"{uncapped} request(s) set no max_tokens / max_output_tokens, so the cost has no "
        f"upper bound to hold under --max-cost {money(max_cost)}; nothing was sent"
    )


def money(value: float | None) -> str:
    """Dollars, to the cent above $1 and with 4 decimals below (batches are often cheap)."""
    if value is None:
        return "unknown"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


# --- the estimate of a plain create: scanned, not parsed ------------------------------------
# A create with no budget records an estimate too (issue 22), made beside the upload where it
# must cost next to nothing: no line is parsed and no token counted (the vocabulary's load
# alone is 0.3 s and 64 MB). Each line's model and output cap are found by two regular
# expressions over the raw bytes, and its input tokens taken as its bytes / 4 (the estimate
# `tokens` makes for a model without a tokenizer). An input above SCAN_ALL_BYTES is scanned
# in SCAN_WINDOWS windows spread over it, SCAN_ALL_BYTES in all, and what they hold is
# scaled to the whole input.
SCAN_ALL_BYTES = 16 * 1024 * 1024
SCAN_WINDOWS = 16
_SCAN_CHUNK = 1024 * 1024
# A JSON key "model" and its string value. In a valid line a quote inside a string is
# escaped, so this matches keys only (the request's own, or one nested in its body).
_MODEL = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.){0,256})"')
_CAP = re.compile(rb'"(?:max_output_tokens|max_completion_tokens|max_tokens)"\s*:\s*(\d{1,12})')


@dataclass
class ScannedModel:
    """One model's lines in the part of an input scanned."""

    requests: int = 0
    bytes: int = 0
    max_output_tokens: int = 0
    uncapped: int = 0


def scan_input(path: Path, size: int, prices: PriceList | None = None) -> CostEstimate:
    """A plain create's estimate of `path` (`size` bytes): bytes / 4, from a scan of its
    lines (at most SCAN_ALL_BYTES of them), priced at `prices` (the library's batch prices)."""
    models: dict[bytes, ScannedModel] = {}
    scanned = 0
    for chunk in _scanned_chunks(path, size):
        scanned += len(chunk)
        _scan_chunk(chunk, models)
    return _priced_scan(models, size / scanned if scanned else 0.0, prices or PriceList())


def scan_ranges(
    path: Path, ranges: Sequence[tuple[int, int]], prices: PriceList | None = None
) -> CostEstimate:
    """`scan_input`'s rough estimate (bytes / 4) of the lines within `ranges` of `path`,
    all of them: a retry's, sent without a budget (which would count them)."""
    models: dict[bytes, ScannedModel] = {}
    with path.open("rb") as stream:
        for start, end in ranges:  # whole lines
            stream.seek(start)
            for chunk in _line_chunks(stream, end - start):
                _scan_chunk(chunk, models)
    return _priced_scan(models, 1.0, prices or PriceList())


def _priced_scan(
    models: dict[bytes, ScannedModel], scale: float, prices: PriceList
) -> CostEstimate:
    """The scanned models' bytes (times `scale`: the input over what was scanned of it)
    as tokens, priced."""
    tokens = 0
    cost_min = cost_max = 0.0
    unpriced = unbounded = False
    for name, model in models.items():
        input_tokens = round(model.bytes * scale / BYTES_PER_TOKEN)
        tokens += input_tokens
        quote = prices.quote(name.decode("utf-8", "replace")) if name else None
        if quote is None:
            unpriced = True
            continue
        low = input_tokens * quote.price.input / PER_TOKENS
        cost_min += low
        unbounded = unbounded or model.uncapped > 0
        cost_max += low + model.max_output_tokens * scale * quote.price.output / PER_TOKENS
    return CostEstimate(
        input_tokens=tokens,
        cost_min=None if unpriced else cost_min,
        cost_max=None if unpriced or unbounded else cost_max,
        estimated_from=FROM_BYTES,
    )


def scan_in_background(path: Path, size: int, ledger: Ledger) -> "Future[CostEstimate]":
    """`scan_input` in a thread of its own, beside the upload (a daemon: a create that
    fails meanwhile does not wait for it), priced with the prices `ledger` keeps."""
    future: Future[CostEstimate] = Future()

    def run() -> None:
        try:
            future.set_result(scan_input(path, size, KeptPrices(ledger)))
        except BaseException as exc:  # handed to whoever waits on the future
            future.set_exception(exc)

    start_thread(run, "batchledger-estimate")
    return future


def record_scanned(
    ledger: Ledger, table: Table, row_id: int, scanning: "Future[CostEstimate] | None"
) -> None:
    """Record the estimate scanned beside a create's upload; a scan that failed (the
    input cut short meanwhile, a price the library could not give) leaves the row without
    one, as creates did before."""
    if scanning is None:
        return
    try:
        estimate = scanning.result()
    except Exception:  # the batch is made: a rough figure missing must not fail the create
        return
    ledger.record_estimate(table, row_id, estimate)


def _scanned_chunks(path: Path, size: int) -> Iterator[bytes]:
    """Whole lines of `path`: all of them, or those of SCAN_WINDOWS windows spread over it."""
    with path.open("rb") as stream:
        if size <= SCAN_ALL_BYTES:
            yield from _line_chunks(stream)
            return
        window = SCAN_ALL_BYTES // SCAN_WINDOWS
        for index in range(SCAN_WINDOWS):
            stream.seek(size * index // SCAN_WINDOWS)
            if index:
                stream.readline()  # from the start of a line
            chunk = stream.read(window)
            if chunk and not chunk.endswith(b"\n"):
                chunk += stream.readline()  # to the end of one
            if chunk:
                yield chunk


def _line_chunks(stream: BinaryIO, length: int | None = None) -> Iterator[bytes]:
    """Whole lines from `stream`'s position, in reads of _SCAN_CHUNK: to its end, or for
    `length` bytes (whole lines: the last may have no newline)."""
    left, tail = length, b""
    while (left is None or left > 0) and (
        chunk := stream.read(_SCAN_CHUNK if left is None else min(_SCAN_CHUNK, left))
    ):
        if left is not None:
            left -= len(chunk)
        chunk = tail + chunk
        cut = chunk.rfind(b"\n") + 1
        if cut:
            yield chunk[:cut]
        tail = chunk[cut:]
    if tail:
        yield tail


def _scan_chunk(chunk: bytes, models: dict[bytes, ScannedModel]) -> None:
    """Add the whole lines of `chunk` to `models`: in one go where they all name one model
    (most inputs), else line by line. A line's model is the first "model" key in it."""
    found = _MODEL.findall(chunk)
    lines = chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
    if found and len(found) == lines and found.count(found[0]) == lines:
        caps = _CAP.findall(chunk)
        if len(caps) == lines:
            model = models.setdefault(found[0], ScannedModel())
            model.requests += lines
            model.bytes += len(chunk)
            model.max_output_tokens += sum(map(int, caps))
            return
        if not caps:
            model = models.setdefault(found[0], ScannedModel())
            model.requests += lines
            model.bytes += len(chunk)
            model.uncapped += lines
            return
    for line in chunk.splitlines(keepends=True):
        if not line.strip():
            continue
        name = _MODEL.search(line)
        model = models.setdefault(name.group(1) if name else b"", ScannedModel())
        model.requests += 1
        model.bytes += len(line)
        cap = _CAP.search(line)
        if cap is None:
            model.uncapped += 1
        else:
            model.max_output_tokens += int(cap.group(1))
