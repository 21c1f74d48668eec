"""Handlers of Anthropic's /v1/messages/batches endpoints (the anthropic flavour)."""

from __future__ import annotations

from typing import Any

from .errors import anthropic_error, invalid_request
from .message_batches import StoredMessageBatch, save_body
from .routing import Request, Route, int_in_range, route
from .state import EmulatorState
from .wire import Response, json_response

LIST_LIMIT_MAX = 1000


def check_request(request: Request, api_key: str | None) -> None:
    """Require a key and the anthropic-version header, as Anthropic does.

    The key is the x-api-key header, or a bearer token: the anthropic SDK 2.x sends its api_key
    as `Authorization: Bearer`, and Anthropic takes both.
    """
    key = (request.headers.get("x-api-key") or "").strip()
    if not key:
        scheme, _, token = (request.headers.get("Authorization") or "").strip().partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    if not key:
        raise anthropic_error(401, "x-api-key header is required")
    if api_key is not None and key != api_key:
        raise anthropic_error(401, "invalid x-api-key")
    if not (request.headers.get("anthropic-version") or "").strip():
        raise anthropic_error(400, "anthropic-version: header is required")


def _results_path(batch_id: str) -> str:
    return f"/v1/messages/batches/{batch_id}/results"


def _to_json(state: EmulatorState, request: Request, batch: StoredMessageBatch) -> dict[str, Any]:
    """The MessageBatch; results_url absolute (on the Host asked), or a path if so set."""
    url = _results_path(batch.id)
    if not state.relative_results_url:
        url = f"http://{request.headers.get('Host') or 'localhost'}{url}"
    return batch.to_json(state.now(), url)


def create_batch(state: EmulatorState, request: Request) -> Response:
    batch_id, body, input_path = state.new_message_batch_files()
    try:
        save_body(request.body.chunks(), body, state.limits.max_bytes)
        batch = state.create_message_batch(batch_id, body, input_path)
    finally:
        body.unlink(missing_ok=True)
    with state.lock:
        return json_response(_to_json(state, request, batch))


def retrieve_batch(state: EmulatorState, request: Request) -> Response:
    with state.lock:
        batch = state.retrieve_message_batch(request.params["batch_id"])
        return json_response(_to_json(state, request, batch))


def list_batches(state: EmulatorState, request: Request) -> Response:
    query = request.query
    limit = int_in_range("limit", query.get("limit", "20"), 1, LIST_LIMIT_MAX)
    before, after = query.get("before_id"), query.get("after_id")
    if before is not None and after is not None:
        raise invalid_request("before_id and after_id cannot both be given.")
    with state.lock:
        batches, has_more = state.list_message_batches(before=before, after=after, limit=limit)
        data = [_to_json(state, request, batch) for batch in batches]
    return json_response(
        {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def cancel_batch(state: EmulatorState, request: Request) -> Response:
    with state.lock:
        batch = state.cancel_message_batch(request.params["batch_id"])
        return json_response(_to_json(state, request, batch))


def delete_batch(state: EmulatorState, request: Request) -> Response:
    batch_id = request.params["batch_id"]
    state.delete_message_batch(batch_id)
    return json_response({"id": batch_id, "type": "message_batch_deleted"})


def batch_results(state: EmulatorState, request: Request) -> Response:
    """Stream the results file from disk, like a file's content."""
    path = state.message_batch_results(request.params["batch_id"])
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise anthropic_error(404, "The results of this Message Batch are not available.") from None
    size = handle.seek(0, 2)
    handle.seek(0)
    return Response(
        status=200, content_type="application/binary", stream=handle, stream_length=size
    )


_BATCH = r"/v1/messages/batches/(?P<batch_id>[^/]+)"
ROUTES: tuple[Route, ...] = (
    route("POST", r"/v1/messages/batches", create_batch),
    route("GET", r"/v1/messages/batches", list_batches),
    route("GET", _BATCH, retrieve_batch),
    route("DELETE", _BATCH, delete_batch),
    route("POST", _BATCH + "/cancel", cancel_batch),
    route("GET", _BATCH + "/results", batch_results),
)
"""Anthropic's Message Batches, authenticated by x-api-key (or a bearer token)."""
