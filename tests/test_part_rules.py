"""The part rules (jobs/rules.py): a pure function of a part, its last attempt and the time,
tested without a server or a ledger."""

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from batchledger.jobs.rules import (
    MAX_REQUEUE_BACKOFF_SECONDS,
    REQUEUE_BACKOFF_SECONDS,
    Do,
    next_step,
    requeue_wait,
)
from batchledger.times import iso_utc

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def part(state: str = "queued", **fields: Any) -> dict[str, Any]:
    return {
        "state": state,
        "part_index": 2,
        "requeues": 0,
        "not_before": None,
        "requeued_at": None,
        **fields,
    }


def attempt(status: str | None, *codes: str) -> dict[str, Any]:
    errors = json.dumps([{"code": code} for code in codes]) if codes else None
    return {"status": status, "errors": errors, "batch_id": "batch_1", "not_found_at": None}


def test_a_queued_part_never_bounced_is_sent():
    assert next_step(part(), None, NOW, finished_since=False).do == Do.SEND


@pytest.mark.parametrize("status", ["validating", "in_progress", "completed", "failed"])
def test_a_sent_part_is_left_to_its_batch(status):
    step = next_step(part("sent"), attempt(status), NOW, finished_since=True)

    assert step.do == Do.NOTHING


def test_a_part_whose_create_made_no_batch_is_reset():
    step = next_step(part("sent"), attempt("abandoned"), NOW, finished_since=False)

    assert step.do == Do.RESET


@pytest.mark.parametrize("status", ["failed", "rejected"])
def test_a_part_bounced_off_the_token_limit_is_requeued_after_its_backoff(status):
    bounced = attempt(status, "token_limit_exceeded")

    first = next_step(part("sent"), bounced, NOW, finished_since=False)
    third = next_step(part("sent", requeues=2), bounced, NOW, finished_since=False)

    assert first.do == Do.REQUEUE and "part 2" in first.reason
    assert first.not_before == iso_utc(NOW + timedelta(seconds=REQUEUE_BACKOFF_SECONDS))
    assert third.not_before == iso_utc(NOW + timedelta(seconds=4 * REQUEUE_BACKOFF_SECONDS))


def test_a_failure_for_another_reason_is_not_requeued():
    step = next_step(part("sent"), attempt("failed", "invalid_request"), NOW, finished_since=False)

    assert step.do == Do.NOTHING


def test_the_requeue_backoff_doubles_up_to_its_maximum():
    waits = [requeue_wait(n) for n in range(8)]

    assert waits[:3] == [60, 120, 240]
    assert waits[-1] == MAX_REQUEUE_BACKOFF_SECONDS
    assert all(later >= earlier for earlier, later in itertools.pairwise(waits))


def test_a_requeued_part_waits_out_its_backoff():
    later = iso_utc(NOW + timedelta(seconds=30))
    waiting = part(requeues=1, not_before=later, requeued_at=iso_utc(NOW))

    assert next_step(waiting, None, NOW, finished_since=False).do == Do.WAIT
    after = NOW + timedelta(seconds=31)
    assert next_step(waiting, None, after, finished_since=False).do == Do.SEND


def test_a_requeued_part_goes_once_a_batch_of_its_account_has_finished():
    later = iso_utc(NOW + timedelta(seconds=900))
    waiting = part(requeues=3, not_before=later, requeued_at=iso_utc(NOW))

    assert next_step(waiting, None, NOW, finished_since=True).do == Do.SEND


def test_a_cancelled_part_is_left_alone():
    step = next_step(part("cancelled"), attempt("cancelled"), NOW, finished_since=True)

    assert step.do == Do.NOTHING


def test_a_queued_part_over_the_token_budget_waits_whatever_else_holds():
    over = next_step(part(), None, NOW, fits_budget=False, finished_since=True)

    assert over.do == Do.WAIT and "enqueued-token budget" in over.reason
    assert next_step(part(), None, NOW, fits_budget=True, finished_since=False).do == Do.SEND


def test_the_token_budget_does_not_hold_back_a_sent_part():
    bounced = attempt("failed", "token_limit_exceeded")

    step = next_step(part("sent"), bounced, NOW, fits_budget=False, finished_since=False)

    assert step.do == Do.REQUEUE
