"""`estimate` and `create --dry-run`: the plan and the cost of an input, shown before
anything is sent (`create --max-cost` is checked by the API's create). No key, no network,
no ledger, no log."""

import argparse
from typing import Any

from batchledger.cli.targets import api
from batchledger.context import Context
from batchledger.errors import ExitCode
from batchledger.estimate import Estimate, money
from batchledger.prices import PriceList
from batchledger.render import display_path, json_text, tabulate
from batchledger.spend import BudgetCheck, check_budgets
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
    """`estimate --in PATH` and `create --in PATH --dry-run`: print the plan and the cost;
    a dry run also says whether the create would pass its budgets, and exits as it would."""
    found = estimate_of(args, ctx)
    budget = None
    if getattr(args, "dry_run", False):
        budget = check_budgets(
            ctx.open_ledger(create=False),
            ctx.account.name,
            ctx.account.max_cost_per_day,
            found,
            args.max_cost,
            PriceList.from_file(args.prices),
        )
    if args.json:
        document = estimate_json(found, ctx)
        if budget is not None:
            document["budget"] = budget_json(budget)
        ctx.print(json_text(document))
    else:
        ctx.print("\n".join(estimate_lines(found) + budget_lines(budget)))
    if budget is not None and budget.refused is not None:
        raise budget.refused  # create --dry-run: exits as the create would (3)
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


def budget_lines(budget: BudgetCheck | None) -> list[str]:
    """A dry run's verdict: the budgets the create is held to, and whether it would pass."""
    if budget is None or (budget.max_cost is None and budget.per_day is None):
        return []
    held = []
    if budget.max_cost is not None:
        held.append(f"--max-cost {money(budget.max_cost)}")
    if budget.per_day is not None and budget.spend is not None:
        held.append(
            f"max_cost_per_day {money(budget.per_day)} (today, {budget.spend.day} UTC: "
            f"{money(budget.spend.actual)} spent, {money(budget.spend.estimated)} estimated "
            "in flight)"
        )
    lines = [f"budget: {'; '.join(held)}"]
    if budget.refused is None:
        lines.append("budget: the create would pass")
    else:
        lines.append(f"budget: the create would be refused: {budget.refused.message}")
    return lines


def budget_json(budget: BudgetCheck) -> dict[str, Any]:
    spend = budget.spend
    return {
        "max_cost": budget.max_cost,
        "max_cost_per_day": budget.per_day,
        "day": spend.day if spend else None,
        "day_spent": spend.actual if spend else None,
        "day_estimated_in_flight": spend.estimated if spend else None,
        "refused": budget.refused.message if budget.refused is not None else None,
    }
