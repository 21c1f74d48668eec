"""The OpenAI SDK's wire: its exceptions turned into ours (each a type that says what went
wrong), the log records of each call, and response bodies read as the objects they must be.
"""

import json
import logging
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import openai
from openai import OpenAI

from batchledger.errors import ApiError, Conflict, NotFound, Rejected, Transient
from batchledger.redaction import redact

log = logging.getLogger("batchledger")

# The variable each client's key came from, and its account: an HTTP 401 names them.
_KEY_VARIABLES: "weakref.WeakKeyDictionary[OpenAI, str]" = weakref.WeakKeyDictionary()


def _log_response(operation: str, payload: Any) -> None:
    log.info("%s response=%s", operation, json.dumps(payload, sort_keys=True))


@contextmanager
def api_errors(operation: str, client: OpenAI) -> Iterator[None]:
    """Turn the SDK's exceptions into ours, each a type that says what went wrong; a
    refused key is named by the variable `client`'s key came from."""
    try:
        yield
    except openai.APIStatusError as exc:
        log.error("%s failed: HTTP %s body=%s", operation, exc.status_code, _body_text(exc))
        raise _status_error(operation, exc, _KEY_VARIABLES.get(client)) from exc
    except openai.APITimeoutError as exc:
        log.error("%s timed out", operation, exc_info=True)
        raise Transient(
            redact(
                f"{operation} timed out talking to {_base_url(exc)}; try again or raise --timeout"
            )
        ) from exc
    except openai.APIConnectionError as exc:
        log.error("%s connection failed", operation, exc_info=True)
        raise Transient(
            redact(
                f"{operation} could not reach {_base_url(exc)} ({_root_cause(exc)}); "
                "check your network or OPENAI_BASE_URL and try again"
            )
        ) from exc


def _status_error(
    operation: str, exc: openai.APIStatusError, key_variable: str | None = None
) -> ApiError:
    """The error of our own that an HTTP error status stands for."""
    status = exc.status_code
    # Here, where an API error becomes ours, and nowhere later: an API may echo the key in
    # its message, and the message goes on to stderr, the log and the ledger's history.
    message = redact(_status_message(operation, exc, key_variable))
    code = _error_code(exc)
    if status in (408, 429) or status >= 500:
        error: ApiError = Transient(message, status=status, code=code)
        error.retry_after = _retry_after(exc)
        return error
    if status == 404:
        return NotFound(message, status=status, code=code)
    if status == 409:
        return Conflict(message, status=status, code=code)
    if 400 <= status < 500:
        return Rejected(message, status=status, code=code)
    return ApiError(message, status=status, code=code)


def _error_code(exc: openai.APIStatusError) -> str | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else None


def _retry_after(exc: openai.APIStatusError) -> float | None:
    """The server's Retry-After, in seconds, if it sent a usable one."""
    header = exc.response.headers.get("retry-after")
    try:
        seconds = float(header) if header is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def _body_text(exc: openai.APIStatusError) -> str:
    try:
        return json.dumps(exc.body)
    except (TypeError, ValueError):
        return repr(exc.body)


def _status_message(
    operation: str, exc: openai.APIStatusError, key_variable: str | None = None
) -> str:
    detail = exc.message
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            detail = str(error["message"])
    hint = ""
    if exc.status_code == 401:
        hint = f"; check {key_variable or 'OPENAI_API_KEY'}"
    elif exc.status_code == 429:
        hint = "; rate limited after retries, wait and try again (or raise --max-retries)"
    elif exc.status_code >= 500:
        hint = "; the service failed after retries, try again later"
    return f"{operation} failed with HTTP {exc.status_code}: {detail}{hint}"


def _base_url(exc: openai.APIConnectionError) -> str:
    url = exc.request.url
    return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


# What the API's spec requires of a Batch object (../shared/openapi): a listing's item
# without them is not trusted to stand for a look-up.
BATCH_REQUIRED = (
    "id",
    "object",
    "endpoint",
    "input_file_id",
    "completion_window",
    "status",
    "created_at",
)


def _is_batch(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and all(key in item for key in BATCH_REQUIRED)
        and isinstance(item["id"], str)
    )


def _page_json(operation: str, body: bytes) -> dict[str, Any]:
    """A list page from a response body; an ApiError if the body is not one."""
    return _json_object(
        operation, body, "a list page", lambda page: isinstance(page.get("data"), list)
    )


def _batch_json(operation: str, body: bytes) -> dict[str, Any]:
    """A Batch object from a response body; an ApiError if the body is not one."""
    return _json_object(
        operation, body, "a batch object", lambda batch: "id" in batch and "status" in batch
    )


def _json_object(
    operation: str, body: bytes, what: str, is_one: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The JSON object of a response body, if `is_one` takes it for `what`; else an ApiError
    (and the body, cut short, in the log)."""
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not is_one(value):
        log.error("%s returned something that is not %s: %r", operation, what, body[:2000])
        raise ApiError(f"{operation} returned something that is not {what}")
    return value


def _server_time(date_header: str | None) -> float | None:
    """The server's clock, from an HTTP Date header; None without a usable one."""
    if not date_header:
        return None
    try:
        return parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return None
