"""What an input would be sent as and what it would cost, without sending anything.

The plan is create's own: one batch, or the parts `split.plan_parts` cuts at the account's
limits (or --max-requests / --max-bytes). The tokens come from `tokens` (counted offline),
the prices from `prices` (batch rates). No key, no network, no ledger.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from batchledger.errors import Refused
from batchledger.ledger import InputFile
from batchledger.prices import PriceList, Quote
from batchledger.split import plan_parts, split_wanted
from batchledger.tokens import count_input
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
        costs = [model.cost_input for model in self.models]
        return None if None in costs else sum(cost or 0.0 for cost in costs)

    @property
    def cost_max(self) -> float | None:
        costs = [model.cost_max for model in self.models]
        return None if None in costs else sum(cost or 0.0 for cost in costs)


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
    for name in sorted(counted.models):
        count = counted.models[name]
        result.models.append(
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
        )
    return result


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
