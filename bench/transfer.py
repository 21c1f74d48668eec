"""Transfers: `retrieve` of a 1 GiB result and `create` of a 200 MB input, against curl.

    .venv/bin/python bench/transfer.py [--quick]

Peak RSS is compared with the "import floor": a child that only imports what a command
calling the API imports (openai, batchledger.api, batchledger.workflow) and exits.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (
    API_KEY,
    GIB,
    MB,
    MIB,
    Report,
    Run,
    add_completed_batch,
    add_emulator_file,
    child_env,
    cli,
    import_floor,
    median,
    megabytes,
    parse_args,
    progress,
    request_lines,
    result_lines,
    run_measured,
    sha256_file,
    write_chunks,
)
from _common import seconds as fmt

from batchledger.emulator import EmulatorServer
from batchledger.workflow import read_input

RSS_MARGIN_KIB = 20 * 1024
WALL_RATIO = 1.5


@dataclass(frozen=True)
class Compared:
    """Median figures of the command under test and of curl."""

    tool_wall: float
    tool_rss_kib: int
    curl_wall: float
    curl_rss_kib: int
    extra: float = 0.0  # seconds of something curl does not do, measured on its own


def curl(*args: str) -> list[str]:
    return ["curl", "-s", "-S", "-f", "-H", f"Authorization: Bearer {API_KEY}", *args]


def fsync_seconds(path: Path) -> float:
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def add_rss_and_wall(
    report: Report, what: str, compared: Compared, floor: Run, extra_label: str = ""
) -> None:
    over = compared.tool_rss_kib - floor.maxrss_kib
    report.add(f"{what}: peak RSS", megabytes(compared.tool_rss_kib))
    report.add(
        f"{what}: peak RSS - import floor",
        f"{over / 1024:+.1f} MB",
        f"<= {RSS_MARGIN_KIB // 1024} MB",
        over <= RSS_MARGIN_KIB,
    )
    report.add(f"{what}: wall", fmt(compared.tool_wall))
    report.add(f"curl: wall (peak RSS {megabytes(compared.curl_rss_kib)})", fmt(compared.curl_wall))
    ratio = compared.tool_wall / compared.curl_wall
    report.add(f"{what} / curl", f"{ratio:.2f}x", f"<= {WALL_RATIO:g}x", ratio <= WALL_RATIO)
    if extra_label:
        report.add(extra_label, fmt(compared.extra))


def check_saved(path: Path, size: int, sha256: str | None) -> None:
    """The run really saved the whole file (and, when given, the very same bytes)."""
    if not path.exists() or path.stat().st_size != size:
        raise SystemExit(f"{path.name}: not saved, or not {size} bytes")
    if sha256 is not None and sha256_file(path) != sha256:
        raise SystemExit(f"{path.name}: saved bytes differ from the emulator's file")


def bench_download(server: EmulatorServer, work: Path, size: int, runs: int) -> Compared:
    progress(f"writing a {size / GIB:.2f} GiB result file into the emulator")
    input_id, _ = add_emulator_file(server.state, request_lines(100_000), "batch")
    output_id, source_sha = add_emulator_file(server.state, result_lines(size), "batch_output")
    size = server.state.get_file(output_id).bytes
    batch_id = add_completed_batch(server.state, input_id, output_id)
    env = child_env(server.base_url, work / "ledger.db")
    url = f"{server.base_url}/files/{output_id}/content"
    mine, theirs = work / "retrieved.jsonl", work / "curled.jsonl"
    tool_runs: list[Run] = []
    curl_runs: list[Run] = []
    syncs: list[float] = []
    for attempt in range(runs):
        progress(f"download run {attempt + 1}/{runs}")
        os.sync()  # start each run with no dirty pages left by the previous one
        retrieve = cli("retrieve", "--batch-id", batch_id, "--out", str(mine))
        tool_runs.append(run_measured(retrieve, env, work))
        check_saved(mine, size, source_sha if attempt == 0 else None)
        mine.unlink()
        os.sync()
        curl_runs.append(run_measured(curl("-o", str(theirs), url), env, work))
        syncs.append(fsync_seconds(theirs))
        check_saved(theirs, size, None)
        theirs.unlink()
    return _compare(tool_runs, curl_runs, median(syncs))


def bench_upload(server: EmulatorServer, work: Path, size: int, runs: int) -> Compared:
    progress(f"writing a {size / MB:.0f} MB input file")
    big = work / "big.jsonl"
    write_chunks(big, request_lines(size))
    env = child_env(server.base_url, work / "ledger.db")
    url = f"{server.base_url}/files"
    tool_runs: list[Run] = []
    curl_runs: list[Run] = []
    hashes: list[float] = []
    for attempt in range(runs):
        progress(f"upload run {attempt + 1}/{runs}")
        os.sync()
        # --force: every run sends the same input, which the ledger would refuse as a repeat.
        tool_runs.append(run_measured(cli("create", "--in", str(big), "--force"), env, work))
        curl_runs.append(
            run_measured(
                curl("-o", os.devnull, "-F", "purpose=batch", "-F", f"file=@{big}", url), env, work
            )
        )
        started = time.perf_counter()
        read_input(str(big))
        hashes.append(time.perf_counter() - started)
        for file_id in list(server.state.files):
            server.state.delete_file(file_id)
    return _compare(tool_runs, curl_runs, median(hashes))


def _compare(tool_runs: list[Run], curl_runs: list[Run], extra: float) -> Compared:
    return Compared(
        tool_wall=median([run.wall for run in tool_runs]),
        tool_rss_kib=max(run.maxrss_kib for run in tool_runs),
        curl_wall=median([run.wall for run in curl_runs]),
        curl_rss_kib=max(run.maxrss_kib for run in curl_runs),
        extra=extra,
    )


def main() -> None:
    args = parse_args(__doc__ or "")
    download_size = 100 * MIB if args.quick else GIB
    upload_size = 50 * MB if args.quick else 200 * MB
    runs = 3 if args.quick else 5
    report = Report(
        f"transfer (download {download_size / MIB:.0f} MiB, upload {upload_size / MB:.0f} MB;"
        f" median wall of {runs} runs, highest peak RSS)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        work = Path(tmp)
        floor = import_floor(work)
        with EmulatorServer(host="127.0.0.1", port=0, data_dir=work / "emulator") as server:
            download = bench_download(server, work, download_size, runs)
            upload = bench_upload(server, work, upload_size, runs)
    report.add("import floor: peak RSS", megabytes(floor.maxrss_kib), "baseline")
    report.add("import floor: wall", fmt(floor.wall))
    add_rss_and_wall(report, "retrieve", download, floor, "fsync of curl's file (not in curl)")
    report.add("curl + fsync", fmt(download.curl_wall + download.extra))
    report.add("retrieve - import floor wall", fmt(download.tool_wall - floor.wall))
    report.note("every run's saved file was checked for size; the first retrieve's by sha256")
    add_rss_and_wall(report, "create", upload, floor, "create's sha256 of the input, alone")
    report.add(
        "create - hash - import floor wall",
        fmt(upload.tool_wall - upload.extra - floor.wall),
    )
    report.print()


if __name__ == "__main__":
    main()
