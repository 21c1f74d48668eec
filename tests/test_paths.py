"""Where the ledger and the accounts file live: the precedence, and the per-user dirs."""

import sys
from pathlib import Path

import pytest

from batchledger.paths import config_path, ledger_path

xdg = pytest.mark.skipif(
    sys.platform in ("win32", "darwin"), reason="the XDG rules of Linux (and other Unixes)"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own, with none of the variables that choose a path set."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("BATCHLEDGER_DB", "BATCHLEDGER_CONFIG", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    return home


@xdg
def test_ledger_precedence(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert ledger_path() == tmp_path / "data" / "batchledger" / "ledger.db"

    monkeypatch.setenv("BATCHLEDGER_DB", str(tmp_path / "from-env.db"))
    assert ledger_path() == tmp_path / "from-env.db"

    assert ledger_path(str(tmp_path / "from-option.db")) == tmp_path / "from-option.db"


@pytest.mark.skipif(sys.platform == "win32", reason="~ is $HOME")
def test_ledger_paths_are_made_absolute(home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(home)
    assert ledger_path("here.db") == home / "here.db"
    assert ledger_path("~/mine.db") == home / "mine.db"
    monkeypatch.setenv("BATCHLEDGER_DB", "~/env.db")
    assert ledger_path() == home / "env.db"


@xdg
def test_ledger_in_xdg_data_home(home: Path, monkeypatch: pytest.MonkeyPatch):
    assert ledger_path() == home / ".local" / "share" / "batchledger" / "ledger.db"

    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    assert ledger_path() == home / "xdg-data" / "batchledger" / "ledger.db"

    # XDG: a relative path is invalid and must be ignored.
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")
    assert ledger_path() == home / ".local" / "share" / "batchledger" / "ledger.db"


@xdg
def test_config_precedence(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert config_path() == tmp_path / "config" / "batchledger" / "accounts.toml"

    monkeypatch.setenv("BATCHLEDGER_CONFIG", "~/my-accounts.toml")
    assert config_path() == home / "my-accounts.toml"


@xdg
def test_config_in_xdg_config_home(home: Path, monkeypatch: pytest.MonkeyPatch):
    assert config_path() == home / ".config" / "batchledger" / "accounts.toml"

    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
    assert config_path() == home / "xdg-config" / "batchledger" / "accounts.toml"

    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/config")
    assert config_path() == home / ".config" / "batchledger" / "accounts.toml"


@xdg
def test_config_and_data_are_apart(home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "d"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "c"))
    assert ledger_path().parent != config_path().parent


@pytest.mark.skipif(sys.platform == "win32", reason="the home is $HOME")
def test_macos_keeps_application_support_whatever_xdg_says(
    home: Path, monkeypatch: pytest.MonkeyPatch
):
    # platformdirs would follow $XDG_DATA_HOME on macOS; a ledger that moved would forget
    # every batch. sys.platform is read at call time, so this runs on any platform.
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
    support = home / "Library" / "Application Support" / "batchledger"
    assert ledger_path() == support / "ledger.db"
    assert config_path() == support / "accounts.toml"
