"""The download alone: `retrieve` of 1 GiB against the bare SDK's loop, after the imports.

    .venv/bin/python bench/download_phase.py [--quick]

transfer.py times whole commands, start-up included; on this VM their spread is wider
than the 10 % it looks for. Here each child imports everything first and times only the
transfer: `main(["retrieve", ...])` (status look-up, ledger, download, sha256, fsync,
rename), the same with sha256 replaced by a no-op (what the hash costs), and the bare
SDK's `with_streaming_response` loop into a file. Interleaved, with `os.sync()` and the
source read into the page cache before each run, as in transfer.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import (
    GIB,
    MIB,
    Report,
    add_completed_batch,
    add_emulator_file,
    child_env,
    median,
    parse_args,
    progress,
    request_lines,
    result_lines,
    warm,
)
from _common import seconds as fmt

from batchledger.emulator import EmulatorServer

DRIVER = r"""
import sys, time, types
mode, batch_id, file_id, out, log = sys.argv[1:]
import openai
import batchledger.providers.openai, batchledger.savefile, batchledger.sweep
from batchledger.cli.main import main
if mode == "no hash":
    class NoHash:
        def update(self, data): pass
        def hexdigest(self): return "0" * 64
    batchledger.savefile.hashlib = types.SimpleNamespace(sha256=NoHash)
started = time.perf_counter()
if mode == "bare SDK":
    with openai.OpenAI(max_retries=0).files.with_streaming_response.content(file_id) as response:
        with open(out, "wb") as stream:
            for chunk in response.iter_bytes():
                stream.write(chunk)
else:
    assert main(["retrieve", "--batch-id", batch_id, "--out", out, "--log-file", log]) == 0
print(time.perf_counter() - started)
"""
MODES = ("retrieve", "no hash", "bare SDK")


def main() -> None:
    args = parse_args(__doc__ or "")
    size, runs = (100 * MIB, 3) if args.quick else (GIB, 7)
    report = Report(f"download phase ({size / MIB:.0f} MiB, median of {runs} runs)")
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        work = Path(tmp)
        with EmulatorServer(port=0, data_dir=work / "emulator") as server:
            progress(f"writing a {size / MIB:.0f} MiB result file into the emulator")
            input_id, _ = add_emulator_file(server.state, request_lines(100_000), "batch")
            output_id, _ = add_emulator_file(server.state, result_lines(size), "batch_output")
            batch_id = add_completed_batch(server.state, input_id, output_id)
            source = server.state.get_file(output_id).path
            env = child_env(server.base_url, work / "ledger.db")
            times: dict[str, list[float]] = {mode: [] for mode in MODES}
            for attempt in range(runs):
                for mode in MODES:
                    progress(f"run {attempt + 1}/{runs}: {mode}")
                    out = work / "out.jsonl"
                    out.unlink(missing_ok=True)
                    os.sync()
                    warm(source)
                    argv = [mode, batch_id, output_id, str(out), str(work / "run.log")]
                    done = subprocess.run(
                        [sys.executable, "-c", DRIVER, *argv],
                        env=env,
                        cwd=work,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    times[mode].append(float(done.stdout.split()[-1]))
                    if out.stat().st_size != source.stat().st_size:
                        raise SystemExit(f"{mode}: saved {out.stat().st_size} bytes")
    for mode in MODES:
        values = times[mode]
        report.add(
            f"{mode}: median (fastest - slowest)",
            f"{fmt(median(values))} ({fmt(min(values))} - {fmt(max(values))})",
        )
    bare = median(times["bare SDK"])
    for mode in MODES[:2]:
        report.add(f"{mode} / bare SDK", f"{median(times[mode]) / bare:.2f}x")
    report.print()


if __name__ == "__main__":
    main()
