"""Anthropic's Message Batches as a provider, through the official `anthropic` SDK: every
API call, its log records, and SDK errors turned into ours (wire.py).

Message Batches take their requests inline and carry no metadata, so two steps differ
from OpenAI's:

- "Upload" uploads nothing: it checks the lines (inline.scan_requests: a line of another
  shape is refused, exit 2, before anything is sent) and reads the server's clock (the
  Date of a one-item listing). Its `Uploaded` names that moment and the request count,
  `inline:<requests>@<server epoch>`: the ledger records it where an upload's file id
  goes, so a create cut off after it is looked for, by a later run too, among the
  batches made since (lost_create.py), and one cut off before it made no batch.
- A create whose answer is lost is found by that moment and the request count: exactly
  one batch of the account made since, not in the ledger, with as many requests is
  ours; none (the listing reached back past the moment) means none was made, and it is
  sent again; more than one stops with exit 3, naming them.

Imported only by commands that talk to the API: importing `anthropic` costs start-up time.
"""

import json
import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anthropic
import httpx2
from anthropic import Anthropic

from batchledger.errors import (
    ApiError,
    BatchledgerError,
    NotFound,
    Rejected,
    Transient,
    UsageError,
)
from batchledger.inline import Scanned, create_batch_streaming, line_blocks, scan_requests
from batchledger.lost_create import Ambiguous, Found, match_lost_create
from batchledger.profiles import Profile
from batchledger.providers import (
    Inline,
    Listed,
    Search,
    Uploaded,
    downloads_stopped,
    retry_without_duplicates,
)
from batchledger.providers.anthropic.wire import (
    KEY_VARIABLES,
    api_errors,
    batch_id_of_results,
    log_response,
    root_cause,
    server_time,
    to_batch,
)
from batchledger.result_lines import INPUT_HEAD
from batchledger.result_lines import outcome as result_of_line
from batchledger.savefile import Incomplete, Saved, prepare_target, save_chunks
from batchledger.split import Segments

if TYPE_CHECKING:
    from batchledger.accounts import Account

log = logging.getLogger("batchledger")
_T = TypeVar("_T")

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
BATCHES = "/v1/messages/batches"
INLINE_PREFIX = "inline:"
LIST_PAGE = 100  # the API's most is 1000; a sweep rarely needs more than the newest
DOWNLOAD_ATTEMPTS = 3


def inline_id(requests: int, server_epoch: int, first_id: str | None) -> str:
    """What the ledger records for a create's requests: their count, the server's clock
    just before they were sent, and the first request's custom_id (a `/` is in none)."""
    return f"{INLINE_PREFIX}{requests}@{server_epoch}" + (f"/{first_id}" if first_id else "")


def parse_inline_id(value: str) -> tuple[int, int, str | None] | None:
    """(requests, server epoch, first custom_id) of an `inline_id`; None for anything else."""
    if not value.startswith(INLINE_PREFIX):
        return None
    head, _, first_id = value[len(INLINE_PREFIX) :].partition("/")
    count, _, moment = head.partition("@")
    try:
        return int(count), int(moment), first_id or None
    except ValueError:
        return None


def first_custom_id(path: Path, ranges: Sequence[tuple[int, int]]) -> str | None:
    """The custom_id of the first request line of `ranges` (checked by the scan already)."""
    with Segments(path, ranges) as stream:
        for _, block in line_blocks(stream):
            for line in block.split(b"\n"):
                if line.strip():
                    found = INPUT_HEAD.match(line)
                    if found is not None:
                        return found.group(1).decode()
                    custom_id = json.loads(line).get("custom_id")  # params first: parsed
                    return custom_id if isinstance(custom_id, str) else None
    return None


class AnthropicProvider:
    """The provider of an `anthropic` account (or an emulator account of that flavor)."""

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
        self.base_url = str(self.client.base_url)
        self.profile: Profile = account.profile
        self.location: str = account.location
        # The scan of what `upload` checked, for the create that sends it.
        self._scanned: dict[tuple[str, tuple[tuple[int, int], ...]], Scanned] = {}

    # --- sending ---------------------------------------------------------------------

    def upload(
        self,
        path: Path,
        name: str,
        *,
        expires_after: int | None = None,
        ranges: Sequence[tuple[int, int]] | None = None,
    ) -> Uploaded:
        """Nothing is uploaded: the lines are checked, and the server's clock read."""
        ranges = list(ranges) if ranges is not None else [(0, path.stat().st_size)]
        scanned = scan_requests(path, ranges)
        self._scanned[(str(path), tuple(ranges))] = scanned
        request = {"path": str(path), "name": name, "requests": scanned.requests}
        log.info("CHECK_REQUESTS request=%s", json.dumps({**request, "bytes": scanned.size}))
        moment = self._server_clock()
        first_id = first_custom_id(path, ranges)
        uploaded = Uploaded(inline_id(scanned.requests, moment, first_id), moment)
        log_response("CHECK_REQUESTS", {"id": uploaded.id, "server_time": moment})
        return uploaded

    def _server_clock(self) -> int:
        """The server's time now, by the Date of the cheapest request there is."""
        log.info("SERVER_TIME request=%s", json.dumps({"limit": 1}))
        with api_errors("SERVER_TIME", self.client):
            response = self.client.get(
                BATCHES, cast_to=httpx2.Response, options={"params": {"limit": 1}}
            )
        moment = server_time(response.headers.get("date"))
        if moment is None:
            raise ApiError("the API's answer had no Date: the server's clock cannot be read")
        return int(moment)

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
        """Send the requests of `inline`, never two batches of them for one call.

        `file_id` is what `upload` answered (the request count and the server's clock just
        before); `exclude`: the account's batches the ledger holds.
        """
        if inline is None:
            raise UsageError(f"{self.profile.name} batches are made from their requests inline")
        if endpoint:
            raise UsageError("--endpoint does not apply to Message Batches: leave it out")
        ranges = list(inline.ranges)
        scanned = self._scanned.pop((str(inline.path), tuple(ranges)), None)
        if scanned is None:
            scanned = scan_requests(inline.path, ranges)
        since = file_created_at if file_created_at is not None else self._server_clock()
        request = {
            "path": str(inline.path),
            "ranges": len(ranges),
            "requests": scanned.requests,
            "bytes": scanned.body_length,
            "since": since,
        }
        log.info("CREATE_BATCH request=%s", json.dumps(request))

        def create() -> dict[str, Any]:
            created = create_batch_streaming(self.client, inline.path, ranges, scanned=scanned)
            log_response("CREATE_BATCH", created)
            return to_batch(created, self.profile, self.base_url)

        def find_lost() -> dict[str, Any] | None:
            first_id = first_custom_id(inline.path, ranges)
            outcome = self._match(since, scanned.requests, set(exclude), first_id)
            if isinstance(outcome, Ambiguous):
                raise outcome.refusal()
            return outcome.batch if isinstance(outcome, Found) else None  # type: ignore[return-value]

        return self._retry_without_duplicates("CREATE_BATCH", create, find_lost)

    def _match(
        self, since: int, count: int, known: set[str], first_id: str | None = None
    ) -> Found | Any:
        """What became of a create of `count` requests begun at `since` (server clock).

        Where the clock and the count leave several candidates (two creates of as many
        requests cut off at once: parts of one job), the results of those that have
        ended tell them apart: ours is the one that answered our first request's
        custom_id, if every other has ended without it."""
        moment = datetime.fromtimestamp(since, UTC)
        outcome = match_lost_create(self._pages("LIST_BATCHES"), moment, count, known)
        if isinstance(outcome, Ambiguous) and first_id is not None:
            answered = {
                batch_id: self._answers(batch_id, first_id) for batch_id in outcome.candidates
            }
            holding = [batch_id for batch_id, yes in answered.items() if yes]
            if len(holding) == 1 and None not in answered.values():
                outcome = Found(self.get(holding[0]))
        elif isinstance(outcome, Found):
            outcome = Found(to_batch(outcome.batch, self.profile, self.base_url))
        log.info(
            "FIND_CREATE response=%s",
            json.dumps({"since": since, "requests": count, "outcome": type(outcome).__name__}),
        )
        return outcome

    def _retry_without_duplicates(
        self,
        operation: str,
        call: Callable[[], _T],
        find_existing: Callable[[], _T | None],
    ) -> _T:
        """providers.retry_without_duplicates, with this client's retries and error mapping."""
        return retry_without_duplicates(
            operation,
            call,
            find_existing,
            retries=self.client.max_retries,
            errors=lambda name: api_errors(name, self.client),
        )

    def _answers(self, batch_id: str, custom_id: str) -> bool | None:
        """Whether a batch's results answer `custom_id`; None while it has none to read."""
        url = self.get(batch_id)["results_url"]
        if not url:
            return None
        wanted = custom_id.encode()
        log.info("FIND_CREATE request=%s", json.dumps({"batch_id": batch_id, "results": url}))
        with api_errors("FIND_CREATE", self.client):
            response = self.client.get(
                url,
                cast_to=httpx2.Response,
                options={"headers": {"Accept": "application/binary"}},
                stream=True,
            )
            try:
                return any(
                    result_of_line(line.encode())[0] == wanted for line in response.iter_lines()
                )
            finally:
                response.close()

    # --- looking up ------------------------------------------------------------------

    def get(self, batch_id: str) -> dict[str, Any]:
        log.info("GET_STATUS request=%s", json.dumps({"batch_id": batch_id}))
        with api_errors("GET_STATUS", self.client):
            response = self.client.get(f"{BATCHES}/{batch_id}", cast_to=httpx2.Response)
        message_batch = _json_object("GET_STATUS", response)
        log_response("GET_STATUS", message_batch)
        return to_batch(message_batch, self.profile, self.base_url)

    def _pages(self, operation: str) -> Iterator[dict[str, Any]]:
        """Every Message Batch of the account, newest first, as the API lists them."""
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": LIST_PAGE}
            if after is not None:
                params["after_id"] = after
            log.info("%s request=%s", operation, json.dumps(params))
            with api_errors(operation, self.client):
                response = self.client.get(
                    BATCHES, cast_to=httpx2.Response, options={"params": params}
                )
            page = _json_object(operation, response)
            items = page.get("data")
            if not isinstance(items, list):
                raise ApiError(f"{operation} returned something that is not a list page")
            log.info(
                "%s response=%s",
                operation,
                json.dumps(
                    {"ids": [item.get("id") for item in items], "has_more": page.get("has_more")}
                ),
            )
            yield from items
            cursor = page.get("last_id")
            if not page.get("has_more") or not isinstance(cursor, str) or cursor == after:
                return
            after = cursor

    def list_by_id(self, wanted: Collection[str], since: float | None, max_pages: int) -> Listed:
        found: dict[str, dict[str, Any]] = {}
        seen = 0
        try:
            for item in self._pages("LIST_BATCHES"):
                seen += 1
                if item.get("id") in wanted:
                    found[item["id"]] = to_batch(item, self.profile, self.base_url)
                if len(found) == len(wanted) or seen >= max_pages * LIST_PAGE:
                    break
        except BatchledgerError as exc:
            return Listed(found, -(-seen // LIST_PAGE), exc)
        return Listed(found, max(1, -(-seen // LIST_PAGE)), None)

    def list_all(self) -> Iterator[dict[str, Any]]:
        for item in self._pages("LIST_BATCHES"):
            yield to_batch(item, self.profile, self.base_url)

    def find_batches(
        self, wanted: Mapping[str, str | None], since: float | None, exclude: Collection[str] = ()
    ) -> Search:
        """The batches cut-off creates made (ref -> what `upload` answered for them), by the
        server's clock and the request count; `exclude`: the batches the ledger holds.

        A create whose match is ambiguous is not found, the search not complete, and its
        candidates named in `ambiguous`: nothing may be sent again for it.
        """
        found: dict[str, dict[str, Any]] = {}
        complete = True
        ambiguous: list[str] = []
        known = set(exclude)
        for ref, inline in sorted(wanted.items()):
            parsed = parse_inline_id(inline or "")
            if parsed is None:
                complete = False
                continue
            count, moment, first_id = parsed
            outcome = self._match(moment, count, known, first_id)
            if isinstance(outcome, Found):
                found[ref] = outcome.batch  # type: ignore[assignment]
                known.add(outcome.batch["id"])
            elif isinstance(outcome, Ambiguous):
                complete = False
                ambiguous += outcome.candidates
        return Search(found, complete, tuple(ambiguous))

    def find_upload(self, filename: str, size: int, max_age: float | None) -> Uploaded | None:
        return None  # nothing was uploaded: the check is made again

    def cancel(self, batch_id: str) -> dict[str, Any] | None:
        """Ask to cancel; None if the batch has ended (the API answers 400)."""
        log.info("CANCEL_BATCH request=%s", json.dumps({"batch_id": batch_id}))
        try:
            with api_errors("CANCEL_BATCH", self.client):
                response = self.client.post(f"{BATCHES}/{batch_id}/cancel", cast_to=httpx2.Response)
        except NotFound:
            raise
        except Rejected:
            if self.get(batch_id)["processing_status"] == "ended":
                return None
            raise
        message_batch = _json_object("CANCEL_BATCH", response)
        log_response("CANCEL_BATCH", message_batch)
        return to_batch(message_batch, self.profile, self.base_url)

    # --- results ---------------------------------------------------------------------

    def download(self, file_id: str, out_path: Path, operation: str = "DOWNLOAD_RESULTS") -> Saved:
        """Stream the results at `file_id` (the batch's results URL) to `out_path` atomically.

        The lines come in any order: batch.py puts them in the input's order after."""
        log.info("%s request=%s", operation, json.dumps({"url": file_id, "path": str(out_path)}))
        for leftover, size in prepare_target(out_path):
            log.warning("%s removed %s (%d bytes), left by a killed run", operation, leftover, size)
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                saved = self._download_once(file_id, out_path, operation)
            except (_DroppedBody, Incomplete) as exc:
                log.warning(
                    "%s attempt %d/%d dropped: %s", operation, attempt, DOWNLOAD_ATTEMPTS, exc
                )
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise Transient(
                        f"{operation} of {file_id} broke off {DOWNLOAD_ATTEMPTS} times ({exc}); "
                        "nothing was saved, run the command again"
                    ) from exc
                continue
            log.info("%s saved path=%s bytes=%d", operation, out_path, saved.size)
            return saved
        raise AssertionError("unreachable")

    def _download_once(self, url: str, out_path: Path, operation: str) -> Saved:
        headers = {"Accept": "application/binary", "Accept-Encoding": "identity"}
        with api_errors(operation, self.client):
            response = self.client.get(
                url, cast_to=httpx2.Response, options={"headers": headers}, stream=True
            )
        try:
            announced = response.headers.get("content-length")
            with api_errors(operation, self.client):
                saved = save_chunks(
                    out_path,
                    _chunks(response.iter_bytes()),
                    int(announced) if announced is not None else None,
                )
        finally:
            response.close()
        log.info(
            "%s response=%s",
            operation,
            json.dumps({"url": url, "status_code": response.status_code, "bytes": saved.size}),
        )
        return saved

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        """What `upload` answered (its moment), or the results of a batch (None once the
        batch is deleted)."""
        parsed = parse_inline_id(file_id)
        if parsed is not None:
            return {"id": file_id, "created_at": parsed[1], "bytes": None}
        batch_id = batch_id_of_results(file_id)
        if batch_id is None:
            return None
        try:
            batch = self.get(batch_id)
        except NotFound:
            return None
        return {"id": file_id, "created_at": batch["created_at"], "bytes": None}

    def delete_file(self, file_id: str) -> bool:
        """Delete the batch whose results `file_id` is (prune); False if it is gone already.
        Nothing was uploaded, so there is nothing else to delete."""
        batch_id = batch_id_of_results(file_id)
        if batch_id is None:
            return False
        log.info("DELETE_BATCH request=%s", json.dumps({"batch_id": batch_id}))
        try:
            with api_errors("DELETE_BATCH", self.client):
                response = self.client.delete(f"{BATCHES}/{batch_id}", cast_to=httpx2.Response)
        except NotFound:
            return False
        log_response("DELETE_BATCH", _json_object("DELETE_BATCH", response))
        return True

    def close(self) -> None:
        self.client.close()


def make_client(
    account: "Account", *, max_retries: int = 2, timeout: float = 600.0, base_url: str | None = None
) -> Anthropic:
    """The client of one account; its key comes from the account's environment variable.

    `base_url` overrides the account's (an emulator account's server, on its own port)."""
    if account.kind == "emulator":
        return Anthropic(
            api_key="emulator", base_url=base_url, max_retries=max_retries, timeout=timeout
        )
    variable = account.api_key_env or "ANTHROPIC_API_KEY"
    key = account.key()
    if not key:
        raise UsageError(
            f"{variable} is not set (the key of account {account.name!r}); "
            "export your API key first"
        )
    if not key.isascii() or not key.isprintable() or key != key.strip():
        raise UsageError(
            f"{variable} holds spaces, line breaks or non-ASCII characters; export the key alone"
        )
    client = Anthropic(
        api_key=key,
        base_url=account.base_url or ANTHROPIC_BASE_URL,
        max_retries=max_retries,
        timeout=timeout,
    )
    KEY_VARIABLES[client] = f"{variable} (the key of account {account.name!r})"
    return client


def _json_object(operation: str, response: httpx2.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        value = None
    if not isinstance(value, dict) or ("id" not in value and "data" not in value):
        log.error("%s returned something that is not JSON: %r", operation, response.content[:2000])
        raise ApiError(f"{operation} returned something that is not a Message Batch")
    return value


class _DroppedBody(Exception):
    """The response body ended before all its bytes arrived."""


def _chunks(body: Iterator[bytes]) -> Iterator[bytes]:
    try:
        for chunk in body:
            if downloads_stopped():
                raise KeyboardInterrupt
            yield chunk
    except (httpx2.TransportError, anthropic.APIConnectionError) as exc:
        raise _DroppedBody(root_cause(exc) or "connection lost") from exc
