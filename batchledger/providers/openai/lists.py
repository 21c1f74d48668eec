"""The OpenAI SDK's listings: a sweep's pages of batches by id, every batch of an account
(sync), and the searches for a create or an upload whose answer was lost.
"""

import json
import logging
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from openai import OpenAI

from batchledger.batches import REF_KEY
from batchledger.errors import BatchledgerError, Rejected
from batchledger.providers import Listed, Search, Uploaded
from batchledger.providers.openai.wire import (
    _is_batch,
    _log_response,
    _page_json,
    _server_time,
    api_errors,
)

log = logging.getLogger("batchledger")

# A lost upload or create is looked for back to a moment of the server's own clock (never
# the local one, which may be minutes off), less this margin for its services' clocks.
SERVER_CLOCK_MARGIN_SECONDS = 300
# Where no such moment is known, at most this many of the newest batches (or files).
SEARCH_LIMIT = 2000
# The most a list request may ask for (the API's limit is 100).
LIST_PAGE = 100


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
