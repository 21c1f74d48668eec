"""get_batch_status reads the response's JSON itself: the same batch the SDK's model gives."""

import pytest
from helpers import sdk, write_jsonl

from batchledger.emulator import EmulatorServer
from batchledger.errors import ApiError, ExitCode
from batchledger.providers import openai as api


def test_get_batch_status_is_the_sdk_models_dump(cli, emulator: EmulatorServer, isolated):
    """What the SDK's Batch model of the same JSON would dump: every field, same values."""
    from openai.types import Batch

    write_jsonl(isolated / "in.jsonl", 2)
    created = cli("create", "--in", str(isolated / "in.jsonl"))
    assert created.code == 0, created.err

    batch = api.get_batch_status(sdk(emulator), created.field("batch_id"))

    assert set(Batch.model_fields) <= set(batch)
    assert Batch.model_validate(batch).model_dump(mode="json") == batch


@pytest.mark.parametrize("body", [b"<html>busy</html>", b"[]", b'{"id": "batch_1"}', b""])
def test_a_body_that_is_not_a_batch_is_an_api_error(body: bytes):
    with pytest.raises(ApiError) as raised:
        api._batch_json("GET_STATUS", body)
    assert raised.value.exit_code == ExitCode.FAILURE


def test_a_batch_body_is_taken_as_it_is():
    body = b'{"id": "batch_1", "status": "in_progress", "extra": {"a": [1]}}'
    assert api._batch_json("GET_STATUS", body) == {
        "id": "batch_1",
        "status": "in_progress",
        "extra": {"a": [1]},
    }
