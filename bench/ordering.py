"""Anthropic's results put in input order (batchledger.ordering), against GNU sort on the same file.

    .venv/bin/python bench/ordering.py [--quick]

1,000,000 result lines (about 370 MB; 85 % succeeded, the rest errored, canceled or
expired) in a shuffled order, and the input they answer. Each run is a child measured by
run_measured: `order_results` writing results.jsonl and results.errors.jsonl, and
`LC_ALL=C sort FILE -o OUT` (which puts the same lines in an order of its own, byte order,
with no input to follow). Runs alternate, so that both see the same load.

Target (issue 21): ordering at least 0.5x the speed of sort, i.e. its wall time at most
twice sort's.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

from _common import Report, Run, child_env, median, megabytes, parse_args, progress, run_measured
from _common import seconds as fmt

SPEED_TARGET = 0.5
RUNS = 5
KINDS = ("succeeded",) * 85 + ("errored",) * 8 + ("canceled",) * 4 + ("expired",) * 3

ORDER = """
import sys
from pathlib import Path
from batchledger.ordering import order_results
folder = Path(sys.argv[1])
done = order_results(folder / "in.jsonl", folder / "unordered.jsonl",
                     folder / "results.jsonl", folder / "results.errors.jsonl")
print(done.placed)
"""


def write_files(folder: Path, count: int) -> None:
    """The input (request lines) and its results, shuffled, as the API would write them."""
    order = list(range(count))
    random.Random(21).shuffle(order)
    with (folder / "in.jsonl").open("wb") as out:
        out.writelines(
            b'{"custom_id": "request-%09d", "params": {"model": "claude-haiku-4-5",'
            b' "max_tokens": 1024, "messages": [{"role": "user", "content": "Item %d"}]}}\n'
            % (n, n)
            for n in range(count)
        )
    with (folder / "unordered.jsonl").open("wb") as out:
        out.writelines(_result(n) for n in order)


def _result(n: int) -> bytes:
    kind = KINDS[n % 100]
    if kind == "succeeded":
        return (
            b'{"custom_id":"request-%09d","result":{"type":"succeeded","message":{"id":'
            b'"msg_%024d","type":"message","role":"assistant","model":"claude-haiku-4-5",'
            b'"content":[{"type":"text","text":"The summary of item %d: lorem ipsum dolor sit'
            b' amet consectetur adipiscing elit sed do eiusmod tempor"}],"stop_reason":'
            b'"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":40}}}}\n'
            % (n, n, n)
        )
    if kind == "errored":
        return (
            b'{"custom_id":"request-%09d","result":{"type":"errored","error":{"type":"error",'
            b'"error":{"type":"invalid_request_error","message":"max_tokens: too large"}}}}\n' % n
        )
    return b'{"custom_id":"request-%09d","result":{"type":"%s"}}\n' % (n, kind.encode())


def main() -> None:
    args = parse_args(__doc__ or "")
    count = 100_000 if args.quick else 1_000_000
    runs = 1 if args.quick else RUNS
    report = Report(f"Anthropic results in input order: {count:,} lines, against sort")
    env = child_env()
    sort_env = {**env, "LC_ALL": "C"}
    with tempfile.TemporaryDirectory(prefix="bench-ordering-") as name:
        folder = Path(name)
        progress(f"writing {count:,} shuffled result lines")
        write_files(folder, count)
        size = (folder / "unordered.jsonl").stat().st_size
        input_size = (folder / "in.jsonl").stat().st_size
        report.note(f"results file {size / 1e6:.0f} MB, input {input_size / 1e6:.0f} MB")
        ours: list[Run] = []
        sort: list[Run] = []
        for number in range(runs):
            progress(f"run {number + 1} of {runs}: sort")
            cmd = ["sort", str(folder / "unordered.jsonl"), "-o", str(folder / "sorted.jsonl")]
            sort.append(run_measured(cmd, sort_env, folder))
            progress(f"run {number + 1} of {runs}: batchledger.ordering")
            run = run_measured([sys.executable, "-c", ORDER, str(folder)], env, folder)
            if int(run.stdout.read_text()) != count:
                raise SystemExit(f"placed {run.stdout.read_text()} lines, not {count}")
            placed = sum(
                (folder / name).stat().st_size for name in ("results.jsonl", "results.errors.jsonl")
            )
            if placed != size:
                raise SystemExit(f"wrote {placed} bytes, not {size}")
            ours.append(run)
            # Each run writes new files, as sort's does: replacing the last run's would add
            # the removal of 330 MB of it to ordering's time.
            for name in ("sorted.jsonl", "results.jsonl", "results.errors.jsonl"):
                os.unlink(folder / name)
    for name, measured in (("batchledger.ordering", ours), ("sort (LC_ALL=C)", sort)):
        walls = [run.wall for run in measured]
        report.add(
            f"{name}: wall, median (fastest - slowest)",
            f"{fmt(median(walls))} ({fmt(min(walls))} - {fmt(max(walls))})",
        )
        report.add(f"{name}: CPU, median", fmt(median([run.cpu for run in measured])))
        report.add(f"{name}: peak RSS", megabytes(max(run.maxrss_kib for run in measured)))
    speed = median([run.wall for run in sort]) / median([run.wall for run in ours])
    report.add(
        "speed of ordering / speed of sort (wall)",
        f"{speed:.2f}x",
        f">= {SPEED_TARGET:.2f}x",
        speed >= SPEED_TARGET,
    )
    report.add(
        "speed of ordering / speed of sort, fastest runs",
        f"{min(r.wall for r in sort) / min(r.wall for r in ours):.2f}x",
    )
    report.print()


if __name__ == "__main__":
    main()
