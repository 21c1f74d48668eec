"""The project's one exception type and its exit codes."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # API/network failure after retries, ledger unusable, disk full, ...
    USAGE = 2  # bad arguments, missing key, input file missing/unreadable/a directory
    REFUSED = 3  # refused because of a batch's state (not completed, already submitted)
    INTERRUPTED = 130  # Ctrl-C


class BatchledgerError(Exception):
    """An error with a one-line message for the user and the exit code it maps to."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
