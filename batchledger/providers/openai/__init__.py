"""The OpenAI SDK's clients (`OpenAI`, `AzureOpenAI`) as a provider: every API call, its log
records, and SDK errors turned into ours (wire.py); listings and the searches for lost
creates and uploads are in lists.py.

Imported only by commands that talk to the API: importing `openai` costs about a second.
"""

import json
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import httpx2
import openai
from openai import AzureOpenAI, OpenAI

from batchledger.batches import REF_KEY
from batchledger.errors import (
    ApiError,
    Conflict,
    NotFound,
    Transient,
    UsageError,
)
from batchledger.profiles import Profile
from batchledger.providers import (
    Inline,
    Listed,
    Search,
    Uploaded,
    downloads_stopped,
    retry_without_duplicates,
)
from batchledger.providers.openai.lists import (
    find_batches,
    find_uploaded_file,
    list_batches,
    list_batches_by_id,
)
from batchledger.providers.openai.wire import (
    _KEY_VARIABLES,
    _batch_json,
    _log_response,
    _root_cause,
    api_errors,
)
from batchledger.savefile import Incomplete, Saved, prepare_target, save_chunks
from batchledger.split import Segments

if TYPE_CHECKING:
    from batchledger.accounts import Account

log = logging.getLogger("batchledger")
_T = TypeVar("_T")

# A body that drops midway is not retried by the SDK (it has already returned the
# response), so downloads retry on their own, a bounded number of times.
DOWNLOAD_ATTEMPTS = 3


class OpenAIProvider:
    """The provider of an OpenAI, Azure OpenAI, OpenAI-compatible or emulator account."""

    def __init__(
        self,
        account: "Account",
        *,
        max_retries: int,
        timeout: float,
        base_url: str | None = None,
    ) -> None:
        self.client = make_client(
            account, max_retries=max_retries, timeout=timeout, base_url=base_url
        )
        self.profile: Profile = account.profile
        self.location: str = account.location

    def upload(
        self,
        path: Path,
        name: str,
        *,
        expires_after: int | None = None,
        ranges: Sequence[tuple[int, int]] | None = None,
    ) -> Uploaded:
        return upload_file(self.client, path, name, expires_after, ranges)

    def create(
        self,
        file_id: str | None,
        endpoint: str,
        window: str,
        ref: str,
        *,
        file_created_at: int | None,
        user_metadata: Mapping[str, str] | None = None,
        output_expires_after: int | None = None,
        exclude: Collection[str] = (),
        inline: Inline | None = None,
    ) -> dict[str, Any]:
        if file_id is None or inline is not None:
            raise UsageError(f"{self.profile.name} batches are made from an uploaded file")
        return create_batch(
            self.client,
            file_id,
            endpoint,
            window,
            ref,
            file_created_at=file_created_at,
            user_metadata=user_metadata,
            output_expires_after=output_expires_after,
            exclude=exclude,
        )

    def get(self, batch_id: str) -> dict[str, Any]:
        return get_batch_status(self.client, batch_id)

    def list_by_id(self, wanted: Collection[str], since: float | None, max_pages: int) -> Listed:
        return list_batches_by_id(self.client, wanted, since, max_pages)

    def list_all(self) -> Iterator[dict[str, Any]]:
        return list_batches(self.client)

    def find_batches(
        self, wanted: Mapping[str, str | None], since: float | None, exclude: Collection[str] = ()
    ) -> Search:
        return find_batches(self.client, wanted, since, exclude)

    def find_upload(self, filename: str, size: int, max_age: float | None) -> Uploaded | None:
        return find_uploaded_file(self.client, filename, size, max_age)

    def cancel(self, batch_id: str) -> dict[str, Any] | None:
        return cancel_batch(self.client, batch_id)

    def download(self, file_id: str, out_path: Path, operation: str = "DOWNLOAD_RESULTS") -> Saved:
        return download_results(self.client, file_id, out_path, operation)

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        return get_file(self.client, file_id)

    def delete_file(self, file_id: str) -> bool:
        return delete_file(self.client, file_id)

    def close(self) -> None:
        self.client.close()


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
    """providers.retry_without_duplicates, with this client's retries and error mapping."""
    return retry_without_duplicates(
        operation,
        call,
        find_existing,
        retries=client.max_retries,
        errors=lambda name: api_errors(name, client),
        found_later=found_later,
    )


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
            if downloads_stopped():
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
