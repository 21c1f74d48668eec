"""What `BatchLedger.accounts()` and `places()` return (`batchledger accounts`, `where`):
each account with its provider's limits and its batches in the ledger; where the ledger,
accounts.toml and the logs are."""

from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict

from batchledger.accounts import Account


class AccountInfo(TypedDict):
    """An account: its name, kind, where it points, the variable of its key and whether
    that is set (None: it needs none), its batches in the ledger, its provider's profile
    and limits. An account the ledger has batches of that accounts.toml no longer names
    has only its name and batches (the rest None)."""

    name: str
    kind: str | None
    base_url: str | None
    api_key_env: str | None
    key_set: bool | None
    batches: int
    profile: str | None
    max_requests: int | None
    max_bytes: int | None
    completion_windows: list[str] | None


class Place(TypedDict):
    """A file or folder batchledger uses (`ledger`, `accounts`, `logs`), and whether it is
    there yet."""

    what: str
    path: str
    exists: bool


def account_infos(
    accounts: Mapping[str, Account], in_ledger: Mapping[str, int]
) -> list[AccountInfo]:
    """The configured accounts in their order, then those only the ledger names, by name."""
    infos = [
        AccountInfo(
            name=account.name,
            kind=account.kind,
            base_url=account.location,
            api_key_env=account.api_key_env,
            key_set=account.key() is not None if account.needs_key() else None,
            batches=in_ledger.get(account.name, 0),
            profile=account.profile.name,
            max_requests=account.profile.max_requests,
            max_bytes=account.profile.max_bytes,
            completion_windows=(
                list(account.profile.completion_windows)
                if account.profile.completion_windows is not None
                else None
            ),
        )
        for account in accounts.values()
    ]
    infos += [
        AccountInfo(
            name=name,
            kind=None,
            base_url=None,
            api_key_env=None,
            key_set=None,
            batches=in_ledger[name],
            profile=None,
            max_requests=None,
            max_bytes=None,
            completion_windows=None,
        )
        for name in sorted(set(in_ledger) - set(accounts))
    ]
    return infos


def places(ledger: Path, accounts_file: Path, log_file: Path) -> list[Place]:
    """The ledger, accounts.toml, and the folder of the logs."""
    logs = log_file.parent
    return [
        Place(what="ledger", path=str(ledger), exists=ledger.exists()),
        Place(what="accounts", path=str(accounts_file), exists=accounts_file.exists()),
        Place(what="logs", path=str(logs.absolute()), exists=logs.is_dir()),
    ]
