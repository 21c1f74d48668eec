"""sqlite-utils' `Database`, imported without numpy.

sqlite-utils imports numpy whenever it is installed (the tokenizer, quicktok, needs it), only
to store numpy values, which the ledger never holds: that import cost every command about
0.1 s and 12 MB (`python -c "import sqlite_utils"`: 0.23 s with numpy installed, 0.13 s
without). numpy stays importable for the code that needs it.
"""

import sys

_hidden = "numpy" not in sys.modules
if _hidden:
    sys.modules["numpy"] = None  # type: ignore[assignment]  # None: "import numpy" fails
try:
    from sqlite_utils import Database
finally:
    if _hidden:
        del sys.modules["numpy"]

__all__ = ["Database"]
