"""One run of a command: what its steps share (the ledger, the log, the providers, the streams).

Made once by the CLI and handed to the batch steps, the sweep and jobs, as pipx's
DispatchContext and httpie's Environment are, so that a new concern does not become a new
parameter of every function.
"""

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from batchledger.accounts import Account, builtin_accounts
from batchledger.errors import UsageError
from batchledger.ledger import Ledger, open_ledger
from batchledger.logs import close_logger, create_log_file, setup_logger
from batchledger.providers import Provider
from batchledger.version import __version__

if TYPE_CHECKING:
    from batchledger.emulator import EmulatorServer


DEFAULT_MAX_RETRIES = 2
DEFAULT_TIMEOUT = 600.0


@dataclass
class Context:
    command: str
    ledger_path: Path
    log_file: Path
    own_log_file: bool = False  # the default log name: this run's alone, suffixed if taken
    accounts: dict[str, Account] = field(default_factory=builtin_accounts)
    account: Account = field(default_factory=lambda: Account(name="default"))
    # The account the user named (--account, BATCHLEDGER_ACCOUNT); None: not named, so
    # commands on one batch follow it on whatever account it was made on.
    named_account: str | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    logger: logging.Logger | None = None
    # Told of each part of a job as its upload ends: (part, parts, bytes, seconds). The
    # CLI shows it on stderr; the layers below never print.
    on_part_uploaded: Callable[[int, int, int, float], None] | None = None
    # Told of a job's id as soon as the job is claimed, before any part is uploaded.
    on_job_claimed: Callable[[str], None] | None = None
    # The inputs of jobs found unchanged in this run, by job row id: (size, mtime_ns, inode)
    # of the file when its sha256 was checked. Hashed again only if that changes.
    checked_inputs: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    # Accounts whose provider refused to list batches in this run: a sweep looks each up.
    cannot_list: set[str] = field(default_factory=set)
    # What opening the ledger did that the user should know (rows an upgrade set aside) is
    # shown on stderr (the command line) or only kept in `ledger_notes` (the Python API,
    # which prints nothing unless asked); the log has it either way.
    show_notes: bool = True
    _ledger: Ledger | None = None
    _providers: dict[str, Provider] = field(default_factory=dict)
    _emulators: "list[EmulatorServer]" = field(default_factory=list)

    # --- the ledger ----------------------------------------------------------------

    def open_ledger(self, *, create: bool = True) -> Ledger | None:
        """The run's ledger; None if it does not exist and not `create`."""
        if self._ledger is None:
            self._ledger = open_ledger(self.ledger_path, create=create)
            if self._ledger is not None:
                for note in self.ledger_notes:
                    if self.show_notes:
                        self.warn(note)
                    if self.logger is not None:
                        self.logger.warning("LEDGER %s", note)
                if self.logger is not None:
                    self._ledger.log_file = self.log_file
        return self._ledger

    @property
    def ledger_notes(self) -> list[str]:
        """What opening the ledger did that the user should know; empty until it is opened."""
        if self._ledger is None:
            return []
        return [f"ledger {self.ledger_path}: {note}" for note in self._ledger.notes]

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
            self.log_file = create_log_file(self.log_file, own_file=self.own_log_file)
            self.logger = setup_logger(self.log_file)
            self.logger.info("RUN command=%s version=%s", self.command, __version__)
            if self._ledger is not None:
                self._ledger.log_file = self.log_file
                for note in self.ledger_notes:
                    self.logger.warning("LEDGER %s", note)
        return self.logger

    def provider(self) -> Provider:
        """The provider of the run's account; fails early (exit 2) on a missing or bad key."""
        return self.provider_for(self.account.name)

    def account_named(self, name: str) -> Account:
        account = self.accounts.get(name)
        if account is None:
            raise UsageError(
                f"the ledger has batches of account {name!r}, which accounts.toml no longer "
                "names; add it back to follow them"
            )
        return account

    def provider_for(self, name: str) -> Provider:
        """The provider of account `name`, made once per run; an emulator account's server
        starts here, inside this process, and stops when the run ends."""
        if name not in self._providers:
            account = self.account_named(name)
            base_url = None
            if account.kind == "emulator":
                base_url = self._start_emulator(account)
            # Imported here: each provider imports its SDK (about a second), which commands
            # that call no API must not pay. A new provider's kind gets its line here.
            provider: Provider
            if account.provider_kind == "anthropic":
                from batchledger.providers.anthropic import AnthropicProvider

                provider = AnthropicProvider(
                    account, max_retries=self.max_retries, timeout=self.timeout, base_url=base_url
                )
            else:
                from batchledger.providers.openai import OpenAIProvider

                provider = OpenAIProvider(
                    account, max_retries=self.max_retries, timeout=self.timeout, base_url=base_url
                )
            self._providers[name] = provider
        return self._providers[name]

    def _start_emulator(self, account: Account) -> str:
        # Imported here: only a run on an emulator account serves one.
        from batchledger.emulator import EmulatorServer

        assert account.data_dir is not None
        account.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        server = EmulatorServer(
            port=0,
            data_dir=account.data_dir,
            persist=True,
            step_seconds=account.step_seconds,
            flavor=account.flavor,
        ).start()
        self._emulators.append(server)
        return server.base_url

    def start_api_command(self, account: str | None = None) -> None:
        """The provider first (a missing key is reported before anything is written), the
        log, then the ledger. `account`: the one the command works on, when it is not the
        run's (a batch or job is followed on the account it was made on)."""
        self.provider_for(account or self.account.name)
        self.start_log()
        self.open_ledger(create=True)

    # --- output --------------------------------------------------------------------

    def print(self, text: str) -> None:
        print(text, file=self.stdout)

    def write_bytes(self, data: bytes) -> None:
        """UTF-8 bytes to stdout, through its binary layer where it has one: a big listing
        is not decoded only to be encoded again."""
        buffer = getattr(self.stdout, "buffer", None)
        if buffer is None:
            self.stdout.write(data.decode("utf-8"))
            return
        self.stdout.flush()  # what was printed before comes first
        buffer.write(data)

    def warn(self, message: str) -> None:
        print(f"batchledger: warning: {message}", file=self.stderr)

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        for server in self._emulators:
            server.stop()
        if self._ledger is not None:
            self._ledger.close()
        if self.logger is not None:
            close_logger(self.logger)
