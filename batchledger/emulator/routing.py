"""Requests as handlers see them, route tables, and JSON body and parameter helpers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .errors import ApiError, invalid_request, invalid_url, method_not_allowed, unparseable_json
from .wire import RequestBody, Response

if TYPE_CHECKING:
    from .state import EmulatorState

MAX_JSON_BODY = 1024 * 1024


@dataclass
class Request:
    """One HTTP request: `params` holds the named groups of the matched route."""

    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: RequestBody
    params: dict[str, str]


Handler = Callable[["EmulatorState", Request], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def route(method: str, pattern: str, handler: Handler) -> Route:
    return Route(method, re.compile(pattern), handler)


def resolve(routes: Sequence[Route], method: str, path: str) -> tuple[Handler, dict[str, str]]:
    """The handler for this method and path; 405 if only the method is wrong, else 404."""
    allowed: list[str] = []
    for candidate in routes:
        match = candidate.pattern.fullmatch(path)
        if match is None:
            continue
        if candidate.method == method:
            return candidate.handler, {k: unquote(v) for k, v in match.groupdict().items()}
        allowed.append(candidate.method)
    if allowed:
        raise method_not_allowed(method, path, allowed)
    raise invalid_url(method, path)


def read_json(request: Request) -> Any:
    try:
        return json.loads(request.body.read_all(MAX_JSON_BODY))
    except ValueError:
        raise unparseable_json() from None


def read_json_object(request: Request) -> dict[str, Any]:
    payload = read_json(request)
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.")
    return payload


def json_type(value: object) -> str:
    """How the live API names a JSON value's type in its error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def missing_parameter(name: str) -> ApiError:
    return invalid_request(
        f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
    )


def invalid_type(name: str, expected: str, value: object) -> ApiError:
    return invalid_request(
        f"Invalid type for '{name}': expected {expected}, but got {json_type(value)} instead.",
        param=name,
        code="invalid_type",
    )


def invalid_value(name: str, value: object, supported: Sequence[str]) -> ApiError:
    choices = ", ".join(f"'{choice}'" for choice in supported)
    return invalid_request(
        f"Invalid value: '{value}'. Supported values are: {choices}.",
        param=name,
        code="invalid_value",
    )


def required_str(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if value is None:
        raise missing_parameter(name)
    if not isinstance(value, str):
        raise invalid_type(name, "a string", value)
    return value


def int_in_range(name: str, raw: object, low: int, high: int) -> int:
    """An integer parameter from JSON or a query string, checked against [low, high]."""
    value: object = raw
    if isinstance(raw, str):
        try:
            value = int(raw)
        except ValueError:
            value = raw
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_type(name, "an integer", value)
    if value < low:
        raise invalid_request(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {low},"
            f" but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if value > high:
        raise invalid_request(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {high},"
            f" but got {value} instead.",
            param=name,
            code="integer_above_max_value",
        )
    return value


def list_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A cursor page; first_id/last_id are null for an empty page, as live."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
