"""Peak memory of `export` on a large batch: python bench/export_memory.py [REQUESTS].

Fabricates an input of REQUESTS lines (default 1,000,000) and an output answering nine in
ten, then exports them to CSV and prints the time and the process's peak resident memory.
"""

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from batchledger.export import ExportCounts, csv_chunks, export_rows
from batchledger.savefile import save_chunks


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as folder:
        input_path, output_path = Path(folder) / "in.jsonl", Path(folder) / "out.jsonl"
        with input_path.open("w") as inputs, output_path.open("w") as outputs:
            for n in range(requests):
                inputs.write(f'{{"custom_id":"r{n}","method":"POST","url":"/v1/responses"}}\n')
                if n % 10:
                    body = {"object": "response", "output_text": f"answer {n} " + "x" * 200}
                    line = {"custom_id": f"r{n}", "response": {"status_code": 200, "body": body}}
                    outputs.write(json.dumps(line) + "\n")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        counts = ExportCounts()
        saved = save_chunks(
            Path(folder) / "export.csv", csv_chunks(export_rows(input_path, [output_path], counts))
        )
        took = time.monotonic() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(
            f"{counts.rows} requests {counts.by_status}, {saved.size} bytes of CSV in {took:.1f}s;"
            f" peak RSS {peak / 1024:.0f} MB (before export {before / 1024:.0f} MB)"
        )


if __name__ == "__main__":
    main()
