"""One run of a command: what its steps share (the ledger, the log, the client, the streams).

Made once by the CLI and handed to the workflow, as pipx's DispatchContext and httpie's
Environment are, so that a new concern does not become a new parameter of every function.
"""

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from batchledger import __version__
from batchledger.ledger import Ledger, open_ledger
from batchledger.logs import close_logger, setup_logger

if TYPE_CHECKING:
    from openai import OpenAI

DEFAULT_MAX_RETRIES = 2
DEFAULT_TIMEOUT = 600.0


@dataclass
class Context:
    command: str
    ledger_path: Path
    log_file: Path
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    logger: logging.Logger | None = None
    _ledger: Ledger | None = None
    _client: "OpenAI | None" = None

    # --- the ledger ----------------------------------------------------------------

    def open_ledger(self, *, create: bool = True) -> Ledger | None:
        """The run's ledger; None if it does not exist and not `create`."""
        if self._ledger is None:
            self._ledger = open_ledger(self.ledger_path, create=create)
            if self._ledger is not None and self.logger is not None:
                self._ledger.log_file = self.log_file
        return self._ledger

    @property
    def ledger(self) -> Ledger:
        """The run's ledger, made if it does not exist yet."""
        ledger = self.open_ledger(create=True)
        assert ledger is not None
        return ledger

    # --- the log and the API -------------------------------------------------------

    def start_log(self) -> logging.Logger:
        """Open the log file; only commands that call the API keep a log."""
        if self.logger is None:
            self.logger = setup_logger(self.log_file)
            self.logger.info("RUN command=%s version=%s", self.command, __version__)
            if self._ledger is not None:
                self._ledger.log_file = self.log_file
        return self.logger

    def client(self) -> "OpenAI":
        """The run's one API client; fails early (exit 2) on a missing or malformed key."""
        if self._client is None:
            from batchledger import api  # imports openai: only commands that call the API

            self._client = api.make_client(max_retries=self.max_retries, timeout=self.timeout)
        return self._client

    def start_api_command(self) -> None:
        """The client first (a missing key is reported before anything is written), the
        log, then the ledger."""
        self.client()
        self.start_log()
        self.open_ledger(create=True)

    # --- output --------------------------------------------------------------------

    def print(self, text: str) -> None:
        print(text, file=self.stdout)

    def warn(self, message: str) -> None:
        print(f"batchledger: warning: {message}", file=self.stderr)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
        if self.logger is not None:
            close_logger(self.logger)
