"""The emulator's objects and the batch lifecycle; safe to use from many threads.

Lifecycle: validating -> in_progress -> finalizing -> completed, or a branch chosen by the
batch's outcome (set_outcome): "failed" fails at validation, "expired" goes from in_progress
to expired, "cancelled" goes from in_progress to cancelling and then cancelled. Expired and
cancelled batches run the first half of their lines; the rest land in the error file.

Without step_seconds every retrieve (GET /v1/batches/{id}) moves its batch one step before
answering and listing moves nothing. With step_seconds=N a batch moves one step per N seconds
since its last transition, computed lazily whenever it is read; retrieves then do not step.

The anthropic flavour keeps Message Batches (message_batches.py): in_progress -> ended, or
in_progress -> canceling -> ended after a cancel (or the outcome "cancelled"), stepped the same
way. A batch that expires (24 h, or the outcome "expired") or is cancelled runs the first half of
its requests; the rest end expired or canceled. The outcome "failed" errors every request
(api_error): Message Batches themselves never fail.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import string
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .errors import ApiError, anthropic_error, batch_not_found, file_not_found, invalid_request
from .faults import Fault, FaultBook
from .lifecycle import (
    CANCELLED,
    EXPIRED,
    LINE_OUTCOMES,
    Interruption,
    Limits,
    RunPlan,
    Written,
    execute,
    first_model,
    forced_failure,
    token_limit_message,
    validate_input,
)
from .message_batches import (
    MAX_BODY_BYTES,
    MAX_REQUESTS,
    MessageRun,
    StoredMessageBatch,
    normalize_requests,
    run_batch,
)
from .models import (
    AZURE_BATCH_ENDPOINTS,
    BATCH_ENDPOINTS,
    FLAVORS,
    OUTCOMES,
    TOKEN_LIMIT_CHECKS,
    BatchError,
    BatchResult,
    RecordedRequest,
    StoredBatch,
    StoredFile,
)
from .persist import (
    StateFile,
    batches_from_json,
    files_from_json,
    message_batches_from_json,
    to_json,
)

DEFAULT_MAX_INPUT_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_INPUT_LINES = 50_000
AZURE_MAX_INPUT_LINES = 100_000
BATCH_FILE_TTL = 30 * 24 * 3600
COMPLETION_WINDOW_SECONDS = 24 * 3600
_ALNUM = string.ascii_letters + string.digits


class _HasId(Protocol):
    id: str


_T = TypeVar("_T", bound=_HasId)


def page_after(items: Sequence[_T], after: str | None, limit: int) -> tuple[list[_T], bool]:
    """The up to `limit` items after the one with id `after`, and whether more follow.

    An unknown `after` id yields an empty last page rather than an error.
    """
    start = 0
    if after is not None:
        ids = [item.id for item in items]
        if after not in ids:
            return [], False
        start = ids.index(after) + 1
    page = list(items[start : start + limit])
    return page, start + limit < len(items)


def _link_or_copy(source: Path, target: Path) -> None:
    # A hard link costs nothing for a 200 MB input; copy where the filesystem has none.
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


@dataclass
class LineOutcome:
    outcome: str
    remaining: int | None
    """Executions of the custom_id it still applies to; None for all."""


class EmulatorState:
    """Files, batches, recorded requests and pending faults of one emulator."""

    def __init__(
        self,
        data_dir: Path,
        *,
        step_seconds: float | None = None,
        max_input_bytes: int | None = None,
        max_input_lines: int | None = None,
        clock: Callable[[], float] = time.time,
        enqueued_token_limit: int | None = None,
        token_limit_at: str = "validate",
        flavor: str = "openai",
        keep_metadata: bool = True,
        list_files: bool = True,
        persist: bool = False,
        relative_results_url: bool = False,
        completion_windows: tuple[str, ...] = ("24h",),
    ) -> None:
        """max_input_lines and max_input_bytes None are the flavour's limits: 50,000 lines and
        200 MB on OpenAI, 100,000 on Azure, 100,000 requests and 256 MB on Anthropic.
        `completion_windows`: those a create may name (an OpenAI-compatible host such as
        Groq takes 24h to 7d)."""
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {', '.join(FLAVORS)}")
        if token_limit_at not in TOKEN_LIMIT_CHECKS:
            raise ValueError(f"token_limit_at must be one of {', '.join(TOKEN_LIMIT_CHECKS)}")
        self.data_dir = Path(data_dir)
        self._files_dir = self.data_dir / "files"
        self._inputs_dir = self.data_dir / "batch_inputs"
        self._files_dir.mkdir(parents=True, exist_ok=True)
        self._inputs_dir.mkdir(parents=True, exist_ok=True)
        self._messages_dir = self.data_dir / "message_batches"
        self._messages_dir.mkdir(parents=True, exist_ok=True)
        self.step_seconds = step_seconds
        self.flavor = flavor
        self.keep_metadata = keep_metadata
        """False: a provider that ignores batch metadata (batches show metadata null)."""
        self.can_list_files = list_files
        """False: a provider whose files cannot be listed (GET of the list is a 404)."""
        if max_input_lines is None:
            max_input_lines = {"azure": AZURE_MAX_INPUT_LINES, "anthropic": MAX_REQUESTS}.get(
                flavor, DEFAULT_MAX_INPUT_LINES
            )
        if max_input_bytes is None:
            anthropic = flavor == "anthropic"
            max_input_bytes = MAX_BODY_BYTES if anthropic else DEFAULT_MAX_INPUT_BYTES
        self.relative_results_url = relative_results_url
        self.completion_windows = completion_windows
        """True: a Message Batch's results_url is a path, as some proxies and mocks send it."""
        self.limits = Limits(max_bytes=max_input_bytes, max_lines=max_input_lines)
        self.batch_endpoints = AZURE_BATCH_ENDPOINTS if flavor == "azure" else BATCH_ENDPOINTS
        self.enqueued_token_limit = enqueued_token_limit
        """Per model, over the batches that are enqueued; None for no limit."""
        self.token_limit_at = token_limit_at
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, StoredBatch] = {}
        self.message_batches: dict[str, StoredMessageBatch] = {}
        """The anthropic flavour's batches, oldest first."""
        self.requests: list[RecordedRequest] = []
        self.default_outcome = "completed"
        """Outcome given to batches created from now on."""
        self.lock = threading.RLock()
        """Held by every method; hold it too while reading several fields at once."""
        self._faults = FaultBook()
        self._clock = clock
        self.clock_offset = 0.0
        """Seconds added to the clock: a server that runs ahead of (or behind) its clients."""
        self.line_outcomes: dict[str, LineOutcome] = {}
        """Outcomes forced on requests by custom_id, whatever batch they are in."""
        self._state_file = StateFile(self.data_dir) if persist else None
        self._depth = 0
        """Nesting of transaction(); only the outermost one loads and saves."""
        # Picks up what an earlier process left in data_dir.
        with self.transaction():
            pass

    # Persistence

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lock; with persist, also the lock file, reloading before and saving after."""
        with self.lock:
            if self._state_file is None or self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._depth += 1
            try:
                with self._state_file.locked():
                    stored = self._state_file.read_if_changed()
                    if stored is not None:
                        self._load(stored)
                    yield
                    self._state_file.write(self._dump())
            finally:
                self._depth -= 1

    def _dump(self) -> dict[str, Any]:
        return {
            "files": to_json(self.files),
            "batches": to_json(self.batches),
            "message_batches": to_json(self.message_batches),
            "default_outcome": self.default_outcome,
            "line_outcomes": to_json(self.line_outcomes),
            "clock_offset": self.clock_offset,
        }

    def _load(self, data: dict[str, Any]) -> None:
        self.files = files_from_json(data["files"])
        self.batches = batches_from_json(data["batches"])
        # A state.json of an emulator that had no Message Batches yet has none.
        self.message_batches = message_batches_from_json(data.get("message_batches", {}))
        self.default_outcome = data["default_outcome"]
        self.line_outcomes = {
            custom_id: LineOutcome(**entry) for custom_id, entry in data["line_outcomes"].items()
        }
        self.clock_offset = data["clock_offset"]

    # Clock

    def now(self) -> float:
        """The server's time: every timestamp, step and Date header comes from it."""
        return self._clock() + self.clock_offset

    def set_clock_offset(self, seconds: float) -> None:
        with self.transaction():
            self.clock_offset = float(seconds)

    # Requests and faults

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def clear_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    def add_fault(self, fault: Fault) -> None:
        self._faults.add(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        return self._faults.pending()

    def take_fault(self, method: str, path: str) -> Fault | None:
        return self._faults.take(method, path)

    # Outcomes

    @staticmethod
    def _check_outcome(outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")

    def set_outcome(self, batch_id: str, outcome: str) -> None:
        """Choose how a batch ends; no effect once it is final. KeyError if unknown."""
        self._check_outcome(outcome)
        with self.transaction():
            if batch_id in self.message_batches:
                self.message_batches[batch_id].outcome = outcome
            else:
                self.batches[batch_id].outcome = outcome

    def set_default_outcome(self, outcome: str) -> None:
        self._check_outcome(outcome)
        with self.transaction():
            self.default_outcome = outcome

    def set_line_outcomes(self, outcomes: dict[str, str], times: int | None = 1) -> None:
        """Force outcomes on the next `times` executions of these custom_ids (None: always)."""
        for custom_id, outcome in outcomes.items():
            if outcome not in LINE_OUTCOMES:
                raise ValueError(
                    f"line outcome must be one of {', '.join(LINE_OUTCOMES)}, not {outcome!r}"
                    f" (for {custom_id!r})"
                )
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for always")
        with self.transaction():
            for custom_id, outcome in outcomes.items():
                self.line_outcomes[custom_id] = LineOutcome(outcome, times)

    def clear_line_outcomes(self) -> None:
        with self.transaction():
            self.line_outcomes.clear()

    def _take_line_outcome(self, custom_id: str) -> str | None:
        entry = self.line_outcomes.get(custom_id)
        if entry is None:
            return None
        if entry.remaining is not None:
            entry.remaining -= 1
            if entry.remaining == 0:
                del self.line_outcomes[custom_id]
        return entry.outcome

    # Files

    def _new_file_id(self) -> str:
        while True:
            file_id = "file-" + "".join(secrets.choice(_ALNUM) for _ in range(24))
            if file_id not in self.files:
                return file_id

    def new_upload(self) -> tuple[str, Path]:
        """Reserve a file id and the temporary path its upload streams to."""
        with self.transaction():
            file_id = self._new_file_id()
        return file_id, self._files_dir / f"{file_id}.part"

    def add_file(
        self,
        file_id: str,
        written: Path,
        *,
        filename: str,
        purpose: str,
        size: int,
        lines: int,
        expires_after: int | None,
    ) -> StoredFile:
        """Register a fully written file; batch files expire after 30 days by default."""
        now = int(self.now())
        if expires_after is None and purpose == "batch":
            expires_after = BATCH_FILE_TTL
        path = self._files_dir / file_id
        written.replace(path)
        stored = StoredFile(
            id=file_id,
            filename=filename,
            purpose=purpose,
            bytes=size,
            lines=lines,
            created_at=now,
            expires_at=None if expires_after is None else now + expires_after,
            path=path,
        )
        with self.transaction():
            self.files[file_id] = stored
        return stored

    def get_file(self, file_id: str) -> StoredFile:
        with self.transaction():
            stored = self.files.get(file_id)
        if stored is None:
            raise file_not_found(file_id)
        return stored

    def delete_file(self, file_id: str) -> StoredFile:
        with self.transaction():
            stored = self.files.pop(file_id, None)
        if stored is None:
            raise file_not_found(file_id)
        stored.path.unlink(missing_ok=True)
        return stored

    def list_files(
        self, *, purpose: str | None, after: str | None, limit: int, newest_first: bool
    ) -> tuple[list[StoredFile], bool]:
        with self.transaction():
            items = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
        if newest_first:
            items.reverse()
        return page_after(items, after, limit)

    # Batches

    def _batch(self, batch_id: str) -> StoredBatch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise batch_not_found(batch_id)
        return batch

    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        output_expires_after: int | None,
    ) -> StoredBatch:
        """Create a batch in status validating; the input file must exist with purpose batch."""
        with self.transaction():
            source = self.files.get(input_file_id)
            if source is None:
                raise invalid_request(
                    f"No such File object: {input_file_id}", param="input_file_id"
                )
            if source.purpose != "batch":
                raise invalid_request(
                    f"The input file {input_file_id} has purpose {source.purpose!r}; a batch"
                    " input file must be uploaded with purpose 'batch'.",
                    param="input_file_id",
                )
            if self.token_limit_at == "create":
                self._catch_up_all()
                model = first_model(source.path)
                if self._over_token_limit(model, source.bytes // 4):
                    assert self.enqueued_token_limit is not None
                    message = token_limit_message(model, self.enqueued_token_limit)
                    raise invalid_request(message, code="token_limit_exceeded")
            batch_id = f"batch_{secrets.token_hex(16)}"
            input_path = self._inputs_dir / batch_id
            _link_or_copy(source.path, input_path)
            now = self.now()
            batch = StoredBatch(
                id=batch_id,
                endpoint=endpoint,
                input_file_id=input_file_id,
                completion_window=completion_window,
                created_at=int(now),
                expires_at=int(now) + COMPLETION_WINDOW_SECONDS,
                metadata=metadata if self.keep_metadata else None,
                model=first_model(input_path),
                output_expires_after=output_expires_after,
                input_path=input_path,
                input_bytes=source.bytes,
                input_lines=source.lines,
                outcome=self.default_outcome,
                last_step_at=now,
            )
            self.batches[batch_id] = batch
            return batch

    def retrieve_batch(self, batch_id: str) -> StoredBatch:
        """The batch after moving it: one step, or as far as the clock says in time mode."""
        with self.transaction():
            batch = self._batch(batch_id)
            if self.step_seconds is None:
                if not batch.is_final:
                    self._step(batch, self.now())
            else:
                self._catch_up_all()
            return batch

    def list_batches(self, *, after: str | None, limit: int) -> tuple[list[StoredBatch], bool]:
        """Newest first. In step mode each batch on the page moves one step, as a look-up
        moves it: a sweep of many batches reads them from the listing (workflow.list_batches),
        and a `watch --all` of them must see them move."""
        with self.transaction():
            self._catch_up_all()
            items = list(reversed(self.batches.values()))
            page, more = page_after(items, after, limit)
            if self.step_seconds is None:
                now = self.now()
                for batch in page:
                    if not batch.is_final:
                        self._step(batch, now)
            return page, more

    def advance(self, batch_id: str) -> StoredBatch | StoredMessageBatch:
        """Move a batch one step now, whatever the mode; no effect on a final batch."""
        with self.transaction():
            if batch_id in self.message_batches:
                message_batch = self.message_batches[batch_id]
                if not message_batch.is_final:
                    self._step_message_batch(message_batch, self.now())
                return message_batch
            batch = self._batch(batch_id)
            if not batch.is_final:
                self._step(batch, self.now())
            return batch

    def cancel_batch(self, batch_id: str) -> StoredBatch:
        """Start cancelling; 409 unless validating, in_progress or already cancelling."""
        with self.transaction():
            batch = self._batch(batch_id)
            self._catch_up_all()
            if batch.status == "cancelling":
                return batch
            if batch.status not in ("validating", "in_progress"):
                raise ApiError(409, f"Cannot cancel a batch with status '{batch.status}'.")
            now = self.now()
            batch.status = "cancelling"
            batch.cancelling_at = int(now)
            batch.last_step_at = now
            return batch

    # Message Batches (the anthropic flavour)

    def _message_batch(self, batch_id: str) -> StoredMessageBatch:
        batch = self.message_batches.get(batch_id)
        if batch is None:
            raise anthropic_error(404, f"Message Batch {batch_id} not found.")
        return batch

    def new_message_batch_files(self) -> tuple[str, Path, Path]:
        """Reserve a Message Batch id, the path its create body streams to and its input's."""
        with self.transaction():
            while True:
                batch_id = "msgbatch_01" + "".join(secrets.choice(_ALNUM) for _ in range(22))
                if batch_id not in self.message_batches:
                    break
        body = self._messages_dir / f"{batch_id}.body"
        return batch_id, body, self._messages_dir / f"{batch_id}.input.jsonl"

    def create_message_batch(
        self, batch_id: str, body: Path, input_path: Path
    ) -> StoredMessageBatch:
        """Check the saved create body and start the batch (in_progress); 400 if it is wrong."""
        try:
            count = normalize_requests(body, input_path, self.limits.max_lines)
        except BaseException:
            input_path.unlink(missing_ok=True)
            raise
        with self.transaction():
            now = self.now()
            batch = StoredMessageBatch(
                id=batch_id,
                created_at=now,
                expires_at=now + COMPLETION_WINDOW_SECONDS,
                requests=count,
                input_path=input_path,
                outcome=self.default_outcome,
                last_step_at=now,
            )
            batch.request_counts.processing = count
            self.message_batches[batch_id] = batch
            return batch

    def retrieve_message_batch(self, batch_id: str) -> StoredMessageBatch:
        """The batch after moving it, as retrieve_batch moves a batch."""
        with self.transaction():
            batch = self._message_batch(batch_id)
            self._catch_up_message_batches(self.now(), self.step_seconds)
            if self.step_seconds is None and not batch.is_final:
                self._step_message_batch(batch, self.now())
            return batch

    def list_message_batches(
        self, *, before: str | None, after: str | None, limit: int
    ) -> tuple[list[StoredMessageBatch], bool]:
        """Newest first, the page after `after` or before `before`; in step mode each batch
        on the page moves one step, as list_batches moves them."""
        with self.transaction():
            now = self.now()
            self._catch_up_message_batches(now, self.step_seconds)
            items = list(reversed(self.message_batches.values()))
            ids = [item.id for item in items]
            if before is not None:
                end = ids.index(before) if before in ids else 0
                page, more = items[max(0, end - limit) : end], end - limit > 0
            else:
                page, more = page_after(items, after, limit)
            if self.step_seconds is None:
                for batch in page:
                    if not batch.is_final:
                        self._step_message_batch(batch, now)
            return page, more

    def cancel_message_batch(self, batch_id: str) -> StoredMessageBatch:
        """Start canceling; a batch that has ended cannot be canceled (400)."""
        with self.transaction():
            batch = self._message_batch(batch_id)
            now = self.now()
            self._catch_up_message_batches(now, self.step_seconds)
            if batch.processing_status == "ended":
                raise invalid_request(
                    f"Message Batch {batch_id} has ended and can no longer be canceled."
                )
            if batch.processing_status == "in_progress":
                batch.processing_status = "canceling"
                batch.cancel_initiated_at = now
                batch.last_step_at = now
            return batch

    def delete_message_batch(self, batch_id: str) -> None:
        """Delete an ended batch and its results; one still processing cannot be (400)."""
        with self.transaction():
            batch = self._message_batch(batch_id)
            self._catch_up_message_batches(self.now(), self.step_seconds)
            if not batch.is_final:
                raise invalid_request(
                    f"Message Batch {batch_id} cannot be deleted while it is"
                    f" {batch.processing_status}; cancel it and wait for it to end first."
                )
            del self.message_batches[batch_id]
        if batch.results_path is not None:
            batch.results_path.unlink(missing_ok=True)

    def message_batch_results(self, batch_id: str) -> Path:
        """The results file of an ended batch; 404 once archived (29 days after creation)."""
        with self.transaction():
            batch = self._message_batch(batch_id)
            self._catch_up_message_batches(self.now(), self.step_seconds)
            if not batch.is_final or batch.results_path is None:
                raise invalid_request(
                    f"Message Batch {batch_id} has not ended yet; its results are not available."
                )
            if batch.archived(self.now()):
                raise anthropic_error(
                    404, f"The results of Message Batch {batch_id} are no longer available."
                )
            return batch.results_path

    def _catch_up_message_batches(self, now: float, step_seconds: float | None) -> None:
        """End what expired by `now`; in time mode, take every step due by then."""
        for batch in self.message_batches.values():
            while step_seconds is not None and not batch.is_final:
                due = batch.last_step_at + step_seconds
                if due > now or due >= batch.expires_at:
                    break
                self._step_message_batch(batch, due)
            if not batch.is_final and now >= batch.expires_at:
                self._end_message_batch(batch, batch.expires_at, "expired")

    def _step_message_batch(self, batch: StoredMessageBatch, at: float) -> None:
        batch.last_step_at = at
        if batch.processing_status == "canceling":
            self._end_message_batch(batch, at, "canceled")
        elif at >= batch.expires_at or batch.outcome == "expired":
            self._end_message_batch(batch, at, "expired")
        elif batch.outcome == "cancelled":
            batch.processing_status = "canceling"
            batch.cancel_initiated_at = at
        else:
            self._end_message_batch(batch, at, None)

    def _end_message_batch(self, batch: StoredMessageBatch, at: float, cut: str | None) -> None:
        """Process the requests into the results file; `cut` ends the second half so."""
        assert batch.input_path is not None, "a batch keeps its input until it ends"
        run = MessageRun(
            batch_id=batch.id,
            input_path=batch.input_path,
            results_path=self._messages_dir / f"{batch.id}.results.jsonl",
            executed=None if cut is None else batch.requests // 2,
            unexecuted=cut or "expired",
            fail_all=batch.outcome == "failed",
            line_outcome=self._take_line_outcome,
        )
        batch.request_counts = run_batch(run)
        batch.results_path = run.results_path
        batch.processing_status = "ended"
        batch.ended_at = at
        batch.last_step_at = at
        batch.input_path.unlink(missing_ok=True)
        batch.input_path = None

    # Lifecycle steps; callers hold the lock.

    def _catch_up_all(self) -> None:
        """In time mode, take every due step of every batch, earliest first.

        Stepping all batches in time order, not just the one asked for, lets a step see the
        other batches as they were at that moment (the enqueued-token limit needs that).
        """
        if self.step_seconds is None:
            return
        now = self.now()
        self._catch_up_message_batches(now, self.step_seconds)
        pending = [batch for batch in self.batches.values() if not batch.is_final]
        while pending:
            batch = min(pending, key=lambda candidate: candidate.last_step_at)
            if now - batch.last_step_at < self.step_seconds:
                return
            self._step(batch, batch.last_step_at + self.step_seconds)
            if batch.is_final:
                pending.remove(batch)

    def _over_token_limit(self, model: str | None, tokens: int) -> bool:
        """Whether `tokens` more of this model would pass the enqueued-token limit."""
        if self.enqueued_token_limit is None:
            return False
        enqueued = sum(
            batch.estimated_tokens
            for batch in self.batches.values()
            if batch.model == model and batch.is_enqueued
        )
        return enqueued + tokens > self.enqueued_token_limit

    def _step(self, batch: StoredBatch, at: float) -> None:
        batch.last_step_at = at
        now = int(at)
        if batch.status == "validating":
            self._leave_validating(batch, now)
        elif batch.status == "in_progress":
            self._leave_in_progress(batch, now)
        elif batch.status == "finalizing":
            batch.status = "completed"
            batch.completed_at = now
            self._publish(batch)
        elif batch.status == "cancelling":
            if batch.in_progress_at is not None:
                self._run(batch, now, CANCELLED)
            batch.status = "cancelled"
            batch.cancelled_at = now
            self._publish(batch)

    def _leave_validating(self, batch: StoredBatch, now: int) -> None:
        assert batch.input_path is not None, "a batch keeps its input until it is final"
        if batch.outcome == "failed":
            errors = [forced_failure(batch.model)]
        else:
            errors = validate_input(
                batch.input_path, batch.input_bytes, batch.input_lines, batch.endpoint, self.limits
            )
        if errors:
            self._fail(batch, now, errors)
            return
        if self.token_limit_at == "validate" and self._over_token_limit(
            batch.model, batch.estimated_tokens
        ):
            assert self.enqueued_token_limit is not None
            self._fail(batch, now, [forced_failure(batch.model, self.enqueued_token_limit)])
            return
        batch.status = "in_progress"
        batch.in_progress_at = now
        batch.request_counts.total = batch.input_lines

    def _leave_in_progress(self, batch: StoredBatch, now: int) -> None:
        if batch.outcome == "failed":
            self._fail(batch, now, [forced_failure(batch.model)])
        elif batch.outcome == "cancelled":
            batch.status = "cancelling"
            batch.cancelling_at = now
        elif batch.outcome == "expired":
            self._run(batch, now, EXPIRED)
            batch.status = "expired"
            batch.expired_at = now
            self._publish(batch)
        else:
            self._run(batch, now, None)
            batch.status = "finalizing"
            batch.finalizing_at = now

    def _fail(self, batch: StoredBatch, now: int, errors: list[BatchError]) -> None:
        batch.status = "failed"
        batch.failed_at = now
        batch.errors = errors
        self._release_input(batch)

    def _run(self, batch: StoredBatch, now: int, interruption: Interruption | None) -> None:
        """Execute the batch into output and error files; counts show at once, ids on publish."""
        assert batch.input_path is not None, "a batch keeps its input until it is final"
        output_id, output_tmp = self.new_upload()
        error_id, error_tmp = self.new_upload()
        plan = RunPlan(
            batch_id=batch.id,
            endpoint=batch.endpoint,
            input_path=batch.input_path,
            output_path=output_tmp,
            error_path=error_tmp,
            created=now,
            executed=None if interruption is None else batch.input_lines // 2,
            interruption=interruption,
            line_outcome=self._take_line_outcome,
        )
        run = execute(plan)
        batch.request_counts = run.counts
        batch.usage = run.usage
        batch.result = BatchResult(
            counts=run.counts,
            usage=run.usage,
            output_file_id=self._keep_output(batch, output_id, output_tmp, run.output, "output"),
            error_file_id=self._keep_output(batch, error_id, error_tmp, run.errors, "error"),
        )

    def _keep_output(
        self, batch: StoredBatch, file_id: str, path: Path, written: Written, kind: str
    ) -> str | None:
        """Register a result file if it has lines; an empty one is deleted, like live."""
        if written.lines == 0:
            path.unlink(missing_ok=True)
            return None
        self.add_file(
            file_id,
            path,
            filename=f"{batch.id}_{kind}.jsonl",
            purpose="batch_output",
            size=written.bytes,
            lines=written.lines,
            expires_after=batch.output_expires_after,
        )
        return file_id

    def _publish(self, batch: StoredBatch) -> None:
        if batch.result is not None:
            batch.output_file_id = batch.result.output_file_id
            batch.error_file_id = batch.result.error_file_id
        self._release_input(batch)

    @staticmethod
    def _release_input(batch: StoredBatch) -> None:
        if batch.input_path is not None:
            batch.input_path.unlink(missing_ok=True)
            batch.input_path = None
