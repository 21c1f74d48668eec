"""Where things live: the ledger, the log files, saved results."""

import os
import sys
from datetime import datetime
from pathlib import Path

LEDGER_ENV = "BATCHLEDGER_DB"


def ledger_path(db_option: str | None = None) -> Path:
    """The ledger file to use."""
    # 1. --db on the command line
    if db_option:
        return Path(db_option).expanduser().absolute()
    # 2. the BATCHLEDGER_DB environment variable
    from_env = os.environ.get(LEDGER_ENV)
    if from_env:
        return Path(from_env).expanduser().absolute()
    # 3. the per-user data directory of the platform
    return user_data_dir() / "ledger.db"


def user_data_dir() -> Path:
    """batchledger's folder in the platform's per-user data directory."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "batchledger"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "batchledger"
    xdg = os.environ.get("XDG_DATA_HOME")
    # XDG says a relative XDG_DATA_HOME is invalid and must be ignored.
    base_dir = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base_dir / "batchledger"


def default_log_path(now: datetime) -> Path:
    return Path("logs") / f"batch_{now.strftime('%Y%m%d_%H%M%S')}.log"


def default_results_path(batch_id: str) -> Path:
    return Path(f"results_{batch_id}.jsonl")


def errors_path_for(output_path: Path) -> Path:
    """Where a batch's error file is saved, beside its output: `<stem>.errors.jsonl`."""
    return output_path.with_name(f"{output_path.stem}.errors.jsonl")
