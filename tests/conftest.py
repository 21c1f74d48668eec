"""Shared fixtures: an isolated home for every test, the emulator, and a CLI runner."""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import API_KEY, ServerFactory

from batchledger.cli import main
from batchledger.emulator import EmulatorServer


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the ledger, the data dir and the working dir at tmp_path; a dummy key."""
    for name in list(os.environ):
        if name.startswith("OPENAI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("BATCHLEDGER_DB", str(tmp_path / "ledger.db"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    # No accounts.toml unless a test writes one here.
    monkeypatch.setenv("BATCHLEDGER_CONFIG", str(tmp_path / "accounts.toml"))
    monkeypatch.delenv("BATCHLEDGER_ACCOUNT", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """A fresh emulator on a free port, with the SDK pointed at it."""
    with EmulatorServer(host="127.0.0.1", port=0) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


@dataclass
class Result:
    code: int
    out: str
    err: str

    def field(self, name: str) -> str:
        """The value of a `name: value` line on stdout."""
        for line in self.out.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return value
        raise AssertionError(f"no {name!r} line in stdout:\n{self.out}")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `main([...])` and return its exit code, stdout and stderr."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """Start emulators with custom settings; all are stopped at teardown."""
    started: list[EmulatorServer] = []

    def make(**kwargs: Any) -> EmulatorServer:
        server = EmulatorServer(**kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: ServerFactory) -> EmulatorServer:
    return make_server()
