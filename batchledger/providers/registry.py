"""Which implementation serves an account: by its kind. A new provider is one module beside
openai.py, and one line here."""

from typing import TYPE_CHECKING

from batchledger.providers import Provider

if TYPE_CHECKING:
    from batchledger.accounts import Account


def open_provider(
    account: "Account", *, max_retries: int, timeout: float, base_url: str | None = None
) -> Provider:
    """The provider of `account`, by its kind. `base_url` overrides the account's (an
    emulator account's server, started on its own port)."""
    # Imported here, not above: each implementation imports its SDK (about a second).
    from batchledger.providers.openai import OpenAIProvider

    return OpenAIProvider(account, max_retries=max_retries, timeout=timeout, base_url=base_url)
