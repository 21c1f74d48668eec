"""What recording an estimate at every create costs: `create` of this tree against `create`
of another tree (the one before the change), interleaved, and the bare SDK's upload.

    git archive COMMIT batchledger migrations | tar -x -C /tmp/base
    mv /tmp/base/migrations /tmp/base/batchledger/migrations
    .venv/bin/python bench/create_estimate.py --base /tmp/base [--quick]

The input is transfer.py's: 200 MB (50 MB quick) of 5 kB request lines, one batch, no output
caps. The base tree runs through `PYTHONPATH` (its `batchledger` is found before this
editable install's), with a ledger of its own. 9 rounds (3 quick); in each, the two creates
(alternating which goes first) and the bare SDK's upload. Reported: the median wall of each,
the median of the paired new / base ratios, the median CPU (user + system) of each and of the
paired differences, peak RSS against transfer.py's import floor; then the same for a 1 MB
input, where the upload is too short to hide anything beside it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

from _common import (
    MB,
    Report,
    Run,
    child_env,
    cli,
    median,
    megabytes,
    progress,
    request_lines,
    run_measured,
    write_chunks,
)
from _common import seconds as fmt
from transfer import LINE_BYTES, RSS_MARGIN_KIB, SDK_UPLOAD, import_floor

from batchledger.emulator import EmulatorServer


def rounds(server: EmulatorServer, work: Path, base: Path, size: int, runs: int) -> dict:
    big = work / f"in-{size}.jsonl"
    write_chunks(big, request_lines(size, line_bytes=LINE_BYTES))
    env = child_env(server.base_url, work / "ledger.db")
    envs = {
        "new": env,
        "base": dict(env, PYTHONPATH=str(base), BATCHLEDGER_DB=str(work / "base.db")),
    }
    runs_of: dict[str, list[Run]] = {"new": [], "base": [], "sdk": []}
    for index in range(runs):
        progress(f"{size / MB:.0f} MB: round {index + 1}/{runs}")
        os.sync()
        for name in ("base", "new") if index % 2 == 0 else ("new", "base"):
            command = cli("create", "--in", str(big), "--force")
            runs_of[name].append(run_measured(command, envs[name], work))
        sdk = [sys.executable, "-c", SDK_UPLOAD, str(big)]
        runs_of["sdk"].append(run_measured(sdk, env, work))
        for file_id in list(server.state.files):
            server.state.delete_file(file_id)
    conn = sqlite3.connect(work / "ledger.db")
    recorded = conn.execute(
        "SELECT estimated_from, estimated_input_tokens, estimated_cost_min FROM batches "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    conn.close()
    return {"runs": runs_of, "recorded": recorded}


def add(report: Report, label: str, found: dict, floor: Run) -> None:
    runs = found["runs"]
    new, base, sdk = runs["new"], runs["base"], runs["sdk"]

    def wall(items: list[Run]) -> float:
        return median([run.wall for run in items])

    report.add(f"{label}: create (new), wall median", fmt(wall(new)))
    report.add(f"{label}: create (base), wall median", fmt(wall(base)))
    report.add(f"{label}: bare SDK, wall median", fmt(wall(sdk)))
    report.add(f"{label}: new / base, medians", f"{wall(new) / wall(base):.3f}x")
    paired = median([n.wall / b.wall for n, b in zip(new, base, strict=True)])
    report.add(f"{label}: new / base, median of paired runs", f"{paired:.3f}x")
    report.add(
        f"{label}: new / bare SDK (transfer.py's figure)",
        f"{wall(new) / wall(sdk):.2f}x (base: {wall(base) / wall(sdk):.2f}x)",
        "<= 1.10x",
        wall(new) / wall(sdk) <= 1.10,
    )
    cpu_new, cpu_base = median([r.cpu for r in new]), median([r.cpu for r in base])
    extra = median([n.cpu - b.cpu for n, b in zip(new, base, strict=True)])
    report.add(
        f"{label}: CPU median, new / base",
        f"{fmt(cpu_new)} / {fmt(cpu_base)} (paired difference, median: {extra * 1000:+.0f} ms)",
    )
    over = max(run.maxrss_kib for run in new) - floor.maxrss_kib
    over_base = max(run.maxrss_kib for run in base) - floor.maxrss_kib
    report.add(
        f"{label}: peak RSS - import floor, new (base)",
        f"{over / 1024:+.1f} MB ({over_base / 1024:+.1f} MB)",
        f"<= {RSS_MARGIN_KIB // 1024} MB",
        over <= RSS_MARGIN_KIB,
    )
    report.add(f"{label}: recorded (from, tokens, cost_min)", str(found["recorded"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, required=True, help="the tree to compare with")
    parser.add_argument("--quick", action="store_true", help="a smaller, faster variant")
    args = parser.parse_args()
    size, runs = (50 * MB, 3) if args.quick else (200 * MB, 9)
    report = Report(f"create with its estimate ({size / MB:.0f} MB and 1 MB, {runs} rounds)")
    with tempfile.TemporaryDirectory(prefix="bench-create-estimate-") as folder:
        work = Path(folder)
        floor = import_floor(work)
        with EmulatorServer(host="127.0.0.1", port=0, data_dir=work / "emulator") as server:
            big = rounds(server, work, args.base.absolute(), size, runs)
            small = rounds(server, work, args.base.absolute(), MB, runs)
    report.add("import floor: peak RSS", megabytes(floor.maxrss_kib), "baseline")
    add(report, f"{size / MB:.0f} MB", big, floor)
    add(report, "1 MB", small, floor)
    report.print()


if __name__ == "__main__":
    main()
