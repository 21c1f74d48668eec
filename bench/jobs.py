"""Jobs: split and upload a big input, merge part outputs, plan and merge a retry.

    .venv/bin/python bench/jobs.py [--quick]

(a) Split and upload: `plan_parts` + `Segments` + the SDK (`files.create`, parts one after
    another) against the emulator, versus a bare-SDK script uploading, one after another,
    the same parts made beforehand by coreutils `split`. Peak RSS against the import floor.
(b) Merge: `merge.concat` of 40 part outputs of 50 MiB into one file (atomic, durable,
    hashed) versus `cat` of the same files into one followed by `sync FILE` (an fsync).
(c) Retry: `redo.plan_redo` on a 1,000,000-line job with 10 % of lines to redo, then
    `redo.merge_attempts` over the first attempt and the retry; peak RSS against the floor
    of a child that only imports batchledger.redo, and how many times each file was read.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    GIB,
    MIB,
    Report,
    Run,
    child_env,
    import_floor,
    median,
    megabytes,
    parse_args,
    progress,
    request_lines,
    result_lines,
    run_measured,
    write_chunks,
)
from _common import seconds as fmt

from batchledger.emulator import EmulatorServer
from batchledger.savefile import new_part, sync_directory

UPLOAD_RSS_MARGIN_KIB = 25 * 1024
UPLOAD_WALL_RATIO = 1.15
MERGE_THROUGHPUT_RATIO = 0.5
REDO_RSS_MARGIN_KIB = 150 * 1024
MAX_REQUESTS = 50_000  # OpenAI's limits, which the emulator enforces too
MAX_BYTES = 209_715_200

# What `create` of a job will do for the upload, and nothing else.
TOOL_UPLOAD = """
import sys
from pathlib import Path
import openai
from batchledger.split import Segments, plan_parts
path = Path(sys.argv[1])
client = openai.OpenAI(max_retries=0)
parts = plan_parts(path, max_requests=int(sys.argv[2]), max_bytes=int(sys.argv[3]))
for part in parts:
    name = f"{path.stem}.part{part.index}of{len(parts)}.bench.jsonl"
    with Segments(path, [(part.start, part.end)]) as stream:
        client.files.create(file=(name, stream), purpose="batch")
"""
# A user's own script, once `split` has made the parts.
SDK_UPLOAD = """
import sys, openai
client = openai.OpenAI(max_retries=0)
for path in sys.argv[1:]:
    with open(path, "rb") as stream:
        client.files.create(file=(path.rsplit("/", 1)[-1] + ".jsonl", stream), purpose="batch")
"""
TOOL_CONCAT = """
import sys
from pathlib import Path
from batchledger.merge import concat
concat(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
"""
CAT_FSYNC = 'out="$1"; shift; cat "$@" > "$out" && sync "$out"'
# plan_redo on the first attempt, then merge_attempts over it and the retry; counts the
# bytes each file gave as lines (redo._lines) to show the passes.
TOOL_REDO = """
import json, sys, time
from collections import Counter
from pathlib import Path
from batchledger import redo
read = Counter()
lines = redo._lines
def counted(path):
    for offset, raw in lines(path):
        read[path.name] += len(raw)
        yield offset, raw
redo._lines = counted
work = Path(sys.argv[1])
first = (work / "out1.jsonl", work / "err1.jsonl")
second = (work / "out2.jsonl", work / "err2.jsonl")
started = time.perf_counter()
plan = redo.plan_redo(work / "in.jsonl", [first], all_failed=False)
planned = time.perf_counter()
planned_reads = dict(read)
read.clear()
saved = redo.merge_attempts(work / "r.jsonl", work / "e.jsonl", work / "in.jsonl", [first, second])
merged = time.perf_counter()
print(json.dumps({
    "lines": plan.lines, "ranges": len(plan.ranges), "kept": plan.kept,
    "by_reason": plan.by_reason, "plan_s": planned - started, "merge_s": merged - planned,
    "plan_reads": planned_reads, "merge_reads": dict(read),
    "sizes": [s.size if s else None for s in saved],
}))
"""


def bench_upload(report: Report, work: Path, size: int, lines: int, runs: int) -> None:
    progress(f"writing a {size / GIB:.2f} GiB, {lines:,}-line input")
    big = work / "big.jsonl"
    written, counted, _ = write_chunks(big, request_lines(size, line_bytes=size // lines))
    progress(f"{written:,} bytes, {counted:,} lines; splitting it with coreutils split")
    parts_dir = work / "parts"
    parts_dir.mkdir()
    subprocess.run(
        ["split", "-l", str(MAX_REQUESTS), "-d", "-a", "3", str(big), str(parts_dir / "p")],
        check=True,
    )
    parts = sorted(parts_dir.iterdir())
    if any(part.stat().st_size > MAX_BYTES for part in parts):
        raise SystemExit("split by lines made a part over the byte limit: use shorter lines")
    floor = import_floor(work)
    empty = work / "scratch"  # the tool's working dir and TMPDIR: must stay empty
    empty.mkdir()
    env = child_env()
    env["TMPDIR"] = str(empty)
    tool_runs: list[Run] = []
    sdk_runs: list[Run] = []
    with EmulatorServer(host="127.0.0.1", port=0, data_dir=work / "emulator") as server:
        env["OPENAI_BASE_URL"] = server.base_url
        for attempt in range(runs):
            for name, runs_, cmd in (
                ("tool", tool_runs, [TOOL_UPLOAD, str(big), str(MAX_REQUESTS), str(MAX_BYTES)]),
                ("bare SDK", sdk_runs, [SDK_UPLOAD, *map(str, parts)]),
            ):
                progress(f"upload run {attempt + 1}/{runs}: {name}")
                os.sync()
                runs_.append(run_measured([sys.executable, "-c", *cmd], env, empty))
                stored = list(server.state.files.values())  # in upload order
                if name == "tool" and attempt == 0:
                    check_parts(stored, parts)
                if [f.bytes for f in stored] != [p.stat().st_size for p in parts]:
                    raise SystemExit(f"{name}: the stored files are not the parts")
                for file in list(server.state.files):
                    server.state.delete_file(file)
                leftovers = [p.name for p in empty.iterdir() if not p.name.startswith(".bench")]
                if leftovers:
                    raise SystemExit(f"{name} left files behind: {leftovers}")
    over = max(run.maxrss_kib for run in tool_runs) - floor.maxrss_kib
    ratio = median([r.wall for r in tool_runs]) / median([r.wall for r in sdk_runs])
    report.add("(a) input", f"{written / GIB:.2f} GiB, {counted:,} lines, {len(parts)} parts")
    report.add("(a) import floor: peak RSS", megabytes(floor.maxrss_kib), "baseline")
    report.add("(a) split+upload: peak RSS", megabytes(max(r.maxrss_kib for r in tool_runs)))
    report.add(
        "(a) split+upload: peak RSS - import floor",
        f"{over / 1024:+.1f} MB",
        f"<= {UPLOAD_RSS_MARGIN_KIB // 1024} MB",
        over <= UPLOAD_RSS_MARGIN_KIB,
    )
    report.add(
        "(a) bare SDK (parts from split): peak RSS", megabytes(max(r.maxrss_kib for r in sdk_runs))
    )
    for name, runs_ in (("split+upload", tool_runs), ("bare SDK", sdk_runs)):
        walls = [r.wall for r in runs_]
        report.add(
            f"(a) {name}: wall, median (fastest - slowest)",
            f"{fmt(median(walls))} ({fmt(min(walls))} - {fmt(max(walls))})",
        )
    report.add(
        "(a) split+upload / bare SDK",
        f"{ratio:.2f}x",
        f"<= {UPLOAD_WALL_RATIO:g}x",
        ratio <= UPLOAD_WALL_RATIO,
    )
    report.add("(a) temporary files written by split+upload", "none", "none", True)
    for part in parts:
        part.unlink()


def check_parts(stored: list[Any], parts: list[Path]) -> None:
    """The tool's uploads hold exactly the bytes of split's parts."""
    for file, part in zip(stored, parts, strict=True):
        with file.path.open("rb") as mine, part.open("rb") as theirs:
            while True:
                a, b = mine.read(8 * MIB), theirs.read(8 * MIB)
                if a != b:
                    raise SystemExit(f"uploaded part differs from {part.name}")
                if not a:
                    break


def kernel_copy_with_hash(target: Path, sources: list[Path]) -> None:
    """What concat could do outside save_chunks: copy_file_range, sha256 in a thread beside it.

    For information only (not what batchledger does): atomic like save_chunks, through
    savefile's own temporary file, fsync, rename and folder sync.
    """
    digest = hashlib.sha256()

    def hash_all() -> None:
        for path in sources:
            with path.open("rb", buffering=0) as stream:
                while chunk := stream.read(MIB):
                    digest.update(chunk)

    hasher = threading.Thread(target=hash_all)
    hasher.start()
    part, out = new_part(target)
    with out:
        for path in sources:
            with path.open("rb", buffering=0) as stream:
                left = os.fstat(stream.fileno()).st_size
                while left:
                    left -= os.copy_file_range(stream.fileno(), out.fileno(), left)
        os.fsync(out.fileno())
        os.replace(part, target)
    sync_directory(target.parent)
    hasher.join()


def bench_merge(report: Report, work: Path, count: int, size: int, runs: int) -> None:
    progress(f"writing {count} part outputs of {size / MIB:.0f} MiB")
    folder = work / "outputs"
    folder.mkdir()
    sources = []
    for index in range(count):
        path = folder / f"part{index:02d}.jsonl"
        write_chunks(path, result_lines(size))
        sources.append(path)
    total = sum(path.stat().st_size for path in sources)
    floor = run_measured([sys.executable, "-c", "import batchledger.merge"], child_env(), work)
    target, theirs = work / "merged.jsonl", work / "catted.jsonl"
    tool_runs: list[Run] = []
    cat_runs: list[Run] = []
    kernel_walls: list[float] = []
    for attempt in range(runs):
        progress(f"merge run {attempt + 1}/{runs}")
        os.sync()
        started = time.perf_counter()
        kernel_copy_with_hash(target, sources)
        kernel_walls.append(time.perf_counter() - started)
        target.unlink()
        os.sync()
        tool_runs.append(
            run_measured(
                [sys.executable, "-c", TOOL_CONCAT, str(target), *map(str, sources)],
                child_env(),
                work,
            )
        )
        if target.stat().st_size != total:
            raise SystemExit("concat did not write every byte")
        target.unlink()
        os.sync()
        cat_runs.append(
            run_measured(
                ["sh", "-c", CAT_FSYNC, "sh", str(theirs), *map(str, sources)], child_env(), work
            )
        )
        theirs.unlink()
    tool_wall = median([r.wall for r in tool_runs]) - floor.wall
    cat_wall = median([r.wall for r in cat_runs])
    ratio = (total / tool_wall) / (total / cat_wall)
    report.add("(b) sources", f"{count} x {size / MIB:.0f} MiB = {total / GIB:.2f} GiB")
    report.add("(b) python -c 'import batchledger.merge': wall", fmt(floor.wall))
    report.add(
        "(b) concat: wall - import, median (fastest run)",
        f"{fmt(tool_wall)} ({fmt(min(r.wall for r in tool_runs) - floor.wall)})",
    )
    report.add(
        "(b) cat + sync FILE: wall, median (fastest run)",
        f"{fmt(cat_wall)} ({fmt(min(r.wall for r in cat_runs))})",
    )
    report.add("(b) concat throughput", f"{total / tool_wall / MIB:.0f} MiB/s")
    report.add("(b) cat + fsync throughput", f"{total / cat_wall / MIB:.0f} MiB/s")
    report.add(
        "(b) concat / cat+fsync throughput",
        f"{ratio:.2f}",
        f">= {MERGE_THROUGHPUT_RATIO:g}",
        ratio >= MERGE_THROUGHPUT_RATIO,
    )
    kernel_wall = median(kernel_walls)
    report.add(
        "(b) info: copy_file_range + sha256 thread (in process)",
        f"{fmt(kernel_wall)}, {total / kernel_wall / MIB:.0f} MiB/s,"
        f" {cat_wall / kernel_wall:.2f} of cat+fsync",
    )
    report.add(
        "(b) concat: peak RSS - import",
        f"{(max(r.maxrss_kib for r in tool_runs) - floor.maxrss_kib) / 1024:+.1f} MB",
    )
    for path in sources:
        path.unlink()


def write_job(work: Path, lines: int) -> tuple[int, int]:
    """in.jsonl; attempt 1 (out1, err1) with 10 % to redo; the retry (out2, err2) of those.

    Returns the sizes the merged results and errors must have.
    """
    body = b"lorem ipsum dolor sit amet " * 14
    ok = (
        b'{"id": "batch_req_%024d", "custom_id": "request-%09d", "response": {"status_code":'
        b' 200, "request_id": "req_%d", "body": {"object": "response", "output_text": "%s"}},'
        b' "error": null}\n'
    )
    failed = (
        b'{"id": "batch_req_%024d", "custom_id": "request-%09d", "response": {"status_code":'
        b' %d, "request_id": "req_%d", "body": {"error": {"message": "no", "code": null}}},'
        b' "error": null}\n'
    )
    expired = (
        b'{"id": "batch_req_%024d", "custom_id": "request-%09d", "response": null, "error":'
        b' {"code": "batch_expired", "message": "This request could not be executed."}}\n'
    )
    request = (
        b'{"custom_id": "request-%09d", "method": "POST", "url": "/v1/responses", "body":'
        b' {"model": "gpt-4o-mini", "input": "%s"}}\n'
    )
    names = ("in", "out1", "err1", "out2", "err2")
    files = {name: (work / f"{name}.jsonl").open("wb") for name in names}
    pending: dict[str, list[bytes]] = {name: [] for name in names}
    merged = [0, 0]  # bytes of the merged results, of the merged errors

    def add(name: str, line: bytes, into: int | None) -> None:
        pending[name].append(line)
        if into is not None:
            merged[into] += len(line)

    try:
        for n in range(lines):
            add("in", request % (n, body), None)
            kind = n % 20
            if kind == 3:  # expired in attempt 1; the retry answers it
                add("err1", expired % (n, n), None)
                add("out2", ok % (n + lines, n, n, body), 0)
            elif kind == 11:  # a 500 in attempt 1; the retry gets a 400 (kept as the last error)
                add("out1", failed % (n, n, 500, n), None)
                add("err2", failed % (n + lines, n, 400, n), 1)
            elif n % 40 == 17:  # a 400: not sent again by default
                add("out1", failed % (n, n, 400, n), 1)
            else:
                add("out1", ok % (n, n, n, body), 0)
            if n % 10_000 == 9_999:
                for name in names:
                    files[name].write(b"".join(pending[name]))
                    pending[name].clear()
        for name in names:
            files[name].write(b"".join(pending[name]))
    finally:
        for handle in files.values():
            handle.close()
    return merged[0], merged[1]


def bench_redo(report: Report, work: Path, lines: int) -> None:
    import json

    progress(f"writing a {lines:,}-line job and its results")
    job = work / "job"
    job.mkdir()
    expected = write_job(job, lines)
    sizes = {path.name: path.stat().st_size for path in job.iterdir()}
    floor = run_measured([sys.executable, "-c", "import batchledger.redo"], child_env(), work)
    progress("plan_redo + merge_attempts")
    run = run_measured([sys.executable, "-c", TOOL_REDO, str(job)], child_env(), work)
    out = json.loads(run.stdout.read_text())
    over = run.maxrss_kib - floor.maxrss_kib
    report.add(
        "(c) job",
        f"{lines:,} lines; input {sizes['in.jsonl'] / MIB:.0f} MiB, attempt 1 "
        f"{(sizes['out1.jsonl'] + sizes['err1.jsonl']) / MIB:.0f} MiB",
    )
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(out["by_reason"].items()))
    report.add(
        "(c) plan_redo: lines to redo (ranges); kept",
        f"{out['lines']:,} ({out['ranges']:,}; {reasons}); {out['kept']:,}",
    )
    report.add("(c) plan_redo: time", fmt(out["plan_s"]))
    report.add("(c) merge_attempts: time", fmt(out["merge_s"]))
    report.add(
        "(c) bytes parsed / file size",
        ", ".join(
            f"{stage} {name} {out[stage + '_reads'].get(name, 0) / sizes[name]:.2f}"
            for stage in ("plan", "merge")
            for name in sorted(sizes)
            if name in out[stage + "_reads"]
        ),
    )
    report.add("(c) python -c 'import batchledger.redo': peak RSS", megabytes(floor.maxrss_kib))
    report.add(
        "(c) peak RSS - import floor",
        f"{over / 1024:+.1f} MB",
        f"<= {REDO_RSS_MARGIN_KIB // 1024} MB",
        over <= REDO_RSS_MARGIN_KIB,
    )
    report.add(
        "(c) merged results + errors: bytes",
        f"{out['sizes'][0]:,} + {out['sizes'][1]:,}",
        "as built",
        tuple(out["sizes"]) == expected,
    )


def main() -> None:
    args = parse_args(__doc__ or "")
    if args.quick:
        upload_size, upload_lines, runs = 256 * MIB, 125_000, 2
        merge_count, merge_size, merge_runs = 40, 5 * MIB, 3
        redo_lines = 100_000
    else:
        upload_size, upload_lines, runs = 2 * GIB, 1_000_000, 3
        merge_count, merge_size, merge_runs = 40, 50 * MIB, 3
        redo_lines = 1_000_000
    report = Report(f"jobs ({'quick' if args.quick else 'full'}: medians of interleaved runs)")
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        work = Path(tmp)
        bench_upload(report, work, upload_size, upload_lines, runs)
        bench_merge(report, work, merge_count, merge_size, merge_runs)
        bench_redo(report, work, redo_lines)
    report.print()


if __name__ == "__main__":
    main()
