"""Jobs: an input past one batch's limits, split at line boundaries into parts, each part
its own batch; parts wait in a queue (--max-in-flight, the enqueued-token limit) and are
sent as earlier ones finish; once every part is final, their results are merged.

- parts.py: a part with its last attempt, a job's report, how a job is shown
- rules.py: the part rules, a pure function (what to do next with a part)
- moves.py: the rules carried out (claim, check, send, cancel, follow)
- results.py: the merge of a job's parts, and its results rebuilt
- retry_merge.py: a retry's answers merged into its original
"""

from batchledger.jobs.moves import advance, cancel_job, create_job, follow_job
from batchledger.jobs.parts import (
    REQUEUED_LABEL,
    JobReport,
    PartView,
    details_of,
    input_changed,
    input_changed_warning,
    job_json,
    job_lines,
    job_notes,
    part_ranges,
    part_results_path,
    result_lines,
    views,
)
from batchledger.jobs.results import merge_parts, rebuild_job_results, recorded_intact

__all__ = [
    "REQUEUED_LABEL",
    "JobReport",
    "PartView",
    "advance",
    "cancel_job",
    "create_job",
    "details_of",
    "follow_job",
    "input_changed",
    "input_changed_warning",
    "job_json",
    "job_lines",
    "job_notes",
    "merge_parts",
    "part_ranges",
    "part_results_path",
    "rebuild_job_results",
    "recorded_intact",
    "result_lines",
    "views",
]
