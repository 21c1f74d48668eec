"""What each provider's batch API is (`Profile`): its limits per batch, the completion windows
it takes, whether its batches keep metadata and its results come in input order, how long it
keeps them, and how its statuses map onto the ledger's. The built-in profiles are here;
accounts.toml may override an account's limits (accounts.py).

Data only, below everything that reads it: accounts, the providers (providers/), and the
layers above, which see a provider only through its Protocol and its profile.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchledger.errors import UsageError

MIB = 1024 * 1024
DAY = 86400


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
