"""The run's log file."""

import logging
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_logger(log_path: Path) -> logging.Logger:
    """Log to `log_path` (its folder created on demand), one flushed line per record."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("batchledger")
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    # FileHandler flushes after every record (StreamHandler.emit calls flush), so the
    # log is complete up to the moment a run dies.
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.propagate = False
    return logger


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
