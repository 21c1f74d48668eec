"""Handlers of the /v1 Files and Batches endpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from .errors import (
    azure_access_denied,
    azure_resource_not_found,
    file_not_found,
    incorrect_api_key,
    invalid_request,
    invalid_url,
    missing_api_key,
)
from .models import FILE_PURPOSES
from .multipart import MultipartError, MultipartReader, boundary_from_content_type
from .routing import (
    Request,
    Route,
    int_in_range,
    invalid_type,
    invalid_value,
    list_page,
    missing_parameter,
    read_json_object,
    required_str,
    route,
)
from .state import EmulatorState
from .wire import Response, json_response

FORM_FIELD_LIMIT = 64 * 1024
EXPIRY_MIN_SECONDS = 3600
EXPIRY_MAX_SECONDS = 30 * 24 * 3600
METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512
BATCH_FIELDS = frozenset(
    {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
)


def check_auth(headers: Message, api_key: str | None) -> None:
    """Require a bearer token, and the configured one when the emulator has an api_key."""
    scheme, _, token = (headers.get("Authorization") or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise missing_api_key()
    if api_key is not None and token != api_key:
        raise incorrect_api_key(token)


def check_azure_request(request: Request, api_key: str | None) -> None:
    """Require the api-version query parameter and an api-key header (the configured one)."""
    if not request.query.get("api-version"):
        raise azure_resource_not_found()
    key = (request.headers.get("api-key") or "").strip()
    if not key or (api_key is not None and key != api_key):
        raise azure_access_denied()


# Files


@dataclass
class _Form:
    """The fields of an upload form and the size of its file part, streamed to disk."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    bytes: int = 0
    lines: int = 0


def _save_part(reader: MultipartReader, path: Path, form: _Form) -> None:
    """Stream the current part to `path`, counting bytes and lines on the way."""
    newlines = 0
    last = b""
    with path.open("wb") as out:
        for chunk in reader.iter_part():
            out.write(chunk)
            form.bytes += len(chunk)
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    # A last line without a trailing newline still counts.
    form.lines = newlines + (1 if form.bytes and last != b"\n" else 0)


def _read_form(request: Request, path: Path) -> _Form:
    try:
        boundary = boundary_from_content_type(request.headers.get("Content-Type"))
        reader = MultipartReader(request.body.chunks(), boundary)
        form = _Form()
        while (part := reader.next_part()) is not None:
            if part.name == "file" and form.filename is None:
                form.filename = part.filename or "file"
                _save_part(reader, path, form)
            elif part.name is not None and part.filename is None:
                form.fields[part.name] = reader.read_text(FORM_FIELD_LIMIT)
            # Any other part (a second file, a nameless part) is skipped by next_part().
        return form
    except MultipartError as exc:
        raise invalid_request(f"Could not parse multipart form data: {exc}") from None


def _upload_expiry(fields: dict[str, str]) -> int | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise invalid_value("expires_after.anchor", anchor, ["created_at"])
    return int_in_range(
        "expires_after.seconds", seconds or "", EXPIRY_MIN_SECONDS, EXPIRY_MAX_SECONDS
    )


def upload_file(state: EmulatorState, request: Request) -> Response:
    file_id, path = state.new_upload()
    try:
        form = _read_form(request, path)
        purpose = form.fields.get("purpose")
        if purpose is None:
            raise missing_parameter("purpose")
        if purpose not in FILE_PURPOSES:
            raise invalid_value("purpose", purpose, FILE_PURPOSES)
        if form.filename is None:
            raise missing_parameter("file")
        if purpose == "batch" and not form.filename.endswith(".jsonl"):
            # The live API refuses at upload, not later at batch creation.
            raise invalid_request("Invalid file format for Batch API. Must be .jsonl")
        expires_after = _upload_expiry(form.fields)
        stored = state.add_file(
            file_id,
            path,
            filename=form.filename,
            purpose=purpose,
            size=form.bytes,
            lines=form.lines,
            expires_after=expires_after,
        )
    finally:
        # Left over only when the upload was rejected; add_file moved it otherwise.
        path.unlink(missing_ok=True)
    return json_response(stored.to_json())


def list_files(state: EmulatorState, request: Request) -> Response:
    if not state.can_list_files:
        raise invalid_url(request.method, request.path)
    query = request.query
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_value("order", order, ["asc", "desc"])
    limit = int_in_range("limit", query.get("limit", "10000"), 1, 10_000)
    files, has_more = state.list_files(
        purpose=query.get("purpose"),
        after=query.get("after"),
        limit=limit,
        newest_first=order == "desc",
    )
    return json_response(list_page([f.to_json() for f in files], has_more))


def retrieve_file(state: EmulatorState, request: Request) -> Response:
    return json_response(state.get_file(request.params["file_id"]).to_json())


def delete_file(state: EmulatorState, request: Request) -> Response:
    stored = state.delete_file(request.params["file_id"])
    return json_response({"id": stored.id, "object": "file", "deleted": True})


def file_content(state: EmulatorState, request: Request) -> Response:
    """Stream the file from disk; the length comes from the open handle, not from memory."""
    stored = state.get_file(request.params["file_id"])
    try:
        handle = stored.path.open("rb")
    except FileNotFoundError:
        raise file_not_found(stored.id) from None
    size = handle.seek(0, 2)
    handle.seek(0)
    return Response(
        status=200,
        content_type="application/octet-stream",
        stream=handle,
        stream_length=size,
    )


# Batches


def _metadata(value: object) -> dict[str, str] | None:
    """At most 16 string pairs, keys up to 64 and values up to 512 characters."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type("metadata", "an object", value)
    if len(value) > METADATA_MAX_KEYS:
        raise invalid_request(
            f"Invalid 'metadata': too many properties. Expected an object with at most"
            f" {METADATA_MAX_KEYS} properties, but got an object with {len(value)} properties"
            " instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > METADATA_MAX_KEY_CHARS:
            raise invalid_request(
                f"Invalid 'metadata': key too long. Expected a key with maximum length"
                f" {METADATA_MAX_KEY_CHARS}, but got a key with length {len(key)} instead.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(item, str):
            raise invalid_type(f"metadata.{key}", "a string", item)
        if len(item) > METADATA_MAX_VALUE_CHARS:
            raise invalid_request(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum"
                f" length {METADATA_MAX_VALUE_CHARS}, but got a string with length {len(item)}"
                " instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )
    return {str(key): str(item) for key, item in value.items()}


def _output_expiry(value: object) -> int | None:
    name = "output_expires_after"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type(name, "an object", value)
    if value.get("anchor") != "created_at":
        raise invalid_value(f"{name}.anchor", value.get("anchor"), ["created_at"])
    if "seconds" not in value:
        raise missing_parameter(f"{name}.seconds")
    return int_in_range(f"{name}.seconds", value["seconds"], EXPIRY_MIN_SECONDS, EXPIRY_MAX_SECONDS)


def create_batch(state: EmulatorState, request: Request) -> Response:
    payload = read_json_object(request)
    for name in payload:
        if name not in BATCH_FIELDS:
            raise invalid_request(f"Unrecognized request argument supplied: {name}")
    input_file_id = required_str(payload, "input_file_id")
    endpoint = required_str(payload, "endpoint")
    if endpoint not in state.batch_endpoints:
        raise invalid_value("endpoint", endpoint, state.batch_endpoints)
    completion_window = required_str(payload, "completion_window")
    if completion_window not in state.completion_windows:
        raise invalid_value("completion_window", completion_window, list(state.completion_windows))
    metadata = _metadata(payload.get("metadata"))
    output_expires_after = _output_expiry(payload.get("output_expires_after"))
    with state.lock:
        batch = state.create_batch(
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=metadata,
            output_expires_after=output_expires_after,
        )
        return json_response(batch.to_json())


def list_batches(state: EmulatorState, request: Request) -> Response:
    limit = int_in_range("limit", request.query.get("limit", "20"), 1, 100)
    with state.lock:
        batches, has_more = state.list_batches(after=request.query.get("after"), limit=limit)
        data: list[dict[str, Any]] = [batch.to_json() for batch in batches]
    return json_response(list_page(data, has_more))


def retrieve_batch(state: EmulatorState, request: Request) -> Response:
    with state.lock:
        return json_response(state.retrieve_batch(request.params["batch_id"]).to_json())


def cancel_batch(state: EmulatorState, request: Request) -> Response:
    with state.lock:
        return json_response(state.cancel_batch(request.params["batch_id"]).to_json())


_ID = r"(?P<{}>[^/]+)"


def _routes(prefix: str) -> tuple[Route, ...]:
    return (
        route("GET", prefix + r"/files", list_files),
        route("POST", prefix + r"/files", upload_file),
        route("GET", prefix + r"/files/" + _ID.format("file_id"), retrieve_file),
        route("DELETE", prefix + r"/files/" + _ID.format("file_id"), delete_file),
        route("GET", prefix + r"/files/" + _ID.format("file_id") + "/content", file_content),
        route("GET", prefix + r"/batches", list_batches),
        route("POST", prefix + r"/batches", create_batch),
        route("GET", prefix + r"/batches/" + _ID.format("batch_id"), retrieve_batch),
        route("POST", prefix + r"/batches/" + _ID.format("batch_id") + "/cancel", cancel_batch),
    )


ROUTES = _routes("/v1")
AZURE_ROUTES = _routes("/openai")
"""Azure OpenAI's classic data plane: /openai/files?api-version=..., authenticated by api-key."""
