"""The run's log file: its own (never shared with another run), private, in UTC."""

import logging
import os
import time
from pathlib import Path

from batchledger.errors import UsageError
from batchledger.redaction import redact

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# Runs started in the same second get batch_…_2.log, batch_…_3.log, … up to this many.
MAX_SAME_SECOND_LOGS = 1000


def setup_logger(log_path: Path) -> logging.Logger:
    """Log to `log_path`, one flushed line per record."""
    try:
        handler = logging.FileHandler(log_path, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the log file {log_path}: {exc.strerror or exc}") from exc
    logger = logging.getLogger("batchledger")
    logger.setLevel(logging.INFO)
    close_logger(logger)  # a handler left by an earlier run in this process
    # FileHandler flushes after every record (StreamHandler.emit calls flush), so the
    # log is complete up to the moment a run dies.
    handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.propagate = False
    return logger


def create_log_file(log_path: Path, *, own_file: bool) -> Path:
    """Make the log file (and its folder) readable by its owner only: it names paths and
    errors. The path of the file made.

    With `own_file` (the default log name), the file is new and this run's alone: if the
    name is taken (another run started in the same second), a suffix is added. Otherwise
    (a --log-file) an existing file is appended to.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        if not log_path.parent.exists():
            log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for n in range(1, MAX_SAME_SECOND_LOGS + 1):
            candidate = log_path if n == 1 else log_path.with_name(f"{log_path.stem}_{n}.log")
            try:
                os.close(os.open(candidate, flags, 0o600))
            except FileExistsError:
                if not own_file:
                    return log_path  # a --log-file shared on purpose
                continue
            return candidate
        raise FileExistsError(f"{MAX_SAME_SECOND_LOGS} logs were started this second")
    except OSError as exc:
        raise UsageError(f"cannot write the log file {log_path}: {exc.strerror or exc}") from exc


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class RedactingFormatter(logging.Formatter):
    """Formats records in UTC (`2026-11-25T14:03:07.123Z`), tracebacks included, and blanks
    out API keys last of all."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
