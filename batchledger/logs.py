"""The run's log file."""

import logging
from pathlib import Path

from batchledger.errors import UsageError
from batchledger.redaction import redact

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_logger(log_path: Path) -> logging.Logger:
    """Log to `log_path` (its folder created on demand), one flushed line per record."""
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
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


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class RedactingFormatter(logging.Formatter):
    """Formats records, tracebacks included, and blanks out API keys last of all."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
