"""The Python API's entry: `open()` -> a `BatchLedger` over the user's ledger and one of
their accounts, with `create`, `get`, `list`, `estimate`, `usage` and `sync`.

It holds one run's context (context.py) for as long as it is open: the ledger, the log
file (made at the first call of the API, as for a command), and a provider per account.
Every method calls the same steps the command line does; nothing prints.
"""

import builtins
import dataclasses
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from batchledger.accounts import ACCOUNT_ENV, choose_account, load_accounts
from batchledger.api.account_info import AccountInfo, Place, account_infos, places
from batchledger.api.listing import Listing
from batchledger.batches import BatchRef, BatchStatus, JobRef, JobStatus
from batchledger.context import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Context
from batchledger.details import CostEstimate, CreateDetails, check_metadata
from batchledger.errors import NotInLedger, UsageError
from batchledger.ledger import BatchFilter
from batchledger.paths import config_path, default_log_path, ledger_path
from batchledger.resolve import resolve
from batchledger.rows import BatchRow
from batchledger.times import iso_utc

if TYPE_CHECKING:
    from types import TracebackType

    from batchledger.api.batch_handle import Batch
    from batchledger.api.job_handle import Job
    from batchledger.estimate import Estimate
    from batchledger.ledger import ClaimGuard
    from batchledger.prune import PrunePlan
    from batchledger.sweep import SweepReport, SyncReport
    from batchledger.usage import UsageLine

DEFAULT_WINDOW = "24h"
DEFAULT_CONCURRENCY = 8  # batches checked at once by a sweep
UsageBy = Literal["model", "day", "account"]
# What `list(status=...)` matches: a batch's statuses (the API's, the ledger's own), a job's.
LISTED_STATUSES = (
    *BatchStatus,
    *(status for status in JobStatus if status != JobStatus.CANCELLED),
)


def open(
    db: str | Path | None = None,
    account: str | None = None,
    *,
    log_file: str | Path | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: float = DEFAULT_TIMEOUT,
) -> "BatchLedger":
    """The user's ledger (`db`, else $BATCHLEDGER_DB, else the per-user data folder: where
    the command line keeps it) on `account` (else $BATCHLEDGER_ACCOUNT, else `default`;
    `demo` runs the emulator inside this process, no key needed).

    accounts.toml is read now; nothing else is read or written until a method needs it
    (the ledger is made by the first method that records). A call of the API writes its log
    to `log_file` (else `logs/batch_<time>.log` under the working directory, as a
    command does). Close it (or use `with`) to stop its emulator and close the ledger.
    """
    named = account or os.environ.get(ACCOUNT_ENV) or None
    accounts = load_accounts()
    ctx = Context(
        command="api",
        ledger_path=ledger_path(str(db) if db is not None else None),
        log_file=Path(log_file) if log_file else default_log_path(datetime.now(UTC)),
        own_log_file=not log_file,
        accounts=accounts,
        account=choose_account(accounts, named),
        named_account=named,
        max_retries=max_retries,
        timeout=timeout,
        show_notes=False,
    )
    return BatchLedger(ctx)


class BatchLedger:
    """The ledger of every batch, and the account new batches are made on (`open()`)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __repr__(self) -> str:
        return f"<BatchLedger {self.path} account={self.account!r}>"

    def __enter__(self) -> "BatchLedger":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: "TracebackType | None",
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the ledger and the providers; stop the emulator of a `demo` account."""
        self._ctx.close()

    @property
    def path(self) -> Path:
        """The ledger file."""
        return self._ctx.ledger_path

    @property
    def account(self) -> str:
        """The account new batches are made on."""
        return self._ctx.account.name

    @property
    def log_file(self) -> Path:
        """The log of this ledger's calls of the API (made at the first one)."""
        return self._ctx.log_file

    @property
    def notes(self) -> "builtins.list[str]":
        """What opening the ledger's file did that you should know, a line each: the rows
        an upgrade to this version set aside (README, "Upgrading a ledger"). Empty until a
        method has read the ledger; nothing is printed (the CLI shows them on stderr)."""
        return self._ctx.ledger_notes

    def places(self) -> "builtins.list[Place]":
        """Where the ledger, accounts.toml and the logs are, and whether each is there yet,
        as `batchledger where`; nothing is made."""
        return places(self.path, config_path(), self._ctx.log_file)

    def accounts(self) -> "builtins.list[AccountInfo]":
        """Every account (accounts.toml's and the built-in `demo`), as `batchledger
        accounts`: kind, where it points, whether its key is set, its provider's limits and
        how many batches the ledger has of it; then each account the ledger has batches of
        that accounts.toml no longer names (`kind` None). No network, no key read out."""
        ledger = self._ctx.open_ledger(create=False)
        in_ledger = ledger.reports.accounts_in_use() if ledger is not None else {}
        return account_infos(self._ctx.accounts, in_ledger)

    # --- create ----------------------------------------------------------------------

    def create(
        self,
        path: str | Path,
        *,
        endpoint: str | None = None,
        window: str = DEFAULT_WINDOW,
        metadata: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        force: bool = False,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        max_in_flight: int | None = None,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        prices: str | Path | None = None,
        input_expires_after: int | None = None,
        output_expires_after: int | None = None,
    ) -> "Batch | Job":
        """Upload the requests of `path` (JSONL) and create their batch: a `Batch`, or a
        `Job` when the input is past one batch's limits (the account's, or `max_requests`
        / `max_bytes` / `max_tokens`), split into parts sent `max_in_flight` at a time.

        As `batchledger create`: an input already sent is Refused unless `force`; a create
        cut off earlier is resumed, not sent again; `max_cost` (USD) and the account's
        `max_cost_per_day` hold a create whose estimate is above them (Refused). Expiries
        are seconds (3600 to 2592000).
        """
        ctx = self._ctx
        text = str(path)
        BatchHandle, JobHandle = handles()
        details = CreateDetails(
            metadata=check_metadata(
                metadata.items() if isinstance(metadata, Mapping) else metadata or ()
            ),
            input_expires_after=input_expires_after,
            output_expires_after=output_expires_after,
        )
        ctx.account.profile.check_window(window)
        inline = ctx.account.profile.inline_requests
        if inline and endpoint:
            raise UsageError(
                f"--endpoint does not apply to account {ctx.account.name!r} "
                f"({ctx.account.profile.name}): its input lines name their own requests"
            )
        from batchledger.inputs import check_input, count_lines, hash_input_in_background
        from batchledger.split import split_wanted

        checked = check_input(text)
        if inline:
            # Every line's shape, and no custom_id twice in the whole input, before the
            # ledger is written or anything sent (a job's parts are each checked again).
            from batchledger.inline import scan_requests

            scan_requests(checked)
        guard = None
        if max_cost is not None or ctx.account.max_cost_per_day is not None:  # budgets
            # before the key, the ledger's writes, any upload; the day's budget again with
            # the claim, under the ledger's write lock (the guard)
            estimate, guard = self._check_cost(
                text, max_cost, prices, max_requests, max_bytes, max_tokens
            )
            details = dataclasses.replace(details, estimate=estimate)
        hashing = hash_input_in_background(checked, text)
        # Imported here (start-up: `import batchledger` loads none of the steps that send).
        from batchledger import batch
        from batchledger.estimate import record_scanned, scan_in_background
        from batchledger.token_budget import plan_parts_by_tokens

        ctx.start_api_command()
        # A provider whose batches name no endpoint (its profile has no default) records none.
        chosen = endpoint or ctx.account.default_endpoint or ""
        input_ = count_lines(hashing.result(), text)
        split = split_wanted(input_, ctx.account.limits, max_requests, max_bytes)
        planned = None
        if ctx.account.enqueued_tokens or max_tokens is not None:
            limits = split or ctx.account.limits
            planned = plan_parts_by_tokens(
                input_.path,
                max_requests=limits[0],
                max_bytes=limits[1],
                limits=ctx.account.enqueued_tokens,
                max_tokens=max_tokens,
            )
        is_job = split is not None or (planned is not None and len(planned.parts) > 1)
        if not is_job and max_in_flight is not None:
            # In the command line's words, as the core's messages are (it is the same code).
            raise UsageError("--max-in-flight is for inputs split into parts (a job)")
        # Every create records an estimate (issue 22): one made before anything was sent (a
        # budget), else one scanned in a thread beside the upload, recorded once it is made.
        # The ledger is opened here, by this thread, not by the scan's.
        scanning = None
        if details.estimate is None:
            scanning = scan_in_background(input_.path, input_.size, ctx.ledger)
        if is_job:
            from batchledger.jobs import create_job  # start-up: jobs only

            report = create_job(
                ctx,
                input_,
                chosen,
                window,
                split=split or ctx.account.limits,
                max_in_flight=max_in_flight,
                details=details,
                force=force,
                planned=planned,
                guard=guard,
            )
            record_scanned(ctx.ledger, "jobs", report.job["id"], scanning)
            job = JobHandle(ctx, report.job)
            job._took(report)
            return job
        submitted = batch.submit(
            ctx, input_, chosen, window, force=force, details=details, guard=guard
        )
        record_scanned(ctx.ledger, "batches", submitted.row["id"], scanning)
        made = BatchHandle(
            ctx, BatchRef(submitted.row["account"], submitted.batch["id"]), submitted.row
        )
        if submitted.recovered:
            made.warnings.append(
                f"{made.id} was created by an earlier run that was cut off; recorded it "
                "instead of creating another batch"
            )
        return made

    def _check_cost(
        self,
        text: str,
        max_cost: float | None,
        prices: str | Path | None,
        max_requests: int | None,
        max_bytes: int | None,
        max_tokens: int | None,
    ) -> "tuple[CostEstimate, ClaimGuard | None]":
        """Refused before any upload when the upper estimate is above `max_cost` or the
        account's day budget (or unknown); else the estimate, kept in the ledger, and the
        day's budget as a guard the create's claim checks again under the write lock."""
        from batchledger.prices import PriceList
        from batchledger.spend import check_budgets, day_budget_guard

        found = self.estimate(
            text, max_requests=max_requests, max_bytes=max_bytes, prices=prices,
            max_tokens=max_tokens,
        )  # fmt: skip
        ctx = self._ctx
        price_list = PriceList.from_file(str(prices) if prices is not None else None)
        limit = ctx.account.max_cost_per_day
        budget = check_budgets(
            ctx.open_ledger(create=False), ctx.account.name, limit, found, max_cost, price_list
        )
        if budget.refused is not None:
            raise budget.refused
        estimate = CostEstimate(
            input_tokens=sum(model.input_tokens for model in found.models),
            cost_min=found.cost_input,
            cost_max=found.cost_max,
        )
        guard = None
        if limit is not None:
            guard = day_budget_guard(
                lambda: ctx.ledger,  # opened by the create, after the key is checked
                ctx.account.name,
                limit,
                price_list,
                estimate.cost_max,
                estimate.cost_min,
            )
        return estimate, guard

    # --- finding batches -------------------------------------------------------------

    def get(self, ref: str) -> "Batch | Job":
        """The batch or job `ref` names: its id, a unique prefix of it, or `last` (the
        newest made); NotInLedger (a UsageError) if the ledger has none. A full batch id
        the ledger has not seen (made elsewhere) gives a handle that is not `recorded`
        until `refresh()` asks the API for it (`sync()` adds every batch of the account)."""
        ctx = self._ctx
        BatchHandle, JobHandle = handles()
        ledger = ctx.open_ledger(create=False)
        found = resolve(ledger, ref, named=ctx.named_account, current=ctx.account.name)
        if isinstance(found, JobRef):
            job = ledger.jobs.find_job(found.job_id) if ledger is not None else None
            if job is None:
                raise NotInLedger(f"no job {found.job_id} in the ledger")
            return JobHandle(ctx, job)
        # A full batch id the ledger has not seen (made elsewhere): its handle is not
        # `recorded` until refresh() asks the API, which records it.
        row = ledger.batches.find_batch(found.batch_id, found.account) if ledger else None
        return BatchHandle(ctx, found, row)

    def list(
        self,
        status: str | Iterable[str] | None = None,
        since: str | datetime | None = None,
        account: str | None = None,
        *,
        endpoint: str | None = None,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
        limit: int | None = None,
        parts: bool = False,
    ) -> "builtins.list[Batch | Job]":
        """The ledger's batches and jobs, newest first, as `batchledger list` shows them:
        `status` (one or several), made `since` (an age such as `7d`, `12h`, `30m`, `2w`, a
        date, or a datetime), on `account`, sent to `endpoint`, of `model`, tagged with every
        pair of `metadata`; at most `limit`. A job's parts are left out unless `parts`."""
        filters = listing_filter(status, since, account, endpoint, model, metadata, parts)
        ctx = self._ctx
        ledger = ctx.open_ledger(create=False)
        if ledger is None:
            return []
        BatchHandle, JobHandle = handles()
        found: builtins.list[tuple[str, Batch | Job]] = [
            (row["created_at"] or row["recorded_at"], BatchHandle(ctx, BatchRef.of(row), row))
            for row in cast("builtins.list[BatchRow]", ledger.reports.list_batches(filters, limit))
            if row["batch_id"] is not None
        ]
        found += [
            (job["recorded_at"], JobHandle(ctx, job))
            for job in ledger.reports.list_jobs(filters, limit)
        ]
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [handle for _, handle in found[:limit]]

    def listing(
        self,
        status: str | Iterable[str] | None = None,
        since: str | datetime | None = None,
        account: str | None = None,
        *,
        endpoint: str | None = None,
        model: str | None = None,
        metadata: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        limit: int | None = None,
        parts: bool = False,
    ) -> Listing:
        """The fast listing behind `batchledger list`, with the filters of `list()`: plain
        rows of the columns asked for, or JSON documents, read straight from SQLite with
        no handle built per row (a ledger of 100,000 batches lists in a second)."""
        filters = listing_filter(status, since, account, endpoint, model, metadata, parts)
        return Listing(self._ctx.open_ledger(create=False), filters, limit)

    # --- what the ledger knows -------------------------------------------------------

    def estimate(
        self,
        path: str | Path,
        *,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        prices: str | Path | None = None,
        max_tokens: int | None = None,
    ) -> "Estimate":
        """The plan (one batch, or a job of parts) and the cost range of an input at batch
        prices, as `batchledger estimate`: nothing sent, nothing recorded, no key needed."""
        from batchledger.estimate import estimate_input  # start-up: tokenizers, prices
        from batchledger.inputs import check_input
        from batchledger.prices import PriceList

        account = self._ctx.account
        return estimate_input(
            check_input(str(path)),
            limits=account.limits,
            max_requests=max_requests,
            max_bytes=max_bytes,
            prices=PriceList.from_file(str(prices) if prices is not None else None),
            token_limits=account.enqueued_tokens,
            max_tokens=max_tokens,
        )

    def usage(
        self,
        by: UsageBy = "model",
        since: str | datetime | None = None,
        prices: str | Path | None = None,
    ) -> "builtins.list[UsageLine]":
        """Requests, tokens and cost summed from the ledger, one line per model, day or
        account (`by`), as `batchledger usage`; no network. A line's `cost` is None where a
        model has no price (give one in a prices file, `prices`)."""
        from batchledger import usage as totals  # start-up: prices only for usage
        from batchledger.prices import PriceList

        if by not in totals.GROUPS:
            raise UsageError(f"by {by!r} is not one of {', '.join(totals.GROUPS)}")
        return totals.usage_lines(
            self._ctx.open_ledger(create=False),
            by,
            since_moment(since) if since is not None else None,
            PriceList.from_file(str(prices) if prices is not None else None),
        )

    def sync(self) -> "SyncReport":
        """Bring every batch of the account into the ledger (those made elsewhere too), as
        `batchledger sync`: what was added, updated, recovered."""
        from batchledger import sweep  # start-up: only calls of the API load it

        self._ctx.start_api_command()
        return sweep.sync(self._ctx)

    def sweep(
        self,
        *,
        save: bool = True,
        concurrency: int = DEFAULT_CONCURRENCY,
        include_synced: bool = False,
        out_dir: str | Path | None = None,
    ) -> "SweepReport | None":
        """One round over every batch and job still to follow, on every account, as
        `batchledger status --all` (`watch --all` repeats it): creates cut off earlier
        recovered (or marked abandoned), batches checked `concurrency` at a time and their
        results saved (`save`; into `out_dir` if given; those `sync` found only with
        `include_synced`), jobs moved on. The report says what each check found and which
        accounts were skipped. None when the ledger has nothing to follow: then no key, log
        or network is used."""
        ledger = self._ctx.open_ledger(create=False)
        if ledger is None or not ledger.batches.has_work_to_sweep(include_synced=include_synced):
            return None
        from batchledger import sweep  # start-up: its jobs and batch steps, only for sweeps

        return sweep.sweep_all(
            self._ctx,
            auto_save=save,
            concurrency=concurrency,
            include_synced=include_synced,
            out_dir=Path(out_dir) if out_dir is not None else None,
        )

    def prune(
        self, older_than: str | datetime | None = None, *, dry_run: bool = False
    ) -> "PrunePlan":
        """Delete from the account the files (input, output, errors) of its final batches
        made before `older_than` (an age such as `30d`, a date, a datetime) whose results
        are saved locally and unchanged, as `batchledger prune`; `dry_run` only looks them
        up. Each item's `outcome` says what was done (`deleted`, `would delete`, `not
        found`, `failed: ...`: a failure does not stop the others); `kept_unsaved` counts
        the final batches kept because their results are not saved. Nothing is asked of
        the provider when nothing is to delete."""
        from batchledger import prune as pruning  # start-up: only prune loads it

        ctx = self._ctx
        ledger = ctx.open_ledger(create=False)
        if ledger is None:
            return pruning.PrunePlan(items=[], kept_unsaved=0)
        moment = since_moment(older_than) if older_than is not None else None
        planned = pruning.plan(ledger, moment, ctx.account)
        if planned.items:
            ctx.start_api_command()
            pruning.prune(ctx, planned.items, dry_run=dry_run)
        return planned


def handles() -> "tuple[type[Batch], type[Job]]":
    """The handle classes, imported at the first call that makes one (start-up: `batchledger
    list` and `status --all` load the client and the listing, not the handles)."""
    from batchledger.api.batch_handle import Batch
    from batchledger.api.job_handle import Job

    return Batch, Job


def listing_filter(
    status: str | Iterable[str] | None,
    since: str | datetime | None,
    account: str | None,
    endpoint: str | None,
    model: str | None,
    metadata: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    parts: bool,
) -> BatchFilter:
    """The filter of `list()` and `listing()`; UsageError for a status that is none."""
    statuses = (status,) if isinstance(status, str) else tuple(status or ())
    unknown = [value for value in statuses if value not in LISTED_STATUSES]
    if unknown:
        raise UsageError(
            f"status {unknown[0]!r} is not a status; the statuses are {', '.join(LISTED_STATUSES)}"
        )
    pairs = metadata.items() if isinstance(metadata, Mapping) else metadata or ()
    return BatchFilter(
        statuses=statuses,
        since=since_moment(since) if since is not None else None,
        endpoint=endpoint,
        account=account,
        model=model,
        metadata=tuple(pairs),
        parts=parts,
    )


def since_moment(since: str | datetime) -> str:
    """An age (`7d`, `12h`, `30m`, `2w`), a date or ISO time, or a datetime: as ISO 8601 UTC."""
    if isinstance(since, datetime):
        return iso_utc(since if since.tzinfo else since.replace(tzinfo=UTC))
    units = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if len(since) > 1 and since[-1] in units and since[:-1].isdigit():
        return iso_utc(datetime.now(UTC) - timedelta(seconds=int(since[:-1]) * units[since[-1]]))
    try:
        moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"since: expected an age like 7d, 12h, 30m or a date like 2026-11-01, got {since!r}"
        ) from None
    return iso_utc(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
