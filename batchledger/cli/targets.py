"""The Python API a command calls, and where a command's results go (`--out`, `--out-dir`)."""

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from batchledger.batches import BatchRef
from batchledger.context import Context
from batchledger.errors import UsageError
from batchledger.paths import default_results_path

if TYPE_CHECKING:
    from batchledger.api.client import BatchLedger


def api(ctx: Context) -> "BatchLedger":
    """The Python API over the run's context: the commands are calls of it."""
    # start-up: `--help` does not load it; `list` loads the client, not the handles
    from batchledger.api.client import BatchLedger

    return BatchLedger(ctx)


def out_path(args: argparse.Namespace, ref: BatchRef) -> Path | None:
    """Where `--out` says to save: a file, or (an existing folder) the default name in it."""
    if not args.out:
        return None
    out = Path(args.out).expanduser()
    return out / default_results_path(ref.batch_id) if out.is_dir() else out


def out_dir(args: argparse.Namespace) -> Path | None:
    """`--out-dir`: checked before anything is sent."""
    if not args.out_dir:
        return None
    folder = Path(args.out_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out-dir {args.out_dir} is a file, not a folder")
    return folder
