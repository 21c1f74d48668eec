"""Deterministic, plausible response bodies for each batch endpoint.

Every id and number is derived from a seed (batch id + custom_id), so the same batch always
produces the same output file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from .models import Usage

DEFAULT_MODEL = "emulator-model"
PROMPT_ECHO_CHARS = 60
EMBEDDING_DIMENSIONS = 8
# A 1x1 transparent PNG, enough to look like an image result.
TINY_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAC"
    "hwGA60e6kgAAAABJRU5ErkJggg=="
)


def hex_digest(seed: str, length: int = 32) -> str:
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:length]


def estimate_tokens(text: str) -> int:
    """About four characters per token, as OpenAI's rule of thumb says."""
    return max(1, (len(text) + 3) // 4)


def _text_of(content: object) -> str:
    """The text of a message content: a string or a list of parts with "text"."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        return " ".join(text for text in texts if isinstance(text, str))
    return ""


def prompt_text(request: dict[str, Any]) -> str:
    """The user's text in a request body, from input, messages or prompt."""
    for key in ("input", "messages", "prompt"):
        value = request.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value:
            last = value[-1]
            if isinstance(last, str):
                return last
            if isinstance(last, dict):
                return _text_of(last.get("content"))
    return ""


def _model(request: dict[str, Any]) -> str:
    model = request.get("model")
    return model if isinstance(model, str) else DEFAULT_MODEL


def _reply(request: dict[str, Any]) -> str:
    prompt = " ".join(prompt_text(request).split())[:PROMPT_ECHO_CHARS]
    return f"Emulated reply to: {prompt}" if prompt else "Emulated reply."


def _usage(request: dict[str, Any], output: str) -> Usage:
    input_tokens = estimate_tokens(json.dumps(request, separators=(",", ":")))
    return Usage(input_tokens=input_tokens, output_tokens=estimate_tokens(output) if output else 0)


def _responses(request: dict[str, Any], seed: str, created: int) -> tuple[dict[str, Any], Usage]:
    reply = _reply(request)
    usage = _usage(request, reply)
    body = {
        "id": f"resp_{hex_digest(seed + ':resp')}",
        "object": "response",
        "created_at": created,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": _model(request),
        "output": [
            {
                "type": "message",
                "id": f"msg_{hex_digest(seed + ':msg')}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply, "annotations": []}],
            }
        ],
        "usage": usage.to_json(),
    }
    return body, usage


def _legacy_usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _chat(request: dict[str, Any], seed: str, created: int) -> tuple[dict[str, Any], Usage]:
    reply = _reply(request)
    usage = _usage(request, reply)
    message = {"role": "assistant", "content": reply, "refusal": None}
    body = {
        "id": f"chatcmpl-{hex_digest(seed, 29)}",
        "object": "chat.completion",
        "created": created,
        "model": _model(request),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": _legacy_usage(usage),
    }
    return body, usage


def _completion(request: dict[str, Any], seed: str, created: int) -> tuple[dict[str, Any], Usage]:
    reply = _reply(request)
    usage = _usage(request, reply)
    body = {
        "id": f"cmpl-{hex_digest(seed, 29)}",
        "object": "text_completion",
        "created": created,
        "model": _model(request),
        "choices": [{"index": 0, "text": reply, "logprobs": None, "finish_reason": "stop"}],
        "usage": _legacy_usage(usage),
    }
    return body, usage


def _embedding_inputs(request: dict[str, Any]) -> list[str]:
    value = request.get("input")
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return [str(item) for item in value]
    return [json.dumps(value)]


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [round((byte - 127.5) / 127.5, 6) for byte in digest[:EMBEDDING_DIMENSIONS]]


def _embeddings(request: dict[str, Any], seed: str, created: int) -> tuple[dict[str, Any], Usage]:
    inputs = _embedding_inputs(request)
    usage = Usage(input_tokens=sum(estimate_tokens(text) for text in inputs))
    data = [
        {"object": "embedding", "index": index, "embedding": _vector(text)}
        for index, text in enumerate(inputs)
    ]
    body = {
        "object": "list",
        "data": data,
        "model": _model(request),
        "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
    }
    return body, usage


def _moderation(request: dict[str, Any], seed: str, created: int) -> tuple[dict[str, Any], Usage]:
    categories = ("harassment", "hate", "self-harm", "sexual", "violence")
    result = {
        "flagged": False,
        "categories": dict.fromkeys(categories, False),
        "category_scores": dict.fromkeys(categories, 0.0001),
    }
    body = {"id": f"modr-{hex_digest(seed)}", "model": _model(request), "results": [result]}
    return body, Usage(input_tokens=estimate_tokens(prompt_text(request)))


def _image(request: dict[str, Any], seed: str, created: int) -> tuple[dict[str, Any], Usage]:
    usage = _usage(request, "")
    body = {
        "created": created,
        "data": [{"b64_json": TINY_PNG_B64}],
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": 0,
            "total_tokens": usage.input_tokens,
        },
    }
    return body, usage


def _video(request: dict[str, Any], seed: str, created: int) -> tuple[dict[str, Any], Usage]:
    body = {
        "id": f"video_{hex_digest(seed)}",
        "object": "video",
        "created_at": created,
        "completed_at": created,
        "status": "completed",
        "model": _model(request),
        "progress": 100,
        "seconds": "4",
        "size": "720x1280",
    }
    return body, Usage()


def anthropic_message(params: dict[str, Any], seed: str) -> dict[str, Any]:
    """An Anthropic Message answering Messages API `params`, as a batch result carries it."""
    reply = _reply(params)
    usage = _usage(params, reply)
    return {
        "id": f"msg_{hex_digest(seed + ':msg', 24)}",
        "type": "message",
        "role": "assistant",
        "model": _model(params),
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "batch",
        },
    }


_BUILDERS: dict[str, Callable[[dict[str, Any], str, int], tuple[dict[str, Any], Usage]]] = {
    "/v1/responses": _responses,
    "/v1/chat/completions": _chat,
    "/v1/completions": _completion,
    "/v1/embeddings": _embeddings,
    "/v1/moderations": _moderation,
    "/v1/images/generations": _image,
    "/v1/images/edits": _image,
    "/v1/videos": _video,
}


def response_body(
    endpoint: str, request: dict[str, Any], seed: str, created: int
) -> tuple[dict[str, Any], Usage]:
    """The body the endpoint would answer `request` with, and its token usage.

    Azure's classic endpoints have no /v1 prefix; they answer as OpenAI's do.
    """
    if not endpoint.startswith("/v1/"):
        endpoint = "/v1" + endpoint
    return _BUILDERS[endpoint](request, seed, created)
