"""What a user adds to a create beyond the input: metadata pairs and file expiries.

Checked here against the API's limits, so that a create that would be refused is stopped
before anything is uploaded or written to the ledger.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from batchledger.batches import REF_KEY
from batchledger.errors import UsageError

# The API's limits on Batch.metadata. The ledger's own ref is one of the pairs.
MAX_PAIRS = 16
MAX_USER_PAIRS = MAX_PAIRS - 1
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 512


# How a create's estimate was made (the ledger's `estimated_from`, m011).
FROM_TOKENS = "tokens"  # every line parsed, its tokens counted offline (`estimate`)
FROM_BYTES = "bytes"  # lines scanned, not parsed: input tokens as bytes / 4 (`estimate.scan_input`)


@dataclass(frozen=True)
class CostEstimate:
    """What a create estimated (`estimate`): kept in the ledger with it."""

    input_tokens: int
    cost_min: float | None  # USD, the input alone; None: a model has no price
    cost_max: float | None  # USD, with every output token allowed; None: unbounded or unpriced
    estimated_from: str = FROM_TOKENS


@dataclass(frozen=True)
class CreateDetails:
    """The optional parts of a create, as sent to the API and kept in the ledger."""

    metadata: dict[str, str] = field(default_factory=dict)
    input_expires_after: int | None = None  # seconds after the upload
    output_expires_after: int | None = None  # seconds after the batch's creation
    estimate: CostEstimate | None = None  # made when create estimates (--max-cost)


def check_metadata(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """`--metadata` pairs as the batch's user metadata; a UsageError if the API would refuse."""
    metadata: dict[str, str] = {}
    for key, value in pairs:
        if not key:
            raise UsageError("--metadata needs a key before '=' (KEY=VALUE)")
        if key == REF_KEY:
            raise UsageError(f"--metadata key {REF_KEY!r} is reserved for batchledger's own use")
        if key in metadata:
            raise UsageError(f"--metadata key {key!r} is given twice")
        if len(key) > MAX_KEY_CHARS:
            raise UsageError(
                f"--metadata key {key[:20]!r}... is {len(key)} characters; "
                f"the API allows at most {MAX_KEY_CHARS}"
            )
        if len(value) > MAX_VALUE_CHARS:
            raise UsageError(
                f"--metadata value of {key!r} is {len(value)} characters; "
                f"the API allows at most {MAX_VALUE_CHARS}"
            )
        metadata[key] = value
    if len(metadata) > MAX_USER_PAIRS:
        raise UsageError(
            f"--metadata gives {len(metadata)} pairs; the API allows {MAX_PAIRS} per batch, "
            f"one of them batchledger's own, so at most {MAX_USER_PAIRS}"
        )
    return metadata
