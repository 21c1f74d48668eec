"""Input tokens counted offline, and the most output tokens each request allows.

The vocabularies ship inside the `quicktok-v1` wheel (cl100k_base, o200k_base; its ids are
tiktoken's, byte for byte): nothing is downloaded, at install or at run time. A model whose
tokenizer is not known here (Claude, an Azure deployment name, anything new) is estimated
at one token per 4 bytes of the text it reads, and marked as estimated.

What is counted is what the model reads: the text of the messages (`messages`, `input`,
`instructions`, `system`, `prompt`) and the JSON of any tool definitions, plus a small fixed
overhead per message and per request (the chat format's own tokens, as OpenAI's cookbook
counts them). It is an estimate of the bill's input tokens, close for text, not exact: the
provider adds what it adds (images, files, and its own formatting, are not counted).

This module and `retry` are the only ones that parse request lines.
"""

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quicktok import Tokenizer

BYTES_PER_TOKEN = 4  # the estimate for a model without a known tokenizer
TOKENS_PER_MESSAGE = 3  # the chat format's tokens around each message
TOKENS_PER_REQUEST = 3  # and the reply's priming
# Model name prefixes and their encodings; the longest matching prefix wins.
ENCODINGS = {
    "gpt-4o": "o200k_base",
    "chatgpt-4o": "o200k_base",
    "gpt-4.1": "o200k_base",
    "gpt-4.5": "o200k_base",
    "gpt-5": "o200k_base",
    "gpt-oss": "o200k_base",
    "o1": "o200k_base",
    "o3": "o200k_base",
    "o4": "o200k_base",
    "codex": "o200k_base",
    "computer-use": "o200k_base",
    "gpt-4": "cl100k_base",
    "gpt-3.5": "cl100k_base",
    "text-embedding-3": "cl100k_base",
    "text-embedding-ada-002": "cl100k_base",
}
UNREADABLE = "(unreadable)"  # the model of lines that are not request objects
OUTPUT_CAPS = ("max_output_tokens", "max_completion_tokens", "max_tokens")
_TEXT_KEYS = ("instructions", "system", "prompt")
# Counts of texts already seen (a system prompt or instructions shared by every request are
# counted once), kept while they total at most this many characters; then forgotten.
CACHE_CHARS = 4 * 1024 * 1024
_loaded: dict[str, "Tokenizer"] = {}


def encoding_for(model: str) -> str | None:
    """The encoding of `model` (a name as a request line gives it), or None if unknown."""
    name = model.lower().rsplit("/", 1)[-1]
    best = ""
    for prefix in ENCODINGS:
        if len(prefix) > len(best) and (
            name == prefix or name.startswith((prefix + "-", prefix + "."))
        ):
            best = prefix
    return ENCODINGS[best] if best else None


def tokenizer(encoding: str) -> "Tokenizer":
    """The tokenizer of `encoding`, loaded once (about 0.3 s, from the installed package)."""
    if encoding not in _loaded:
        import quicktok  # only the commands that count tokens pay for the vocabulary

        _loaded[encoding] = quicktok.get_encoding(encoding)
    return _loaded[encoding]


def count_text(text: str, model: str) -> tuple[int, bool]:
    """Tokens of `text` as `model` reads it, and whether that is an estimate (bytes / 4)."""
    encoding = encoding_for(model)
    if encoding is None:
        return _estimate(len(text.encode("utf-8", "surrogatepass"))), True
    return tokenizer(encoding).count(text), False


def _estimate(size: int) -> int:
    return -(-size // BYTES_PER_TOKEN)  # rounded up: an estimate errs on the side of cost


@dataclass
class ModelCount:
    """One model's requests in an input: how many, their input tokens, their output caps."""

    model: str
    requests: int = 0
    bytes: int = 0  # of the request lines
    input_tokens: int = 0
    estimated: bool = False  # bytes / 4: no tokenizer is known for the model
    max_output_tokens: int = 0  # the sum of the requests' caps
    uncapped: int = 0  # requests that set no cap on their output


@dataclass
class InputCount:
    """What counting an input found: its lines and bytes, and a count per model."""

    lines: int = 0
    bytes: int = 0
    models: dict[str, ModelCount] = field(default_factory=dict)
    unreadable: int = 0  # lines that are not a JSON object: counted as bytes / 4, no model


class BadLine(Exception):
    """A line that is not a request object."""


def request_parts(request: Any) -> tuple[str, list[str], int, int | None]:
    """(model, texts the model reads, messages, output cap or None) of one parsed line.

    OpenAI's lines carry the request in `body`; Anthropic's Message Batches in `params`.
    """
    if not isinstance(request, dict):
        raise BadLine("not a JSON object")
    body = request.get("body")
    if not isinstance(body, dict):
        body = request.get("params")
    if not isinstance(body, dict):
        raise BadLine("no body or params object")
    model = body.get("model")
    texts: list[str] = []
    messages = 0
    for key in _TEXT_KEYS:
        _texts_of(body.get(key), texts)
    for key in ("messages", "input"):
        value = body.get(key)
        if isinstance(value, list):
            messages += len(value)
        _texts_of(value, texts)
    tools = body.get("tools")
    if tools:
        texts.append(json.dumps(tools, separators=(",", ":")))
    cap = None
    for key in OUTPUT_CAPS:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            cap = value
            break
    return (model if isinstance(model, str) else "(no model)"), texts, messages, cap


def _texts_of(value: Any, into: list[str]) -> None:
    """The text in a message field: a string, a content part, or a list of either."""
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, list):
        for item in value:
            _texts_of(item, into)
    elif isinstance(value, dict):
        # A message ({"role", "content"}) or a content part ({"type": "text", "text"}).
        text = value.get("text")
        if isinstance(text, str):
            into.append(text)
        content = value.get("content")
        if content is not None:
            _texts_of(content, into)


class Counter:
    """Counts request lines one at a time into an InputCount."""

    def __init__(self) -> None:
        self.result = InputCount()
        self._decode = json.JSONDecoder().raw_decode
        # Per model: its tokenizer's count, or None to estimate (bytes / 4).
        self._counters: dict[str, Callable[[str], int] | None] = {}
        self._seen: dict[tuple[str, str], int] = {}  # (model, text): tokens
        self._seen_chars = 0

    def add(self, line: bytes) -> tuple[str, int] | None:
        """Count one line; its model and input tokens (None for a blank line)."""
        size = len(line)
        self.result.lines += 1
        self.result.bytes += size
        text = line.decode("utf-8", "surrogateescape").strip()
        if not text:
            return None
        try:
            request, _ = self._decode(text)
            model, texts, messages, cap = request_parts(request)
        except (ValueError, BadLine):
            self.result.unreadable += 1
            model, texts, messages, cap = UNREADABLE, [text], 0, None
        count = self.result.models.get(model)
        if count is None:
            encoding = encoding_for(model)
            self._counters[model] = None if encoding is None else tokenizer(encoding).count
            count = self.result.models[model] = ModelCount(model, estimated=encoding is None)
        count.requests += 1
        count.bytes += size
        counter = self._counters[model]
        if counter is None:
            tokens = _estimate(sum(len(t.encode("utf-8", "surrogatepass")) for t in texts))
        else:
            tokens = 0
            for text in texts:
                key = (model, text)
                found = self._seen.get(key)
                if found is None:
                    found = counter(text)
                    if self._seen_chars > CACHE_CHARS:
                        self._seen.clear()
                        self._seen_chars = 0
                    self._seen[key] = found
                    self._seen_chars += len(text)
                tokens += found
        tokens += messages * TOKENS_PER_MESSAGE + TOKENS_PER_REQUEST
        count.input_tokens += tokens
        if cap is None:
            count.uncapped += 1
        else:
            count.max_output_tokens += cap
        return model, tokens


def lines_of(path: Path) -> Iterator[bytes]:
    """The lines of `path` (each with its newline), streamed: memory stays a buffer plus
    the longest line, whatever the file's size."""
    with path.open("rb") as stream:
        yield from stream


def count_input(path: Path) -> InputCount:
    """Count every line of `path`, streaming."""
    counter = Counter()
    for line in lines_of(path):
        counter.add(line)
    return counter.result
