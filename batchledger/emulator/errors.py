"""Error bodies: OpenAI's {"error": {"message", "type", "param", "code"}}, Azure's
{"error": {"code", "message"}} in the azure flavour, or Anthropic's
{"type": "error", "error": {"type", "message"}} in the anthropic flavour."""

from __future__ import annotations

from typing import Any

KEYS_URL = "https://platform.openai.com/account/api-keys"

ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""Anthropic's error type for each status it documents; other 4xx are invalid requests and
other 5xx api errors."""


class ApiError(Exception):
    """An error the emulator answers with an HTTP status and an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic_body(self, request_id: str | None = None) -> dict[str, Any]:
        """Anthropic's shape; the type is the error's own if Anthropic has it, else by status."""
        error_type = self.error_type
        if error_type not in ANTHROPIC_ERROR_TYPES.values():
            fallback = "invalid_request_error" if self.status < 500 else "api_error"
            error_type = ANTHROPIC_ERROR_TYPES.get(self.status, fallback)
        return {
            "type": "error",
            "error": {"type": error_type, "message": self.message},
            "request_id": request_id,
        }

    def azure_body(self) -> dict[str, Any]:
        """Azure's shape: the code is the error's own, else the status as a string."""
        return {"error": {"code": self.code or str(self.status), "message": self.message}}


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def file_not_found(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", param="id")


def batch_not_found(batch_id: str) -> ApiError:
    return ApiError(404, f"No batch found with id '{batch_id}'.", param="id")


def invalid_url(method: str, path: str) -> ApiError:
    return ApiError(404, f"Invalid URL ({method} {path})")


def method_not_allowed(method: str, path: str, allowed: list[str]) -> ApiError:
    return ApiError(
        405,
        f"Invalid method for URL ({method} {path})",
        headers={"Allow": ", ".join(allowed)},
    )


def missing_api_key() -> ApiError:
    return ApiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization"
        " header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password"
        " field (with blank username) if you're accessing the API from your browser and are"
        f" prompted for a username. You can obtain an API key from {KEYS_URL}.",
    )


def mask_key(token: str) -> str:
    """Show at most the first 3 and last 4 characters, and nothing of a short key."""
    if len(token) <= 12:
        return "*" * len(token)
    return f"{token[:3]}{'*' * (len(token) - 7)}{token[-4:]}"


def incorrect_api_key(token: str) -> ApiError:
    return ApiError(
        401,
        f"Incorrect API key provided: {mask_key(token)}. You can find your API key at {KEYS_URL}.",
        code="invalid_api_key",
    )


def unparseable_json() -> ApiError:
    # Wording of the live API for a body that is not JSON.
    return invalid_request(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't"
        " using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was"
        " sent was not valid JSON. If you have trouble figuring out how to fix this, please"
        " contact us through our help center at help.openai.com.)"
    )


def injected(status: int, message: str | None) -> ApiError:
    """The error a status fault answers with, modelled on what the live API sends."""
    if status == 429:
        return ApiError(
            429,
            message
            or "Rate limit reached for requests per min (RPM): Limit 500, Used 500, Requested 1."
            " Please try again in 120ms.",
            error_type="requests",
            code="rate_limit_exceeded",
        )
    if status == 503:
        return ApiError(
            503,
            message or "The server is overloaded or not ready yet.",
            error_type="server_error",
        )
    if status >= 500:
        return ApiError(
            status,
            message or "The server had an error while processing your request. Sorry about that!",
            error_type="server_error",
        )
    if status == 401:
        return ApiError(401, message or "Incorrect API key provided.", code="invalid_api_key")
    return ApiError(status, message or f"Emulated error with status {status}.")


def azure_resource_not_found() -> ApiError:
    # What Azure answers for an unknown path or a request without api-version.
    return ApiError(404, "Resource not found", code="404")


def azure_access_denied() -> ApiError:
    return ApiError(
        401,
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to"
        " provide a valid key for an active subscription and use a correct regional API"
        " endpoint for your resource.",
        code="401",
    )


def anthropic_error(status: int, message: str) -> ApiError:
    """An error of Anthropic's type for that status."""
    return ApiError(status, message, error_type=ANTHROPIC_ERROR_TYPES.get(status, "api_error"))
