"""`usage`: requests and tokens summed from the ledger, and their cost from a price list.

No network and no key: the ledger keeps each batch's `usage` object as the API reported it.
Prices come from `prices` (genai-prices' batch prices, a prices file over them).
"""

import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from batchledger.errors import UsageError, utf8_text
from batchledger.ledger import MADE_AT, Ledger
from batchledger.rows import UsageTotalsRow

# What `--by` groups on: a name and the SQL expression over `batches` that gives the group.
GROUPS: dict[str, str] = {
    "model": "coalesce(model, '(unknown)')",
    "day": f"substr({MADE_AT}, 1, 10)",
    "account": "account",
}
TokenKind = Literal["input", "cached", "output", "reasoning"]
TOKEN_KINDS: tuple[TokenKind, ...] = ("input", "cached", "output", "reasoning")
PRICE_KEYS = ("input", "cached_input", "output")
PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class Price:
    """Dollars (or any currency) per million tokens."""

    input: float
    cached_input: float
    output: float


class Prices(Protocol):
    """A model's price, or None: a dict of prices, or a `prices.PriceList`."""

    def get(self, model: str, /) -> Price | None: ...


@dataclass
class UsageLine:
    """The totals of one group: batches, requests answered, tokens, and their cost."""

    group: str
    batches: int = 0
    requests: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KINDS, 0))
    cost: float | None = 0.0  # None when a model in the group has no price
    unpriced: set[str] = field(default_factory=set)

    def add(self, other: "UsageLine") -> None:
        self.batches += other.batches
        self.requests += other.requests
        for kind in TOKEN_KINDS:
            self.tokens[kind] += other.tokens[kind]
        self.cost = None if self.cost is None or other.cost is None else self.cost + other.cost
        self.unpriced |= other.unpriced


def load_prices(path: Path) -> dict[str, Price]:
    """A TOML price list: a table per model with `input`, `cached_input` (default: `input`)
    and `output`, per million tokens. A UsageError if it cannot be used as one."""
    try:
        document = tomllib.loads(utf8_text(path.read_bytes(), f"prices file {path}"))
    except OSError as exc:
        raise UsageError(f"cannot read prices file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"prices file {path} is not valid TOML: {exc}") from None
    prices: dict[str, Price] = {}
    for model, table in document.items():
        if not isinstance(table, dict):
            raise UsageError(
                f"prices file {path}: {model!r} should be a table of prices, like "
                f'["{model}"] with input = 0.15 and output = 0.6'
            )
        unknown = set(table) - set(PRICE_KEYS)
        if unknown:
            raise UsageError(
                f"prices file {path}: {model!r} has unknown keys {', '.join(sorted(unknown))}; "
                f"expected {', '.join(PRICE_KEYS)}"
            )
        for key in ("input", "output"):
            if key not in table:
                raise UsageError(f"prices file {path}: {model!r} has no {key} price")
        for key, value in table.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"prices file {path}: {model}.{key} is not a number: {value!r}")
            if value < 0 or not math.isfinite(value):
                raise UsageError(f"prices file {path}: {model}.{key} is negative or not finite")
        prices[model] = Price(
            input=float(table["input"]),
            cached_input=float(table["cached_input" if "cached_input" in table else "input"]),
            output=float(table["output"]),
        )
    return prices


def cost_of(tokens: dict[str, int], price: Price) -> float:
    """What the tokens cost; cached input tokens are part of the input and priced apart.

    Reasoning tokens are part of the output tokens, and priced with them.
    """
    uncached = tokens["input"] - tokens["cached"]
    return (
        uncached * price.input
        + tokens["cached"] * price.cached_input
        + tokens["output"] * price.output
    ) / PER_TOKENS


def usage_tokens(usage: Mapping[str, Any]) -> dict[str, int]:
    """A batch's `usage` object as the token kinds `usage.cost_of` prices."""
    input_details = usage.get("input_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    return {
        "input": int(usage.get("input_tokens") or 0),
        "cached": int(input_details.get("cached_tokens") or 0),
        "output": int(usage.get("output_tokens") or 0),
        "reasoning": int(output_details.get("reasoning_tokens") or 0),
    }


def usage_of_results(path: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(model, usage) summed from the `result.message.usage` of Message Batches result
    lines (a batch of them reports none), in the Batch `usage` object's shape: input tokens
    count cache reads and writes too, and cache reads are its cached tokens. The model is
    the first line's; (None, None) with no such line."""
    model: str | None = None
    input_ = cached = output = 0
    found = False
    with path.open("rb") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            result = record.get("result") if isinstance(record, dict) else None
            message = result.get("message") if isinstance(result, dict) else None
            usage = message.get("usage") if isinstance(message, dict) else None
            if not isinstance(message, dict) or not isinstance(usage, dict):
                continue
            found = True
            if model is None and isinstance(message.get("model"), str):
                model = message["model"]
            read = int(usage.get("cache_read_input_tokens") or 0)
            written = int(usage.get("cache_creation_input_tokens") or 0)
            input_ += int(usage.get("input_tokens") or 0) + read + written
            cached += read
            output += int(usage.get("output_tokens") or 0)
    if not found:
        return None, None
    return model, {
        "input_tokens": input_,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "total_tokens": input_ + output,
    }


def billed_tokens(usage: str | Mapping[str, Any] | None) -> dict[str, int] | None:
    """The tokens of a `usage` (as the API gives it, or its JSON), None if there are none."""
    parsed = json.loads(usage) if isinstance(usage, str) else usage
    if not parsed:
        return None
    tokens = usage_tokens(parsed)
    return tokens if any(tokens.values()) else None


def batch_cost(row: Mapping[str, Any], prices: Prices) -> float | None:
    """What a batch row's usage cost at `prices`: 0 with no usage (nothing was billed),
    None when its model has no price."""
    tokens = billed_tokens(row.get("usage"))
    if tokens is None:
        return 0.0
    price = prices.get(row.get("model") or "(unknown)")
    return None if price is None else cost_of(tokens, price)


def job_cost(attempts: Iterable[Mapping[str, Any]]) -> float | None:
    """A job's cost: the sum of its attempts' recorded costs (an attempt with no usage, or
    none but zeros, cost nothing); None if one with usage has no cost (no price known)."""
    total = 0.0
    for attempt in attempts:
        if attempt.get("actual_cost") is not None:
            total += float(attempt["actual_cost"])
        elif billed_tokens(attempt.get("usage")) is not None:
            return None
    return total


def usage_lines(
    ledger: Ledger | None, by: str, since: str | None, prices: Prices | None
) -> list[UsageLine]:
    """One line per group (newest day first for `day`, else by name)."""
    if ledger is None:
        return []
    lines: dict[str, UsageLine] = {}
    for row in ledger.reports.usage_totals(GROUPS[by], since):
        part = UsageLine(
            group=row["grp"],
            batches=row["batches"],
            requests=row["requests"],
            tokens={kind: int(row[kind] or 0) for kind in TOKEN_KINDS},
        )
        model = row["model"] or "(unknown)"
        if prices is not None:
            price = prices.get(model)
            if recorded_cost(row) is not None and not named_in_prices_file(prices, model):
                part.cost = recorded_cost(row)  # issue 22: as priced when the batches ended
            elif price is not None:
                part.cost = cost_of(part.tokens, price)
            elif any(part.tokens.values()):
                part.cost = None
                part.unpriced.add(model)
        lines.setdefault(part.group, UsageLine(group=part.group)).add(part)
    ordered = sorted(lines.values(), key=lambda line: line.group, reverse=by == "day")
    return ordered


def recorded_cost(row: UsageTotalsRow) -> float | None:
    """The group's cost as recorded when its batches ended; None unless every batch with
    usage has one."""
    if row["unrecorded"] or row["recorded_cost"] is None:
        return None
    return float(row["recorded_cost"])


def named_in_prices_file(prices: Prices, model: str) -> bool:
    """The user gave this model's price (`--prices FILE`): it wins over recorded costs."""
    overrides = getattr(prices, "overrides", prices)
    return isinstance(overrides, Mapping) and model in overrides


def total_of(lines: list[UsageLine]) -> UsageLine:
    total = UsageLine(group="total")
    for line in lines:
        total.add(line)
    return total


def usage_json(line: UsageLine, by: str, priced: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        by: line.group,
        "batches": line.batches,
        "requests": line.requests,
        **{f"{kind}_tokens": line.tokens[kind] for kind in TOKEN_KINDS},
    }
    if priced:
        record["cost"] = line.cost
    return record
