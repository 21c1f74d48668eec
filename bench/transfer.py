"""Transfers: `retrieve` of a 1 GiB result and `create` of a 200 MB input, against the bare SDK.

    .venv/bin/python bench/transfer.py [--quick]

Peak RSS is compared with the "import floor": a child that only imports what a command
calling the API imports (openai, batchledger.providers.openai, batchledger.sweep) and
exits. Wall time is compared with the bare SDK: a script that does the same transfer with
the `openai` SDK and nothing else (no ledger, no hash, no fsync); and, for information,
with curl (the SDK alone is about twice curl; issue 15 withdrew the targets against curl).
"""

from __future__ import annotations

import os
import sys
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
    warm,
    write_chunks,
)
from _common import seconds as fmt

from batchledger.emulator import EmulatorServer
from batchledger.inputs import read_input

RSS_MARGIN_KIB = 20 * 1024
SDK_RATIO = 1.10  # issue 15: at most 1.10x the bare SDK, in the same run
LINE_BYTES = 5000


# The same transfers with the SDK alone, as a user's own script would do them.
SDK_DOWNLOAD = """
import sys, openai
client = openai.OpenAI(max_retries=0)
with client.files.with_streaming_response.content(sys.argv[1]) as response:
    with open(sys.argv[2], "wb") as out:
        for chunk in response.iter_bytes():
            out.write(chunk)
"""
SDK_UPLOAD = """
import sys, openai
with open(sys.argv[1], "rb") as stream:
    openai.OpenAI(max_retries=0).files.create(file=("big.jsonl", stream), purpose="batch")
"""


@dataclass(frozen=True)
class Compared:
    """Each run's wall time of the command under test, of the bare SDK and of curl."""

    tool: list[Run]
    sdk: list[Run]
    curl: list[Run]
    extra: float = 0.0  # seconds of something curl does not do, measured on its own

    @staticmethod
    def median_wall(runs: list[Run]) -> float:
        return median([run.wall for run in runs])

    @staticmethod
    def fastest_wall(runs: list[Run]) -> float:
        return min(run.wall for run in runs)


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
    tool_rss = max(run.maxrss_kib for run in compared.tool)
    over = tool_rss - floor.maxrss_kib
    report.add(f"{what}: peak RSS", megabytes(tool_rss))
    report.add(
        f"{what}: peak RSS - import floor",
        f"{over / 1024:+.1f} MB",
        f"<= {RSS_MARGIN_KIB // 1024} MB",
        over <= RSS_MARGIN_KIB,
    )
    median_wall, fastest = Compared.median_wall, Compared.fastest_wall
    for name, runs in ((what, compared.tool), ("bare SDK", compared.sdk), ("curl", compared.curl)):
        report.add(
            f"{name}: wall, median (fastest - slowest)",
            f"{fmt(median_wall(runs))} ({fmt(fastest(runs))} - {fmt(max(r.wall for r in runs))})",
        )
    report.add("curl: peak RSS", megabytes(max(run.maxrss_kib for run in compared.curl)))
    ratio = median_wall(compared.tool) / median_wall(compared.curl)
    report.add(f"{what} / curl", f"{ratio:.2f}x")
    report.add(
        f"{what} / curl, fastest runs", f"{fastest(compared.tool) / fastest(compared.curl):.2f}x"
    )
    report.add("bare SDK / curl", f"{median_wall(compared.sdk) / median_wall(compared.curl):.2f}x")
    sdk_ratio = median_wall(compared.tool) / median_wall(compared.sdk)
    report.add(
        f"{what} / bare SDK", f"{sdk_ratio:.2f}x", f"<= {SDK_RATIO:.2f}x", sdk_ratio <= SDK_RATIO
    )
    report.add(
        f"{what} / bare SDK, fastest runs",
        f"{fastest(compared.tool) / fastest(compared.sdk):.2f}x",
    )
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
    source = server.state.get_file(output_id).path
    mine, theirs = work / "retrieved.jsonl", work / "curled.jsonl"
    tool_runs: list[Run] = []
    sdk_runs: list[Run] = []
    curl_runs: list[Run] = []
    syncs: list[float] = []
    for attempt in range(runs):
        progress(f"download run {attempt + 1}/{runs}")
        os.sync()  # start each run with no dirty pages left by the previous one
        warm(source)
        retrieve = cli("retrieve", "--batch-id", batch_id, "--out", str(mine))
        tool_runs.append(run_measured(retrieve, env, work))
        check_saved(mine, size, source_sha if attempt == 0 else None)
        mine.unlink()
        os.sync()
        warm(source)
        sdk = [sys.executable, "-c", SDK_DOWNLOAD, output_id, str(theirs)]
        sdk_runs.append(run_measured(sdk, env, work))
        check_saved(theirs, size, None)
        theirs.unlink()
        os.sync()
        warm(source)
        curl_runs.append(run_measured(curl("-o", str(theirs), url), env, work))
        syncs.append(fsync_seconds(theirs))
        check_saved(theirs, size, None)
        theirs.unlink()
    return Compared(tool_runs, sdk_runs, curl_runs, median(syncs))


def bench_upload(server: EmulatorServer, work: Path, size: int, runs: int) -> Compared:
    progress(f"writing a {size / MB:.0f} MB input file")
    big = work / "big.jsonl"
    # Lines of 5 kB: 40,000 requests in 200 MB, within one batch's limit of 50,000, so that
    # create sends one upload, as the bare SDK does (with 1 kB lines it made a job of 5).
    write_chunks(big, request_lines(size, line_bytes=LINE_BYTES))
    env = child_env(server.base_url, work / "ledger.db")
    url = f"{server.base_url}/files"
    tool_runs: list[Run] = []
    sdk_runs: list[Run] = []
    curl_runs: list[Run] = []
    hashes: list[float] = []
    for attempt in range(runs):
        progress(f"upload run {attempt + 1}/{runs}")
        os.sync()
        # --force: every run sends the same input, which the ledger would refuse as a repeat.
        before = set(server.state.files)
        tool_runs.append(run_measured(cli("create", "--in", str(big), "--force"), env, work))
        uploads = [file for id_, file in server.state.files.items() if id_ not in before]
        if len(uploads) != 1 or uploads[0].bytes != big.stat().st_size:
            raise SystemExit(f"create sent {len(uploads)} uploads, not the input in one")
        sdk_runs.append(run_measured([sys.executable, "-c", SDK_UPLOAD, str(big)], env, work))
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
    return Compared(tool_runs, sdk_runs, curl_runs, median(hashes))


def main() -> None:
    args = parse_args(__doc__ or "")
    download_size = 100 * MIB if args.quick else GIB
    upload_size = 50 * MB if args.quick else 200 * MB
    runs = 3 if args.quick else 7
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
    report.add("curl + fsync", fmt(Compared.median_wall(download.curl) + download.extra))
    report.add(
        "retrieve - import floor wall", fmt(Compared.median_wall(download.tool) - floor.wall)
    )
    report.note("every run's saved file was checked for size; the first retrieve's by sha256")
    add_rss_and_wall(report, "create", upload, floor, "create's sha256 of the input, alone")
    report.add("create - import floor wall", fmt(Compared.median_wall(upload.tool) - floor.wall))
    report.note("create hashes its input while openai is imported; the two overlap")
    report.print()


if __name__ == "__main__":
    main()
