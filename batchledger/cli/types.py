"""Argument types: what the user typed, checked and turned into values (or a usage error)."""

import argparse
from datetime import UTC, datetime, timedelta

from batchledger.durations import expiry_seconds
from batchledger.times import iso_utc


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected more than 0 seconds, got {text}")
    return value


def since_moment(text: str) -> str:
    """`--since`: an age like 7d, 12h, 30m, 2w, or a date / ISO time; as ISO 8601 UTC."""
    units = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if len(text) > 1 and text[-1] in units and text[:-1].isdigit():
        return iso_utc(datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]]))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an age like 7d, 12h, 30m or a date like 2026-11-01, got {text!r}"
        ) from None
    return iso_utc(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def metadata_pair(text: str) -> tuple[str, str]:
    """`--metadata KEY=VALUE`: split at the first `=` (the value may hold more)."""
    key, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if not key:
        raise argparse.ArgumentTypeError(f"expected a key before '=' (KEY=VALUE), got {text!r}")
    return key, value


def expiry_duration(text: str) -> int:
    """`--output-expires-after` / `--input-expires-after`: 1h to 30d, as seconds."""
    try:
        return expiry_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
