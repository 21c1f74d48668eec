"""The token budget (issue 22): a job keeps the counted input tokens of its live batches,
per model, under the account's `enqueued_tokens`, rather than bouncing off the provider's
enqueued-token limit; and parts are cut by counted tokens (`create --max-tokens N`, or a
part that alone would pass the account's limit).

Tokens are counted offline (`tokens`), once, at create; each part keeps its count per model
(`parts.input_tokens`). Deciding whether a queued part may go is a pure function of those
counts (`fits`). The reactive requeue on `token_limit_exceeded` stays as the fallback: the
provider counts its own way.
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from batchledger.batches import PartState, attempt_is_open
from batchledger.errors import UsageError
from batchledger.rows import BatchRow, JobRow, PartRow
from batchledger.split import Part
from batchledger.tokens import Counter, lines_of

if TYPE_CHECKING:
    from batchledger.context import Context

Tokens = dict[str, int]  # model: counted input tokens


def fits(part: Mapping[str, int], live: Mapping[str, int], limits: Mapping[str, int]) -> bool:
    """Whether a part of `part` tokens may go while `live` tokens are in flight: for each
    model with a limit, live + part stays at most the limit. With nothing of a model live,
    a part always fits (it was cut at create to fit alone; a bigger one would wait forever)."""
    for model, tokens in part.items():
        limit = limits.get(model)
        if limit is None or not live.get(model):
            continue
        if live[model] + tokens > limit:
            return False
    return True


def live_tokens(parts: Iterable[Mapping[str, object]]) -> Tokens:
    """The counted tokens of `parts` (rows whose batch is live), summed per model."""
    total: Tokens = {}
    for part in parts:
        for model, tokens in tokens_of(part).items():
            total[model] = total.get(model, 0) + tokens
    return total


def tokens_of(part: Mapping[str, object]) -> Tokens:
    """A part row's counted tokens per model ({} where they were not counted)."""
    recorded = part.get("input_tokens")
    if not isinstance(recorded, str) or not recorded:
        return {}
    loaded = json.loads(recorded)
    return {str(model): int(tokens) for model, tokens in loaded.items()}


@dataclass
class TokenPlan:
    """Parts cut at line boundaries, each with its counted tokens per model."""

    parts: list[Part] = field(default_factory=list)
    tokens: list[Tokens] = field(default_factory=list)


def plan_parts_by_tokens(
    path: Path,
    *,
    max_requests: int,
    max_bytes: int,
    limits: Mapping[str, int],
    max_tokens: int | None = None,
) -> TokenPlan:
    """Cut `path` greedily at line boundaries into parts of at most `max_requests` lines,
    `max_bytes` bytes, and, per model, at most its `limits` entry (and `max_tokens`) of
    counted input tokens. One streaming pass that parses and counts every line.

    UsageError for an empty file, or a line that alone is over a limit.
    """
    plan = TokenPlan()
    counter = Counter()
    start = end = requests = 0
    tokens: Tokens = {}
    line_number = 0

    def close() -> None:
        plan.parts.append(
            Part(
                index=len(plan.parts) + 1,
                start=start,
                end=end,
                requests=requests,
                first_line=line_number - requests + 1,
            )
        )
        plan.tokens.append(dict(tokens))

    for line in lines_of(path):
        size = len(line)
        counted = counter.add(line)
        model, count = counted if counted is not None else ("", 0)
        cap = _cap(model, limits, max_tokens)
        if size > max_bytes:
            raise UsageError(
                f"line {line_number + 1} of {path.name} is {size} bytes, more than a part may "
                f"hold ({max_bytes})"
            )
        if cap is not None and count > cap:
            raise UsageError(
                f"line {line_number + 1} of {path.name} alone counts {count} input tokens of "
                f"{model}, more than a part may hold ({cap}); raise the limit"
            )
        over = (
            requests + 1 > max_requests
            or end - start + size > max_bytes
            or (cap is not None and tokens.get(model, 0) + count > cap)
        )
        if requests and over:
            close()
            start, requests, tokens = end, 0, {}
        line_number += 1
        end += size
        requests += 1
        if counted is not None:
            tokens[model] = tokens.get(model, 0) + count
    if end == 0:
        raise UsageError(f"{path.name} is empty: there is no request to send")
    if requests:
        close()
    return plan


def _cap(model: str, limits: Mapping[str, int], max_tokens: int | None) -> int | None:
    found = [cap for cap in (limits.get(model), max_tokens) if cap is not None]
    return min(found) if found else None


def may_send(ctx: "Context", job: JobRow, part: PartRow) -> bool:
    """Whether the account's `enqueued_tokens` lets the queued `part` of `job` go now: its
    counted tokens fit beside those of the job's parts whose batch is live."""
    limits = ctx.account_named(job["account"]).enqueued_tokens
    wanted = tokens_of(part)
    if not limits or not wanted:
        return True
    attempts: dict[int | None, BatchRow] = {}
    for attempt in ctx.ledger.jobs.attempts_of_job(job["id"]):
        attempts[attempt["part"]] = attempt  # oldest first: the last one stays
    live = [
        other
        for other in ctx.ledger.jobs.job_parts(job["id"])
        if other["state"] == PartState.SENT
        and other["id"] in attempts
        and attempt_is_open(attempts[other["id"]])
    ]
    return fits(wanted, live_tokens(live), limits)
