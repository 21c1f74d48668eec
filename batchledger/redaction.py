"""Secrets kept out of every log record, ledger row and line of output."""

import os

# Environment variables that hold API keys. Accounts add theirs as they are configured.
_SECRET_VARIABLES = {"OPENAI_API_KEY"}
# Shorter values are not secrets worth blanking (and would blank ordinary words).
MIN_SECRET_CHARS = 8
PLACEHOLDER = "[API key]"


def add_secret_variable(name: str) -> None:
    """From now on, the value of the environment variable `name` is blanked out too."""
    _SECRET_VARIABLES.add(name)


def redact(text: str) -> str:
    """`text` with every API key in use, should one appear anywhere in it, blanked out."""
    for name in _SECRET_VARIABLES:
        key = os.environ.get(name, "").strip()
        if len(key) >= MIN_SECRET_CHARS and key in text:
            text = text.replace(key, PLACEHOLDER)
    return text
