"""The Python API: `open()` a ledger, then create, find and follow batches and jobs from
Python with the command line's guarantees (it is the same code).

- client.py: `open()` and the `BatchLedger` (create, get, list, listing, estimate, usage,
  sync, sweep, prune, accounts)
- listing.py: the fast listing behind `batchledger list` (rows straight from SQLite)
- batch_handle.py, job_handle.py: the `Batch` and `Job` handles (refresh, wait, follow,
  results, retry, cancel, export, ...); shared.py: what both use
- result_rows.py: results joined to their input lines in input order, bounded memory

Each name's module is imported when the name is first used: `batchledger list` loads the
client and the listing, not the handles.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchledger.api.batch_handle import Batch
    from batchledger.api.client import BatchLedger, open
    from batchledger.api.job_handle import Job
    from batchledger.api.result_rows import ResultRow
    from batchledger.api.shared import RequestCounts
else:
    _LAZY = {
        "Batch": "batchledger.api.batch_handle",
        "BatchLedger": "batchledger.api.client",
        "Job": "batchledger.api.job_handle",
        "RequestCounts": "batchledger.api.shared",
        "ResultRow": "batchledger.api.result_rows",
        "open": "batchledger.api.client",
    }

    def __getattr__(name: str) -> object:
        if name in _LAZY:
            value = getattr(importlib.import_module(_LAZY[name]), name)
            globals()[name] = value
            return value
        raise AttributeError(f"module 'batchledger.api' has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))


__all__ = ["Batch", "BatchLedger", "Job", "RequestCounts", "ResultRow", "open"]
