"""Moments as the ledger and the user see them: ISO 8601 in UTC, to the second."""

from datetime import UTC, datetime

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> str:
    return iso_utc(datetime.now(UTC))


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(ISO_FORMAT)


def iso_from_epoch(seconds: int | float | None) -> str | None:
    if seconds is None:
        return None
    return iso_utc(datetime.fromtimestamp(seconds, UTC))


def epoch_of(iso: str) -> float:
    return datetime.strptime(iso, ISO_FORMAT).replace(tzinfo=UTC).timestamp()
