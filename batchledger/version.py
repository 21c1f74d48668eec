"""The version of batchledger, in a module of its own: the package imports its API, and
the modules below it read the version from here, not from the package (no import cycle)."""

__version__ = "0.1.0"
