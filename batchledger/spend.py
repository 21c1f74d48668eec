"""What a batch cost, and what an account has spent today: the daily budget
(`max_cost_per_day` in accounts.toml) a create is held to, before anything is sent.

A day is a UTC day. Its spend is the estimated cost (the upper end: input plus every output
token allowed) of the batches and jobs made that day that are not final yet, plus the actual
cost (from the usage the API reported, at batch prices) of those that ended that day.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchledger.batches import FINAL_STATUSES, BatchStatus, JobStatus, Row
from batchledger.errors import Refused
from batchledger.estimate import check_budget, money
from batchledger.usage import Prices, batch_cost

if TYPE_CHECKING:
    from batchledger.estimate import Estimate
    from batchledger.ledger import Ledger, Table

# Ended: nothing more will be billed for it.
_ENDED = FINAL_STATUSES | {BatchStatus.REJECTED, BatchStatus.ABANDONED}


def sum_costs(costs: Iterable[float | None]) -> float | None:
    """The sum, or None if any is unknown."""
    total = 0.0
    for cost in costs:
        if cost is None:
            return None
        total += cost
    return total


@dataclass
class DaySpend:
    """An account's spend of one UTC day, in USD."""

    day: str  # YYYY-MM-DD
    estimated: float = 0.0  # upper estimates of what is not final yet
    actual: float = 0.0  # what ended today cost
    unpriced: set[str] = field(default_factory=set)  # ended today, no price: counted as 0

    @property
    def total(self) -> float:
        return self.estimated + self.actual


def day_start(now: datetime | None = None) -> str:
    """The ISO start of today (UTC), as the ledger writes moments."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT00:00:00Z")


def day_spend(
    batches: Iterable[Row],
    jobs: Iterable[Row],
    job_attempts: Mapping[int, Sequence[Row]],
    prices: Prices,
    since: str,
) -> DaySpend:
    """The day's spend from the rows `Ledger.spend_rows(account, since)` gives (and each
    job's attempts): pure, so that the rule is read in one place."""
    spend = DaySpend(day=since[:10])
    for row in batches:
        ended = row["status"] in _ENDED or row.get("not_found_at") is not None
        if not ended:
            if row["recorded_at"] >= since:
                spend.estimated += _upper(row)
            continue
        cost = row.get("actual_cost")
        if cost is None:
            cost = batch_cost(row, prices)
        if cost is None:
            spend.unpriced.add(row.get("model") or "(unknown)")
        elif _ended_at(row) >= since:
            spend.actual += cost
    for job in jobs:
        if job["status"] not in (JobStatus.DONE, JobStatus.CANCELLED):
            if job["recorded_at"] >= since:
                spend.estimated += _upper(job)
            continue
        if (job.get("finished_at") or job["recorded_at"]) < since:
            continue
        cost = job.get("actual_cost")
        if cost is None:
            cost = sum_costs(batch_cost(row, prices) for row in job_attempts.get(job["id"], []))
        if cost is None:
            spend.unpriced.add(f"job {job['job_id']}")
        else:
            spend.actual += cost
    return spend


def _upper(row: Mapping[str, Any]) -> float:
    """A live batch's or job's estimate: its upper end, else its lower; 0 if none was made."""
    for key in ("estimated_cost_max", "estimated_cost_min"):
        if row.get(key) is not None:
            return float(row[key])
    return 0.0


def _ended_at(row: Mapping[str, Any]) -> str:
    for key in ("completed_at", "failed_at", "expired_at", "cancelled_at", "checked_at"):
        if row.get(key):
            return str(row[key])
    return str(row["recorded_at"])


def check_day_budget(
    account: str,
    limit: float,
    spend: DaySpend,
    upper: float | None,
    lower: float | None,
    what: str = "this input",
) -> None:
    """Refused (exit 3) when the create's upper estimate would take the day's spend above
    `limit`, or when its upper end is unknown. `what` is sent: the input, a retry's lines."""
    figures = (
        f"today ({spend.day} UTC) account {account!r} has spent {money(spend.actual)} and has "
        f"{money(spend.estimated)} estimated in flight"
    )
    if upper is None:
        see = ": see 'batchledger estimate'" if what == "this input" else ""
        raise Refused(
            f"{what}'s upper cost is unknown (a request with no output cap, or a model "
            f"with no price{see}), so it cannot be held under "
            f"max_cost_per_day {money(limit)}; {figures}; nothing was sent"
        )
    if spend.total + upper > limit:
        raise Refused(
            f"{what} may cost up to {money(upper)} (at least {money(lower)}); {figures}: "
            f"{money(spend.total + upper)} in all, above max_cost_per_day {money(limit)}; "
            "nothing was sent"
        )


def account_day_spend(
    ledger: "Ledger | None",
    account: str,
    prices: Prices,
    now: datetime | None = None,
    *,
    leave_out: "tuple[Table, int] | None" = None,
    input_path: Path | None = None,
) -> DaySpend:
    """`account`'s spend of today (UTC) as the ledger records it.

    A create that resumes one cut off earlier is not counted twice: `leave_out` is the row
    (table, id) it resumes, known once it claims it; before that (the early check, without
    the input's hash), `input_path` leaves out the creates of the same file that may be
    resumed (a batch's row without its batch, a running job), so that the early check is
    never stricter than the one made with the claim."""
    since = day_start(now)
    if ledger is None:
        return DaySpend(day=since[:10])
    batches, jobs = ledger.reports.spend_rows(account, since)
    if leave_out is not None:
        table, row_id = leave_out
        if table == "batches":
            batches = [row for row in batches if row["id"] != row_id]
        else:
            jobs = [job for job in jobs if job["id"] != row_id]
    if input_path is not None:
        same = str(input_path)
        batches = [
            row for row in batches if not (row["input_path"] == same and row["batch_id"] is None)
        ]
        jobs = [
            job
            for job in jobs
            if not (job["input_path"] == same and job["status"] == JobStatus.RUNNING)
        ]
    attempts = {
        job["id"]: ledger.jobs.attempts_of_job(job["id"])
        for job in jobs
        if job["status"] in (JobStatus.DONE, JobStatus.CANCELLED) and job.get("actual_cost") is None
    }
    return day_spend(batches, jobs, attempts, prices, since)


def day_budget_guard(
    ledger: Callable[[], "Ledger"],
    account: str,
    limit: float,
    prices: Prices,
    upper: float | None,
    lower: float | None,
    what: str = "this input",
) -> Callable[["Table", Row | None], None]:
    """The day budget as a claim's guard (`ledger.ClaimGuard`), on the ledger `ledger()`
    gives: checked inside the claim's transaction, under the ledger's write lock, so that
    of two creates at once the second sees the first's estimate, recorded with its claim,
    and is refused unless both fit."""

    def guard(table: "Table", resumed: Row | None) -> None:
        leave_out = (table, resumed["id"]) if resumed is not None else None
        spend = account_day_spend(ledger(), account, prices, leave_out=leave_out)
        check_day_budget(account, limit, spend, upper, lower, what)

    return guard


@dataclass
class BudgetCheck:
    """What a create's budgets say of an input: `max_cost`, the account's
    `max_cost_per_day` (and the day's spend), and the first refusal, if any."""

    max_cost: float | None
    per_day: float | None
    spend: DaySpend | None
    refused: Refused | None


def check_budgets(
    ledger: "Ledger | None",
    account: str,
    per_day: float | None,
    found: "Estimate",
    max_cost: float | None,
    prices: Prices,
) -> BudgetCheck:
    """`max_cost` (USD), then the account's `per_day` budget against the day's spend as
    the ledger records it now (read only). A create raises the refusal before any upload;
    a dry run shows it (and exits as the create would)."""
    refused: Refused | None = None
    if max_cost is not None:
        try:
            check_budget(found, max_cost)
        except Refused as exc:
            refused = exc
    spend = None
    if per_day is not None:  # issue 22: the day's spend, from the ledger
        # a create of the same input cut off earlier would be resumed: not counted twice
        spend = account_day_spend(ledger, account, prices, input_path=found.path)
        try:
            check_day_budget(account, per_day, spend, found.cost_max, found.cost_input)
        except Refused as exc:
            refused = refused or exc
    return BudgetCheck(max_cost=max_cost, per_day=per_day, spend=spend, refused=refused)
