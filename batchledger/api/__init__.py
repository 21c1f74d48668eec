"""The Python API: `open()` a ledger, then create, find and follow batches and jobs from
Python with the command line's guarantees (it is the same code).

- client.py: `open()` and the `BatchLedger` (create, get, list, estimate, usage, sync)
- batch_handle.py, job_handle.py: the `Batch` and `Job` handles (refresh, wait, follow,
  results, retry, cancel, export, ...); shared.py: what both use
- result_rows.py: results joined to their input lines in input order, bounded memory
"""

from batchledger.api.batch_handle import Batch
from batchledger.api.client import BatchLedger, open
from batchledger.api.job_handle import Job
from batchledger.api.result_rows import ResultRow
from batchledger.api.shared import RequestCounts

__all__ = ["Batch", "BatchLedger", "Job", "RequestCounts", "ResultRow", "open"]
