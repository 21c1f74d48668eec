"""The OpenAI client: every API call, its log records, and SDK errors turned into ours.

Imported only by commands that talk to the API: importing `openai` costs about a second.
"""

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import openai
from openai import OpenAI

from batchledger.batches import REF_KEY
from batchledger.errors import (
    ApiError,
    BatchledgerError,
    Conflict,
    NotFound,
    Rejected,
    Transient,
    UsageError,
)
from batchledger.savefile import Incomplete, Saved, prepare_target, save_chunks

log = logging.getLogger("batchledger")
# Set when the user interrupts a run whose downloads go on in worker threads (a sweep):
# each stops at its next chunk. The main thread gets KeyboardInterrupt by itself.
STOP_DOWNLOADS = threading.Event()
_T = TypeVar("_T")

# Server and local clocks differ; look back this much further than the local time.
CLOCK_SKEW_SECONDS = 600
INITIAL_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 8.0
MAX_RETRY_AFTER_SECONDS = 120.0
# A body that drops midway is not retried by the SDK (it has already returned the
# response), so downloads retry on their own, a bounded number of times.
DOWNLOAD_ATTEMPTS = 3


def make_client(max_retries: int = 2, timeout: float = 600.0) -> OpenAI:
    """The one client of a run; the key and base URL come from the environment."""
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        raise UsageError("OPENAI_API_KEY is not set; export your API key first")
    # A pasted key with a stray space or newline would otherwise fail deep in the HTTP
    # library, with the key itself in the error text.
    if not key.isascii() or not key.isprintable() or key != key.strip():
        raise UsageError(
            "OPENAI_API_KEY holds spaces, line breaks or non-ASCII characters; export the key alone"
        )
    return OpenAI(max_retries=max_retries, timeout=timeout)


def _log_response(operation: str, payload: Any) -> None:
    log.info("%s response=%s", operation, json.dumps(payload, sort_keys=True))


@contextmanager
def api_errors(operation: str) -> Iterator[None]:
    """Turn the SDK's exceptions into ours, each a type that says what went wrong."""
    try:
        yield
    except openai.APIStatusError as exc:
        log.error("%s failed: HTTP %s body=%s", operation, exc.status_code, _body_text(exc))
        raise _status_error(operation, exc) from exc
    except openai.APITimeoutError as exc:
        log.error("%s timed out", operation, exc_info=True)
        raise Transient(
            f"{operation} timed out talking to {_base_url(exc)}; try again or raise --timeout"
        ) from exc
    except openai.APIConnectionError as exc:
        log.error("%s connection failed", operation, exc_info=True)
        raise Transient(
            f"{operation} could not reach {_base_url(exc)} ({_root_cause(exc)}); "
            "check your network or OPENAI_BASE_URL and try again"
        ) from exc


def _status_error(operation: str, exc: openai.APIStatusError) -> ApiError:
    """The error of our own that an HTTP error status stands for."""
    status = exc.status_code
    message = _status_message(operation, exc)
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


def _status_message(operation: str, exc: openai.APIStatusError) -> str:
    detail = exc.message
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            detail = str(error["message"])
    hint = ""
    if exc.status_code == 401:
        hint = "; check OPENAI_API_KEY"
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


def upload_name(path: Path, ref: str) -> str:
    """The name an input is uploaded under: its own, tagged with the ledger's ref.

    The tag lets a lost upload be told apart from another upload of a same-named file.
    """
    return f"{path.stem}.{ref}{path.suffix}"


def upload_file(client: OpenAI, path: Path, name: str | None = None) -> str:
    """Upload a JSONL input (purpose `batch`) as `name` and return its file id."""
    name = name or path.name
    request = {"path": str(path), "name": name, "purpose": "batch"}
    log.info("UPLOAD request=%s", json.dumps(request))
    size = path.stat().st_size
    since = time.time() - CLOCK_SKEW_SECONDS

    def upload() -> str:
        # An open binary file is streamed by the SDK; a Path or bytes would be read whole.
        with path.open("rb") as stream:
            uploaded = _once(client).files.create(file=(name, stream), purpose="batch")
        _log_response("UPLOAD", uploaded.model_dump(mode="json"))
        return uploaded.id

    return _retry_without_duplicates(
        client,
        "UPLOAD",
        upload,
        lambda: find_uploaded_file(client, name, size, since),
    )


def create_batch(
    client: OpenAI,
    file_id: str,
    endpoint: str,
    window: str,
    ref: str,
) -> dict[str, Any]:
    """Create a batch tagged with the ledger's `ref`, never two of them for one call."""
    metadata = {REF_KEY: ref}
    request = {
        "input_file_id": file_id,
        "endpoint": endpoint,
        "completion_window": window,
        "metadata": metadata,
    }
    log.info("CREATE_BATCH request=%s", json.dumps(request))
    since = time.time() - CLOCK_SKEW_SECONDS

    def create() -> dict[str, Any]:
        batch = _once(client).batches.create(
            input_file_id=file_id,
            endpoint=endpoint,  # type: ignore[arg-type]  # the CLI passes what the user typed
            completion_window=window,  # type: ignore[arg-type]
            metadata=metadata,
        )
        result = batch.model_dump(mode="json")
        _log_response("CREATE_BATCH", result)
        return result

    return _retry_without_duplicates(
        client,
        "CREATE_BATCH",
        create,
        lambda: find_batches_by_ref(client, {ref}, since).get(ref),
    )


def _once(client: OpenAI) -> OpenAI:
    return client.with_options(max_retries=0)


def _retry_without_duplicates(
    client: OpenAI,
    operation: str,
    call: Callable[[], _T],
    find_existing: Callable[[], _T | None],
) -> _T:
    """Call an API that makes something, retrying like the SDK, but without duplicates.

    The API takes no idempotency keys, so when a response is lost the SDK's own retry
    would upload a second file or create (and bill) a second batch. Here the SDK does not
    retry; before each retry we look for what the lost attempt may already have made.
    """
    retries = client.max_retries
    for attempt in range(retries + 1):
        try:
            with api_errors(operation):
                return call()
        except Transient as exc:
            if attempt == retries:
                raise
            pause = _retry_pause(attempt, exc)
            log.warning(
                "%s attempt %d/%d failed; checking whether it went through, retrying in %.1fs",
                operation,
                attempt + 1,
                retries + 1,
                pause,
            )
            time.sleep(pause)
            try:
                found = find_existing()
            except BatchledgerError:
                raise exc from exc.__cause__  # the first failure is the one to report
            if found is not None:
                log.info("%s found what the failed attempt had made; not repeating it", operation)
                return found
    raise AssertionError("unreachable")


def _retry_pause(attempt: int, exc: ApiError) -> float:
    """Seconds to wait: the server's Retry-After if it sent one, else exponential backoff."""
    if exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_AFTER_SECONDS)
    backoff: float = min(INITIAL_RETRY_SECONDS * 2**attempt, MAX_RETRY_SECONDS)
    return backoff * random.uniform(0.75, 1.0)


def get_batch_status(client: OpenAI, batch_id: str) -> dict[str, Any]:
    log.info("GET_STATUS request=%s", json.dumps({"batch_id": batch_id}))
    with api_errors("GET_STATUS"):
        # The response's own JSON, as the API sent it: building the SDK's Batch model and
        # dumping it back to a dict would cost a sweep a sixth of its CPU per batch
        # (bench/sweep.py), and give the same dict less any field the API left out.
        response = client.batches.with_raw_response.retrieve(batch_id)
    result = _batch_json("GET_STATUS", response.content)
    _log_response("GET_STATUS", result)
    return result


def _batch_json(operation: str, body: bytes) -> dict[str, Any]:
    """A Batch object from a response body; an ApiError if the body is not one."""
    try:
        batch = json.loads(body)
    except ValueError:
        batch = None
    if not isinstance(batch, dict) or "id" not in batch or "status" not in batch:
        log.error("%s returned something that is not a batch: %r", operation, body[:2000])
        raise ApiError(f"{operation} returned something that is not a batch object")
    return batch


def download_results(
    client: OpenAI, file_id: str, out_path: Path, operation: str = "DOWNLOAD_RESULTS"
) -> Saved:
    """Stream file `file_id` to `out_path` atomically (savefile.py); its byte count and sha256.

    A body that breaks off, or ends short of its announced size, is fetched again, a
    bounded number of times.
    """
    log.info("%s request=%s", operation, json.dumps({"file_id": file_id, "path": str(out_path)}))
    for leftover, size in prepare_target(out_path):
        log.warning("%s removed %s (%d bytes), left by a killed run", operation, leftover, size)
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            saved = _download_once(client, file_id, out_path, operation)
        except (_DroppedBody, Incomplete) as exc:
            log.warning("%s attempt %d/%d dropped: %s", operation, attempt, DOWNLOAD_ATTEMPTS, exc)
            if attempt == DOWNLOAD_ATTEMPTS:
                raise Transient(
                    f"{operation} of {file_id} broke off {DOWNLOAD_ATTEMPTS} times ({exc}); "
                    "nothing was saved, run the command again"
                ) from exc
            continue
        log.info("%s saved path=%s bytes=%d", operation, out_path, saved.size)
        return saved
    raise AssertionError("unreachable")


class _DroppedBody(Exception):
    """The response body ended before all its bytes arrived."""


def _download_once(client: OpenAI, file_id: str, out_path: Path, operation: str) -> Saved:
    with (
        api_errors(operation),
        # Uncompressed, so the bytes saved are the bytes announced (and sent by the API).
        client.files.with_streaming_response.content(
            file_id, extra_headers={"Accept-Encoding": "identity"}
        ) as response,
    ):
        announced = response.headers.get("content-length")
        saved = save_chunks(
            out_path,
            _chunks(response.iter_bytes()),
            int(announced) if announced is not None else None,
        )
    log.info(
        "%s response=%s",
        operation,
        json.dumps({"file_id": file_id, "status_code": response.status_code, "bytes": saved.size}),
    )
    return saved


def _chunks(body: Iterator[bytes]) -> Iterator[bytes]:
    """The body's chunks as the transport reads them; a connection lost midway is _DroppedBody.

    No chunk size is asked for: that makes the HTTP library copy every read through a
    buffer (bench/transfer.py).
    """
    try:
        for chunk in body:
            if STOP_DOWNLOADS.is_set():
                raise KeyboardInterrupt
            yield chunk
    except (httpx2.TransportError, openai.APIConnectionError) as exc:
        raise _DroppedBody(_root_cause(exc) or "connection lost") from exc


def cancel_batch(client: OpenAI, batch_id: str) -> dict[str, Any] | None:
    """Ask to cancel a batch; None if it is past cancelling (the API answers 409)."""
    log.info("CANCEL_BATCH request=%s", json.dumps({"batch_id": batch_id}))

    def cancel() -> dict[str, Any]:
        result = _once(client).batches.cancel(batch_id).model_dump(mode="json")
        _log_response("CANCEL_BATCH", result)
        return result

    try:
        # The SDK would retry the 409 of a finished batch; here only transient errors are.
        return _retry_without_duplicates(client, "CANCEL_BATCH", cancel, lambda: None)
    except Conflict:
        return None


def list_batches(client: OpenAI) -> Iterator[dict[str, Any]]:
    """Every batch of the account, newest first, page by page."""
    log.info("LIST_BATCHES request=%s", json.dumps({"limit": 100}))
    with api_errors("LIST_BATCHES"):
        page = client.batches.list(limit=100)
        while True:
            batches = [batch.model_dump(mode="json") for batch in page.data]
            _log_response("LIST_BATCHES", {"data": batches, "has_more": page.has_more})
            yield from batches
            if not page.has_next_page():
                return
            page = page.get_next_page()


def find_batches_by_ref(client: OpenAI, refs: set[str], since: float) -> dict[str, dict[str, Any]]:
    """The account's batches tagged with any of the ledger `refs`, made since `since`."""
    log.info("LIST_BATCHES request=%s", json.dumps({"refs": sorted(refs), "since": since}))
    found: dict[str, dict[str, Any]] = {}
    seen = 0
    with api_errors("LIST_BATCHES"):
        # Newest first: stop paging once batches are older than the submissions.
        for batch in client.batches.list(limit=100):
            if batch.created_at < since or len(found) == len(refs):
                break
            seen += 1
            ref = (batch.metadata or {}).get(REF_KEY)
            if ref in refs and ref not in found:
                found[ref] = batch.model_dump(mode="json")
    log.info("LIST_BATCHES response=%s", json.dumps({"seen": seen, "found": found}))
    return found


def find_uploaded_file(client: OpenAI, filename: str, size: int, since: float) -> str | None:
    """An upload of `filename` with `size` bytes made since `since` whose answer was lost."""
    log.info(
        "LIST_FILES request=%s",
        json.dumps({"purpose": "batch", "filename": filename, "bytes": size}),
    )
    with api_errors("LIST_FILES"):
        for file in client.files.list(purpose="batch", order="desc", limit=100):
            if file.created_at < since:
                break
            if file.filename == filename and file.bytes == size:
                _log_response("LIST_FILES", file.model_dump(mode="json"))
                return file.id
    log.info("LIST_FILES response=%s", json.dumps({"match": None}))
    return None


def file_exists(client: OpenAI, file_id: str) -> bool:
    log.info("GET_FILE request=%s", json.dumps({"file_id": file_id}))
    try:
        with api_errors("GET_FILE"):
            found = client.files.retrieve(file_id)
    except NotFound:
        return False
    _log_response("GET_FILE", found.model_dump(mode="json"))
    return True
