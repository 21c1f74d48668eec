"""Each guard no normal run trips, taken out, fails the tests that stand for it (issue 24).

A guard behind another layer (an fsync no run can see, a size check the transport makes
first, the check of an upgrade's foreign keys) can be deleted with every other test still
passing. Each row below takes one out of a copy of the project and runs the tests named for
it there: they must fail, on an assertion, not on an import. A copy with nothing taken out
runs the same tests first, and must pass. A new guard of this kind gets its row (README,
"Tests").
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]


class Guard(NamedTuple):
    name: str
    path: str  # in the project
    guard: str  # its text there, found once
    without: str  # what is left when it is taken out
    tests: tuple[str, ...]
    posix: bool = False  # its tests run on POSIX only (folders are fsynced there only)


DURABLE = "tests/test_durability.py::"
UPGRADE = "tests/test_ledger_upgrade.py::"
GUARDS = [
    Guard(
        "a saved file's bytes are fsynced before its rename",
        "batchledger/savefile.py",
        "        os.fsync(self._out.fileno())\n",
        "",
        (DURABLE + "test_retrieve_makes_the_output_and_error_files_durable_before_recording_them",),
        posix=True,
    ),
    Guard(
        "the rename is made durable: its folder is fsynced",
        "batchledger/savefile.py",
        "        os.fsync(fd)\n",
        "        pass\n",
        (DURABLE + "test_retrieve_makes_the_output_and_error_files_durable_before_recording_them",),
        posix=True,
    ),
    Guard(
        "the ordered results' folder is fsynced before the ledger names them",
        "batchledger/result_lines.py",
        "            sync_directory(self._paths[0].parent)\n",
        "",
        (
            DURABLE
            + "test_an_anthropic_retrieve_makes_its_ordered_files_durable_before_recording_them",
        ),
        posix=True,
    ),
    Guard(
        "bytes of another size than announced are not saved",
        "batchledger/savefile.py",
        "if expected_size is not None and writer.size != expected_size:",
        "if False and expected_size is not None and writer.size != expected_size:",
        (
            "tests/test_savefile.py::test_bytes_of_another_size_than_announced_leave_the_target_as_it_was",
        ),
    ),
    Guard(
        "an upgrade sets aside the history of batches and jobs not in the ledger",
        "batchledger/ledger/opening.py",
        "notes = _set_aside_orphan_history(db)",
        "notes = []",
        (
            UPGRADE + "test_history_of_batches_deleted_by_hand_is_set_aside_when_a_first_release_"
            "ledger_upgrades",
            UPGRADE + "test_job_history_of_a_job_deleted_by_hand_is_set_aside_too",
        ),
    ),
    Guard(
        "history stays append-only once its orphans were moved out",
        "batchledger/ledger/opening.py",
        "            db.execute(made[0])\n",
        "            pass\n",
        (UPGRADE + "test_job_history_of_a_job_deleted_by_hand_is_set_aside_too",),
    ),
    Guard(
        "an upgrade that would leave rows pointing at missing ones is refused",
        "batchledger/ledger/opening.py",
        "            _check_foreign_keys(db, path, applied[-1] if applied else None)\n",
        "",
        (UPGRADE + "test_a_ledger_whose_rows_point_at_a_job_deleted_by_hand_is_left_as_it_was",),
    ),
]


def copy_project(to: Path) -> Path:
    """The package, its tests and its config, where `python -m pytest` in `to` imports them.

    The migrations go in as batchledger/migrations, as the wheel installs them: so that
    they, too, are imported from the copy, not from the installed project.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "batchledger", to / "batchledger", ignore=ignore)
    shutil.copytree(ROOT / "migrations", to / "batchledger" / "migrations", ignore=ignore)
    tests = shutil.ignore_patterns("__pycache__", "*.pyc", "conformance")  # node_modules: 74 MB
    shutil.copytree(ROOT / "tests", to / "tests", ignore=tests)
    shutil.copy(ROOT / "pyproject.toml", to / "pyproject.toml")
    return to


def run_tests(project: Path, tests: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(project), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *tests],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


HERE = [guard for guard in GUARDS if os.name == "posix" or not guard.posix]


@pytest.fixture(scope="module")
def untouched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("untouched"))
    every_test = tuple(dict.fromkeys(test for guard in HERE for test in guard.tests))
    ran = run_tests(project, every_test)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    summary = ran.stdout.splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, ran.stdout  # each one ran
    where = subprocess.run(
        [sys.executable, "-c", "import batchledger.migrations as m; print(m.__file__)"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(project)), where.stdout  # the copy's, not the project's
    return project


@pytest.mark.parametrize("guard", HERE, ids=[guard.name for guard in HERE])
def test_taking_the_guard_out_fails_its_tests(untouched: Path, tmp_path: Path, guard: Guard):
    project = tmp_path / "project"
    shutil.copytree(untouched, project, copy_function=os.link)  # the files shared, but one:
    source = project / guard.path.replace("migrations/", "batchledger/migrations/", 1)
    text = source.read_text()
    assert text.count(guard.guard) == 1, f"{guard.path} no longer holds the guard as written here"
    source.unlink()
    source.write_text(text.replace(guard.guard, guard.without))

    ran = run_tests(project, guard.tests)

    assert ran.returncode == 1, ran.stdout + ran.stderr  # 1: tests failed (2+: could not run)
    summary = ran.stdout.splitlines()[-1]
    assert " failed" in summary and " error" not in summary, ran.stdout
