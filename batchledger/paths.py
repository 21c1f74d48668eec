"""Where things live: the ledger, the accounts file, the log files, saved results."""

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import platformdirs

APP_NAME = "batchledger"
LEDGER_ENV = "BATCHLEDGER_DB"
CONFIG_ENV = "BATCHLEDGER_CONFIG"


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


def config_path() -> Path:
    """The accounts file to read."""
    # 1. the BATCHLEDGER_CONFIG environment variable
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env).expanduser().absolute()
    # 2. the per-user config directory of the platform
    return user_config_dir() / "accounts.toml"


def user_data_dir() -> Path:
    """batchledger's folder in the platform's per-user data directory."""
    # appauthor=False: no vendor folder on Windows (%LOCALAPPDATA%\batchledger, not
    # %LOCALAPPDATA%\batchledger\batchledger); roaming=False: %LOCALAPPDATA%, not %APPDATA%.
    if sys.platform == "darwin":
        return _macos_app_support()
    return platformdirs.user_data_path(APP_NAME, appauthor=False, roaming=False)


def user_config_dir() -> Path:
    """batchledger's folder in the platform's per-user config directory."""
    if sys.platform == "darwin":
        return _macos_app_support()
    return platformdirs.user_config_path(APP_NAME, appauthor=False, roaming=False)


def _macos_app_support() -> Path:
    # platformdirs (since 4.6) lets $XDG_DATA_HOME / $XDG_CONFIG_HOME move these on macOS
    # too. batchledger's ledger has always been here on macOS: a ledger that moved would
    # forget every batch, and with them the guard against sending an input twice.
    return Path.home() / "Library" / "Application Support" / APP_NAME


def default_log_path(now: datetime) -> Path:
    """logs/batch_<YYYYmmdd_HHMMSS>.log under the working directory, the time in UTC."""
    return Path("logs") / f"batch_{now.astimezone(UTC).strftime('%Y%m%d_%H%M%S')}.log"


def default_results_path(batch_id: str) -> Path:
    return Path(f"results_{batch_id}.jsonl")


def errors_path_for(output_path: Path) -> Path:
    """Where a batch's error file is saved, beside its output: `<stem>.errors.jsonl`."""
    return output_path.with_name(f"{output_path.stem}.errors.jsonl")
