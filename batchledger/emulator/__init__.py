"""A local emulator of the OpenAI Files and Batches API, for tests and offline use.

Start one with `with EmulatorServer() as server:` and point the SDK at it with
`OpenAI(api_key="sk-test", base_url=server.base_url)`. `EmulatorServer(flavor="anthropic")`
serves Anthropic's Message Batches instead: `Anthropic(api_key=..., base_url=server.base_url)`.
"""

from .faults import Fault
from .message_batches import StoredMessageBatch
from .models import RecordedRequest, StoredBatch, StoredFile
from .server import EmulatorServer
from .state import EmulatorState

__all__ = [
    "EmulatorServer",
    "EmulatorState",
    "Fault",
    "RecordedRequest",
    "StoredBatch",
    "StoredFile",
    "StoredMessageBatch",
]
