"""The cost of export's input check: python bench/export_hash.py [--quick].

An export reads every input line to join it with its answer; it now also hashes the input
(in a thread beside it) and compares it with the sha256 recorded when it was sent (an input
edited in place to the same size is refused). This times `export_rows` into a saved CSV without and
with that check, alternated, on one input of 500,000 requests (100,000 quick) of ~400
bytes and an output answering nine in ten: the best of 3 each, and their ratio. Target:
the check costs at most 5 %.
"""

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

from batchledger.export import ExportCounts, csv_chunks, export_rows
from batchledger.savefile import save_chunks


def main() -> None:
    requests = 100_000 if "--quick" in sys.argv else 500_000
    with tempfile.TemporaryDirectory() as folder:
        input_path, output_path = Path(folder) / "in.jsonl", Path(folder) / "out.jsonl"
        with input_path.open("w") as inputs, output_path.open("w") as outputs:
            for n in range(requests):
                body = {"model": "gpt-4o-mini", "input": f"question {n} " + "x" * 300}
                line = {"custom_id": f"r{n}", "method": "POST", "url": "/v1/responses"}
                inputs.write(json.dumps({**line, "body": body}) + "\n")
                if n % 10:
                    answer = {"status_code": 200, "body": {"output_text": "y" * 200}}
                    outputs.write(json.dumps({"custom_id": f"r{n}", "response": answer}) + "\n")
        sent = hashlib.sha256(input_path.read_bytes()).hexdigest()
        print(
            f"{requests} requests, input {input_path.stat().st_size / 1e6:.0f} MB", file=sys.stderr
        )
        best = {"without": float("inf"), "with": float("inf")}
        for _ in range(3):
            for label, expected in (("without", None), ("with", sent)):
                started = time.perf_counter()
                rows = export_rows(input_path, [output_path], ExportCounts(), expected)
                save_chunks(Path(folder) / "export.csv", csv_chunks(rows))
                best[label] = min(best[label], time.perf_counter() - started)
        ratio = best["with"] / best["without"]
        print("| export | without the input check | with it | ratio | target |")
        print("|---|---|---|---|---|")
        print(
            f"| {requests} requests | {best['without']:.2f} s | {best['with']:.2f} s | "
            f"{ratio:.3f} | <= 1.05: {'PASS' if ratio <= 1.05 else 'FAIL'} |"
        )


if __name__ == "__main__":
    main()
