"""The provider seam: what the tool asks of a batch API (`Provider`); what each API is
(`Profile`: limits, windows, metadata, result order, retention, status mapping) is in
profiles.py.

Everything above this package (batch, sweep, jobs, retry, prune, usage, export) sees only
these two. A provider's implementation is one package beside the others (`openai/`: the
OpenAI SDK's `OpenAI` and `AzureOpenAI` clients); `Context.provider_for` picks it by the
account's kind. Importing this package imports no SDK: that costs about a second, and
commands that never call an API (`list`, `show`, `usage`, `--help`) must not pay it.
"""

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from batchledger.errors import ApiError, BatchledgerError, Refused, Transient
from batchledger.profiles import Profile

if TYPE_CHECKING:
    from batchledger.savefile import Saved

log = logging.getLogger("batchledger")
_T = TypeVar("_T")

# The pauses between the tries of a call that makes something (retry_without_duplicates).
INITIAL_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 8.0
MAX_RETRY_AFTER_SECONDS = 120.0

# The stop of the sweep whose worker this thread is, set by the sweep for each of its
# checks (`downloads_stopped_by`): set when the user interrupts that sweep, so that its
# downloads in flight stop at their next chunk (the main thread gets KeyboardInterrupt). A
# download of any other thread (the next call of a Python session, another sweep) never
# sees it.
_sweep = threading.local()


@contextlib.contextmanager
def downloads_stopped_by(stop: threading.Event) -> Iterator[None]:
    """Within the block, this thread's downloads stop at their next chunk once `stop` is set."""
    _sweep.stop = stop
    try:
        yield
    finally:
        _sweep.stop = None


def downloads_stopped() -> bool:
    """Whether this thread's downloads are to stop now: its sweep was interrupted."""
    stop: threading.Event | None = getattr(_sweep, "stop", None)
    return stop is not None and stop.is_set()


def upload_name(path: Path, ref: str) -> str:
    """The name an input is uploaded under: its own stem, tagged with the ledger's ref.

    The tag lets a lost upload be told apart from another upload of a same-named file.
    The suffix is always .jsonl: the API refuses a batch input named otherwise.
    """
    return f"{path.stem}.{ref}.jsonl"


class Uploaded(NamedTuple):
    id: str
    created_at: int  # by the server's clock


class Inline(NamedTuple):
    """The requests a create sends inline: these byte ranges of the input, in order."""

    path: Path
    ranges: Sequence[tuple[int, int]]


class Listed(NamedTuple):
    batches: dict[str, dict[str, Any]]  # batch id -> the batch as the listing showed it
    pages: int  # pages read
    error: BatchledgerError | None  # why the listing stopped short, if it did


class Search(NamedTuple):
    found: dict[str, dict[str, Any]]  # ref -> the batch its create made
    complete: bool  # every batch back to the bound was looked at: what is not found was not made
    # Batches that could each be one a lost create made, where the search cannot tell which
    # (a provider whose batches carry no metadata): nothing may be sent again for it.
    ambiguous: tuple[str, ...] = ()


class Provider(Protocol):
    """Everything asked of a batch API, in the shape the layers above use: batches are plain
    dicts of the OpenAI Batch object's fields (a provider maps its own onto them), errors
    are the project's own (errors.py: `Transient`, `NotFound`, `Rejected`, `Conflict`)."""

    profile: Profile
    # Where the account's batches live, as the ledger records it for each batch.
    location: str

    def upload(
        self,
        path: Path,
        name: str,
        *,
        expires_after: int | None = None,
        ranges: Sequence[tuple[int, int]] | None = None,
    ) -> Uploaded:
        """Upload `path` (or only these byte ranges of it, in order) as `name`; found
        again, not repeated, when an answer is lost."""
        ...

    def create(
        self,
        file_id: str | None,
        endpoint: str,
        window: str,
        ref: str,
        *,
        file_created_at: int | None,
        user_metadata: Mapping[str, str] | None = None,
        output_expires_after: int | None = None,
        exclude: Collection[str] = (),
        inline: Inline | None = None,
    ) -> dict[str, Any]:
        """Create a batch tagged with `ref` from an uploaded file (`file_id`), or from the
        requests themselves (`inline`, where the profile says `inline_requests`), never two
        of them for one call."""
        ...

    def get(self, batch_id: str) -> dict[str, Any]:
        """Look up one batch."""
        ...

    def list_by_id(self, wanted: Collection[str], since: float | None, max_pages: int) -> Listed:
        """The batches of `wanted` among the account's newest, at most `max_pages` pages."""
        ...

    def list_all(self) -> Iterator[dict[str, Any]]:
        """Every batch of the account, newest first."""
        ...

    def find_batches(
        self, wanted: Mapping[str, str | None], since: float | None, exclude: Collection[str] = ()
    ) -> Search:
        """The batches that lost creates made (ref -> input file id), back to `since`."""
        ...

    def find_upload(self, filename: str, size: int, max_age: float | None) -> Uploaded | None:
        """An upload of `filename` with `size` bytes whose answer was lost."""
        ...

    def cancel(self, batch_id: str) -> dict[str, Any] | None:
        """Ask to cancel a batch; None if it is past cancelling."""
        ...

    def download(self, file_id: str, out_path: Path, operation: str = ...) -> "Saved":
        """Stream a result file to `out_path` atomically; its byte count and sha256."""
        ...

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        """The file object, or None if the provider no longer has it."""
        ...

    def delete_file(self, file_id: str) -> bool:
        """Delete a file; False if the provider did not have it (any more)."""
        ...

    def close(self) -> None: ...


def retry_without_duplicates(
    operation: str,
    call: Callable[[], _T],
    find_existing: Callable[[], _T | None],
    *,
    retries: int,
    errors: Callable[[str], AbstractContextManager[object]],
    found_later: str = "'batchledger status --all' records it if it did",
) -> _T:
    """Call an API that makes something (an upload, a batch), retrying like an SDK does, but
    never making it twice: nothing paid for twice.

    The APIs take no idempotency keys, so when an answer is lost an SDK's own retry would
    upload a second file or create (and bill) a second batch. The provider's SDK does not
    retry these calls (`retries` are ours); before each retry, what the failed attempt may
    have made is looked for (`find_existing`). `errors(operation)` maps the SDK's errors
    onto ours. A look that cannot tell stops with Transient (trying blind could bill a
    second batch); one that is Refused (several candidates) is raised as it is.
    """
    for attempt in range(retries + 1):
        try:
            with errors(operation):
                return call()
        except Transient as exc:
            if attempt == retries:
                raise
            pause = retry_pause(attempt, exc)
            log.warning(
                "%s attempt %d/%d failed; checking whether it went through, retrying in %.1fs",
                operation,
                attempt + 1,
                retries + 1,
                pause,
            )
            time.sleep(pause)
            try:
                found = find_existing()
            except Refused:
                raise
            except BatchledgerError as check:
                log.error("%s: could not check whether it went through: %s", operation, check)
                raise Transient(
                    f"{exc.message}; whether it went through could not be checked "
                    f"({check.message}), so it was not tried again ({found_later})",
                    status=exc.status,
                    code=exc.code,
                ) from exc
            if found is not None:
                log.info("%s found what the failed attempt had made; not repeating it", operation)
                return found
    raise AssertionError("unreachable")


def retry_pause(attempt: int, exc: ApiError) -> float:
    """Seconds to wait: the server's Retry-After if it sent one, else exponential backoff."""
    if exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_AFTER_SECONDS)
    backoff: float = min(INITIAL_RETRY_SECONDS * 2**attempt, MAX_RETRY_SECONDS)
    return backoff * random.uniform(0.75, 1.0)
