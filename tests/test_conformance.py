"""Conformance gate: the CLI's traffic, checked by Prism against OpenAI's published spec.

    CLI (openai SDK) --> Prism proxy --> recorder --> emulator

Prism (tests/conformance/node_modules/.bin/prism, pinned in tests/conformance/package.json)
validates every request and response against tests/conformance/files_batches.json and logs a
`Violation: request...` / `Violation: response...` line per mismatch. The recorder, a small
pass-through between Prism and the emulator, keeps each response as the emulator sent it, so
that a violation blamed on a known quirk of the published spec is excused only when the
recorded traffic shows that quirk (a null value, a binary body, an error status) at exactly
that place. Anything else in Prism's log fails the gate. See tests/conformance/README.md.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import pytest
from helpers import API_KEY, api_requests, free_port, ledger_rows, server_bytes, write_jsonl

from batchledger.emulator import EmulatorServer, Fault

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT / "tests" / "conformance"
SPEC = CONFORMANCE / "files_batches.json"
PRISM = CONFORMANCE / "node_modules" / ".bin" / "prism"
NPM_CI = ("npm", "ci", "--prefix", "tests/conformance", "--no-audit", "--no-fund")
"""Installs the pinned Prism from package-lock.json; run from the repository root."""

PRISM_START_TIMEOUT = 60.0


# ---------------------------------------------------------------------------------------------
# The allow-list: every Prism violation the gate excuses, and why. Nothing else is excused.
# ---------------------------------------------------------------------------------------------

QUIRK_MEDIA_TYPE = "(a) file content is binary, spec declares application/json"
QUIRK_NULL = "(b) null sent for a field the spec types non-nullable"
QUIRK_ERROR_STATUS = "(c) error status, spec declares only 200"

# (a) GET /files/{file_id}/content declares only `application/json` (schema: string), but the
# live API and the emulator answer with the raw JSONL bytes as application/octet-stream.
# Excused once per recorded 200 response of that operation with that Content-Type.
# (The SDK's `Accept: application/binary` on that request is NOT reported by Prism 5.16.0,
# so it is not on this list: if Prism ever reports it, the gate fails and says so.)
MEDIA_TYPE_VIOLATION = (
    "response",
    'The received media type "application/octet-stream" does not match the one specified'
    " in the current response: application/json",
)

# (c) Every operation in the spec declares only its 200 response; the API's 4xx/5xx answers
# (an OpenAI error object) are not described at all, and Prism warns about the status code.
# Excused once per recorded response with status >= 400 whose body is an OpenAI error object
# ({"error": {"message": str, "type": str, ...}}); a malformed error body fails the gate.
ERROR_STATUS_VIOLATION = (
    "response",
    "Unable to match the returned status code with those defined in the document: 200",
)

# (b) Fields the spec types non-nullable although the live API sends null, keyed by the kind
# of object they are in (a Batch, an OpenAIFile, or a list page) and mapped to the type
# Prism names in its message ("... must be <type>"). Excused only at a place where the
# recorded body holds null: expected violations are computed from the recorded bodies
# (top level, or data.<n>. in a list page) and matched exactly, location and message.
NULL_IN_PRACTICE: dict[tuple[str, str], str] = {
    # Batch timestamps of steps the batch has not reached (or never will): null until then.
    ("batch", "in_progress_at"): "integer",
    ("batch", "finalizing_at"): "integer",
    ("batch", "completed_at"): "integer",
    ("batch", "failed_at"): "integer",
    ("batch", "expired_at"): "integer",
    ("batch", "cancelling_at"): "integer",
    ("batch", "cancelled_at"): "integer",
    # Batch result files: null until the batch has run, and when no line ended that way.
    ("batch", "output_file_id"): "string",
    ("batch", "error_file_id"): "string",
    # Batch errors: null unless the batch failed validation.
    ("batch", "errors"): "object",
    # Batch model: null when the API could not read a model from the input.
    ("batch", "model"): "string",
    # OpenAIFile.status_details: deprecated, always null nowadays.
    ("file", "status_details"): "string",
    # OpenAIFile.expires_at: null for a file that never expires.
    ("file", "expires_at"): "integer",
    # ListFilesResponse / ListBatchesResponse first_id, last_id: null on an empty page.
    ("list", "first_id"): "string",
    ("list", "last_id"): "string",
}
# Batch.metadata is not listed: the spec already allows null there (anyOf object / null).


# ---------------------------------------------------------------------------------------------
# Reading Prism's log
# ---------------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
REQUEST_RECEIVED = re.compile(
    r"\[HTTP SERVER\]\s+(?P<method>[a-z]+)\s+(?P<path>\S+).*Request received"
)
VIOLATION = re.compile(r"Violation: (?P<location>(?:request|response)\S*) (?P<message>.*?)\s*$")
TERMINATED = "Request terminated with error"


@dataclass(frozen=True)
class Violation:
    location: str
    message: str

    @property
    def kind(self) -> str:
        return "request" if self.location.startswith("request") else "response"

    def __str__(self) -> str:
        return f"Violation: {self.location} {self.message}"


@dataclass
class PrismLog:
    """What a stretch of Prism's log says: requests it received, violations, and failures."""

    requests: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _message(line: str) -> tuple[str, dict[str, Any]]:
    """A log line's text, whether Prism wrote pretty text or a JSON (pino) record."""
    line = ANSI.sub("", line).strip()
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return line, {}
        if isinstance(record, dict):
            return str(record.get("msg", "")), record
    return line, {}


def parse_prism_log(lines: Sequence[str]) -> PrismLog:
    parsed = PrismLog()
    for raw in lines:
        text, record = _message(raw)
        if text == "Request received" and record:
            request = record.get("input") or {}
            url = request.get("url") or {}
            parsed.requests.append(f"{request.get('method', '?')} {url.get('path', '?')}")
        elif match := REQUEST_RECEIVED.search(text):
            parsed.requests.append(f"{match['method']} {match['path']}")
        elif match := VIOLATION.search(text):
            parsed.violations.append(Violation(match["location"], match["message"]))
        elif TERMINATED in text:
            parsed.failures.append(text)
    return parsed


# ---------------------------------------------------------------------------------------------
# The recorder between Prism and the emulator
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request Prism forwarded and the response the emulator gave it."""

    method: str
    path: str
    status: int
    content_type: str
    body: Any  # parsed JSON, or None for a body that is not JSON


HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date", "server"}
)


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RecorderHandler)


class _RecorderHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _forward(self) -> None:
        recorder: _Recorder = self.server  # type: ignore[assignment]
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        upstream = http.client.HTTPConnection("127.0.0.1", recorder.upstream_port, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            reply_headers = response.getheaders()
        finally:
            upstream.close()
        content_type = response.getheader("Content-Type") or ""
        parsed = None
        if content_type.startswith("application/json"):
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = None
        with recorder.lock:
            recorder.exchanges.append(
                Exchange(self.command, self.path, response.status, content_type, parsed)
            )
        self.send_response(response.status)
        for name, value in reply_headers:
            if name.lower() not in HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _forward


# ---------------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------------


def _is_error_object(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("message"), str)
        and isinstance(error.get("type"), str)
    )


def _expected_nulls(body: Any) -> Iterator[tuple[tuple[str, str], Violation]]:
    """For a recorded 200 body, the null-quirk violations Prism should report, exactly."""

    def fields(obj: Any, kind: str, prefix: str) -> Iterator[tuple[tuple[str, str], Violation]]:
        if not isinstance(obj, dict):
            return
        for (where, name), type_ in NULL_IN_PRACTICE.items():
            if where == kind and name in obj and obj[name] is None:
                place = f"{prefix}{name}"
                yield (
                    (kind, name),
                    Violation(
                        f"response.body.{place}", f"Response body property {place} must be {type_}"
                    ),
                )

    if not isinstance(body, dict):
        return
    kind = body.get("object")
    if kind == "list":
        yield from fields(body, "list", "")
        for n, item in enumerate(body.get("data") or []):
            if isinstance(item, dict):
                yield from fields(item, str(item.get("object")), f"data.{n}.")
    elif kind in ("batch", "file"):
        yield from fields(body, str(kind), "")


@dataclass
class GateReport:
    requests: int
    forwarded: int
    violations: list[Violation]
    explained: Counter[str]
    null_fields: Counter[str]
    unexplained: list[str]

    @property
    def ok(self) -> bool:
        return not self.unexplained

    def summary(self) -> str:
        kinds = Counter(v.kind for v in self.violations)
        lines = [
            f"conformance gate: {self.requests} requests proxied by Prism, "
            f"{self.forwarded} reached the emulator",
            f"violations seen: {len(self.violations)} "
            f"(request: {kinds['request']}, response: {kinds['response']})",
        ]
        for quirk in (QUIRK_MEDIA_TYPE, QUIRK_NULL, QUIRK_ERROR_STATUS):
            lines.append(f"  explained by quirk {quirk}: {self.explained[quirk]}")
        if self.null_fields:
            detail = ", ".join(f"{name} x{n}" for name, n in sorted(self.null_fields.items()))
            lines.append(f"    null fields: {detail}")
        lines.append(f"  unexplained: {len(self.unexplained)}")
        lines.extend(f"    {problem}" for problem in self.unexplained)
        return "\n".join(lines)


def check_traffic(log_lines: Sequence[str], exchanges: Sequence[Exchange]) -> GateReport:
    """Match Prism's violations against the allow-list, using the recorded traffic."""
    log = parse_prism_log(log_lines)
    unexplained: list[str] = [f"Prism failed a request: {text}" for text in log.failures]

    # What the recorded traffic entitles each quirk to excuse.
    media_type_budget = 0
    error_status_budget = 0
    null_budget: Counter[Violation] = Counter()
    null_field_of: dict[Violation, str] = {}
    for exchange in exchanges:
        path = exchange.path.split("?", 1)[0]
        if exchange.status >= 400:
            if _is_error_object(exchange.body):
                error_status_budget += 1
            else:
                unexplained.append(
                    f"{exchange.method} {exchange.path} answered {exchange.status} without an "
                    f"OpenAI error object: {exchange.body!r}"
                )
        elif exchange.status == 200:
            if (
                exchange.method == "GET"
                and re.fullmatch(r"/v1/files/[^/]+/content", path)
                and exchange.content_type.startswith("application/octet-stream")
            ):
                media_type_budget += 1
            for (kind, name), violation in _expected_nulls(exchange.body):
                null_budget[violation] += 1
                null_field_of[violation] = f"{kind}.{name}"

    explained: Counter[str] = Counter()
    null_fields: Counter[str] = Counter()
    for violation in log.violations:
        pair = (violation.location, violation.message)
        if violation.kind == "request":
            unexplained.append(str(violation))
        elif pair == MEDIA_TYPE_VIOLATION and media_type_budget > 0:
            media_type_budget -= 1
            explained[QUIRK_MEDIA_TYPE] += 1
        elif pair == ERROR_STATUS_VIOLATION and error_status_budget > 0:
            error_status_budget -= 1
            explained[QUIRK_ERROR_STATUS] += 1
        elif null_budget[violation] > 0:
            null_budget[violation] -= 1
            explained[QUIRK_NULL] += 1
            null_fields[null_field_of[violation]] += 1
        else:
            unexplained.append(str(violation))
    return GateReport(
        requests=len(log.requests),
        forwarded=len(exchanges),
        violations=log.violations,
        explained=explained,
        null_fields=null_fields,
        unexplained=unexplained,
    )


# ---------------------------------------------------------------------------------------------
# Prism, the recorder and the emulator, for the whole module
# ---------------------------------------------------------------------------------------------


def _unavailable(reason: str) -> NoReturn:
    """No Prism: a failure on CI (CI=true), a skip anywhere else."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"conformance gate cannot run on CI: {reason}", pytrace=False)
    pytest.skip(f"conformance gate not run: {reason}")


def _prism_binary() -> Path:
    if PRISM.exists():
        return PRISM
    how = f"`{' '.join(NPM_CI)}` from the repository root"
    if shutil.which("npm") is None or shutil.which("node") is None:
        _unavailable(f"Prism is not installed and Node/npm is not on PATH; install Node, run {how}")
    try:
        done = subprocess.run(
            NPM_CI, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"could not install Prism with {how}: {exc}")
    else:
        if done.returncode != 0 or not PRISM.exists():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            _unavailable(f"could not install Prism with {how} (exit {done.returncode}):\n{tail}")
    return PRISM


@dataclass(frozen=True)
class Mark:
    log_lines: int
    exchanges: int


class Gate:
    """The running chain; `prism_url` is what the SDK is pointed at."""

    def __init__(self, server: EmulatorServer, recorder: _Recorder, log_path: Path, port: int):
        self.server = server
        self.recorder = recorder
        self.log_path = log_path
        # The spec's server is https://api.openai.com/v1 and Prism routes paths relative to
        # it (/files, /batches/{id}); it forwards them to the upstream URL, which ends in /v1.
        # So the SDK's base URL has no /v1: with it, Prism sees /v1/files, finds no route and
        # forwards to /v1/v1/files.
        self.prism_url = f"http://127.0.0.1:{port}"

    def lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def exchanges(self) -> list[Exchange]:
        with self.recorder.lock:
            return list(self.recorder.exchanges)

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until Prism has logged every forwarded request and then gone quiet."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()
            logged = len(parse_prism_log(text.decode("utf-8", "replace").splitlines()).requests)
            if logged >= len(self.exchanges()) and len(text) == last:
                return
            last = len(text)
            time.sleep(0.15)

    def mark(self) -> Mark:
        self.settle()
        return Mark(len(self.lines()), len(self.exchanges()))

    def check(self, since: Mark) -> GateReport:
        self.settle()
        return check_traffic(self.lines()[since.log_lines :], self.exchanges()[since.exchanges :])


def _wait_for_prism(process: subprocess.Popen[bytes], log_path: Path, port: int) -> None:
    deadline = time.monotonic() + PRISM_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"Prism exited with {process.returncode} before listening:\n"
                + log_path.read_text(errors="replace"),
                pytrace=False,
            )
        if "Prism is listening on" in ANSI.sub("", log_path.read_text(errors="replace")):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                pass
        time.sleep(0.1)
    pytest.fail(
        f"Prism did not listen on port {port} within {PRISM_START_TIMEOUT:g}s:\n"
        + log_path.read_text(errors="replace"),
        pytrace=False,
    )


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    prism = _prism_binary()
    log_path = tmp_path_factory.mktemp("prism") / "prism.log"
    with EmulatorServer(host="127.0.0.1", port=0) as server:
        recorder = _Recorder(server.port)
        recorder_thread = threading.Thread(target=recorder.serve_forever, daemon=True)
        recorder_thread.start()
        port = free_port()
        env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"}
        command = [
            str(prism),
            "proxy",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            str(SPEC),
            f"http://127.0.0.1:{recorder.server_address[1]}/v1",
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_for_prism(process, log_path, port)
            yield Gate(server, recorder, log_path, port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            recorder.shutdown()
            recorder.server_close()
            recorder_thread.join(timeout=5)


@pytest.fixture
def via_prism(gate: Gate, monkeypatch: pytest.MonkeyPatch) -> Gate:
    """The gate, with the CLI's SDK pointed at Prism."""
    monkeypatch.setenv("OPENAI_BASE_URL", gate.prism_url)
    return gate


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------


def _status_until(cli: Any, batch_id: str, wanted: str, *options: str) -> Any:
    """`status --batch-id` until the batch reaches `wanted` (each look-up is one step)."""
    seen = []
    for _ in range(6):
        result = cli("status", "--batch-id", batch_id, *options)
        assert result.code == 0, result.err
        seen.append(result.field("status"))
        if seen[-1] == wanted:
            return result
    raise AssertionError(f"{batch_id} never reached {wanted}: {seen}")


def _row(batch_id: str) -> dict[str, Any]:
    return next(row for row in ledger_rows() if row["batch_id"] == batch_id)


def _chat_jsonl(path: Path, lines: int) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for n in range(lines):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Hi {n}"}]}
            request = {"custom_id": f"chat-{n}", "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**request, "body": body}) + "\n")
    return path


def _gate_verdict(report: GateReport) -> None:
    print("\n" + report.summary())
    assert report.requests > 0, report.summary()
    assert report.requests == report.forwarded, report.summary()
    assert report.ok, report.summary()


def test_cli_workflow_conforms_to_published_spec(via_prism: Gate, cli: Any, isolated: Path) -> None:
    server = via_prism.server
    since = via_prism.mark()

    # create: two inputs, one for /v1/responses (the default) and one for chat completions
    created = cli("create", "--in", str(write_jsonl(isolated / "responses.jsonl", 3)))
    assert created.code == 0, created.err
    first = created.field("batch_id")
    chat_input = _chat_jsonl(isolated / "chat.jsonl", 2)
    created = cli("create", "--in", str(chat_input), "--endpoint", "/v1/chat/completions")
    assert created.code == 0, created.err
    chat = created.field("batch_id")

    # status until completed: the last look-up saves the results
    done = _status_until(cli, first, "completed")
    saved = isolated / f"results_{first}.jsonl"
    assert done.field("saved").startswith(f"results_{first}.jsonl")
    output_file_id = _row(first)["output_file_id"]
    assert saved.read_bytes() == server_bytes(server, output_file_id)

    looked = cli("status", "--batch-id", first, "--no-auto-save")
    assert looked.code == 0, looked.err
    assert looked.field("status") == "completed"
    assert "saved:" not in looked.out

    retrieved = cli("retrieve", "--batch-id", first, "--out", str(isolated / "mine.jsonl"))
    assert retrieved.code == 0, retrieved.err
    assert (isolated / "mine.jsonl").read_bytes() == server_bytes(server, output_file_id)

    # a batch that fails validation, and one that expires midway
    created = cli("create", "--in", str(write_jsonl(isolated / "fails.jsonl", 2)))
    assert created.code == 0, created.err
    failed = created.field("batch_id")
    server.state.set_outcome(failed, "failed")
    _status_until(cli, failed, "failed")

    # this create meets a 503 on the upload and on the batch create: before each retry the
    # CLI lists files / batches, looking for what the failed attempt may have made
    server.state.add_fault(Fault(method="POST", path=r"^/v1/files$", status=503, retry_after=0))
    server.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", status=503, retry_after=0))
    created = cli("create", "--in", str(write_jsonl(isolated / "expires.jsonl", 4)))
    assert created.code == 0, created.err
    expired = created.field("batch_id")
    listed_paths = [r.path for r in server.state.requests if r.method == "GET"]
    assert listed_paths.count("/v1/files") == 1
    assert listed_paths.count("/v1/batches") == 1
    server.state.set_outcome(expired, "expired")
    _status_until(cli, expired, "expired")
    row = _row(expired)
    for file_id, path in (
        (row["output_file_id"], row["output_path"]),
        (row["error_file_id"], row["error_path"]),
    ):
        if file_id is not None:
            assert Path(path).read_bytes() == server_bytes(server, file_id)

    # status --all: moves the chat batch on until nothing is left to do
    for _ in range(6):
        swept = cli("status", "--all")
        assert swept.code == 0, swept.err
        if "No pending batches" in swept.out:
            break
    else:
        raise AssertionError(f"status --all never finished:\n{swept.out}")
    chat_row = _row(chat)
    assert chat_row["status"] == "completed"
    assert Path(chat_row["output_path"]).read_bytes() == server_bytes(
        server, chat_row["output_file_id"]
    )

    # the commands that came later: watch, cancel (with partial results), sync, show
    created = cli("create", "--in", str(write_jsonl(isolated / "watched.jsonl", 5)))
    assert created.code == 0, created.err
    watched = created.field("batch_id")
    followed = cli("watch", "--batch-id", "last", "--interval", "0.01")
    assert followed.code == 0, followed.err
    assert followed.field("status") == "completed"
    created = cli("create", "--in", str(write_jsonl(isolated / "cancelled.jsonl", 6)))
    assert created.code == 0, created.err
    cancelled = created.field("batch_id")
    assert cli("status", "--batch-id", cancelled).field("status") == "in_progress"
    stopped = cli("cancel", "--batch-id", cancelled, "--interval", "0.01")
    assert stopped.code == 0, stopped.err
    assert stopped.out.splitlines()[-2:] == ["status: cancelling", "status: cancelled"]
    partial = cli("retrieve", "--batch-id", cancelled)
    assert partial.code == 0, partial.err
    synced = cli("sync")
    assert synced.code == 0, synced.err
    shown = json.loads(cli("show", watched, "--json").out)
    assert shown["status"] == "completed" and shown["history"]
    everyone = {first, chat, failed, expired, watched, cancelled}

    listed = cli("list")
    assert listed.code == 0, listed.err
    for batch_id in everyone:
        assert batch_id in listed.out
    as_json = cli("list", "--json")
    assert as_json.code == 0, as_json.err
    assert {row["batch_id"] for row in json.loads(as_json.out)} == everyone

    # error paths, with the SDK's retries off: one request each, a clean error
    unknown = "batch_0000000000000000000000000000dead"
    missing = cli("--max-retries", "0", "status", "--batch-id", unknown)
    assert (missing.code, missing.out) == (1, ""), missing
    assert "HTTP 404" in missing.err
    assert api_requests(server, "GET", f"/v1/batches/{unknown}") == 1
    missing = cli("retrieve", "--batch-id", unknown, "--max-retries", "0")
    assert (missing.code, missing.out) == (1, ""), missing
    assert "HTTP 404" in missing.err
    assert api_requests(server, "GET", f"/v1/batches/{unknown}") == 2

    _gate_verdict(via_prism.check(since))


def test_metadata_expiries_and_prune_conform(via_prism: Gate, cli: Any, isolated: Path) -> None:
    """create with metadata and both expiries (the upload's expires_after, the batch's
    output_expires_after), then prune: GET and DELETE of files, one of them already gone."""
    server = via_prism.server
    since = via_prism.mark()

    created = cli(
        "create",
        "--in",
        str(write_jsonl(isolated / "tagged.jsonl", 3)),
        "--metadata",
        "team=search",
        "--metadata",
        "run=2026-11-25",
        "--input-expires-after",
        "2d",
        "--output-expires-after",
        "7d",
    )
    assert created.code == 0, created.err
    batch_id = created.field("batch_id")
    batch = server.state.batches[batch_id]
    assert batch.output_expires_after == 7 * 86400
    assert (batch.metadata or {})["team"] == "search"
    upload = server.state.files[created.field("file_id")]
    assert upload.expires_at == upload.created_at + 2 * 86400
    _status_until(cli, batch_id, "completed")
    row = _row(batch_id)
    server.state.delete_file(row["output_file_id"])  # gone already: prune notes a 404

    pruned = cli("prune")
    assert pruned.code == 0, pruned.err
    assert row["input_file_id"] not in server.state.files
    assert api_requests(server, "DELETE", "/v1/files/") == 1
    looked_up = [r.path for r in server.state.requests if r.method == "GET"]
    assert looked_up.count(f"/v1/files/{row['output_file_id']}") == 1

    _gate_verdict(via_prism.check(since))


def test_a_job_and_its_retry_conform(via_prism: Gate, cli: Any, isolated: Path) -> None:
    """A job: its parts uploaded from byte ranges of the input (one multipart body each),
    their batches followed and merged; then a retry of the request that got a 500."""
    server = via_prism.server
    since = via_prism.mark()
    write_jsonl(isolated / "job.jsonl", 7)
    server.state.set_line_outcomes({"request-2": "500"}, times=1)

    created = cli("create", "--in", "job.jsonl", "--max-requests", "3")
    assert created.code == 0, created.err
    job_id = created.out.splitlines()[0].removeprefix("job_id: ")
    statuses = [cli("status", "--batch-id", job_id).field("status") for _ in range(4)]
    retried = cli("retry", job_id)
    assert retried.code == 0, retried.err
    retry_job = retried.out.splitlines()[1].removeprefix("job_id: ")
    again = [cli("status", "--batch-id", retry_job).field("status") for _ in range(4)]

    assert statuses[-1] == "done" and again[-1] == "done", (statuses, again)
    merged = (isolated / f"results_{job_id}.jsonl").read_bytes().splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in merged) == sorted(
        f"request-{n}" for n in range(7)
    )
    _gate_verdict(via_prism.check(since))


def test_a_sweep_that_reads_the_listing_conforms(via_prism: Gate, cli: Any, isolated: Path) -> None:
    """status --all over more batches than it would look up one by one: list requests,
    the second with the `after` cursor, past a page of batches the ledger does not know."""
    server = via_prism.server
    ours = []
    for n in range(4):
        created = cli("create", "--in", str(write_jsonl(isolated / f"swept{n}.jsonl", n + 1)))
        assert created.code == 0, created.err
        ours.append(created.field("batch_id"))
    upload = _row(ours[0])["input_file_id"]
    for _ in range(100):  # made elsewhere, after ours: the listing pages past them
        server.state.create_batch(
            input_file_id=upload,
            endpoint="/v1/responses",
            completion_window="24h",
            metadata=None,
            output_expires_after=None,
        )
    since = via_prism.mark()
    before = len(server.state.requests)

    swept = cli("status", "--all", "--concurrency", "1")

    assert swept.code == 0, swept.err
    requests = server.state.requests[before:]
    listed = [r for r in requests if r.method == "GET" and r.path == "/v1/batches"]
    assert [bool(r.query.get("after")) for r in listed] == [False, True]
    assert all(batch_id in swept.out for batch_id in ours)
    _gate_verdict(via_prism.check(since))


def test_gate_reports_a_request_the_spec_forbids(via_prism: Gate) -> None:
    """The gate can fail: wrong requests sent through the same proxy are reported."""
    import openai

    client = openai.OpenAI(api_key=API_KEY, base_url=via_prism.prism_url, max_retries=0)
    since = via_prism.mark()
    line = b'{"custom_id": "x", "method": "POST", "url": "/v1/responses", "body": {}}\n'
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", line), purpose="not-a-purpose")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id="file-abc123",
            endpoint="/v1/responses",
            completion_window="1h",  # type: ignore[arg-type]
        )
    report = via_prism.check(since)
    print("\n" + report.summary())
    assert not report.ok
    assert report.unexplained == [
        "Violation: request.body.purpose Request body property purpose must be equal to one "
        "of the allowed values: assistants, batch, fine-tune, vision, user_data, evals",
        "Violation: request.body.completion_window Request body property completion_window "
        "must be equal to one of the allowed values: 24h",
    ], report.summary()
    # the two 400 answers themselves are the documented quirk (c), nothing more
    assert report.explained == Counter({QUIRK_ERROR_STATUS: 2}), report.summary()


def test_null_quirk_excuses_only_nulls() -> None:
    """A non-null value of the wrong type is not excused by quirk (b), nor is a stray quirk."""
    batch = {"object": "batch", "id": "batch_1", "in_progress_at": None, "completed_at": "soon"}
    page = {"object": "list", "data": [batch], "first_id": None, "last_id": None}
    exchanges = [Exchange("GET", "/v1/batches", 200, "application/json", page)]
    log = [
        "Violation: response.body.data.0.in_progress_at Response body property "
        "data.0.in_progress_at must be integer",
        "Violation: response.body.data.0.completed_at Response body property "
        "data.0.completed_at must be integer",
        "Violation: response.body.first_id Response body property first_id must be string",
        "Violation: response.body.last_id Response body property last_id must be string",
        "Violation: response.body.last_id Response body property last_id must be string",
        "Violation: response " + MEDIA_TYPE_VIOLATION[1],
        "Violation: response " + ERROR_STATUS_VIOLATION[1],
    ]
    report = check_traffic(log, exchanges)
    assert report.explained == Counter({QUIRK_NULL: 3})
    assert report.unexplained == [
        "Violation: response.body.data.0.completed_at Response body property "
        "data.0.completed_at must be integer",
        "Violation: response.body.last_id Response body property last_id must be string",
        "Violation: response " + MEDIA_TYPE_VIOLATION[1],
        "Violation: response " + ERROR_STATUS_VIOLATION[1],
    ]
