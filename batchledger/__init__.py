"""batchledger: the discounted batch APIs (OpenAI's first) from Python and the command line,
with a local SQLite ledger of every batch.

    import batchledger as bl

    with bl.open(account="demo") as ledger:
        run = ledger.create("requests.jsonl")
        run.wait()
        for row in run.results():
            print(row["custom_id"], row["status"])

Importing it loads no provider SDK (`openai` is imported by the first call that needs it)
and none of the API's modules: each public name is imported when it is first used, so the
command line, which imports this package first, starts as fast as before.
"""

import importlib
from typing import TYPE_CHECKING

from batchledger.errors import (
    ApiError,
    BatchledgerError,
    Conflict,
    NotFound,
    NotInLedger,
    Refused,
    Rejected,
    Transient,
    UsageError,
    WaitTimeout,
)
from batchledger.version import __version__

if TYPE_CHECKING:
    from batchledger.api import Batch, BatchLedger, Job, RequestCounts, ResultRow, open
    from batchledger.api.account_info import AccountInfo, Place
    from batchledger.api.listing import Listing
    from batchledger.estimate import Estimate
    from batchledger.prune import PruneItem, PrunePlan
    from batchledger.sweep import SweepReport, SyncReport
    from batchledger.usage import UsageLine
else:
    # Each name's module, imported when the name is first used (PEP 562): the API loads
    # the ledger and its context, `Estimate` the tokenizers and prices, `SyncReport` the
    # jobs; none of which `import batchledger` (nor `batchledger list`) needs to pay.
    _LAZY = {
        "AccountInfo": "batchledger.api.account_info",
        "Place": "batchledger.api.account_info",
        "Listing": "batchledger.api.listing",
        "Batch": "batchledger.api",
        "BatchLedger": "batchledger.api",
        "Job": "batchledger.api",
        "RequestCounts": "batchledger.api",
        "ResultRow": "batchledger.api",
        "open": "batchledger.api",
        "Estimate": "batchledger.estimate",
        "PruneItem": "batchledger.prune",
        "PrunePlan": "batchledger.prune",
        "SweepReport": "batchledger.sweep",
        "SyncReport": "batchledger.sweep",
        "UsageLine": "batchledger.usage",
    }

    def __getattr__(name: str) -> object:
        if name in _LAZY:
            value = getattr(importlib.import_module(_LAZY[name]), name)
            globals()[name] = value
            return value
        raise AttributeError(f"module 'batchledger' has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))


__all__ = [
    "AccountInfo",
    "ApiError",
    "Batch",
    "BatchLedger",
    "BatchledgerError",
    "Conflict",
    "Estimate",
    "Job",
    "Listing",
    "NotFound",
    "NotInLedger",
    "Place",
    "PruneItem",
    "PrunePlan",
    "Refused",
    "Rejected",
    "RequestCounts",
    "ResultRow",
    "SweepReport",
    "SyncReport",
    "Transient",
    "UsageError",
    "UsageLine",
    "WaitTimeout",
    "__version__",
    "open",
]
