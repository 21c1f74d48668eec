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
SPEND = "tests/test_spend_budgets.py::"
JOB_CHECKS = "tests/test_job_checks.py::"
DOWNLOAD = "tests/test_download_checks.py::"
SESSION = (
    "tests/test_python_api.py::test_a_sweep_interrupted_in_a_session_leaves_its_later_downloads_"
    "working"
)
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
    Guard(
        "a sweep leaves alone a create another run holds the claim on",
        "batchledger/recovery.py",
        "rows = [row for row in rows if not claimed_by_another_run(row)]",
        "rows = list(rows)",
        ("tests/test_claims.py::test_a_sweep_leaves_alone_a_create_another_run_holds",),
    ),
    Guard(
        "an error of our own that holds the key is blanked on stderr",
        "batchledger/cli/main.py",
        'print(f"batchledger: error: {redact(exc.message)}", file=sys.stderr)',
        'print(f"batchledger: error: {exc.message}", file=sys.stderr)',
        ("tests/test_errors.py::test_a_key_pasted_where_a_path_goes_is_not_printed_back",),
    ),
    Guard(
        "an Anthropic API error is blanked where it becomes ours (so in the ledger)",
        "batchledger/providers/anthropic/wire.py",
        'message = redact(f"{operation} failed with HTTP {status}: {detail}{hint}")',
        'message = f"{operation} failed with HTTP {status}: {detail}{hint}"',
        (
            "tests/test_anthropic_batches.py::test_an_api_error_that_echoes_the_key_is_stored_"
            "without_it",
        ),
    ),
    Guard(
        "a sweep does not abandon a lost create whose search could not tell",
        "batchledger/recovery.py",
        "            search.complete\n",
        "            True\n",
        (
            "tests/test_anthropic_batches.py::test_a_sweep_does_not_abandon_a_lost_create_it_"
            "cannot_tell_apart",
        ),
    ),
    Guard(
        "the day budget counts the batches that ended today at their actual cost",
        "batchledger/spend.py",
        "        elif _ended_at(row) >= since:\n",
        "        elif False:\n",
        (
            SPEND
            + "test_what_ended_today_counts_against_the_day_budget_at_its_actual_cost[batches]",
        ),
    ),
    Guard(
        "the day budget counts the jobs that ended today at their actual cost",
        "batchledger/spend.py",
        "        else:\n            spend.actual += cost\n    return spend",
        "        else:\n            pass\n    return spend",
        (SPEND + "test_what_ended_today_counts_against_the_day_budget_at_its_actual_cost[jobs]",),
    ),
    Guard(
        "prune keeps the files of a batch whose saved copy changed in place",
        "batchledger/batch.py",
        '    return bool(sha256_of(path) == saved["sha256"])',
        "    return True",
        ("tests/test_prune.py::test_a_saved_file_changed_in_place_keeps_the_remote_files",),
    ),
    Guard(
        "a job's merged file changed in place is not copied as it is",
        "batchledger/jobs/results.py",
        '        return path if sha256_of(path) == saved["sha256"] else None',
        "        return path",
        (
            JOB_CHECKS + "test_retrieve_of_a_job_to_out_does_not_copy_a_merged_file_changed_in_"
            "place",
        ),
    ),
    Guard(
        "a job's input is hashed again when its mtime or inode moved, not only its size",
        "batchledger/jobs/parts.py",
        "        stamp = (stat.st_size, stat.st_mtime_ns, stat.st_ino)",
        "        stamp = (stat.st_size, 0, 0)",
        (JOB_CHECKS + "test_an_input_edited_in_place_while_one_run_follows_its_job_is_noticed",),
    ),
    Guard(
        "export refuses an input changed since it was sent",
        "batchledger/export.py",
        'if row["input_bytes"] is not None and input_path.stat().st_size != row["input_bytes"]:',
        "if False:",
        ("tests/test_export.py::test_export_refuses_an_input_changed_since_it_was_sent",),
    ),
    Guard(
        "an OpenAI download is held to its announced size",
        "batchledger/providers/openai/__init__.py",
        "            int(announced) if announced is not None else None,",
        "            None,",
        (
            DOWNLOAD + "test_an_openai_download_short_of_its_announced_size_is_fetched_again_then_"
            "refused",
        ),
    ),
    Guard(
        "an OpenAI download short of its size is fetched again",
        "batchledger/providers/openai/__init__.py",
        "        except (_DroppedBody, Incomplete) as exc:",
        "        except _DroppedBody as exc:",
        (
            DOWNLOAD + "test_an_openai_download_short_of_its_announced_size_is_fetched_again_then_"
            "refused",
        ),
    ),
    Guard(
        "an Anthropic download is held to its announced size",
        "batchledger/providers/anthropic/__init__.py",
        "                    int(announced) if announced is not None else None,",
        "                    None,",
        (
            DOWNLOAD + "test_an_anthropic_download_short_of_its_announced_size_is_fetched_again_"
            "then_refused",
        ),
    ),
    Guard(
        "an Anthropic download short of its size is fetched again",
        "batchledger/providers/anthropic/__init__.py",
        "            except (_DroppedBody, Incomplete) as exc:",
        "            except _DroppedBody as exc:",
        (
            DOWNLOAD + "test_an_anthropic_download_short_of_its_announced_size_is_fetched_again_"
            "then_refused",
        ),
    ),
    Guard(
        "a download stops at its next chunk once an interrupted sweep says so",
        "batchledger/providers/openai/__init__.py",
        "            if downloads_stopped():\n                raise KeyboardInterrupt\n",
        "",
        (SESSION,),
    ),
    Guard(
        "an interrupted sweep stops its own downloads, not another thread's",
        "batchledger/providers/__init__.py",
        "_sweep = threading.local()\n",
        '_sweep = type("Shared", (), {})()  # one for the whole process\n',
        (SESSION,),
    ),
    Guard(
        "a job another run holds is not resumed",
        "batchledger/ledger/job_store.py",
        "            refuse_if_held(input_, job)\n",
        "",
        (
            "tests/test_claims.py::test_a_job_another_host_is_sending_is_not_resumed_until_its_"
            "lease_runs_out",
        ),
    ),
    Guard(
        "export refuses a job whose input changed since it was split",
        "batchledger/export.py",
        'if not input_path.is_file() or input_path.stat().st_size != job["input_bytes"]:',
        "if not input_path.is_file():",
        ("tests/test_export.py::test_export_of_a_job_refuses_an_input_changed_since_it_was_split",),
    ),
    Guard(
        "prune leaves the files made where the account pointed before",
        "batchledger/prune.py",
        'if row["account"] == account.name and row["base_url"] in (None, account.location)',
        'if row["account"] == account.name',
        ("tests/test_prune.py::test_prune_leaves_the_files_made_where_the_account_pointed_before",),
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
