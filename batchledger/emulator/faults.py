"""Injected failures for API requests (/v1, or /openai in the azure flavour).

A matching fault acts in this order:

0. ``cut_request_after_bytes=N``: the server reads at most N bytes of the request body and
   hangs up; the request is not handled (a connection that broke while sending).
1. ``status``: the request is not handled at all (its body is read and discarded); after
   ``delay`` the client gets that status with the flavour's error body (OpenAI's, Azure's or
   Anthropic's) and, if set, Retry-After.
2. Otherwise the request is handled normally, so side effects happen (a batch is created,
   a retrieve advances the batch). Then, after ``delay``:
   ``drop_request`` closes the connection without any response (the work was done but the
   answer was lost); ``drop_after_bytes=N`` sends the headers with the full Content-Length
   and only N bytes of the body, then closes the connection; else the response goes out.
3. ``stall_after_bytes=N`` moves the ``delay`` into the body: N bytes go out, then the
   response pauses for ``delay`` seconds before the rest (a slow download to interrupt).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import invalid_request


@dataclass
class Fault:
    """A failure applied to the next `times` requests whose method and path match."""

    path: str = ".*"
    """Regular expression searched (re.search) in the request path, without the query."""
    method: str | None = None
    """HTTP method to match, any when None."""
    times: int | None = 1
    """How many matching requests it applies to; None means every one, forever."""
    status: int | None = None
    retry_after: float | None = None
    """Seconds sent in a Retry-After header with a `status` fault."""
    delay: float = 0.0
    drop_after_bytes: int | None = None
    drop_request: bool = False
    cut_request_after_bytes: int | None = None
    """Read this many request body bytes at most, then hang up without handling it."""
    stall_after_bytes: int | None = None
    """Send this many body bytes, then wait `delay` seconds before the rest."""
    message: str | None = None
    """Overrides the error message of a `status` fault."""
    spare: int = 0
    """Let this many matching requests through first (the second page of a listing)."""
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path)
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if self.status is not None and (self.drop_request or self.drop_after_bytes is not None):
            raise ValueError("a status fault cannot also drop the request or response")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1, or None for always")
        if self.drop_after_bytes is not None and self.drop_after_bytes < 0:
            raise ValueError("drop_after_bytes must not be negative")
        if self.stall_after_bytes is not None and self.stall_after_bytes < 0:
            raise ValueError("stall_after_bytes must not be negative")
        if self.cut_request_after_bytes is not None and (
            self.cut_request_after_bytes < 0 or self.status is not None or self.drop_request
        ):
            raise ValueError("cut_request_after_bytes must be >= 0 and stand alone")
        if self.delay < 0:
            raise ValueError("delay must not be negative")
        if self.spare < 0:
            raise ValueError("spare must not be negative")

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self._pattern.search(path) is not None

    @property
    def action(self) -> str:
        """A short label of what the fault does, recorded with the request."""
        if self.cut_request_after_bytes is not None:
            return f"cut_request_after_bytes:{self.cut_request_after_bytes}"
        if self.status is not None:
            return f"status:{self.status}"
        if self.drop_request:
            return "drop_request"
        if self.drop_after_bytes is not None:
            return f"drop_after_bytes:{self.drop_after_bytes}"
        if self.stall_after_bytes is not None:
            return f"stall_after_bytes:{self.stall_after_bytes}"
        return "delay"

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "path": (str,),
    "method": (str, type(None)),
    "times": (int, type(None)),
    "status": (int, type(None)),
    "retry_after": (int, float, type(None)),
    "delay": (int, float),
    "drop_after_bytes": (int, type(None)),
    "drop_request": (bool,),
    "stall_after_bytes": (int, type(None)),
    "cut_request_after_bytes": (int, type(None)),
    "message": (str, type(None)),
    "spare": (int,),
}


def fault_from_json(payload: object) -> Fault:
    """Build a Fault from the JSON body of POST /_emulator/faults."""
    if not isinstance(payload, dict):
        raise invalid_request("The fault must be a JSON object.")
    for key, value in payload.items():
        allowed = _FIELD_TYPES.get(key)
        if allowed is None:
            raise invalid_request(f"Unknown fault field: {key}", param=key)
        # bool is an int subclass; only drop_request may be a bool.
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise invalid_request(f"Invalid type for fault field {key!r}.", param=key)
    try:
        return Fault(**payload)
    except (ValueError, re.error) as exc:
        raise invalid_request(f"Invalid fault: {exc}") from None


@dataclass
class _Entry:
    fault: Fault
    remaining: int | None
    """Uses left, None for unlimited; kept here so the caller's Fault is never mutated."""
    spare: int
    """Matching requests still to let through before it applies."""


class FaultBook:
    """The pending faults, consumed in the order they were added; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._entries.append(_Entry(fault, fault.times, fault.spare))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return [entry.fault for entry in self._entries]

    def take(self, method: str, path: str) -> Fault | None:
        """Return the first fault matching this request and use up one of its applications."""
        with self._lock:
            for entry in self._entries:
                if not entry.fault.matches(method, path):
                    continue
                if entry.spare:
                    entry.spare -= 1
                    continue
                if entry.remaining is not None:
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._entries.remove(entry)
                return entry.fault
        return None
