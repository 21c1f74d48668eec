"""The anthropic SDK's wire: its exceptions turned into ours, the log records of each call,
and a MessageBatch mapped onto the OpenAI Batch object's fields the layers above read.
"""

import json
import logging
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import anthropic
from anthropic import Anthropic

from batchledger.errors import ApiError, Conflict, NotFound, Rejected, Transient
from batchledger.profiles import Profile
from batchledger.redaction import redact

log = logging.getLogger("batchledger")

# The variable each client's key came from, and its account: an HTTP 401 names them.
KEY_VARIABLES: "weakref.WeakKeyDictionary[Anthropic, str]" = weakref.WeakKeyDictionary()
# Anthropic's own request counts, kept beside the mapped ones (show displays them).
RESULT_TYPES = ("processing", "succeeded", "errored", "canceled", "expired")


def log_response(operation: str, payload: Any) -> None:
    log.info("%s response=%s", operation, json.dumps(payload, sort_keys=True))


@contextmanager
def api_errors(operation: str, client: Anthropic) -> Iterator[None]:
    """Turn the SDK's exceptions into ours, each a type that says what went wrong."""
    try:
        yield
    except anthropic.APIStatusError as exc:
        log.error("%s failed: HTTP %s body=%s", operation, exc.status_code, _body_text(exc))
        raise _status_error(operation, exc, KEY_VARIABLES.get(client)) from exc
    except anthropic.APITimeoutError as exc:
        log.error("%s timed out", operation, exc_info=True)
        raise Transient(
            redact(f"{operation} timed out talking to {_origin(exc)}; try again or raise --timeout")
        ) from exc
    except anthropic.APIConnectionError as exc:
        log.error("%s connection failed", operation, exc_info=True)
        raise Transient(
            redact(
                f"{operation} could not reach {_origin(exc)} ({root_cause(exc)}); "
                "check your network or the account's base_url and try again"
            )
        ) from exc


def _status_error(operation: str, exc: anthropic.APIStatusError, key: str | None) -> ApiError:
    status = exc.status_code
    detail = exc.message
    body = exc.body
    code = None
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            detail = str(error.get("message") or detail)
            code = error.get("type") if isinstance(error.get("type"), str) else None
    hint = ""
    if status == 401:
        hint = f"; check {key or 'ANTHROPIC_API_KEY'}"
    elif status == 429:
        hint = "; rate limited after retries, wait and try again (or raise --max-retries)"
    elif status >= 500:
        hint = "; the service failed after retries, try again later"
    # Redacted here, where the API's words become ours: they go to stderr, the log, the ledger.
    message = redact(f"{operation} failed with HTTP {status}: {detail}{hint}")
    if status in (408, 429) or status >= 500:
        error_: ApiError = Transient(message, status=status, code=code)
        header = exc.response.headers.get("retry-after")
        try:
            error_.retry_after = float(header) if header is not None else None
        except ValueError:
            error_.retry_after = None
        return error_
    if status == 404:
        return NotFound(message, status=status, code=code)
    if status == 409:
        return Conflict(message, status=status, code=code)
    if 400 <= status < 500:
        return Rejected(message, status=status, code=code)
    return ApiError(message, status=status, code=code)


def _body_text(exc: anthropic.APIStatusError) -> str:
    try:
        return json.dumps(exc.body)
    except (TypeError, ValueError):
        return repr(exc.body)


def _origin(exc: anthropic.APIConnectionError) -> str:
    url = exc.request.url
    return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")


def root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


def server_time(date_header: str | None) -> float | None:
    """The server's clock, from an HTTP Date header; None without a usable one."""
    if not date_header:
        return None
    try:
        return parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return None


def epoch(value: Any) -> int | None:
    """An RFC 3339 time (as Message Batches give them) as whole seconds since the epoch."""
    if not value:
        return None
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())


def results_url(url: str | None, base_url: str) -> str | None:
    """`results_url` as a URL to fetch: absolute as the API sends it, or a path resolved
    against the base URL's origin (RFC 3986), as some proxies and mocks send it."""
    if not url:
        return None
    parts = urlsplit(base_url)
    return urljoin(f"{parts.scheme}://{parts.netloc}/", url)


def batch_id_of_results(url: str) -> str | None:
    """The Message Batch a results URL belongs to (…/messages/batches/{id}/results)."""
    path = urlsplit(url).path.rstrip("/").split("/")
    if len(path) >= 3 and path[-1] == "results" and path[-3] == "batches":
        return path[-2]
    return None


def to_batch(message_batch: Mapping[str, Any], profile: Profile, base_url: str) -> dict[str, Any]:
    """A MessageBatch (its JSON) as the OpenAI Batch object's fields the layers above read.

    Statuses: `in_progress` stays, `canceling` is `cancelling`, and `ended` is `completed`,
    or `cancelled` when a cancel was asked, or `expired` when requests expired. Counts:
    `succeeded` is completed, `errored` + `canceled` + `expired` failed; Anthropic's own
    counts are kept beside them. Its one results file holds both kinds of lines, so it is
    the output file (if any succeeded) and the error file (if any did not).
    """
    counts = {
        name: int((message_batch.get("request_counts") or {}).get(name) or 0)
        for name in RESULT_TYPES
    }
    failed = counts["errored"] + counts["canceled"] + counts["expired"]
    processing = str(message_batch.get("processing_status"))
    ended_at = epoch(message_batch.get("ended_at"))
    status = profile.ledger_status(processing)
    if processing == "ended":
        if message_batch.get("cancel_initiated_at"):
            status = "cancelled"
        elif counts["expired"]:
            status = "expired"
    url = results_url(message_batch.get("results_url"), base_url) if ended_at else None
    batch: dict[str, Any] = {
        "id": message_batch["id"],
        "object": "batch",
        "status": status,
        "processing_status": processing,
        "created_at": epoch(message_batch.get("created_at")),
        "expires_at": epoch(message_batch.get("expires_at")),
        "cancelling_at": epoch(message_batch.get("cancel_initiated_at")),
        "archived_at": epoch(message_batch.get("archived_at")),
        "request_counts": {
            "total": sum(counts.values()),
            "completed": counts["succeeded"],
            "failed": failed,
            "by_result": counts,
        },
        "results_url": url,
        "output_file_id": url if url and counts["succeeded"] else None,
        "error_file_id": url if url and failed else None,
    }
    if ended_at is not None and status in ("completed", "cancelled", "expired"):
        batch[f"{status}_at"] = ended_at
    return batch
