"""The built wheel, installed into a fresh venv outside the source tree, migrates a ledger."""

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from helpers import write_jsonl

from batchledger.emulator import EmulatorServer
from batchledger.migrations import migration_names

SOURCE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the source tree, built once for this module."""
    # Built from a copy: setuptools reuses build/lib, so a build made before a module moved
    # would slip its stale files into the wheel.
    tree = tmp_path_factory.mktemp("source") / "batchledger"
    shutil.copytree(
        SOURCE,
        tree,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "*cache*", "node_modules", "logs"
        ),
    )
    wheels = tmp_path_factory.mktemp("wheels")
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
            str(tree),
        ],
        check=True,
        capture_output=True,
    )
    [built] = wheels.glob("batchledger-*.whl")
    return built


def test_wheel_holds_migrations_inside_the_package(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    # Every module of the source tree is in the wheel; migrations/ under batchledger/.
    expected = {
        f"batchledger/{path.relative_to(SOURCE / 'batchledger').as_posix()}"
        for path in (SOURCE / "batchledger").rglob("*.py")
    } | {
        f"batchledger/migrations/{path.relative_to(SOURCE / 'migrations').as_posix()}"
        for path in (SOURCE / "migrations").rglob("*.py")
    }

    assert top_level == {"batchledger"}
    assert "batchledger/migrations/__init__.py" in names
    assert sorted(expected - names) == []


def test_wheel_ships_py_typed_for_the_users_type_checkers(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        assert "batchledger/py.typed" in archive.namelist()
        assert "batchledger/api/client.py" in archive.namelist()


def test_wheel_in_a_fresh_venv_runs_every_migration(
    wheel: Path, tmp_path: Path, emulator: EmulatorServer
):
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
        # The runtime dependencies come from this test's environment; batchledger must come
        # from the wheel (site-packages .pth files are not read from PYTHONPATH, so the
        # source tree's editable install is not visible).
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
        "BATCHLEDGER_DB": str(elsewhere / "fresh.db"),
    }

    def run_python(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True
        )

    installed = run_python(
        "import batchledger, batchledger.migrations as m; print(batchledger.__file__);"
        "print(m.__file__); print(*m.migration_names())"
    )
    top_level = run_python("import migrations")
    created = subprocess.run(
        [str(fresh / "bin" / "batchledger"), "create", "--in", "in.jsonl"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )

    assert installed.returncode == 0, installed.stderr
    package_file, migrations_file, defined = installed.stdout.splitlines()
    assert package_file.startswith(str(fresh)), package_file
    assert migrations_file.startswith(str(fresh)), migrations_file
    assert "No module named 'migrations'" in top_level.stderr
    assert created.returncode == 0, created.stderr
    conn = sqlite3.connect(elsewhere / "fresh.db")
    applied = [row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations")]
    assert applied == defined.split() == migration_names()
    assert applied  # not vacuously equal
    assert conn.execute("SELECT count(*) FROM batches").fetchone()[0] == 1


def readme_demo_lines() -> list[str]:
    """The commands of the README's offline try-out (the block after `<!-- demo -->`)."""
    text = (SOURCE / "README.md").read_text()
    block = text.split("<!-- demo -->", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines()[1:] if line.strip()]


def test_a_new_user_runs_the_readme_demo_from_a_fresh_venv(wheel: Path, tmp_path: Path):
    fresh = tmp_path / "fresh-venv"
    venv.EnvBuilder(with_pip=True).create(fresh)
    subprocess.run(
        [
            str(fresh / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    clone = tmp_path / "clone"
    shutil.copytree(SOURCE / "examples", clone / "examples")
    # Nothing but the clone: no key, no base URL, no ledger named; a home of its own.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENAI_", "BATCHLEDGER_"))
    }
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]  # the dependencies, not batchledger
    env["HOME"] = str(tmp_path / "home")
    env["XDG_DATA_HOME"] = str(tmp_path / "home" / "data")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "home" / "config")
    env["PATH"] = f"{fresh / 'bin'}{os.pathsep}{env['PATH']}"

    lines = readme_demo_lines()
    runs = [
        subprocess.run(
            line, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=120
        )
        for line in lines
    ]

    assert lines[0].split()[-3:] == ["create", "--in", "examples/requests.jsonl"]
    for line, run in zip(lines, runs, strict=True):
        assert run.returncode == 0, f"{line}\n{run.stderr}"
    created, watched, listed = runs
    batch_id = next(
        line.split(": ")[1] for line in created.stdout.splitlines() if line.startswith("batch_id")
    )
    assert "status: completed" in watched.stdout
    assert f"saved: results_{batch_id}.jsonl" in watched.stdout
    assert (clone / f"results_{batch_id}.jsonl").exists()
    assert batch_id in listed.stdout and "completed" in listed.stdout
