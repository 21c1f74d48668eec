"""Token counts and dry runs: how fast an input is counted, and what a dry run holds in memory.

    .venv/bin/python bench/tokens.py [--quick]

(a) Counting: `tokens.count_input` over a 200 MB input (50 MB quick) of realistic request
    lines (chat completions with a system and a user message, responses with instructions
    and an input_text part; varied prose with numbers, accents, CJK and URLs; half of the
    lines with JSON \\u escapes), in a child pinned to one core (`taskset -c 0`), after the
    tokenizers are loaded (their load is reported apart). 3 runs, median of MB per second of
    the child's CPU time (the machine may be shared; wall-clock rate beside it). For information:
    the same child's pass that only parses the lines (json), and the tokenizers' load.
(b) Dry run: `batchledger create --in big.jsonl --dry-run --json` of a 2 GiB input (256 MiB
    quick), on the default account with no API key, against the import floor of a child
    that imports what the dry run imports (`batchledger.cli`, `quicktok`, `genai_prices`)
    and loads nothing. The dry run must print one JSON document with the input's requests,
    and leave no ledger behind.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

from _common import (
    GIB,
    MB,
    MIB,
    Report,
    child_env,
    cli,
    median,
    megabytes,
    parse_args,
    progress,
    run_measured,
    seconds,
    warm,
)

WORDS = (  # noqa: SIM905  # a sentence of words reads better than a list of them
    "the of and to in is that for it as with was on be by this are from at or an have not "
    "which but they his her we can all their there been one would more will if no when what "
    "about data model results analysis customer order invoice shipment delivery report "
    "summary quarterly revenue growth Paris Berlin Tokyo 2024 2025 3.14 42 100,000 résumé "
    "naïve café über straße 日本語 中文 ¿qué? «bien» e-mail https://example.com/path?q=1 "
    "user_id=12345 (see §4.2) —"
).split()

COUNT_CHILD = """
import json, sys, time
from pathlib import Path
from batchledger import tokens
started = time.perf_counter()
tokens.tokenizer("o200k_base"); tokens.tokenizer("cl100k_base")
loaded = time.perf_counter() - started
path = Path(sys.argv[1])
decode = json.JSONDecoder().raw_decode
started = time.perf_counter()
with path.open("rb") as stream:
    for line in stream:
        decode(line.decode("utf-8", "surrogateescape").strip())
parse = time.perf_counter() - started
started, cpu = time.perf_counter(), time.process_time()
counted = tokens.count_input(path)
count, count_cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({"load": loaded, "parse": parse, "count": count, "count_cpu": count_cpu,
    "bytes": counted.bytes,
    "lines": counted.lines,
    "tokens": {m: c.input_tokens for m, c in counted.models.items()}}))
"""


def generate(path: Path, total: int, seed: int = 7) -> int:
    """A realistic input of about `total` bytes: lines from a pool of 4,000 bodies, each line
    with its own custom_id. Returns the bytes written."""
    rng = random.Random(seed)

    def prose(size: int) -> str:
        out: list[str] = []
        length = 0
        while length < size:
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18)))
            sentence = words[0].upper() + words[1:] + rng.choice([". ", "! ", "? ", ".\n", ": "])
            out.append(sentence)
            length += len(sentence)
        return "".join(out)

    systems = [prose(rng.randint(100, 600)) for _ in range(20)]
    tails: list[str] = []
    for i in range(4000):
        user = prose(rng.randint(500, 4000))
        if i % 3 == 0:
            url = "/v1/chat/completions"
            body = {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": systems[i % 20]},
                    {"role": "user", "content": user},
                ],
                "max_tokens": 500,
            }
        else:
            url = "/v1/responses"
            body = {
                "model": "gpt-4.1-mini",
                "instructions": systems[i % 20],
                "input": [{"role": "user", "content": [{"type": "input_text", "text": user}]}],
                "max_output_tokens": 800,
            }
        rest = json.dumps({"method": "POST", "url": url, "body": body}, ensure_ascii=i % 2 == 0)
        tails.append(", " + rest[1:] + "\n")
    written = n = 0
    with path.open("w", encoding="utf-8") as out:
        while written < total:
            chunk = "".join(
                f'{{"custom_id": "request-{n + k}"{tails[(n + k) % 4000]}' for k in range(2000)
            )
            n += 2000
            out.write(chunk)
            written += len(chunk.encode())
    return written


def counting(report: Report, work: Path, quick: bool) -> None:
    size = 50 * MB if quick else 200 * MB
    path = work / "count.jsonl"
    progress(f"(a) generating a {size / MB:.0f} MB input")
    generate(path, size)
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    runs = []
    for index in range(3):
        progress(f"(a) count run {index + 1}/3")
        warm(path)
        run = run_measured([*pin, sys.executable, "-c", COUNT_CHILD, str(path)], child_env(), work)
        runs.append(json.loads(run.stdout.read_text()))
    first = runs[0]
    # The rate per second of CPU: the machine is shared, and a wall clock measures the
    # other processes' share of the core too. The wall rate is shown beside it.
    rate = median([r["bytes"] / r["count_cpu"] for r in runs]) / MB
    wall_rate = median([r["bytes"] / r["count"] for r in runs]) / MB
    total_tokens = sum(first["tokens"].values())
    report.add(
        "(a) input",
        f"{first['bytes'] / MB:.0f} MB, {first['lines']:,} lines, {total_tokens:,} tokens",
    )
    report.add(
        "(a) count_input, one core: MB per CPU second (median)",
        f"{rate:.0f} MB/s",
        ">= 50 MB/s",
        rate >= 50,
    )
    report.add("(a) count_input: MB per wall second (median)", f"{wall_rate:.0f} MB/s")
    report.add(
        "(a) count_input: CPU time (median)", seconds(median([r["count_cpu"] for r in runs]))
    )
    report.add(
        "(a) json parse alone: MB/s",
        f"{median([r['bytes'] / r['parse'] for r in runs]) / MB:.0f} MB/s",
    )
    report.add("(a) tokenizers' load (o200k + cl100k)", seconds(median([r["load"] for r in runs])))
    report.note(f"(a) pinned with {' '.join(pin) or 'nothing (no taskset)'}")
    path.unlink()


def dry_run(report: Report, work: Path, quick: bool) -> None:
    size = 256 * MIB if quick else 2 * GIB
    path = work / "big.jsonl"
    progress(f"(b) generating a {size / GIB:.2f} GiB input")
    written = generate(path, size)
    env = child_env(db=work / "ledger.db")
    env.pop("OPENAI_API_KEY", None)
    floor_cmd = [sys.executable, "-c", "import batchledger.cli, quicktok, genai_prices"]
    floors = sorted(run_measured(floor_cmd, env, work).maxrss_kib for _ in range(3))
    floor = floors[1]
    # The same imports, then the o200k vocabulary loaded: what the dry run holds whatever
    # the input's size.
    loaded_cmd = [
        sys.executable,
        "-c",
        "import batchledger.cli, quicktok, genai_prices; quicktok.get_encoding('o200k_base')",
    ]
    loaded = sorted(run_measured(loaded_cmd, env, work).maxrss_kib for _ in range(3))[1]
    progress("(b) dry run")
    warm(path)
    run = run_measured(cli("create", "--in", str(path), "--dry-run", "--json"), env, work)
    document = json.loads(run.stdout.read_text())
    report.add("(b) input", f"{written / GIB:.2f} GiB, {document['requests']:,} requests")
    report.add("(b) plan", f"{document['batches']} batches")
    report.add("(b) import floor (batchledger.cli, quicktok, genai_prices)", megabytes(floor))
    report.add("(b) dry run: peak RSS", megabytes(run.maxrss_kib))
    over = (run.maxrss_kib - floor) / 1024
    report.add("(b) dry run: peak RSS - floor", f"+{over:.1f} MB", "<= 50 MB", over <= 50)
    report.add("(b) the floor's imports + the o200k vocabulary loaded", megabytes(loaded))
    above = (run.maxrss_kib - loaded) / 1024
    report.add("(b) dry run: peak RSS - that", f"{above:+.1f} MB")
    report.add("(b) dry run: wall", seconds(run.wall))
    report.add(
        "(b) ledger written",
        "yes" if (work / "ledger.db").exists() else "no",
        "no",
        not (work / "ledger.db").exists(),
    )
    path.unlink()


def main() -> None:
    args = parse_args(__doc__ or "")
    report = Report(f"tokens ({'quick' if args.quick else 'full'})")
    with tempfile.TemporaryDirectory(prefix="bench-tokens-") as folder:
        work = Path(folder)
        counting(report, work, args.quick)
        dry_run(report, work, args.quick)
    report.print()


if __name__ == "__main__":
    main()
