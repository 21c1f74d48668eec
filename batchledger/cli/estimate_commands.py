"""`estimate` and `create --dry-run`: the plan and the cost of an input, shown before
anything is sent (`create --max-cost` is checked by the API's create). No key, no network,
no ledger, no log."""

import argparse
from typing import Any

from batchledger.cli.targets import api
from batchledger.context import Context
from batchledger.errors import ExitCode
from batchledger.estimate import Estimate, check_budget, money
from batchledger.render import display_path, json_text, tabulate
from batchledger.tokens import UNREADABLE

MODEL_COLUMNS = (
    "model",
    "requests",
    "input tokens",
    "max output tokens",
    "batch price in/out per 1M",
    "cost: input only",
    "cost: with all output",
)


def estimate(args: argparse.Namespace, ctx: Context) -> ExitCode:
    """`estimate --in PATH` and `create --in PATH --dry-run`: print the plan and the cost."""
    found = estimate_of(args, ctx)
    ctx.print(
        json_text(estimate_json(found, ctx)) if args.json else "\n".join(estimate_lines(found))
    )
    max_cost = getattr(args, "max_cost", None)
    if max_cost is not None:  # create --dry-run --max-cost: exits as the create would
        check_budget(found, max_cost)
    return ExitCode.OK


def estimate_of(args: argparse.Namespace, ctx: Context) -> Estimate:
    return api(ctx).estimate(
        args.input,
        max_requests=args.max_requests,
        max_bytes=args.max_bytes,
        prices=args.prices,
        max_tokens=getattr(args, "max_tokens", None),  # issue 22: the plan create would follow
    )


def estimate_lines(found: Estimate) -> list[str]:
    lines = [
        f"input: {display_path(found.path)} ({found.requests} requests, {found.bytes} bytes)",
    ]
    if not found.parts:
        lines.append("plan: one batch")
    else:
        lines.append(
            f"plan: a job of {len(found.parts)} parts (at most {found.limits[0]} requests "
            f"and {found.limits[1]} bytes each)"
        )
        lines.extend(
            f"  part {part.index}: lines {part.first_line}-{part.last_line}, "
            f"{part.requests} requests, {part.bytes} bytes"
            for part in found.parts
        )
    table = [
        [
            model.model,
            str(model.requests),
            f"{model.input_tokens}{' (estimated)' if model.estimated else ''}",
            f"{model.max_output_tokens}{' + no cap' if model.uncapped else ''}",
            (
                f"{model.quote.price.input:g} / {model.quote.price.output:g}"
                if model.quote
                else "unknown"
            ),
            money(model.cost_input),
            money(model.cost_max),
        ]
        for model in found.models
    ]
    if len(found.models) > 1:
        table.append(
            [
                "total",
                str(found.requests),
                "",
                "",
                "",
                money(found.cost_input),
                money(found.cost_max),
            ]
        )
    lines.append(tabulate(table, MODEL_COLUMNS, disable_numparse=True))
    lines.extend(estimate_notes(found))
    return lines


def estimate_notes(found: Estimate) -> list[str]:
    notes = []
    for model in found.models:
        if model.model == UNREADABLE:
            continue  # told below
        if model.estimated:
            notes.append(f"{model.model}: no tokenizer known; input tokens estimated as bytes / 4")
        if model.uncapped:
            notes.append(
                f"{model.model}: {model.uncapped} request(s) set no max_tokens / "
                "max_output_tokens: their output, and so the cost, has no upper bound"
            )
        if model.quote is None:
            notes.append(f"{model.model}: no price known; give one with --prices FILE")
        else:
            notes.append(f"{model.model}: price from {model.quote.source}")
    if found.unreadable:
        notes.append(f"{found.unreadable} line(s) are not request objects (counted as bytes / 4)")
    notes.append("costs are USD at batch prices; nothing was sent and nothing recorded")
    return notes


def estimate_json(found: Estimate, ctx: Context) -> dict[str, Any]:
    return {
        "input": str(found.path),
        "bytes": found.bytes,
        "requests": found.requests,
        "account": ctx.account.name,
        "limits": {"requests": found.limits[0], "bytes": found.limits[1]},
        "batches": found.batches,
        "parts": [
            {
                "part": part.index,
                "first_line": part.first_line,
                "last_line": part.last_line,
                "requests": part.requests,
                "bytes": part.bytes,
            }
            for part in found.parts
        ],
        "models": [
            {
                "model": model.model,
                "requests": model.requests,
                "bytes": model.bytes,
                "input_tokens": model.input_tokens,
                "input_tokens_estimated": model.estimated,
                "max_output_tokens": model.max_output_tokens,
                "uncapped_requests": model.uncapped,
                "price": None
                if model.quote is None
                else {
                    "input": model.quote.price.input,
                    "cached_input": model.quote.price.cached_input,
                    "output": model.quote.price.output,
                    "per_tokens": 1_000_000,
                    "source": model.quote.source,
                },
                "cost_input_only": model.cost_input,
                "cost_max": model.cost_max,
            }
            for model in found.models
        ],
        "cost_input_only": found.cost_input,
        "cost_max": found.cost_max,
        "currency": "USD",
        "unreadable_lines": found.unreadable,
    }
