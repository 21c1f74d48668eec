"""Prices per model at the batch rate: from the `genai-prices` package, or a prices file.

`genai-prices` is a maintained list of providers' prices, shipped as data inside the
package (no network): a newer release of it has newer prices. Where it states a batch price
for a model (a price variant `processing = batch`), that price is used; where it does not,
its standard price at half, the batch discount of OpenAI's and Anthropic's batch APIs. A
prices file (`--prices FILE`, the TOML of `usage --prices`) overrides it model by model.
"""

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchledger.usage import Price, load_prices

if TYPE_CHECKING:
    from batchledger.ledger import Ledger

BATCH_DISCOUNT = 0.5  # where the library has no batch price: half the standard one
# Where a price came from, as `estimate` shows it.
FROM_FILE = "prices file"
FROM_LIBRARY_BATCH = "genai-prices, batch price"
FROM_LIBRARY_HALVED = "genai-prices, standard price - 50%"


@dataclass(frozen=True)
class Quote:
    """A model's price per million tokens, and where it came from."""

    price: Price
    source: str


@cache
def library_quote(model: str) -> Quote | None:
    """`model`'s batch price from genai-prices, or None if the library does not know it."""
    # genai-prices imports its whole price list (~0.2 s): only commands that price pay it.
    from genai_prices import Usage, calc_price

    try:
        found = calc_price(
            Usage(input_tokens=0),
            model,
            price_context={"processing": "batch"},
            genai_request_timestamp=datetime.now(UTC),
        )
    except LookupError:
        return None
    prices = found.model_price
    input_ = _per_mtok(getattr(prices, "input_mtok", None))
    output = _per_mtok(getattr(prices, "output_mtok", None))
    if input_ is None or output is None:
        return None  # priced by something else than tokens (images, seconds)
    cached = _per_mtok(getattr(prices, "cache_read_mtok", None))
    price = Price(input=input_, cached_input=input_ if cached is None else cached, output=output)
    if _has_batch_price(found.model.price_variants):
        return Quote(price, FROM_LIBRARY_BATCH)
    return Quote(
        Price(
            input=price.input * BATCH_DISCOUNT,
            cached_input=price.cached_input * BATCH_DISCOUNT,
            output=price.output * BATCH_DISCOUNT,
        ),
        FROM_LIBRARY_HALVED,
    )


def _per_mtok(value: Any) -> float | None:
    """A price per million tokens; of tiered prices, the base tier's (the price of a
    request under the first threshold, which batch requests almost always are)."""
    if value is None:
        return None
    if isinstance(value, Decimal | int | float):
        return float(value)
    base = getattr(value, "base", None)
    return float(base) if base is not None else None


def _has_batch_price(variants: Any) -> bool:
    now = datetime.now(UTC)
    for variant in variants or ():
        if variant.when.get("processing") != "batch":
            continue
        if variant.constraint is None or variant.constraint.active(now):
            return True
    return False


class PriceList:
    """Prices of models: a prices file's first, then the library's."""

    def __init__(self, overrides: dict[str, Price] | None = None) -> None:
        self.overrides = overrides or {}

    @classmethod
    def from_file(cls, path: str | None) -> "PriceList":
        return cls(load_prices(Path(path).expanduser()) if path else None)

    def quote(self, model: str) -> Quote | None:
        price = self.overrides.get(model)
        if price is not None:
            return Quote(price, FROM_FILE)
        return library_quote(model)

    def get(self, model: str, /) -> Price | None:
        """`model`'s price, or None: what `usage` prices with."""
        quote = self.quote(model)
        return None if quote is None else quote.price


@cache
def library_version() -> str:
    """The installed genai-prices' version (its prices are those of its release)."""
    from importlib.metadata import version  # only where prices are kept in the ledger

    return f"genai-prices {version('genai-prices')}"


class KeptPrices(PriceList):
    """The library's prices as the ledger keeps them, per model, library version and UTC day
    (`price_quotes`, m011): a plain create prices its rough estimate without loading the
    library's data (~50 ms of CPU, more under load) when an earlier run of the day did."""

    def __init__(self, ledger: "Ledger") -> None:
        super().__init__()
        self.ledger = ledger

    def quote(self, model: str) -> Quote | None:
        library, day = library_version(), datetime.now(UTC).strftime("%Y-%m-%d")
        kept = self.ledger.cached_quote(model, library, day)
        if kept is not None:
            if kept["input"] is None:
                return None
            price = Price(
                input=kept["input"], cached_input=kept["cached_input"], output=kept["output"]
            )
            return Quote(price, kept["source"])
        quote = library_quote(model)
        fields = {} if quote is None else {**asdict(quote.price), "source": quote.source}
        self.ledger.keep_quote(model, library, day, fields)
        return quote
