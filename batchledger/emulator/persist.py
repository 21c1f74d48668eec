"""Files, batches and Message Batches kept in data_dir/state.json, so that later (or
parallel) processes share them.

Every change is written atomically (a temporary file, then os.replace) while an fcntl.flock on
data_dir/lock is held; a process reloads the state whenever the file changed since it last
read or wrote it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .message_batches import MessageCounts, StoredMessageBatch
from .models import BatchError, BatchResult, RequestCounts, StoredBatch, StoredFile, Usage

STATE_FILE = "state.json"
LOCK_FILE = "lock"


def _file_from_json(data: dict[str, Any]) -> StoredFile:
    return StoredFile(**{**data, "path": Path(data["path"])})


def _batch_from_json(data: dict[str, Any]) -> StoredBatch:
    fields = dict(data)
    fields["input_path"] = None if data["input_path"] is None else Path(data["input_path"])
    if data["errors"] is not None:
        fields["errors"] = [BatchError(**error) for error in data["errors"]]
    fields["request_counts"] = RequestCounts(**data["request_counts"])
    fields["usage"] = Usage(**data["usage"])
    result = data["result"]
    if result is not None:
        fields["result"] = BatchResult(
            counts=RequestCounts(**result["counts"]),
            usage=Usage(**result["usage"]),
            output_file_id=result["output_file_id"],
            error_file_id=result["error_file_id"],
        )
    return StoredBatch(**fields)


def _message_batch_from_json(data: dict[str, Any]) -> StoredMessageBatch:
    fields = dict(data)
    for name in ("input_path", "results_path"):
        fields[name] = None if data[name] is None else Path(data[name])
    fields["request_counts"] = MessageCounts(**data["request_counts"])
    return StoredMessageBatch(**fields)


def to_json(value: Any) -> Any:
    """A dataclass (or a container of them) as JSON-ready values; paths become strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_json(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def files_from_json(data: dict[str, Any]) -> dict[str, StoredFile]:
    return {file_id: _file_from_json(item) for file_id, item in data.items()}


def batches_from_json(data: dict[str, Any]) -> dict[str, StoredBatch]:
    return {batch_id: _batch_from_json(item) for batch_id, item in data.items()}


def message_batches_from_json(data: dict[str, Any]) -> dict[str, StoredMessageBatch]:
    return {batch_id: _message_batch_from_json(item) for batch_id, item in data.items()}


class StateFile:
    """data_dir/state.json and the lock that guards each read-modify-write of it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_FILE
        self._lock_path = data_dir / LOCK_FILE
        self._seen: tuple[int, int, int] | None = None
        self._written = ""

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lock across processes for the duration of the block."""
        with self._lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_if_changed(self) -> dict[str, Any] | None:
        """The stored state if another writer (or process) changed it since we last looked."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return None
        text = self.path.read_text(encoding="utf-8")
        self._seen, self._written = stamp, text
        data: dict[str, Any] = json.loads(text)
        return data

    def write(self, data: dict[str, Any]) -> None:
        """Replace the file atomically, unless nothing changed since the last read or write."""
        text = json.dumps(data, separators=(",", ":"))
        if text == self._written:
            return
        temporary = self.path.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, self.path)
        self._seen, self._written = self._stamp(), text
