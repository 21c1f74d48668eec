"""The HTTP side: one thread per connection, HTTP/1.1 keep-alive, quiet unless verbose."""

from __future__ import annotations

import contextlib
import email.utils
import shutil
import socket
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from . import anthropic_api, api, control
from .errors import ApiError, azure_resource_not_found, injected, invalid_request, invalid_url
from .faults import Fault
from .models import RECORDED_HEADERS, RecordedRequest
from .routing import Request, Route, resolve
from .state import EmulatorState
from .wire import BodyError, RequestBody, Response, error_response, new_request_id


class _HTTPServer(ThreadingHTTPServer):
    """Carries the emulator's settings to handlers and can close idle keep-alive sockets."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], state: EmulatorState, api_key: str | None, verbose: bool
    ) -> None:
        self.state = state
        self.api_key = api_key
        self.verbose = verbose
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so they end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that vanish mid-request are routine here (faults drop connections on
        # purpose), so tracebacks only show when asked for.
        if self.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "batchledger-emulator"
    sys_version = ""

    @property
    def _emulator(self) -> _HTTPServer:
        return cast(_HTTPServer, self.server)

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm
        # meets the client's delayed ACK and every keep-alive response waits ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header follows the emulator's clock, offset included, so a client can
        # meet a server whose clock differs from its own.
        if timestamp is None:
            timestamp = self._emulator.state.now()
        return email.utils.formatdate(timestamp, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        if self._emulator.verbose:
            super().log_message(format, *args)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        try:
            request = Request(
                method=self.command,
                path=url.path,
                query=dict(parse_qsl(url.query, keep_blank_values=True)),
                headers=self.headers,
                body=RequestBody(self.rfile, self.headers),
                params={},
            )
            prefix = "/openai" if self._azure else "/v1"
            if url.path.startswith("/_emulator/"):
                self._serve_control(request)
            elif url.path == prefix or url.path.startswith(prefix + "/"):
                self._serve_api(request)
            else:
                request.body.drain()
                self._send(self._error(invalid_url(request.method, request.path)))
        except BodyError as exc:
            # The framing is broken, so nothing more can be read from this connection.
            error = invalid_request(f"Malformed request body: {exc}")
            self._send(self._error(error), close=True)
        except OSError:
            self.close_connection = True

    @property
    def _azure(self) -> bool:
        return self._emulator.state.flavor == "azure"

    @property
    def _anthropic(self) -> bool:
        return self._emulator.state.flavor == "anthropic"

    def _error(self, error: ApiError) -> Response:
        """An error response in the flavour's shape; Azure has one answer for unknown paths."""
        if (
            self._azure
            and error.status in (404, 405)
            and error.message.startswith(("Invalid URL", "Invalid method"))
        ):
            error = azure_resource_not_found()
        return error_response(error, azure=self._azure, anthropic=self._anthropic)

    def _handle(self, request: Request, routes: tuple[Route, ...], auth: bool) -> Response:
        """Run the route's handler; errors become error responses of the flavour."""
        try:
            if auth and self._azure:
                api.check_azure_request(request, self._emulator.api_key)
            elif auth and self._anthropic:
                anthropic_api.check_request(request, self._emulator.api_key)
            elif auth:
                api.check_auth(request.headers, self._emulator.api_key)
            handler, request.params = resolve(routes, request.method, request.path)
            return handler(self._emulator.state, request)
        except ApiError as exc:
            return self._error(exc) if auth else error_response(exc)
        except (BodyError, OSError):
            raise
        except Exception:
            if self._emulator.verbose:
                traceback.print_exc()
            return self._error(injected(500, None))

    def _serve_control(self, request: Request) -> None:
        response = self._handle(request, control.ROUTES, auth=False)
        request.body.drain()
        self._send(response)

    def _serve_api(self, request: Request) -> None:
        fault = self._emulator.state.take_fault(request.method, request.path)
        if fault is not None and fault.cut_request_after_bytes is not None:
            self._cut_request(request, fault, fault.cut_request_after_bytes)
            return
        if fault is not None and fault.status is not None:
            response = _fault_response(fault, azure=self._azure, anthropic=self._anthropic)
        else:
            response = self._handle(request, _ROUTES[self._emulator.state.flavor], auth=True)
        request.body.drain()
        request_id = response.headers.setdefault("x-request-id", new_request_id())
        if self._anthropic:
            response.headers.setdefault("request-id", request_id)
        if fault is not None and fault.delay and fault.stall_after_bytes is None:
            time.sleep(fault.delay)
        dropped = fault is not None and fault.drop_request
        # Recorded before the response goes out, so a client that has its answer always
        # finds its request in state.requests.
        self._record(request, None if dropped else response.status, fault)
        if dropped:
            response.close()
            self._abort()
            return
        self._send(response, fault=fault)

    def _cut_request(self, request: Request, fault: Fault, limit: int) -> None:
        """Read at most `limit` body bytes, then hang up: the request never arrived whole."""
        received = 0
        for chunk in request.body.chunks():
            received += len(chunk)
            if received >= limit:
                break
        self._record(request, None, fault)
        self._abort()

    def _record(self, request: Request, status: int | None, fault: Fault | None) -> None:
        headers = {
            name: value
            for name in RECORDED_HEADERS
            if (value := self.headers.get(name)) is not None
        }
        self._emulator.state.record(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                status=status,
                headers=headers,
                has_authorization="Authorization" in self.headers,
                fault=None if fault is None else fault.action,
                at=self._emulator.state.now(),
            )
        )

    def _send(self, response: Response, close: bool = False, fault: Fault | None = None) -> None:
        """Send a response, cut or stalled midway as `fault` says."""
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(response.content_length))
            for name, value in response.headers.items():
                self.send_header(name, value)
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            self._write_body(response, fault)
        except OSError:
            self.close_connection = True
        finally:
            response.close()

    def _write_body(self, response: Response, fault: Fault | None) -> None:
        limit = None if fault is None else fault.drop_after_bytes
        stall = None if fault is None else fault.stall_after_bytes
        whole = limit is None and stall is None
        if response.stream is not None and response.stream_length > 0 and whole:
            # A whole file: let the kernel copy it (sendfile), so that the emulator is not
            # what a benchmark of the client measures.
            self.wfile.flush()
            self.connection.sendfile(response.stream, count=response.stream_length)
            return
        sent = 0
        for chunk in response.chunks():
            if stall is not None and sent + len(chunk) > stall:
                assert fault is not None
                self.wfile.write(chunk[: stall - sent])
                self.wfile.flush()
                time.sleep(fault.delay)
                chunk, sent, stall = chunk[stall - sent :], stall, None
            if limit is not None and sent + len(chunk) > limit:
                self.wfile.write(chunk[: limit - sent])
                self._abort()
                return
            self.wfile.write(chunk)
            sent += len(chunk)

    def _abort(self) -> None:
        """Close the connection at once, whatever was or was not sent."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_ROUTES = {
    "openai": api.ROUTES,
    "azure": api.AZURE_ROUTES,
    "anthropic": anthropic_api.ROUTES,
}


def _fault_response(fault: Fault, azure: bool, anthropic: bool) -> Response:
    assert fault.status is not None
    error = injected(fault.status, fault.message)
    response = error_response(error, azure=azure, anthropic=anthropic)
    if fault.retry_after is not None:
        seconds = fault.retry_after
        response.headers["Retry-After"] = (
            str(int(seconds)) if seconds == int(seconds) else str(seconds)
        )
    return response


class EmulatorServer:
    """The emulator on a local port, served from a daemon thread; also a context manager.

    With data_dir=None the files live in a fresh temporary directory that stop() deletes.
    With persist=True the files and batches are kept in data_dir/state.json, and shared with any
    other emulator, now or later, on the same data_dir.
    flavor="anthropic" serves Anthropic's Message Batches instead of Files and Batches;
    relative_results_url=True makes their results_url a path, as some proxies send it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | PathLike[str] | None = None,
        api_key: str | None = None,
        step_seconds: float | None = None,
        max_input_bytes: int | None = None,
        max_input_lines: int | None = None,
        verbose: bool = False,
        enqueued_token_limit: int | None = None,
        token_limit_at: str = "validate",
        flavor: str = "openai",
        keep_metadata: bool = True,
        list_files: bool = True,
        persist: bool = False,
        relative_results_url: bool = False,
        completion_windows: tuple[str, ...] = ("24h",),
    ) -> None:
        self.host = host
        self.api_key = api_key
        self.verbose = verbose
        self._requested_port = port
        self._owns_data_dir = data_dir is None
        if data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="batchledger-emulator-"))
        else:
            self.data_dir = Path(data_dir)
        self.state = EmulatorState(
            self.data_dir,
            step_seconds=step_seconds,
            max_input_bytes=max_input_bytes,
            max_input_lines=max_input_lines,
            enqueued_token_limit=enqueued_token_limit,
            token_limit_at=token_limit_at,
            flavor=flavor,
            keep_metadata=keep_metadata,
            list_files=list_files,
            persist=persist,
            relative_results_url=relative_results_url,
            completion_windows=completion_windows,
        )
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> EmulatorServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("the emulator is already running")
        httpd = _HTTPServer(
            (self.host, self._requested_port), self.state, self.api_key, self.verbose
        )
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"batchledger-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return int(self._httpd.socket.getsockname()[1])

    @property
    def url(self) -> str:
        """The server root, where /_emulator/ routes live."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give the flavour's client as base_url: the OpenAI SDK's ends in /v1, an
        Azure data plane's in /openai; the anthropic SDK's is the root (it adds /v1 itself)."""
        flavor = self.state.flavor
        return {"azure": f"{self.url}/openai", "anthropic": self.url}.get(flavor, f"{self.url}/v1")

    def wait(self, timeout: float | None = None) -> None:
        """Block until the serving thread ends (after stop() from elsewhere)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        """Stop serving, end open connections, and delete the data_dir if it was our own."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.close_connections()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmulatorServer:
        return self if self._httpd is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
