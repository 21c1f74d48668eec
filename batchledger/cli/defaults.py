"""The command line's defaults: the parser shows them in --help, the commands use them."""

DEFAULT_ENDPOINT = "/v1/responses"
DEFAULT_WINDOW = "24h"
DEFAULT_LIST_LIMIT = 50
DEFAULT_CONCURRENCY = 8
DEFAULT_WATCH_INTERVAL = 10.0
DEFAULT_WATCH_MAX_INTERVAL = 300.0
DEMO_WATCH_INTERVAL = 1.0  # an emulator's batches move every few seconds


def first_watch_interval(account_kind: str) -> float:
    """`watch`'s first pause between checks when --interval is not given."""
    return DEMO_WATCH_INTERVAL if account_kind == "emulator" else DEFAULT_WATCH_INTERVAL
