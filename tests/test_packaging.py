"""The built wheel, installed into a fresh venv outside the source tree, migrates a ledger."""

import os
import sqlite3
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from helpers import write_jsonl

from batchledger.emulator import EmulatorServer
from migrations import migrations

SOURCE = Path(__file__).resolve().parents[1]


def test_wheel_ships_migrations_and_runs_them(tmp_path: Path, emulator: EmulatorServer):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(SOURCE),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = wheels.glob("batchledger-*.whl")
    fresh = tmp_path / "fresh-venv"
    venv.EnvBuilder(with_pip=True).create(fresh)
    python = fresh / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_jsonl(elsewhere / "in.jsonl", 2)
    env = {
        **os.environ,
        # The runtime dependencies come from this test's environment; batchledger and
        # migrations must come from the wheel (site-packages .pth files are not read
        # from PYTHONPATH, so the source tree's editable install is not visible).
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
        "BATCHLEDGER_DB": str(elsewhere / "fresh.db"),
    }

    where = subprocess.run(
        [
            str(python),
            "-c",
            "import batchledger, migrations; print(batchledger.__file__);"
            "print(migrations.__file__)",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    created = subprocess.run(
        [str(fresh / "bin" / "batchledger"), "create", "--in", "in.jsonl"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )

    assert all(path.startswith(str(fresh)) for path in where), where
    assert created.returncode == 0, created.stderr
    conn = sqlite3.connect(elsewhere / "fresh.db")
    applied = [row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations")]
    assert applied == [migration.name for migration in migrations._migrations]
    assert conn.execute("SELECT count(*) FROM batches").fetchone()[0] == 1
