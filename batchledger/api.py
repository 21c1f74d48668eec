"""The OpenAI client: every API call, its log records, and SDK errors turned into ours.

Imported only by commands that talk to the API: importing `openai` costs about a second.
"""

import json
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, TypeVar

import httpx2
import openai
from openai import AzureOpenAI, OpenAI

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
from batchledger.redaction import redact
from batchledger.savefile import Incomplete, Saved, prepare_target, save_chunks

if TYPE_CHECKING:
    from batchledger.accounts import Account

log = logging.getLogger("batchledger")
# Set when the user interrupts a run whose downloads go on in worker threads (a sweep):
# each stops at its next chunk. The main thread gets KeyboardInterrupt by itself.
STOP_DOWNLOADS = threading.Event()
_T = TypeVar("_T")

# A lost upload or create is looked for back to a moment of the server's own clock (never
# the local one, which may be minutes off), less this margin for its services' clocks.
SERVER_CLOCK_MARGIN_SECONDS = 300
# Where no such moment is known, at most this many of the newest batches (or files).
SEARCH_LIMIT = 2000
# The most a list request may ask for (the API's limit is 100).
LIST_PAGE = 100
INITIAL_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 8.0
MAX_RETRY_AFTER_SECONDS = 120.0
# A body that drops midway is not retried by the SDK (it has already returned the
# response), so downloads retry on their own, a bounded number of times.
DOWNLOAD_ATTEMPTS = 3
# The variable each client's key came from, and its account: an HTTP 401 names them.
_KEY_VARIABLES: "weakref.WeakKeyDictionary[OpenAI, str]" = weakref.WeakKeyDictionary()


def make_client(
    account: "Account",
    *,
    max_retries: int = 2,
    timeout: float = 600.0,
    base_url: str | None = None,
) -> OpenAI:
    """The client of one account; its key comes from the account's environment variable.

    `base_url` overrides the account's (the emulator of a `demo` account, on its own port).
    """
    if account.kind == "emulator":
        return OpenAI(
            api_key="emulator", base_url=base_url, max_retries=max_retries, timeout=timeout
        )
    variable = account.api_key_env or "OPENAI_API_KEY"
    key = account.key()
    named = "" if account.name == "default" else f" (the key of account {account.name!r})"
    if not key:
        raise UsageError(f"{variable} is not set{named}; export your API key first")
    # A pasted key with a stray space or newline would otherwise fail deep in the HTTP
    # library, with the key itself in the error text.
    if not key.isascii() or not key.isprintable() or key != key.strip():
        raise UsageError(
            f"{variable} holds spaces, line breaks or non-ASCII characters; export the key alone"
        )
    client: OpenAI
    if account.kind == "azure":
        assert account.endpoint is not None  # accounts.py requires it of an azure account
        client = AzureOpenAI(
            azure_endpoint=account.endpoint,
            api_version=account.api_version,
            api_key=key,
            max_retries=max_retries,
            timeout=timeout,
        )
    elif account.name == "default":
        # Exactly as before accounts: the SDK reads OPENAI_API_KEY, OPENAI_BASE_URL and its
        # other OPENAI_* variables itself.
        client = OpenAI(max_retries=max_retries, timeout=timeout)
    else:
        client = OpenAI(
            api_key=key, base_url=account.base_url, max_retries=max_retries, timeout=timeout
        )
    _KEY_VARIABLES[client] = variable + named
    return client


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


def upload_name(path: Path, ref: str) -> str:
    """The name an input is uploaded under: its own stem, tagged with the ledger's ref.

    The tag lets a lost upload be told apart from another upload of a same-named file.
    The suffix is always .jsonl: the API refuses a batch input named otherwise.
    """
    return f"{path.stem}.{ref}.jsonl"


class Uploaded(NamedTuple):
    id: str
    created_at: int  # by the server's clock


def upload_file(
    client: OpenAI,
    path: Path,
    name: str,
    expires_after: int | None = None,
    ranges: Sequence[tuple[int, int]] | None = None,
) -> Uploaded:
    """Upload a JSONL input (purpose `batch`) as `name`; its file id and creation time.

    `expires_after`: seconds after which the API deletes it (else the API's default).
    `ranges`: only these byte ranges of the file, in order (a part of a job, the lines a
    retry sends again), streamed from the file itself: no copy is made on disk.
    """
    expiry = {"expires_after": expiry_policy(expires_after)} if expires_after else {}
    size = path.stat().st_size if ranges is None else sum(end - start for start, end in ranges)
    request: dict[str, Any] = {"path": str(path), "name": name, "purpose": "batch", **expiry}
    if ranges is not None:
        request["ranges"] = len(ranges)
        request["bytes"] = size
    log.info("UPLOAD request=%s", json.dumps(request))
    started = time.monotonic()

    def opened() -> BinaryIO:
        if ranges is None:
            return path.open("rb")
        from batchledger.split import Segments

        return Segments(path, ranges)  # type: ignore[return-value]  # a readable binary stream

    def upload() -> Uploaded:
        # An open binary file is streamed by the SDK; a Path or bytes would be read whole.
        with opened() as stream:
            uploaded = _once(client).files.create(
                file=(name, stream),
                purpose="batch",
                **expiry,  # type: ignore[arg-type]  # a plain dict of the TypedDict's shape
            )
        _log_response("UPLOAD", uploaded.model_dump(mode="json"))
        return Uploaded(uploaded.id, uploaded.created_at)

    def find_lost() -> Uploaded | None:
        # Bounded by the server's clock: no older than this call, as the server counts.
        return find_uploaded_file(client, name, size, time.monotonic() - started)

    return _retry_without_duplicates(
        client,
        "UPLOAD",
        upload,
        find_lost,
        "the same create run again finds the upload if it arrived",
    )


def create_batch(
    client: OpenAI,
    file_id: str,
    endpoint: str,
    window: str,
    ref: str,
    *,
    file_created_at: int | None,
    user_metadata: Mapping[str, str] | None = None,
    output_expires_after: int | None = None,
    exclude: Collection[str] = (),
) -> dict[str, Any]:
    """Create a batch tagged with the ledger's `ref`, never two of them for one call.

    A create whose answer is lost is looked for among the batches made since its input
    file was (`file_created_at`, by the server's clock), never by the local clock.
    """
    metadata = {**(user_metadata or {}), REF_KEY: ref}
    expiry = (
        {"output_expires_after": expiry_policy(output_expires_after)}
        if output_expires_after
        else {}
    )
    request = {
        "input_file_id": file_id,
        "endpoint": endpoint,
        "completion_window": window,
        "metadata": metadata,
        **expiry,
    }
    log.info("CREATE_BATCH request=%s", json.dumps(request))

    def create() -> dict[str, Any]:
        batch = _once(client).batches.create(
            input_file_id=file_id,
            endpoint=endpoint,  # type: ignore[arg-type]  # the CLI passes what the user typed
            completion_window=window,  # type: ignore[arg-type]
            metadata=metadata,
            **expiry,  # type: ignore[arg-type]  # a plain dict of the TypedDict's shape
        )
        result = batch.model_dump(mode="json")
        _log_response("CREATE_BATCH", result)
        return result

    def find_lost() -> dict[str, Any] | None:
        search = find_batches(client, {ref: file_id}, file_created_at, exclude)
        return search.found.get(ref)

    return _retry_without_duplicates(client, "CREATE_BATCH", create, find_lost)


def expiry_policy(seconds: int) -> dict[str, Any]:
    """The API's expiry object: so many seconds after the file (or batch) was made."""
    return {"anchor": "created_at", "seconds": seconds}


def _once(client: OpenAI) -> OpenAI:
    return client.with_options(max_retries=0)


def _retry_without_duplicates(
    client: OpenAI,
    operation: str,
    call: Callable[[], _T],
    find_existing: Callable[[], _T | None],
    found_later: str = "'batchledger status --all' records it if it did",
) -> _T:
    """Call an API that makes something, retrying like the SDK, but without duplicates.

    The API takes no idempotency keys, so when a response is lost the SDK's own retry
    would upload a second file or create (and bill) a second batch. Here the SDK does not
    retry; before each retry we look for what the lost attempt may already have made.
    """
    retries = client.max_retries
    for attempt in range(retries + 1):
        try:
            with api_errors(operation, client):
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
            except BatchledgerError as check:
                # Trying again blind could make (and bill) a second batch: stop instead.
                log.error("%s: could not check whether it went through: %s", operation, check)
                raise Transient(
                    f"{exc.message}; whether it went through could not be checked "
                    f"({check.message}), so it was not tried again ({found_later})",
                    status=exc.status,
                    code=exc.code,
                ) from exc
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
    with api_errors("GET_STATUS", client):
        # The response's own JSON, as the API sent it: building the SDK's Batch model and
        # dumping it back to a dict would cost a sweep a sixth of its CPU per batch
        # (bench/sweep.py), and give the same dict less any field the API left out.
        response = client.batches.with_raw_response.retrieve(batch_id)
    result = _batch_json("GET_STATUS", response.content)
    _log_response("GET_STATUS", result)
    return result


class Listed(NamedTuple):
    batches: dict[str, dict[str, Any]]  # batch id -> the batch as the listing showed it
    pages: int  # pages read
    error: BatchledgerError | None  # why the listing stopped short, if it did


def list_batches_by_id(
    client: OpenAI, wanted: Collection[str], since: float | None, max_pages: int
) -> Listed:
    """The batches of `wanted` (ids) among the account's newest, a page of LIST_PAGE at a time.

    A sweep reads its batches this way when a look-up each would cost more round trips:
    the pages hold the same Batch objects a look-up returns (an item without the fields
    the API's spec requires of a Batch is left out, to be looked up). It reads back to
    `since` (the oldest wanted batch's created_at) less a margin, and at most `max_pages`
    pages. What it does not find (older, or a listing that failed) the sweep looks up one
    by one, so a provider that cannot list, or lists in another order, costs requests,
    never a batch.
    """
    bound = None if since is None else since - SERVER_CLOCK_MARGIN_SECONDS
    found: dict[str, dict[str, Any]] = {}
    after: str | None = None
    pages = 0
    while pages < max_pages:
        request: dict[str, Any] = {"limit": LIST_PAGE}
        if after is not None:
            request["after"] = after
        log.info("LIST_BATCHES request=%s", json.dumps({**request, "wanted": len(wanted)}))
        try:
            with api_errors("LIST_BATCHES", client):
                body = client.batches.with_raw_response.list(**request).content
            page = _page_json("LIST_BATCHES", body)
        except BatchledgerError as exc:
            log.warning(
                "LIST_BATCHES stopped after %d pages (%s); looking up the rest", pages, exc.message
            )
            return Listed(found, pages, exc)
        pages += 1
        _log_response("LIST_BATCHES", page)
        items = page["data"]
        found.update(
            (item["id"], item) for item in items if _is_batch(item) and item["id"] in wanted
        )
        last = items[-1] if items else None
        cursor = last.get("id") if isinstance(last, dict) else None
        if len(found) == len(wanted) or not page.get("has_more") or not isinstance(cursor, str):
            break
        if cursor == after:  # a provider that ignores the cursor: the same page again
            break
        oldest = last.get("created_at") if isinstance(last, dict) else None
        if bound is not None and isinstance(oldest, int | float) and oldest < bound:
            break
        after = cursor
    return Listed(found, pages, None)


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
        api_errors(operation, client),
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
    with api_errors("LIST_BATCHES", client):
        page = client.batches.list(limit=100)
        while True:
            batches = [batch.model_dump(mode="json") for batch in page.data]
            _log_response("LIST_BATCHES", {"data": batches, "has_more": page.has_more})
            yield from batches
            if not page.has_next_page():
                return
            page = page.get_next_page()


class Search(NamedTuple):
    found: dict[str, dict[str, Any]]  # ref -> the batch its create made
    complete: bool  # every batch back to the bound was looked at: what is not found was not made


def find_batches(
    client: OpenAI,
    wanted: Mapping[str, str | None],
    since: float | None,
    exclude: Collection[str] = (),
) -> Search:
    """The batches that the creates of `wanted` (ref -> input file id) made.

    A batch is known by the ref in its metadata or, where a provider drops metadata, by
    its input file: an upload named with the ref, so no one else's (`exclude`: batches
    already recorded, made by earlier attempts from the same upload). Newest first, back to
    `since` by the server's clock (when each input file was uploaded: a batch is made
    after its input), less a margin; without it, through the newest SEARCH_LIMIT batches.
    """
    log.info(
        "LIST_BATCHES request=%s",
        json.dumps({"wanted": dict(sorted(wanted.items())), "since": since}),
    )
    ref_of_file = {file_id: ref for ref, file_id in wanted.items() if file_id}
    bound = None if since is None else since - SERVER_CLOCK_MARGIN_SECONDS
    found: dict[str, dict[str, Any]] = {}
    seen = 0
    complete = True
    with api_errors("LIST_BATCHES", client):
        for batch in client.batches.list(limit=100):
            if len(found) == len(wanted) or (bound is not None and batch.created_at < bound):
                break
            if bound is None and seen >= SEARCH_LIMIT:
                complete = False
                break
            seen += 1
            if batch.id in exclude:
                continue  # already recorded: an earlier attempt from the same upload
            ref = (batch.metadata or {}).get(REF_KEY)
            if ref is None:  # a provider that drops metadata: known by its input file
                ref = ref_of_file.get(batch.input_file_id)
            if ref is not None and ref in wanted and ref not in found:
                found[ref] = batch.model_dump(mode="json")
    log.info(
        "LIST_BATCHES response=%s",
        json.dumps({"seen": seen, "complete": complete, "found": found}),
    )
    return Search(found, complete)


def find_uploaded_file(
    client: OpenAI, filename: str, size: int, max_age: float | None
) -> Uploaded | None:
    """An upload of `filename` with `size` bytes whose answer was lost.

    Looked for among the files made in the last `max_age` seconds by the server's clock
    (its Date header), less a margin; without it, among the newest SEARCH_LIMIT files.
    """
    log.info(
        "LIST_FILES request=%s",
        json.dumps({"purpose": "batch", "filename": filename, "bytes": size, "max_age": max_age}),
    )
    try:
        with api_errors("LIST_FILES", client):
            raw = client.files.with_raw_response.list(purpose="batch", order="desc", limit=100)
    except Rejected as exc:
        # A provider that cannot list files: the upload cannot be found again, and is made
        # anew. Unlike a second batch, a second file costs nothing and runs nothing.
        log.warning("LIST_FILES refused (%s); uploading again", exc.message)
        return None
    with api_errors("LIST_FILES", client):
        server_now = _server_time(raw.headers.get("date"))
        bound = None
        if max_age is not None and server_now is not None:
            bound = server_now - max_age - SERVER_CLOCK_MARGIN_SECONDS
        for seen, file in enumerate(raw.parse()):
            if (bound is not None and file.created_at < bound) or (
                bound is None and seen >= SEARCH_LIMIT
            ):
                break
            if file.filename == filename and file.bytes == size:
                _log_response("LIST_FILES", file.model_dump(mode="json"))
                return Uploaded(file.id, file.created_at)
    log.info("LIST_FILES response=%s", json.dumps({"match": None}))
    return None


def _server_time(date_header: str | None) -> float | None:
    """The server's clock, from an HTTP Date header; None without a usable one."""
    if not date_header:
        return None
    try:
        return parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return None


def get_file(client: OpenAI, file_id: str) -> dict[str, Any] | None:
    """The file object, or None if the API no longer has it."""
    log.info("GET_FILE request=%s", json.dumps({"file_id": file_id}))
    try:
        with api_errors("GET_FILE", client):
            found = client.files.retrieve(file_id).model_dump(mode="json")
    except NotFound:
        return None
    _log_response("GET_FILE", found)
    return found


def delete_file(client: OpenAI, file_id: str) -> bool:
    """Delete a file from the account; False if the API did not have it (any more).

    Not retried past the SDK: a repeated delete of a deleted file is a 404, which is fine.
    """
    log.info("DELETE_FILE request=%s", json.dumps({"file_id": file_id}))
    try:
        with api_errors("DELETE_FILE", client):
            deleted = client.files.delete(file_id).model_dump(mode="json")
    except NotFound:
        return False
    _log_response("DELETE_FILE", deleted)
    if deleted.get("deleted") is not True:
        raise ApiError(f"DELETE_FILE of {file_id}: the API answered that it was not deleted")
    return True
