"""The project's errors, each saying by its type what went wrong, and their exit codes."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # API/network failure after retries, ledger unusable, disk full, ...
    USAGE = 2  # bad arguments, missing key, input file missing/unreadable/a directory
    REFUSED = 3  # refused because of a batch's state (not completed, already submitted)
    INTERRUPTED = 130  # Ctrl-C


class BatchledgerError(Exception):
    """An error with a one-line message for the user and the exit code it maps to."""

    default_exit_code = ExitCode.FAILURE

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = self.default_exit_code if exit_code is None else exit_code


class UsageError(BatchledgerError):
    """What the user typed or set up cannot work: bad arguments, a missing key or input."""

    default_exit_code = ExitCode.USAGE


class Refused(BatchledgerError):
    """The action is refused because of a batch's state (not finished, already sent)."""

    default_exit_code = ExitCode.REFUSED


class ApiError(BatchledgerError):
    """An API call failed; `status` is the HTTP status if the API answered at all."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code  # the API's error code, such as "token_limit_exceeded"
        self.retry_after: float | None = None  # seconds the server asked us to wait


class Transient(ApiError):
    """A failure that may pass: the network, a timeout, a 5xx, a rate limit, a cut download."""


class Rejected(ApiError):
    """The API answered no (a 4xx other than a rate limit): trying again will not help."""


class NotFound(Rejected):
    """The API does not know the batch or file (HTTP 404)."""


class Conflict(Rejected):
    """The request does not fit the object's state (HTTP 409), as a cancel of a final batch."""


class NotInLedger(UsageError):
    """The ledger holds no batch or job by that id, prefix or `last` (exit 2, as a bad id)."""


class WaitTimeout(BatchledgerError, TimeoutError):
    """A wait (`Batch.wait`, `Job.wait`) ran out of time; the batch or job keeps running."""


def utf8_text(data: bytes, name: str) -> str:
    """A file's bytes as text (accounts.toml, a prices file); a UsageError naming the first
    byte that is not UTF-8, in the file `name`s."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{name} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}); "
            "save it as UTF-8"
        ) from exc
