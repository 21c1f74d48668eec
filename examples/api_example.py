"""batchledger from Python, top to bottom, offline: the `demo` account runs the emulator
inside this process (no key, no network). Run it from a folder of your own:

    python examples/api_example.py [examples/requests.jsonl]

It is also type-checked as a user's script would be (`mypy --strict`), in the tests.
"""

import sys
from pathlib import Path

import batchledger as bl


def main(requests: Path) -> None:
    with bl.open(account="demo") as ledger:
        estimate = ledger.estimate(requests)
        print(f"estimate: {estimate.requests} requests, {estimate.batches} batch(es)")
        try:
            run = ledger.create(requests, metadata={"example": "api"})
        except bl.Refused:  # sent already (a second run of the example): follow that one
            run = ledger.get("last")
        print(f"created: {run.id} ({run.status})")
        run.wait(progress=True)  # polls with backoff, saves the results
        print(f"status: {run.status}; requests: {run.request_counts}")
        for row in run.results():  # one dict per input line, in input order
            print(f"{row['custom_id']}: {row['status']}")
        for line in ledger.usage(by="model"):
            print(f"usage: {line.group}: {line.requests} requests, cost {line.cost}")
        print(f"in the ledger: {len(ledger.list(since='1d'))} batch(es) made in the last day")


if __name__ == "__main__":
    default = Path(__file__).with_name("requests.jsonl")
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
