"""The provider seam: what the tool asks of a batch API (`Provider`), and what each API is
(`Profile`: limits, windows, metadata, result order, retention, status mapping).

Everything above this package (batch, sweep, jobs, retry, prune, usage, export) sees only
these two. A provider's implementation is one module beside the others (`openai.py`: the
OpenAI SDK's `OpenAI` and `AzureOpenAI` clients); `registry.open_provider` picks it by the
account's kind. Importing this package imports no SDK: that costs about a second, and commands that
never call an API (`list`, `show`, `usage`, `--help`) must not pay it.
"""

import dataclasses
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from batchledger.errors import BatchledgerError, UsageError

if TYPE_CHECKING:
    from batchledger.savefile import Saved

MIB = 1024 * 1024
DAY = 86400

# Set when the user interrupts a run whose downloads go on in worker threads (a sweep):
# each provider's download stops at its next chunk. The main thread gets KeyboardInterrupt.
STOP_DOWNLOADS = threading.Event()


@dataclass(frozen=True)
class Profile:
    """What a provider's batch API is, as far as the layers above need to know."""

    name: str
    max_requests: int  # per batch
    max_bytes: int  # per batch (its input file, or its inline requests)
    # The completion windows a create may name; None: whatever is given is passed through.
    completion_windows: tuple[str, ...] | None
    # The endpoint a create uses when --endpoint is not given; None where it does not apply.
    default_endpoint: str | None
    carries_metadata: bool = True  # a batch keeps the metadata it was made with
    # A create sends the requests themselves (byte ranges of the input), not an uploaded file.
    inline_requests: bool = False
    results_in_input_order: bool = True  # result lines come in the input's order
    retention: int | None = None  # seconds results are kept after a batch ends; None unknown
    can_list_batches: bool = True
    can_list_files: bool = True
    # The provider's status -> the ledger's (batches.py); a status not named is the same word.
    statuses: tuple[tuple[str, str], ...] = ()

    def ledger_status(self, status: str) -> str:
        return dict(self.statuses).get(status, status)

    @property
    def limits(self) -> tuple[int, int]:
        """(requests, bytes) one batch may hold."""
        return self.max_requests, self.max_bytes

    def check_window(self, window: str) -> None:
        """Refuse (exit 2) a completion window the provider does not take, naming those it
        does; where the profile names none, any is passed through as given."""
        if self.completion_windows is not None and window not in self.completion_windows:
            raise UsageError(
                f"--completion-window {window!r} is not one {self.name} takes "
                f"(windows: {', '.join(self.completion_windows)})"
            )

    def overridden(self, overrides: Mapping[str, Any]) -> "Profile":
        """This profile with an account's own `max_requests`, `max_bytes`, `completion_windows`."""
        return dataclasses.replace(self, **overrides) if overrides else self


_OPENAI = Profile(
    name="openai",
    # The Batch guide: up to 50,000 requests and 200 MB per input file, window 24h.
    max_requests=50_000,
    max_bytes=200 * MIB,
    completion_windows=("24h",),
    default_endpoint="/v1/responses",
)
PROFILES: dict[str, Profile] = {
    "openai": _OPENAI,
    # Azure's Global Batch takes twice the requests; its deployments are called on
    # /chat/completions (no /v1).
    "azure": dataclasses.replace(
        _OPENAI, name="azure", max_requests=100_000, default_endpoint="/chat/completions"
    ),
    "emulator": dataclasses.replace(_OPENAI, name="emulator"),
    # Message Batches: 100,000 requests or 256 MB per batch, sent inline (no --endpoint), no
    # metadata, results in any order, kept 29 days.
    "anthropic": Profile(
        name="anthropic",
        max_requests=100_000,
        max_bytes=256 * 1000 * 1000,
        completion_windows=None,
        default_endpoint=None,
        carries_metadata=False,
        inline_requests=True,
        results_in_input_order=False,
        retention=29 * DAY,
        can_list_files=False,
        statuses=(("canceling", "cancelling"), ("ended", "completed")),
    ),
    # Groq's OpenAI-compatible Batch API (console.groq.com/docs/batch): a completion window
    # from 24h to 7d, /v1/chat/completions, 50,000 lines and 200 MB per input file.
    "groq": dataclasses.replace(
        _OPENAI,
        name="groq",
        completion_windows=("24h", "48h", "72h", "1d", "2d", "3d", "4d", "5d", "6d", "7d"),
        default_endpoint="/v1/chat/completions",
    ),
    # Gemini's OpenAI-compatible batch endpoint (ai.google.dev/gemini-api/docs/batch-api,
    # /openai): input files through the Files API, up to 2 GB each, a 24h target; no request
    # count is documented, so OpenAI's 50,000 is kept. Metadata is not documented to be kept.
    "gemini": dataclasses.replace(
        _OPENAI,
        name="gemini",
        max_bytes=2 * 1000 * 1000 * 1000,
        default_endpoint="/v1/chat/completions",
        carries_metadata=False,
    ),
}
# Profiles an account of kind "openai" may choose (OpenAI-compatible hosts).
OPENAI_COMPATIBLE = ("openai", "gemini", "groq")


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
