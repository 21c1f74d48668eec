"""batchledger: the OpenAI Batch API from the command line, with a local SQLite ledger."""

__version__ = "0.1.0"
