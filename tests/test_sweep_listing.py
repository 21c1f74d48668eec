"""A sweep reads many batches from their account's listing: a page of 100 per request.

Looking each batch up costs a request per batch; when that would take three or more rounds
of `--concurrency` requests, `status --all` reads the account's list of batches instead,
and looks up one by one only what the listing did not show.
"""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from helpers import complete, ledger_rows, log_text, sdk, server_bytes, write_jsonl
from openai import OpenAI

from batchledger.emulator import EmulatorServer, Fault
from batchledger.errors import Transient
from batchledger.providers import openai as api

LIST = r"^/v1/batches$"


def created(cli: Any, work: Path, count: int, first: int = 0) -> list[str]:
    ids = []
    for n in range(first, first + count):
        result = cli("create", "--in", str(write_jsonl(work / f"in{n}.jsonl", n + 1)))
        assert result.code == 0, result.err
        ids.append(result.field("batch_id"))
    return ids


def made_elsewhere(server: EmulatorServer, work: Path, count: int) -> list[str]:
    """`count` batches on the same account that the ledger does not know (newer than ours)."""
    client = sdk(server)
    upload = client.files.create(
        file=write_jsonl(work / "theirs.jsonl", 1).open("rb"), purpose="batch"
    )
    return [
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
        ).id
        for _ in range(count)
    ]


def lookups(server: EmulatorServer) -> int:
    return sum(
        1
        for r in server.state.requests
        if r.method == "GET" and re.match(r"^/v1/batches/[^/]+$", r.path)
    )


def listings(server: EmulatorServer) -> list[str | None]:
    """The `after` cursor of each list request, in order."""
    return [
        r.query.get("after")
        for r in server.state.requests
        if r.method == "GET" and r.path == "/v1/batches"
    ]


def history_actions(batch_id: str) -> list[str]:
    [row_id] = [row["id"] for row in ledger_rows() if row["batch_id"] == batch_id]
    return [entry["action"] for entry in ledger_rows("history") if entry["batch"] == row_id]


def test_a_sweep_of_many_batches_reads_them_from_one_page(
    cli: Any, emulator: EmulatorServer, isolated: Path
) -> None:
    ours = created(cli, isolated, 6)
    for batch_id in ours[:4]:
        complete(emulator, batch_id)
    emulator.state.clear_requests()

    swept = cli("status", "--all", "--concurrency", "2")  # 3 rounds of look-ups: listed

    assert swept.code == 0, swept.err
    # one page; the four it shows finished are looked up before their results are saved
    assert listings(emulator) == [None] and lookups(emulator) == 4
    rows = {row["batch_id"]: row for row in ledger_rows()}
    for batch_id in ours[:4]:
        row = rows[batch_id]
        assert row["status"] == "completed", row
        assert Path(row["output_path"]).read_bytes() == server_bytes(
            emulator, row["output_file_id"]
        )
        assert history_actions(batch_id)[-2:] == ["status", "save_output"]
    for batch_id in ours[4:]:  # from the listing, which moved them a step (step mode)
        assert rows[batch_id]["status"] == "in_progress"
        assert history_actions(batch_id)[-1] == "status"
    for batch_id in ours:
        assert batch_id in swept.out
    log = log_text(isolated)
    assert 'LIST_BATCHES request={"limit": 100, "wanted": 6}' in log
    assert log.count("GET_STATUS request=") == 4
    # the page is logged as the API sent it: our batches and the rest of the account's
    page = json.loads(log.split("LIST_BATCHES response=", 1)[1].splitlines()[0])
    assert {batch["id"] for batch in page["data"]} == set(ours)


def test_the_listing_pages_back_past_other_batches(
    cli: Any, emulator: EmulatorServer, isolated: Path
) -> None:
    ours = created(cli, isolated, 4)
    theirs = made_elsewhere(emulator, isolated, 150)
    emulator.state.clear_requests()

    swept = cli("status", "--all", "--concurrency", "1")  # 4 rounds: up to 2 pages

    assert swept.code == 0, swept.err
    assert listings(emulator) == [None, theirs[-100]] and lookups(emulator) == 0
    assert {row["batch_id"] for row in ledger_rows()} == set(ours)  # theirs are not added
    assert all(history_actions(batch_id)[-1] == "status" for batch_id in ours)


def test_a_provider_that_cannot_list_has_each_batch_looked_up(
    cli: Any, emulator: EmulatorServer, isolated: Path
) -> None:
    ours = created(cli, isolated, 6)
    emulator.state.add_fault(Fault(path=LIST, method="GET", status=404, times=None))
    emulator.state.clear_requests()

    swept = cli("status", "--all", "--concurrency", "2")

    assert swept.code == 0, swept.err
    assert swept.err == ""
    assert len(listings(emulator)) == 1 and lookups(emulator) == 6
    assert {row["status"] for row in ledger_rows()} == {"in_progress"}  # each looked up once
    assert all(batch_id in swept.out for batch_id in ours)
    assert "LIST_BATCHES stopped after 0 pages" in log_text(isolated)


def test_a_listing_cut_off_midway_keeps_its_first_page(
    cli: Any, emulator: EmulatorServer, isolated: Path
) -> None:
    ours = created(cli, isolated, 3)
    made_elsewhere(emulator, isolated, 99)
    newest = created(cli, isolated, 1, first=3)[0]  # on the first page, with 99 of theirs
    emulator.state.add_fault(Fault(path=LIST, method="GET", status=500, spare=1, times=None))
    emulator.state.clear_requests()

    swept = cli("--max-retries", "0", "status", "--all", "--concurrency", "1")

    assert swept.code == 0, swept.err
    assert len(listings(emulator)) == 2
    assert lookups(emulator) == 3  # the three the second page would have shown
    rows = {row["batch_id"]: row for row in ledger_rows()}
    assert rows[newest]["status"] == "in_progress"  # from the listing's first page
    assert {rows[batch_id]["status"] for batch_id in ours} == {"in_progress"}


def test_the_listing_stops_at_the_oldest_wanted_batch(
    emulator: EmulatorServer, isolated: Path
) -> None:
    """Newest first, it reads back to the oldest wanted batch (less a margin) and no further;
    what it did not see is the sweep's to look up."""
    old = made_elsewhere(emulator, isolated, 150)
    emulator.state.set_clock_offset(3600)
    new = made_elsewhere(emulator, isolated, 150)
    client = sdk(emulator)
    since = client.batches.retrieve(new[0]).created_at
    emulator.state.clear_requests()

    listed = api.list_batches_by_id(client, {new[0], old[0], "batch_gone"}, since, max_pages=10)

    assert set(listed.batches) == {new[0]} and listed.error is None
    assert listed.pages == 2  # the second page ends among the old ones: no third
    assert listed.batches[new[0]]["id"] == new[0]

    emulator.state.add_fault(Fault(path=LIST, method="GET", status=503, times=None))
    failed = api.list_batches_by_id(client, {new[0]}, since, max_pages=10)
    assert failed.batches == {} and failed.pages == 0 and isinstance(failed.error, Transient)

    emulator.state.clear_faults()
    capped = api.list_batches_by_id(client, {old[0]}, None, max_pages=2)
    assert capped.batches == {} and capped.pages == 2


def test_watch_all_asks_a_provider_that_cannot_list_once(
    cli: Any, emulator: EmulatorServer, isolated: Path
) -> None:
    ours = created(cli, isolated, 17)  # 3 rounds at the default concurrency of 8
    emulator.state.add_fault(Fault(path=LIST, method="GET", status=405, times=None))
    emulator.state.clear_requests()

    watched = cli("watch", "--all", "--interval", "0.01")

    assert watched.code == 0, watched.err
    assert len(listings(emulator)) == 1  # refused once: not asked again in this run
    assert lookups(emulator) == 3 * len(
        ours
    )  # validating -> in_progress -> finalizing -> completed
    assert {row["status"] for row in ledger_rows()} == {"completed"}


def test_watch_all_follows_many_batches_through_the_listing(
    cli: Any, emulator: EmulatorServer, isolated: Path
) -> None:
    ours = created(cli, isolated, 17)
    emulator.state.clear_requests()

    watched = cli("watch", "--all", "--interval", "0.01")

    assert watched.code == 0, watched.err
    # in_progress, finalizing, completed: a listing each; then a look-up of each finished
    # batch before its results are saved
    assert len(listings(emulator)) == 3 and lookups(emulator) == len(ours)
    for row in ledger_rows():
        assert row["status"] == "completed"
        assert Path(row["output_path"]).read_bytes() == server_bytes(
            emulator, row["output_file_id"]
        )


class OddProvider(BaseHTTPRequestHandler):
    """A provider whose listing is odd: pages with items that are not whole batches."""

    pages: ClassVar[dict[str | None, dict[str, Any]]] = {}
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        after = parse_qs(urlsplit(self.path).query).get("after", [None])[0]
        self.seen.append(after)
        body = json.dumps(self.pages.get(after, {"object": "list", "data": []})).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def whole(batch_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/responses",
        "input_file_id": "file-x",
        "completion_window": "24h",
        "status": "in_progress",
        "created_at": 1_700_000_000,
        **fields,
    }


def test_an_odd_listing_costs_look_ups_not_batches() -> None:
    """Items without a Batch's required fields, or not objects at all, are left to be looked
    up; a page without `has_more` ends the listing, and so does a cursor that does not move."""
    thin = {"id": "batch_thin", "status": "completed"}  # no file ids: not trusted
    OddProvider.pages = {
        None: {"data": [whole("batch_a"), thin, "junk", whole("batch_b")], "has_more": True},
        "batch_b": {"data": [whole("batch_c"), whole("batch_b")], "has_more": True},
    }
    OddProvider.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), OddProvider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = OpenAI(
            api_key="sk-test", base_url=f"http://127.0.0.1:{server.server_port}/v1", max_retries=0
        )
        wanted = {"batch_a", "batch_thin", "batch_c", "batch_gone"}
        listed = api.list_batches_by_id(client, wanted, None, max_pages=10)
        assert set(listed.batches) == {"batch_a", "batch_c"} and listed.error is None
        assert OddProvider.seen == [None, "batch_b"]  # the second page's cursor did not move

        OddProvider.pages = {None: {"data": [whole("batch_a")]}}  # no has_more: the last page
        OddProvider.seen = []
        assert set(api.list_batches_by_id(client, wanted, None, 10).batches) == {"batch_a"}
        assert OddProvider.seen == [None]

        OddProvider.pages = {None: {"object": "list"}}  # not a page: an error, nothing found
        failed = api.list_batches_by_id(client, wanted, None, 10)
        assert failed.batches == {} and failed.error is not None
    finally:
        server.shutdown()
        server.server_close()


def test_each_account_is_listed_on_its_own_server(
    cli: Any, emulator: EmulatorServer, make_server: Any, isolated: Path, monkeypatch: Any
) -> None:
    second = make_server()
    monkeypatch.setenv("SECOND_KEY", "sk-second-0123456789abcdef")
    (isolated.parent / "accounts.toml").write_text(
        f'[accounts.second]\nbase_url = "{second.base_url}"\napi_key_env = "SECOND_KEY"\n'
    )
    ours = created(cli, isolated, 6)
    theirs = []
    for n in range(6, 12):
        path = write_jsonl(isolated / f"in{n}.jsonl", n + 1)
        result = cli("--account", "second", "create", "--in", str(path))
        assert result.code == 0, result.err
        theirs.append(result.field("batch_id"))
    emulator.state.clear_requests()
    second.state.clear_requests()

    swept = cli("status", "--all", "--concurrency", "2")

    assert swept.code == 0, swept.err
    for server in (emulator, second):
        assert listings(server) == [None] and lookups(server) == 0
    rows = ledger_rows()
    assert {row["batch_id"] for row in rows if row["account"] == "default"} == set(ours)
    assert {row["batch_id"] for row in rows if row["account"] == "second"} == set(theirs)
    assert {row["status"] for row in rows} == {"in_progress"}
