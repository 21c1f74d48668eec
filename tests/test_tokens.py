"""Offline token counts: the vocabulary ships in a package, and lines are counted per model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from batchledger.tokens import count_input, count_text, encoding_for

# Counted by tiktoken itself (encode_ordinary) with the o200k_base and cl100k_base files.
SENTENCE = "Batch prices are half of the standard prices. Résumé: 日本語 🚀"
O200K_TOKENS = 16
CL100K_TOKENS = 20

CHILD = f"""
import socket
from batchledger.tokens import count_text
try:
    socket.create_connection(("1.1.1.1", 443), timeout=2)
    print("NETWORK REACHABLE")
except OSError:
    pass
print(count_text({SENTENCE!r}, "gpt-4o-mini")[0], count_text({SENTENCE!r}, "gpt-4")[0])
"""

NO_CONNECT = """
import socket
def _refuse(*args, **kwargs):
    raise OSError("network cut off by the test")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
"""


def _network_cut_off() -> list[str]:
    """A command prefix that runs its child with no network: a new network namespace
    (only loopback, down) where unshare can make one, else nothing (see the sitecustomize)."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


def test_the_tokenizer_counts_with_the_network_cut_off(tmp_path: Path) -> None:
    """The vocabulary is inside the installed package: a child with no network (and an
    empty home and cache, so nothing fetched before can help) counts exactly."""
    site = tmp_path / "site"
    site.mkdir()
    prefix = _network_cut_off()
    if not prefix:
        # No namespaces here: a sitecustomize makes every connection fail instead.
        (site / "sitecustomize.py").write_text(NO_CONNECT)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "QUICKTOK_DATA": str(home / "quicktok"),
        "TIKTOKEN_CACHE_DIR": str(home / "tiktoken"),
        "PYTHONPATH": str(site),
    }
    done = subprocess.run(
        [*prefix, sys.executable, "-c", CHILD], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(O200K_TOKENS), str(CL100K_TOKENS)]
    assert not list(home.rglob("*")), "the tokenizer wrote a cache"


def test_models_map_to_their_encodings() -> None:
    assert encoding_for("gpt-4o-mini") == "o200k_base"
    assert encoding_for("gpt-4o-mini-2024-07-18") == "o200k_base"
    assert encoding_for("gpt-4.1-nano") == "o200k_base"
    assert encoding_for("o3-mini") == "o200k_base"
    assert encoding_for("gpt-5") == "o200k_base"
    assert encoding_for("gpt-4") == "cl100k_base"
    assert encoding_for("gpt-4-turbo") == "cl100k_base"
    assert encoding_for("gpt-3.5-turbo") == "cl100k_base"
    assert encoding_for("claude-sonnet-4-5") is None
    assert encoding_for("my-azure-deployment") is None
    assert encoding_for("gpt-4odd") is None  # a prefix counts only whole


def test_a_model_without_a_tokenizer_is_estimated_as_bytes_over_4() -> None:
    assert count_text("x" * 401, "claude-sonnet-4-5") == (101, True)
    assert count_text(SENTENCE, "gpt-4o") == (O200K_TOKENS, False)


def test_an_input_is_counted_per_model_with_its_output_caps(tmp_path: Path) -> None:
    lines = [
        # chat completions: a system and a user message, max_tokens
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": SENTENCE},
                    {"role": "user", "content": [{"type": "text", "text": SENTENCE}]},
                ],
                "max_tokens": 100,
            },
        },
        # responses: instructions and a string input, max_output_tokens
        {
            "custom_id": "b",
            "method": "POST",
            "url": "/v1/responses",
            "body": {
                "model": "gpt-4o-mini",
                "instructions": SENTENCE,
                "input": SENTENCE,
                "max_output_tokens": 50,
            },
        },
        # no cap at all
        {"custom_id": "c", "body": {"model": "gpt-4", "input": SENTENCE}},
        # Anthropic's Message Batches: params, with system and max_tokens
        {
            "custom_id": "d",
            "params": {
                "model": "claude-sonnet-4-5",
                "system": "x" * 40,
                "messages": [{"role": "user", "content": "y" * 40}],
                "max_tokens": 1000,
            },
        },
    ]
    path = tmp_path / "in.jsonl"
    text = "".join(json.dumps(line) + "\n" for line in lines) + "not json\n"
    path.write_text(text)

    counted = count_input(path)

    assert counted.lines == 5
    assert counted.bytes == len(text.encode())
    assert counted.unreadable == 1
    mini = counted.models["gpt-4o-mini"]
    assert (mini.requests, mini.estimated) == (2, False)
    # Four texts; three tokens per message (two messages) and per request (two requests).
    assert mini.input_tokens == 4 * O200K_TOKENS + 2 * 3 + 2 * 3
    assert (mini.max_output_tokens, mini.uncapped) == (150, 0)
    gpt4 = counted.models["gpt-4"]
    assert (gpt4.input_tokens, gpt4.max_output_tokens, gpt4.uncapped) == (CL100K_TOKENS + 3, 0, 1)
    claude = counted.models["claude-sonnet-4-5"]
    assert claude.estimated
    assert claude.input_tokens == 10 + 10 + 3 + 3  # 40 bytes / 4 each; one message
    assert (claude.max_output_tokens, claude.uncapped) == (1000, 0)


@pytest.mark.parametrize("ending", ["", "\n"])
def test_the_last_line_counts_with_or_without_its_newline(tmp_path: Path, ending: str) -> None:
    path = tmp_path / "in.jsonl"
    body = '{"body": {"model": "gpt-4o", "input": "hi", "max_output_tokens": 5}}'
    path.write_text(body + "\n" + body + ending)
    counted = count_input(path)
    assert counted.lines == 2
    assert counted.models["gpt-4o"].max_output_tokens == 10
