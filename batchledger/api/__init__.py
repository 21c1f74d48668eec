"""The Python API: `open()` a ledger, then create, find and follow batches and jobs from
Python with the command line's guarantees (it is the same code).

- client.py: `open()` and the `BatchLedger` (create, get, list, estimate, usage, sync)
- handles.py: the `Batch` and `Job` handles (refresh, wait, results, retry, cancel, export)
- result_rows.py: results joined to their input lines in input order, bounded memory
"""

from batchledger.api.client import BatchLedger, open
from batchledger.api.handles import Batch, Job, RequestCounts
from batchledger.api.result_rows import ResultRow

__all__ = ["Batch", "BatchLedger", "Job", "RequestCounts", "ResultRow", "open"]
