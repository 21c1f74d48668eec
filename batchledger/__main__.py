from batchledger.cli import entry

entry()
