"""Durations a user types (`90m`, `12h`, `7d`, `2w`), as seconds."""

import re

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION = re.compile(r"(?P<count>\d+)\s*(?P<unit>[smhdw])")
# The API's range for a file's expiry (files' expires_after, batches' output_expires_after).
MIN_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 30 * 86400


def parse_duration(text: str) -> int:
    """Seconds in `text`, a whole number and a unit (s, m, h, d, w); ValueError otherwise."""
    match = DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"expected a duration like 90m, 12h, 7d or 2w, got {text!r}")
    return int(match["count"]) * UNIT_SECONDS[match["unit"]]


def expiry_seconds(text: str) -> int:
    """A file expiry the API takes: from 1h to 30d; ValueError otherwise."""
    seconds = parse_duration(text)
    if not MIN_EXPIRY_SECONDS <= seconds <= MAX_EXPIRY_SECONDS:
        raise ValueError(f"expected a duration from 1h to 30d, got {text!r}")
    return seconds
