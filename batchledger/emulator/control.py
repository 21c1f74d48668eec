"""The /_emulator/ routes: test controls for processes that only reach the emulator by HTTP.

They need no Authorization, are not recorded and are never subject to faults.
"""

from __future__ import annotations

from typing import Any

from .errors import batch_not_found, invalid_request
from .faults import fault_from_json
from .message_batches import StoredMessageBatch
from .models import StoredBatch
from .routing import Request, Route, read_json, read_json_object, route
from .state import EmulatorState
from .wire import Response, json_response


def _batch_json(state: EmulatorState, batch: StoredBatch | StoredMessageBatch) -> dict[str, Any]:
    """A batch of either flavour as its API shows it (a Message Batch's results_url a path)."""
    if isinstance(batch, StoredMessageBatch):
        return batch.to_json(state.now(), f"/v1/messages/batches/{batch.id}/results")
    return batch.to_json()


def _outcome(request: Request) -> str:
    outcome = read_json_object(request).get("outcome")
    if not isinstance(outcome, str):
        raise invalid_request('Expected a JSON body like {"outcome": "expired"}.')
    return outcome


def set_batch_outcome(state: EmulatorState, request: Request) -> Response:
    batch_id = request.params["batch_id"]
    outcome = _outcome(request)
    try:
        state.set_outcome(batch_id, outcome)
    except KeyError:
        raise batch_not_found(batch_id) from None
    except ValueError as exc:
        raise invalid_request(str(exc), param="outcome") from None
    with state.lock:
        batch = state.message_batches.get(batch_id) or state.batches[batch_id]
        return json_response(_batch_json(state, batch))


def set_default_outcome(state: EmulatorState, request: Request) -> Response:
    outcome = _outcome(request)
    try:
        state.set_default_outcome(outcome)
    except ValueError as exc:
        raise invalid_request(str(exc), param="outcome") from None
    return json_response({"default_outcome": outcome})


def advance_batch(state: EmulatorState, request: Request) -> Response:
    with state.lock:
        return json_response(_batch_json(state, state.advance(request.params["batch_id"])))


def list_requests(state: EmulatorState, request: Request) -> Response:
    with state.lock:
        data = [recorded.to_json() for recorded in state.requests]
    return json_response({"object": "list", "data": data})


def clear_requests(state: EmulatorState, request: Request) -> Response:
    state.clear_requests()
    return json_response({"deleted": True})


def list_faults(state: EmulatorState, request: Request) -> Response:
    return json_response({"object": "list", "data": [f.to_json() for f in state.faults]})


def add_fault(state: EmulatorState, request: Request) -> Response:
    fault = fault_from_json(read_json(request))
    state.add_fault(fault)
    return json_response(fault.to_json())


def clear_faults(state: EmulatorState, request: Request) -> Response:
    state.clear_faults()
    return json_response({"deleted": True})


def set_clock(state: EmulatorState, request: Request) -> Response:
    offset = read_json_object(request).get("offset_seconds")
    if not isinstance(offset, int | float) or isinstance(offset, bool):
        raise invalid_request('Expected a JSON body like {"offset_seconds": -1200}.')
    state.set_clock_offset(offset)
    return json_response({"offset_seconds": state.clock_offset, "now": state.now()})


def set_line_outcomes(state: EmulatorState, request: Request) -> Response:
    payload = read_json_object(request)
    outcomes, times = payload.get("outcomes"), payload.get("times", 1)
    valid = isinstance(outcomes, dict) and all(isinstance(v, str) for v in outcomes.values())
    if not valid or not (times is None or (isinstance(times, int) and not isinstance(times, bool))):
        raise invalid_request(
            'Expected a JSON body like {"outcomes": {"req-1": "500"}, "times": 1}.'
        )
    assert isinstance(outcomes, dict)
    try:
        state.set_line_outcomes(outcomes, times=times)
    except ValueError as exc:
        raise invalid_request(str(exc), param="outcomes") from None
    return json_response({"outcomes": outcomes, "times": times})


def clear_line_outcomes(state: EmulatorState, request: Request) -> Response:
    state.clear_line_outcomes()
    return json_response({"deleted": True})


_BATCH = r"/_emulator/batches/(?P<batch_id>[^/]+)"
ROUTES: tuple[Route, ...] = (
    route("POST", _BATCH + "/outcome", set_batch_outcome),
    route("POST", _BATCH + "/advance", advance_batch),
    route("POST", r"/_emulator/outcome", set_default_outcome),
    route("POST", r"/_emulator/clock", set_clock),
    route("POST", r"/_emulator/line_outcomes", set_line_outcomes),
    route("DELETE", r"/_emulator/line_outcomes", clear_line_outcomes),
    route("GET", r"/_emulator/requests", list_requests),
    route("DELETE", r"/_emulator/requests", clear_requests),
    route("GET", r"/_emulator/faults", list_faults),
    route("POST", r"/_emulator/faults", add_fault),
    route("DELETE", r"/_emulator/faults", clear_faults),
)
