"""Local fake of the records, rates and ledger upstreams, with fault injection and counters.

Scenario: the flows talk to upstreams that page through a changing data set, rate-limit, fail,
hang, lose answers and go down; tests need those behaviours on demand and counters to assert on.
The data set lives as the contract allows (records added anywhere, an id served twice, old
snapshots expiring, a misbehaving service handing out a cursor again) and each case must be
reproducible on demand.
Solution: one stdlib ThreadingHTTPServer per service (records, rates, rates_fallback, ledger)
plus a control port, each on its own free port, sharing one ``Sandbox`` state under one lock.
``grow``, ``repeat`` and ``reseed`` swap in a new snapshot while the last KEEP_SNAPSHOTS keep
serving their cursors, ``expire_snapshots`` forgets all but the current one (410), and
``loop_cursor`` makes pages ending at an offset point back at an earlier cursor.
How to run: ``with Sandbox(n_records=200) as sb: httpx.get(sb.urls["rates"] + "/rates",
params={"base": "EUR"})``, ``sb.grow(130, "front")``, ``sb.loop_cursor(300, back_to_offset=100)``;
or ``python -m sandbox`` for a separate-process user, driven by ``POST /grow``, ``/repeat``,
``/expire`` and ``/loop`` on the control port.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox.dataset import RATES, RATES_AS_OF, Dataset, check_where
from sandbox.faults import FaultInjector, Faults, Plan
from sandbox.ledger import Ledger

SERVICES: tuple[str, ...] = ("records", "rates", "rates_fallback", "ledger")
# A run killed mid-stream, one growth before its resume and one more while it resumes: the
# killed run's snapshot is still kept, so its cursors keep answering the same pages.
KEEP_SNAPSHOTS = 3
MAX_LIMIT = 500
BATCHES = "/ledger/batches"

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class _Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, {"error": message}, headers or {})


App = Callable[[_Request], _Response | None]  # None means: drop the connection, no answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive handler threads can idle indefinitely; close() shuts their sockets instead.
    block_on_close = False
    request_queue_size = 128
    endpoint: _Endpoint

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that is slow on some hosts.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, dropped connections, outages) are expected traffic.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without this each keep-alive response waits ~40 ms on Nagle + delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.endpoint.track(self.connection)

    def finish(self) -> None:
        self.server.endpoint.untrack(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # per-request logging would drown test output

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send(_error(400, "bad Content-Length"))
            return
        # Read the body even for a request we will drop: unread bytes would turn our FIN into
        # a RST and the client would see a different error than "server disconnected".
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        request = _Request(self.command, url.path, parse_qs(url.query), self.headers, body)
        try:
            response = self.server.endpoint.app(request)
        except Exception:
            traceback.print_exc()
            response = _error(500, "sandbox bug, see its stderr")
        if response is None:
            self._drop()
        else:
            self._send(response)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def _drop(self) -> None:
        # No status line at all: to the client the peer vanished mid-request.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, response: _Response) -> None:
        has_body = response.status not in (204, 304)
        data = json.dumps(response.body).encode() if has_body else b""
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if has_body:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)


class _Endpoint:
    """One listening service that can be closed (outage) and reopened on the same port."""

    def __init__(self, name: str, host: str, app: App) -> None:
        self.name = name
        self.host = host
        self.app = app
        self.port = 0  # chosen by the OS on first open, then kept
        self._server: _Server | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_open(self) -> bool:
        return self._server is not None

    def open(self) -> None:
        if self._server is not None:
            return
        server = _Server((self.host, self.port), _Handler)
        server.endpoint = self
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # bounds how long close() waits
            name=f"sandbox-{self.name}",
            daemon=True,
        )
        self._server = server
        thread.start()

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        # Idle keep-alive connections would otherwise keep being served during an "outage".
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)


@dataclass
class _Counters:
    requests: int = 0
    dropped: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    page_fetches: Counter[str] = field(default_factory=Counter)
    applied: int = 0
    replayed: int = 0
    conflicts: int = 0
    deleted: int = 0
    post_attempts: int = 0
    in_flight: int = 0  # requests being processed right now
    max_in_flight: int = 0  # the most seen at once: how much a client overlaps its calls

    def to_dict(self, service: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "dropped": self.dropped,
            "max_in_flight": self.max_in_flight,
        }
        if service == "records":
            out["page_fetches"] = dict(self.page_fetches)
        if service == "ledger":
            out["applied"] = self.applied
            out["replayed"] = self.replayed
            out["conflicts"] = self.conflicts
            out["deleted"] = self.deleted
            out["post_attempts"] = self.post_attempts
        return out


def encode_cursor(snapshot: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{snapshot}:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int] | None:
    """(snapshot, offset), or None when the cursor is not one of ours."""
    if not cursor.isascii() or not cursor.replace("-", "").replace("_", "").isalnum():
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None
    snapshot, sep, offset = text.rpartition(":")
    if not sep or not snapshot or not offset.isdigit():
        return None
    return snapshot, int(offset)


@dataclass(frozen=True)
class _Loop:
    """Pages ending at ``at_offset`` hand out the cursor of ``back_to_offset`` instead."""

    at_offset: int
    back_to_offset: int


def _next_cursor(snapshot: str, end: int, size: int, loop: _Loop | None) -> str | None:
    if end >= size:
        return None
    if loop is not None and end == loop.at_offset:
        return encode_cursor(snapshot, loop.back_to_offset)  # already handed out: a loop
    return encode_cursor(snapshot, end)


def _check_loop(at_offset: int | None, back_to_offset: int) -> _Loop | None:
    """The loop asked for, None for off, or ValueError naming the bad field."""
    if isinstance(back_to_offset, bool) or not isinstance(back_to_offset, int):
        raise ValueError("back_to_offset must be an integer")
    if at_offset is None:
        return None
    if isinstance(at_offset, bool) or not isinstance(at_offset, int) or at_offset < 1:
        raise ValueError("at_offset must be a positive integer or null")
    if not 0 <= back_to_offset < at_offset:
        raise ValueError(f"back_to_offset must be within 0..{at_offset - 1} (before at_offset)")
    return _Loop(at_offset, back_to_offset)


def _parse_limit(raw: str | None) -> int | None:
    if raw is None or not raw.isascii() or not raw.isdigit():
        return None
    limit = int(raw)
    return limit if 1 <= limit <= MAX_LIMIT else None


class Sandbox:
    """The four fake upstreams plus a control port, with shared state, faults and counters."""

    def __init__(
        self,
        n_records: int = 2000,
        invalid_fraction: float = 0.05,
        seed: int = 7,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.dataset = Dataset.generate(n_records, invalid_fraction, seed)
        self._lock = threading.Lock()  # snapshots, ledger and counters
        self._missing_offsets: frozenset[int] = frozenset()
        self._loop: _Loop | None = None
        self._admin = threading.Lock()  # opening and closing listeners
        self._started = False
        self._snapshots: OrderedDict[str, Dataset] = OrderedDict()
        self._snapshots[self.dataset.snapshot] = self.dataset
        self._ledger = Ledger()
        self._counters = {name: _Counters() for name in SERVICES}
        self._faults = {name: FaultInjector(seed * 100 + i) for i, name in enumerate(SERVICES)}
        routes: dict[str, Callable[[_Request], _Response]] = {
            "records": self._records,
            "rates": self._rates,
            "rates_fallback": self._rates,
            "ledger": self._ledger_route,
        }
        self._endpoints = {
            name: _Endpoint(name, host, self._faulty(name, route)) for name, route in routes.items()
        }
        self._endpoints["control"] = _Endpoint("control", host, self._control)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Sandbox:
        with self._admin:
            if self._started:
                return self
            try:
                for endpoint in self._endpoints.values():
                    endpoint.open()
            except OSError:
                for endpoint in self._endpoints.values():
                    endpoint.close()
                raise
            self._started = True
            # Services configured as down before start still needed a port to come back on.
            for name in SERVICES:
                if self._faults[name].faults.down:
                    self._endpoints[name].close()
        return self

    def stop(self) -> None:
        with self._admin:
            # In parallel: each close waits up to a poll interval for its serve loop to notice.
            closers = [threading.Thread(target=e.close) for e in self._endpoints.values()]
            for closer in closers:
                closer.start()
            for closer in closers:
                closer.join()
            self._started = False

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def urls(self) -> dict[str, str]:
        return {name: endpoint.url for name, endpoint in self._endpoints.items()}

    # -- knobs --------------------------------------------------------------------------------

    def set_faults(self, service: str, faults: Faults | None = None, **fields: Any) -> Faults:
        """Replace a service's faults (fields are applied on top of ``faults`` or defaults)."""
        self._check_service(service)
        new = Faults.from_fields(fields, base=faults)
        self._faults[service].set(new)
        self._apply_down(service, new.down)
        return new

    def get_faults(self, service: str) -> Faults:
        self._check_service(service)
        return self._faults[service].faults

    def set_missing_pages(self, offsets: set[int]) -> None:
        """Pages starting at these record offsets answer 404 (a degraded records service)."""
        self._missing_offsets = frozenset(offsets)

    def set_down(self, service: str, down: bool) -> None:
        self._check_service(service)
        injector = self._faults[service]
        injector.set(replace(injector.faults, down=down))
        self._apply_down(service, down)

    def reseed(
        self,
        n_records: int | None = None,
        invalid_fraction: float | None = None,
        seed: int | None = None,
    ) -> Dataset:
        """Swap in a new data set; cursors of the previous snapshot keep working."""
        current = self.dataset
        dataset = Dataset.generate(
            current.n_records if n_records is None else n_records,
            current.invalid_fraction if invalid_fraction is None else invalid_fraction,
            current.seed if seed is None else seed,
        )
        return self._swap_in(dataset)

    def grow(self, count: int, where: str = "end") -> Dataset:
        """Add ``count`` records with new ids at the end, front or middle, as a new snapshot.

        Cursors of the kept snapshots keep answering their pages; the new snapshot's pages no
        longer line up with an old one's (unless the growth is at the end).
        """
        return self._swap_in(self.dataset.grown(count, check_where(where)))

    def repeat(self, record_id: str, at: int) -> Dataset:
        """Serve one record twice: an identical copy at list index ``at``, as a new snapshot."""
        return self._swap_in(self.dataset.with_repeat(record_id, at))

    def insert_bad_record(self, at: int, **fields: Any) -> Dataset:
        """Serve a new, invalid record at list index ``at`` (see Dataset.with_bad_record)."""
        return self._swap_in(self.dataset.with_bad_record(at, **fields))

    def expire_snapshots(self) -> None:
        """Forget every snapshot but the current one: older cursors answer 410 Gone."""
        with self._lock:
            current = self.dataset
            self._snapshots.clear()
            self._snapshots[current.snapshot] = current

    def loop_cursor(self, at_offset: int | None, back_to_offset: int = 0) -> None:
        """Misbehave: pages of any snapshot ending at ``at_offset`` answer, as next_cursor,
        the cursor of ``back_to_offset`` in that snapshot; None turns it off.

        The cursor is one the client was already handed when its pages start at multiples of
        its limit and ``back_to_offset`` is one of them (0 is the first page's offset).
        """
        loop = _check_loop(at_offset, back_to_offset)
        with self._lock:
            self._loop = loop

    def _swap_in(self, dataset: Dataset) -> Dataset:
        """Make ``dataset`` current; the last KEEP_SNAPSHOTS snapshots keep their cursors."""
        with self._lock:
            self._snapshots[dataset.snapshot] = dataset
            self._snapshots.move_to_end(dataset.snapshot)
            while len(self._snapshots) > KEEP_SNAPSHOTS:
                self._snapshots.popitem(last=False)
            self.dataset = dataset
        return dataset

    def reset_counters(self) -> None:
        with self._lock:
            self._counters = {name: _Counters() for name in SERVICES}

    def reset_ledger(self) -> None:
        with self._lock:
            self._ledger.reset()

    # -- observations -------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {name: c.to_dict(name) for name, c in self._counters.items()}

    def ledger_state(self) -> dict[str, Any]:
        with self._lock:
            return self._ledger.state()

    def expected(self) -> dict[str, Any]:
        """What a correct run over the current data set leaves in the ledger."""
        dataset = self.dataset
        entries = dataset.expected_entries()
        return {
            "snapshot": dataset.snapshot,
            "records": len(dataset.records),
            "invalid": dict(dataset.invalid),
            "valid": len(entries),
            "total_eur": str(sum(entries.values(), Decimal("0.00"))),
            "entries": {record_id: str(amount) for record_id, amount in entries.items()},
        }

    # -- internals ------------------------------------------------------------------------------

    def _check_service(self, service: str) -> None:
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}, expected one of {SERVICES}")

    def _apply_down(self, service: str, down: bool) -> None:
        with self._admin:
            if not self._started:
                return  # start() honours the flag
            if down:
                self._endpoints[service].close()
            else:
                self._endpoints[service].open()

    def _faulty(self, name: str, route: Callable[[_Request], _Response]) -> App:
        def serve(request: _Request) -> _Response | None:
            return self._serve(name, route, request)

        return serve

    def _serve(
        self, name: str, route: Callable[[_Request], _Response], request: _Request
    ) -> _Response | None:
        ledger_post = name == "ledger" and request.method == "POST" and request.path == BATCHES
        plan = self._faults[name].plan(ledger_post=ledger_post)
        # A request racing an outage on an old keep-alive connection must not be served.
        drop = plan.drop or not self._endpoints[name].is_open
        with self._lock:
            counters = self._counters[name]
            counters.requests += 1
            counters.post_attempts += ledger_post
            counters.dropped += drop
            counters.in_flight += 1
            counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        try:
            return self._serve_planned(name, route, request, plan, drop)
        finally:
            # The counters read on entry: reset_counters() may have replaced them since.
            with self._lock:
                counters.in_flight -= 1

    def _serve_planned(
        self,
        name: str,
        route: Callable[[_Request], _Response],
        request: _Request,
        plan: Plan,
        drop: bool,
    ) -> _Response | None:
        if drop:
            return None
        if plan.sleep:
            time.sleep(plan.sleep)
        if plan.status is not None:
            response = self._injected(plan)
        else:
            response = route(request)
            if plan.delay_after_apply:
                time.sleep(plan.delay_after_apply)
            if plan.drop_after_apply:
                with self._lock:
                    self._counters[name].dropped += 1
                return None
        with self._lock:
            self._counters[name].by_status[str(response.status)] += 1
        return response

    @staticmethod
    def _injected(plan: Plan) -> _Response:
        assert plan.status is not None
        headers = {}
        if plan.status == 429:
            headers["Retry-After"] = str(plan.retry_after or 0)
        return _error(plan.status, plan.error, headers)

    def _records(self, request: _Request) -> _Response:
        if request.path != "/records":
            return _error(404, "not found")
        if request.method != "GET":
            return _error(405, "method not allowed")
        limit = _parse_limit(request.param("limit"))
        if limit is None:
            return _error(400, f"limit must be an integer within 1..{MAX_LIMIT}")
        cursor = request.param("cursor") or ""
        with self._lock:
            loop = self._loop
            if cursor:
                decoded = decode_cursor(cursor)
                if decoded is None:
                    return _error(400, "undecodable cursor")
                snapshot, offset = decoded
                dataset = self._snapshots.get(snapshot)
                if dataset is None:
                    return _error(410, "snapshot expired, restart paging without a cursor")
            else:
                dataset, offset = self.dataset, 0
        records = dataset.records
        if offset > len(records):
            return _error(400, "cursor offset out of range")
        if offset in self._missing_offsets:
            return _error(404, "page not found")
        end = offset + limit
        body = {
            "snapshot": dataset.snapshot,
            "items": records[offset:end],
            "next_cursor": _next_cursor(dataset.snapshot, end, len(records), loop),
        }
        with self._lock:
            self._counters["records"].page_fetches[cursor] += 1
        return _Response(200, body)

    def _rates(self, request: _Request) -> _Response:
        if request.path != "/rates":
            return _error(404, "not found")
        if request.method != "GET":
            return _error(405, "method not allowed")
        if request.param("base") != "EUR":
            return _error(400, "only base=EUR is supported")
        return _Response(200, {"base": "EUR", "as_of": RATES_AS_OF, "rates": dict(RATES)})

    def _ledger_route(self, request: _Request) -> _Response:
        path, method = request.path, request.method
        if path == BATCHES:
            if method != "POST":
                return _error(405, "method not allowed")
            key = request.headers.get("Idempotency-Key")
            with self._lock:
                status, body = self._ledger.post(key, request.body)
                counters = self._counters["ledger"]
                counters.applied += status == 201
                counters.replayed += status == 200
                counters.conflicts += status == 409
            return _Response(status, body)
        if path.startswith(BATCHES + "/") and len(path) > len(BATCHES) + 1:
            if method != "DELETE":
                return _error(405, "method not allowed")
            batch_id = unquote(path[len(BATCHES) + 1 :])
            with self._lock:
                self._counters["ledger"].deleted += self._ledger.delete(batch_id)
            return _Response(204)
        if path == "/ledger/summary":
            if method != "GET":
                return _error(405, "method not allowed")
            with self._lock:
                return _Response(200, self._ledger.summary())
        return _error(404, "not found")

    def _control(self, request: _Request) -> _Response:
        gets: dict[str, Callable[[], dict[str, Any]]] = {
            "/counters": self.counters,
            "/ledger": self.ledger_state,
            "/expected": self.expected,
            "/urls": lambda: self.urls,
        }
        posts: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "/faults": self._control_faults,
            "/down": self._control_down,
            "/reset": self._control_reset,
            "/reseed": self._control_reseed,
            "/grow": self._control_grow,
            "/repeat": self._control_repeat,
            "/expire": self._control_expire,
            "/loop": self._control_loop,
        }
        if request.path not in gets and request.path not in posts:
            return _error(404, "not found")
        try:
            if request.method == "GET" and request.path in gets:
                return _Response(200, gets[request.path]())
            if request.method == "POST" and request.path in posts:
                payload = json.loads(request.body or b"{}")
                if not isinstance(payload, dict):
                    raise ValueError("body must be a JSON object")
                return _Response(200, posts[request.path](payload))
        except (ValueError, TypeError, KeyError) as exc:
            return _error(400, f"{type(exc).__name__}: {exc}")
        return _error(405, "method not allowed")

    def _control_faults(self, payload: dict[str, Any]) -> dict[str, Any]:
        fields = payload.get("faults") or {}
        if not isinstance(fields, dict):
            raise ValueError("faults must be an object")
        new = self.set_faults(payload["service"], Faults.from_fields(fields))
        return {"service": payload["service"], "faults": new.to_dict()}

    def _control_down(self, payload: dict[str, Any]) -> dict[str, Any]:
        down = payload.get("down", True)
        if not isinstance(down, bool):
            raise ValueError("down must be true or false")
        self.set_down(payload["service"], down)
        return {"service": payload["service"], "down": down}

    def _control_reset(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.reset_counters()
        self.reset_ledger()
        return {"reset": True}

    def _control_reseed(self, payload: dict[str, Any]) -> dict[str, Any]:
        unknown = set(payload) - {"n_records", "invalid_fraction", "seed"}
        if unknown:
            raise ValueError(f"unknown reseed fields: {', '.join(sorted(unknown))}")
        dataset = self.reseed(
            n_records=_optional(int, payload.get("n_records")),
            invalid_fraction=_optional(float, payload.get("invalid_fraction")),
            seed=_optional(int, payload.get("seed")),
        )
        return {"snapshot": dataset.snapshot, "records": len(dataset.records)}

    def _control_grow(self, payload: dict[str, Any]) -> dict[str, Any]:
        _only("grow", payload, {"count", "where"})
        count = _int_field(payload, "count")
        where = payload.get("where", "end")
        if not isinstance(where, str):
            raise ValueError("where must be a string")
        dataset = self.grow(count, where)
        return {"snapshot": dataset.snapshot, "records": len(dataset.records), "added": count}

    def _control_repeat(self, payload: dict[str, Any]) -> dict[str, Any]:
        _only("repeat", payload, {"record_id", "at"})
        record_id = payload.get("record_id")
        if not isinstance(record_id, str):
            raise ValueError("record_id must be a string")
        at = _int_field(payload, "at")
        dataset = self.repeat(record_id, at)
        return {
            "snapshot": dataset.snapshot,
            "records": len(dataset.records),
            "record_id": record_id,
            "at": at,
        }

    def _control_expire(self, payload: dict[str, Any]) -> dict[str, Any]:
        _only("expire", payload, set())
        self.expire_snapshots()
        return {"snapshot": self.dataset.snapshot, "kept": 1}

    def _control_loop(self, payload: dict[str, Any]) -> dict[str, Any]:
        _only("loop", payload, {"at_offset", "back_to_offset"})
        if "at_offset" not in payload:
            raise ValueError("at_offset is required (null turns the loop off)")
        at_offset = payload["at_offset"]
        back_to_offset = payload.get("back_to_offset", 0)
        self.loop_cursor(at_offset, back_to_offset)  # validates both, naming the field
        if at_offset is None:
            return {"at_offset": None}
        return {"at_offset": at_offset, "back_to_offset": back_to_offset}


def _only(route: str, payload: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(payload) - allowed
    if unknown:
        raise ValueError(f"unknown {route} fields: {', '.join(sorted(unknown))}")


def _int_field(payload: dict[str, Any], name: str) -> int:
    """A required integer field; a bool or a float is a mistake, not a number to coerce."""
    if name not in payload:
        raise ValueError(f"{name} is required")
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


def _optional(convert: Callable[[Any], _T], value: Any) -> _T | None:
    return None if value is None else convert(value)
