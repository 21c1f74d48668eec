"""Start-up: `--help` and `list` stay off `openai`; `list` is fast on 10,000 and 100,000 batches;
`list --all` (and `--json`) on 100,000; `status --all` with nothing to poll against `list`.

.venv/bin/python bench/startup.py [--quick]
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

from _common import (
    Report,
    child_env,
    cli,
    make_ledger,
    median,
    parse_args,
    progress,
    run_measured,
)
from _common import seconds as fmt

LIST_MARGIN_SECONDS = 0.10
GROWTH_LIMIT = 2.0
LIST_ALL_LIMIT = 1.5  # seconds, list --all on 100,000 batches
LIST_ALL_JSON_LIMIT = 1.0
IDLE_SWEEP_LIMIT = 1.10  # x list: "at most the time of list", with room for noise
# Nothing listens here: a sweep that made a request would fail (and the run with it).
DEAD_BASE_URL = "http://127.0.0.1:9/v1"


def imported_by_code(code: str, env: dict[str, str], cwd: Path) -> set[str]:
    return _importtime_names([sys.executable, "-X", "importtime", "-c", code], env, cwd)


def imported_modules(args: list[str], env: dict[str, str], cwd: Path) -> set[str]:
    """The modules `batchledger <args>` imports, read from `python -X importtime`."""
    return _importtime_names(
        [sys.executable, "-X", "importtime", "-m", "batchledger", *args], env, cwd
    )


def _importtime_names(cmd: list[str], env: dict[str, str], cwd: Path) -> set[str]:
    run = run_measured(cmd, env, cwd)
    names = set()
    for line in run.stderr.read_text().splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def check_imports(report: Report, env: dict[str, str], cwd: Path) -> None:
    # The detector itself must see openai where it is imported.
    if "openai" not in imported_by_code("import batchledger.providers.openai", env, cwd):
        report.note(
            "importtime parsing did not see openai in `import batchledger.providers.openai`!"
        )
    for args in (["--help"], ["list"]):
        names = imported_modules(args, env, cwd)
        label = f"`batchledger {' '.join(args)}` imports openai"
        report.add(label, "yes" if "openai" in names else "no", "no", "openai" not in names)
        heavy = sorted(
            n for n in names if n in ("httpx2", "pydantic", "batchledger.providers.openai")
        )
        if heavy:
            report.note(f"`{' '.join(args)}` also imported {', '.join(heavy)}")


def median_walls(
    commands: dict[str, list[str]], env: dict[str, str], cwd: Path, runs: int, warm: bool = True
) -> dict[str, float]:
    """Median wall time of each command; runs are interleaved so drift hits all alike."""
    for cmd in commands.values() if warm else ():
        run_measured(cmd, env, cwd)  # warm the page cache
    walls: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            walls[name].append(run_measured(cmd, env, cwd).wall)
    return {name: median(values) for name, values in walls.items()}


def settle_every_batch(path: Path) -> None:
    """Every batch final, its results saved: nothing for `status --all` to do."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE batches SET status = 'completed', error_file_id = NULL, "
            "output_path = coalesce(output_path, '/home/ana/jobs/results_' || id || '.jsonl')"
        )
    conn.close()


def idle_env(db: Path) -> dict[str, str]:
    env = child_env(DEAD_BASE_URL, db)
    del env["OPENAI_API_KEY"]
    return env


def main() -> None:
    args = parse_args(__doc__ or "")
    runs = 5 if args.quick else 11
    report = Report(f"startup ({'quick, ' if args.quick else ''}median of {runs} runs)")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        small, large = work / "ledger-10k.db", work / "ledger-100k.db"
        progress("building ledgers of 10,000 and 100,000 batches")
        make_ledger(small, 10_000)
        make_ledger(large, 100_000)
        env_small, env_large = child_env(db=small), child_env(db=large)
        check_imports(report, env_small, work)

        progress("timing list on 10,000 batches against the import baseline")
        baseline = [sys.executable, "-c", "import sqlite_utils, tabulate"]
        small_walls = median_walls(
            {"baseline": baseline, "list": cli("list"), "help": cli("--help")},
            env_small,
            work,
            runs,
        )
        progress("timing list on 100,000 batches")
        large_walls = median_walls({"list": cli("list")}, env_large, work, runs)
        progress("timing list --all (for information)")
        all_runs = 1 if args.quick else 3
        list_all = {"all": cli("list", "--all")}
        all_small = median_walls(list_all, env_small, work, all_runs, warm=False)
        all_large = median_walls(
            {**list_all, "json": cli("list", "--all", "--json")}, env_large, work, all_runs
        )

        progress("timing status --all with nothing to poll against list (no key)")
        idle = work / "ledger-idle.db"
        make_ledger(idle, 10_000)
        settle_every_batch(idle)
        env_idle = idle_env(idle)
        idle_imports = imported_modules(["status", "--all"], env_idle, work)
        idle_walls = median_walls(
            {"list": cli("list"), "sweep": cli("status", "--all")}, env_idle, work, runs
        )

    base, listed, grown = small_walls["baseline"], small_walls["list"], large_walls["list"]
    report.add("python -c 'import sqlite_utils, tabulate'", fmt(base), "baseline")
    report.add("batchledger --help", fmt(small_walls["help"]))
    report.add("list, 10k ledger", fmt(listed))
    report.add(
        "list 10k - baseline",
        f"{(listed - base) * 1000:+.0f} ms",
        f"<= {LIST_MARGIN_SECONDS * 1000:.0f} ms",
        listed - base <= LIST_MARGIN_SECONDS,
    )
    report.add("list, 100k ledger", fmt(grown))
    report.add(
        "list 100k / list 10k", f"{grown / listed:.2f}x", f"< {GROWTH_LIMIT:g}x", grown < 2 * listed
    )
    report.add(f"list --all, 10k ledger ({all_runs} runs)", fmt(all_small["all"]))
    report.add(
        f"list --all, 100k ledger ({all_runs} runs)",
        fmt(all_large["all"]),
        f"<= {LIST_ALL_LIMIT:g} s",
        all_large["all"] <= LIST_ALL_LIMIT,
    )
    report.add(
        f"list --all --json, 100k ledger ({all_runs} runs)",
        fmt(all_large["json"]),
        f"<= {LIST_ALL_JSON_LIMIT:g} s",
        all_large["json"] <= LIST_ALL_JSON_LIMIT,
    )
    report.add("list --all 100k / import baseline", f"{all_large['all'] / base:.1f}x")
    report.add("list --all --json 100k / import baseline", f"{all_large['json'] / base:.1f}x")
    report.add(
        "status --all, nothing to poll, imports openai",
        "yes" if "openai" in idle_imports else "no",
    )
    report.add("list, 10k ledger all final and saved", fmt(idle_walls["list"]))
    report.add("status --all, same ledger, no key, no server", fmt(idle_walls["sweep"]))
    report.add(
        "status --all (nothing to poll) / list",
        f"{idle_walls['sweep'] / idle_walls['list']:.2f}x",
        f"<= {IDLE_SWEEP_LIMIT:.2f}x",
        idle_walls["sweep"] <= IDLE_SWEEP_LIMIT * idle_walls["list"],
    )
    report.print()


if __name__ == "__main__":
    main()
