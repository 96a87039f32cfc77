"""toolkit/breaker.py: the circuit breaker against real Redis and the real sandbox over
loopback, from one thread, many threads and two processes.

What reached the upstream is counted at the sandbox (or, for a service that is down and so
refuses connections, by counting the calls that actually ran). Transitions are counted with
the breaker's `on_transition` hook, which is called only in the process whose script made the
transition; the tests pass a recorder instead of `announce`, so that only the docstring's
example, run as written, needs the Prefect server. What `announce` sends is checked in
test_breaker_announce.py, each Lua script's decisions in test_breaker_store.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

import toolkit.breaker
from sandbox.server import Sandbox
from tests.helpers import ROOT
from tests.helpers.http import status_error
from tests.helpers.logs import logged
from toolkit.breaker import (
    KEY_PREFIX,
    CircuitBreaker,
    CircuitOpenError,
    Transition,
    breaker_for,
    outcome_of,
    variable_name,
)
from toolkit.config import settings
from toolkit.retry import checked, is_transient


class Recorder:
    """Transitions reported to this process, as (from, to) pairs; thread-safe."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []
        self._lock = threading.Lock()

    def __call__(self, transition: Transition) -> None:
        with self._lock:
            self.transitions.append(transition)

    @property
    def moves(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(t.from_state, t.to_state) for t in self.transitions]


class Rates:
    """GET /rates?base=EUR on a sandbox service, counting the calls that actually ran."""

    def __init__(self, url: str) -> None:
        self.url = url + "/rates?base=EUR"
        self.client = httpx.Client(timeout=2)
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
        return checked(self.client.get(self.url)).json()


def forget(name: str) -> None:
    """Delete breaker `name`'s Redis hash."""
    client = redis.Redis.from_url(settings().redis_url)
    client.delete(KEY_PREFIX + name)
    client.close()


@pytest.fixture
def name() -> Iterator[str]:
    """A breaker name of this test's own; its Redis key is deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    forget(name)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def rates(sandbox: Sandbox) -> Iterator[Rates]:
    rates = Rates(sandbox.urls["rates"])
    yield rates
    rates.client.close()


def requests_at(sandbox: Sandbox, service: str = "rates") -> int:
    return sandbox.counters()[service]["requests"]


def trip(breaker: CircuitBreaker, fn: Callable[[], Any]) -> None:
    for _ in range(breaker.failure_threshold):
        with pytest.raises((httpx.TransportError, httpx.HTTPStatusError)):
            breaker.call(fn)
    assert breaker.state().state == "open"


# -- 1. tripping --------------------------------------------------------------------------------


def test_trips_after_threshold_when_down_then_fails_fast(
    sandbox: Sandbox, rates: Rates, name: str, recorder: Recorder
) -> None:
    sandbox.set_down("rates", True)
    breaker = CircuitBreaker(name, failure_threshold=3, cooldown_seconds=60, on_transition=recorder)

    for _ in range(3):
        with pytest.raises(httpx.ConnectError):
            breaker.call(rates)
    for _ in range(20):
        with pytest.raises(CircuitOpenError) as rejected:
            breaker.call(rates)

    assert rates.calls == 3  # the 20 rejected calls never ran
    assert rejected.value.name == name and 59 < rejected.value.retry_in <= 60
    assert not is_transient(rejected.value)  # go to the fallback, do not retry
    state = breaker.state()
    assert (state.state, state.failures) == ("open", 3) and state.opened_at is not None
    assert recorder.moves == [("closed", "open")]


def test_trips_on_5xx_and_the_sandbox_sees_no_more_requests(
    sandbox: Sandbox, rates: Rates, name: str, recorder: Recorder
) -> None:
    sandbox.set_faults("rates", error_rate=1.0)
    breaker = CircuitBreaker(name, failure_threshold=4, cooldown_seconds=60, on_transition=recorder)

    trip(breaker, rates)
    for _ in range(20):
        with pytest.raises(CircuitOpenError):
            breaker.call(rates)

    assert requests_at(sandbox) == 4
    assert recorder.moves == [("closed", "open")]


# -- 2. permanent errors ------------------------------------------------------------------------


def test_permanent_errors_never_trip_and_reset_the_count(
    sandbox: Sandbox, rates: Rates, name: str, recorder: Recorder
) -> None:
    breaker = CircuitBreaker(name, failure_threshold=3, cooldown_seconds=60, on_transition=recorder)

    sandbox.set_faults("rates", force_status=[404])
    for _ in range(10):
        with pytest.raises(httpx.HTTPStatusError) as error:
            breaker.call(rates)
        assert error.value.response.status_code == 404  # re-raised unchanged
    assert (breaker.state().state, breaker.state().failures) == ("closed", 0)

    # Two transient failures, then the service answers (404): the run of failures is over.
    sandbox.set_faults("rates", error_rate=1.0)
    for _ in range(2):
        with pytest.raises(httpx.HTTPStatusError):
            breaker.call(rates)
    assert breaker.state().failures == 2
    sandbox.set_faults("rates", force_status=[404])
    with pytest.raises(httpx.HTTPStatusError):
        breaker.call(rates)
    assert breaker.state().failures == 0

    assert requests_at(sandbox) == 13
    assert recorder.moves == []


# -- 3. half-open: exactly one probe -----------------------------------------------------------


def hold_then(
    entered: threading.Event, release: threading.Event, fn: Callable[[], Any]
) -> Callable[[], Any]:
    def held() -> Any:
        entered.set()
        assert release.wait(10)
        return fn()

    return held


def run_in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start `target`; the list receives its result or exception."""
    outcome: list[Any] = []

    def runner() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=runner)
    thread.start()
    return thread, outcome


def test_after_cooldown_one_probe_runs_and_its_success_closes(
    sandbox: Sandbox, rates: Rates, name: str, recorder: Recorder
) -> None:
    sandbox.set_faults("rates", error_rate=1.0)
    breaker = CircuitBreaker(
        name, failure_threshold=2, cooldown_seconds=0.5, on_transition=recorder
    )
    trip(breaker, rates)
    with pytest.raises(CircuitOpenError):
        breaker.call(rates)
    time.sleep(0.6)
    sandbox.set_faults("rates")  # the service is back

    entered, release = threading.Event(), threading.Event()
    prober, outcome = run_in_thread(lambda: breaker.call(hold_then(entered, release, rates)))
    assert entered.wait(5)
    for _ in range(5):  # while the probe is out, everyone else is rejected
        with pytest.raises(CircuitOpenError) as rejected:
            breaker.call(rates)
        assert rejected.value.state == "half_open"
    assert requests_at(sandbox) == 2
    release.set()
    prober.join(5)

    assert isinstance(outcome[0], dict)  # the probe's own answer
    assert requests_at(sandbox) == 3
    assert (breaker.state().state, breaker.state().failures) == ("closed", 0)
    breaker.call(rates)
    assert requests_at(sandbox) == 4
    assert recorder.moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_failed_probe_reopens_with_a_new_cooldown(
    sandbox: Sandbox, rates: Rates, name: str, recorder: Recorder
) -> None:
    sandbox.set_faults("rates", error_rate=1.0)
    breaker = CircuitBreaker(
        name, failure_threshold=2, cooldown_seconds=0.5, on_transition=recorder
    )
    trip(breaker, rates)
    first_opened = breaker.state().opened_at
    assert first_opened is not None
    time.sleep(0.6)

    with pytest.raises(httpx.HTTPStatusError):
        breaker.call(rates)  # the probe: still 5xx
    state = breaker.state()
    assert state.state == "open" and state.failures == 3
    assert state.opened_at is not None and state.opened_at >= first_opened + 0.5
    with pytest.raises(CircuitOpenError) as rejected:
        breaker.call(rates)
    assert rejected.value.retry_in > 0.3  # a fresh cooldown, not the rest of the old one
    assert requests_at(sandbox) == 3
    assert recorder.moves == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]


def test_stale_probe_is_replaced_and_its_late_result_is_ignored(
    sandbox: Sandbox, rates: Rates, name: str, recorder: Recorder
) -> None:
    breaker = CircuitBreaker(
        name,
        failure_threshold=1,
        cooldown_seconds=0.3,
        probe_timeout_seconds=0.3,
        on_transition=recorder,
    )
    sandbox.set_faults("rates", error_rate=1.0)
    trip(breaker, rates)
    time.sleep(0.35)

    # Probe 1 hangs past its deadline (as if its worker had died), then fails.
    entered1, release1 = threading.Event(), threading.Event()
    first, outcome1 = run_in_thread(lambda: breaker.call(hold_then(entered1, release1, rates)))
    assert entered1.wait(5)
    time.sleep(0.35)
    # Probe 2 is granted because probe 1's deadline passed; it will succeed.
    sandbox.set_faults("rates")
    entered2, release2 = threading.Event(), threading.Event()
    second, outcome2 = run_in_thread(lambda: breaker.call(hold_then(entered2, release2, rates)))
    assert entered2.wait(5)

    sandbox.set_faults("rates", error_rate=1.0)
    release1.set()
    first.join(5)
    assert isinstance(outcome1[0], httpx.HTTPStatusError)
    assert breaker.state().state == "half_open"  # probe 1 no longer holds the probe

    sandbox.set_faults("rates")
    release2.set()
    second.join(5)
    assert isinstance(outcome2[0], dict)
    assert breaker.state().state == "closed"
    assert recorder.moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt or a cancellation: no verdict on the upstream."""


def test_interrupted_probe_frees_the_probe_at_once(
    sandbox: Sandbox, rates: Rates, name: str, recorder: Recorder
) -> None:
    breaker = CircuitBreaker(
        name,
        failure_threshold=1,
        cooldown_seconds=0.3,
        probe_timeout_seconds=60,
        on_transition=recorder,
    )
    sandbox.set_faults("rates", error_rate=1.0)
    trip(breaker, rates)
    time.sleep(0.35)

    def interrupted() -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        breaker.call(interrupted)
    assert breaker.state().state == "half_open"
    sandbox.set_faults("rates")
    breaker.call(rates)  # granted now, not 60 s later
    assert breaker.state().state == "closed"


# -- 4. two processes share one breaker ---------------------------------------------------------

CHILD = r"""
import json, sys, time
import httpx
from toolkit.breaker import CircuitBreaker, CircuitOpenError

name, url = sys.argv[1], sys.argv[2]
threshold, cooldown, duration = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
moves = []
breaker = CircuitBreaker(
    name, threshold, cooldown, on_transition=lambda t: moves.append([t.from_state, t.to_state])
)
counts = {"invoked": 0, "attempts": 0, "rejected": 0}

def fetch(client):
    counts["invoked"] += 1
    return client.get(url).raise_for_status()

print("ready", flush=True)
sys.stdin.readline()
start = time.time()
with httpx.Client(timeout=2) as client:
    while time.time() - start < duration:
        counts["attempts"] += 1
        try:
            breaker.call(fetch, client)
        except CircuitOpenError:
            counts["rejected"] += 1
        except httpx.TransportError:
            pass
        time.sleep(0.002)
print(json.dumps({**counts, "moves": moves, "start": start, "end": time.time()}), flush=True)
"""


def test_two_processes_share_one_breaker(sandbox: Sandbox, name: str) -> None:
    threshold, cooldown, duration = 3, 0.5, 2.0
    sandbox.set_down("rates", True)
    url = sandbox.urls["rates"] + "/rates?base=EUR"
    args = [name, url, str(threshold), str(cooldown), str(duration)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for child in children:  # both imported and ready: start them together
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            out, err = child.communicate(timeout=30)
            assert child.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()

    invoked = sum(r["invoked"] for r in results)
    attempts = sum(r["attempts"] for r in results)
    moves = [tuple(m) for r in results for m in r["moves"]]
    window = max(r["end"] for r in results) - min(r["start"] for r in results)
    probes = moves.count(("open", "half_open"))
    # At most one probe per cooldown window, and at most one call per process in flight at
    # the trip: closed calls are the threshold plus possibly the other process's one.
    assert moves.count(("closed", "open")) == 1
    assert 1 <= probes <= window / cooldown + 1
    assert moves.count(("half_open", "open")) == probes  # every probe failed and reopened
    assert invoked - probes in (threshold, threshold + 1)
    assert invoked <= threshold + 1 + window / cooldown + 1
    assert attempts >= 20 * invoked, results
    assert all(r["rejected"] == r["attempts"] - r["invoked"] for r in results)


# -- 5. concurrent trip ------------------------------------------------------------------------


def test_concurrent_failures_make_exactly_one_trip(
    sandbox: Sandbox, name: str, recorder: Recorder
) -> None:
    n, threshold = 16, 3
    sandbox.set_faults("rates", error_rate=1.0)
    breaker = CircuitBreaker(
        name, failure_threshold=threshold, cooldown_seconds=60, on_transition=recorder
    )
    barrier = threading.Barrier(n)
    url = sandbox.urls["rates"] + "/rates?base=EUR"

    def together() -> Any:
        barrier.wait(10)  # every thread was let through while closed; all fail at once
        with httpx.Client(timeout=5) as client:
            return checked(client.get(url))

    threads = [run_in_thread(lambda: breaker.call(together)) for _ in range(n)]
    for thread, _ in threads:
        thread.join(15)

    errors = [outcome[0] for _, outcome in threads]
    assert all(isinstance(e, httpx.HTTPStatusError) for e in errors), errors
    assert recorder.moves == [("closed", "open")]
    assert recorder.transitions[0].failures == threshold
    state = breaker.state()
    assert (state.state, state.failures) == ("open", threshold)  # late failures not counted
    assert requests_at(sandbox) == n
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    assert requests_at(sandbox) == n


# -- 6. Redis unreachable ---------------------------------------------------------------------


def test_unreachable_redis_lets_every_call_through(
    sandbox: Sandbox, rates: Rates, name: str, recorder: Recorder
) -> None:
    breaker = CircuitBreaker(
        name,
        failure_threshold=2,
        cooldown_seconds=60,
        redis_url="redis://127.0.0.1:1/0",  # nothing listens on port 1
        on_transition=recorder,
    )
    sandbox.set_faults("rates", error_rate=1.0)
    started = time.monotonic()

    with logged("resilient_flows.breaker") as warnings:
        for _ in range(6):  # three times the threshold, never CircuitOpenError
            with pytest.raises(httpx.HTTPStatusError) as error:
                breaker.call(rates)
            assert error.value.response.status_code >= 500
    sandbox.set_faults("rates", force_status=[404])
    with pytest.raises(httpx.HTTPStatusError):
        breaker.call(rates)
    sandbox.set_faults("rates")
    assert "EUR" in json.dumps(breaker.call(rates))

    assert requests_at(sandbox) == 8
    assert time.monotonic() - started < 5  # no per-call Redis timeouts
    assert any("cannot reach Redis" in r.getMessage() for r in warnings)
    assert recorder.moves == []
    with pytest.raises(redis.RedisError):
        breaker.state()  # inspecting the breaker, unlike using it, needs Redis


# -- 7. what an outcome says (unit) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (None, "success"),
        (status_error(404), "success"),  # the service answered
        (ValueError("bad body"), "success"),  # our own error, not the upstream's
        (status_error(503), "failure"),
        (status_error(429), "failure"),
        (httpx.ConnectError("refused"), "failure"),
        (httpx.ReadTimeout("slow"), "failure"),
        (KeyboardInterrupt(), "abandon"),
    ],
    ids=["returned", "404", "ValueError", "503", "429", "ConnectError", "ReadTimeout", "Ctrl-C"],
)
def test_outcome_of_a_call(exc: BaseException | None, outcome: str) -> None:
    assert outcome_of(exc) == outcome


# -- 8. one breaker per name, the hook, the docstring ------------------------------------------


def test_breaker_for_is_one_per_name_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"  # no Redis call: nothing to clean up
    first = breaker_for(name)
    assert breaker_for(name) is first and breaker_for(name + "-other") is not first

    monkeypatch.setenv("RESILIENT_FLOWS_BREAKER_FAILURE_THRESHOLD", "2")
    settings.cache_clear()
    try:
        assert breaker_for(name).failure_threshold == first.failure_threshold  # still cached
        breaker_for.cache_clear()
        assert breaker_for(name) is not first and breaker_for(name).failure_threshold == 2
    finally:
        monkeypatch.undo()
        settings.cache_clear()
        breaker_for.cache_clear()
    assert breaker_for(name).failure_threshold == first.failure_threshold


def test_a_failing_hook_never_reaches_the_caller(sandbox: Sandbox, rates: Rates, name: str) -> None:
    def broken(transition: Transition) -> None:
        raise RuntimeError("announcement failed")

    breaker = CircuitBreaker(name, failure_threshold=1, cooldown_seconds=60, on_transition=broken)
    sandbox.set_faults("rates", error_rate=1.0)
    # fn's own error comes out, not the hook's
    with logged("resilient_flows.breaker") as warnings, pytest.raises(httpx.HTTPStatusError):
        breaker.call(rates)
    assert breaker.state().state == "open"
    assert [r.getMessage() for r in warnings] == [
        f"Circuit breaker {name!r}: transition hook failed"
    ]


def docstring_example() -> str:
    """The code under "How to run" in toolkit/breaker.py's docstring (its last section)."""
    doc = toolkit.breaker.__doc__ or ""
    _, found, example = doc.partition("\nHow to run")
    assert found, "toolkit/breaker.py's docstring has no 'How to run'"
    return textwrap.dedent(example.split("\n", 1)[1])


def test_the_docstring_example_runs_as_written(prefect_server: str, sandbox: Sandbox) -> None:
    from prefect.variables import Variable

    example = compile(docstring_example(), "toolkit/breaker.py (docstring)", "exec")
    threshold = settings().breaker_failure_threshold
    primary = httpx.Client(base_url=sandbox.urls["rates"], timeout=2)
    fallback = httpx.Client(base_url=sandbox.urls["rates_fallback"], timeout=2)

    def run() -> Any:
        namespace: dict[str, Any] = {"primary": primary, "fallback": fallback}
        exec(example, namespace)
        return namespace["rates"]

    try:
        assert run()["base"] == "EUR"
        assert (requests_at(sandbox), requests_at(sandbox, "rates_fallback")) == (1, 0)
        sandbox.set_faults("rates", error_rate=1.0)
        for _ in range(threshold):  # closed: the primary's own errors come out unchanged
            with pytest.raises(httpx.HTTPStatusError):
                run()
        assert run()["base"] == "EUR"  # open: the fallback answered, the primary was spared
        assert (requests_at(sandbox), requests_at(sandbox, "rates_fallback")) == (
            1 + threshold,
            1,
        )
    finally:
        primary.close()
        fallback.close()
        Variable.unset(variable_name("rates"))  # the example's breaker announced its trip
        forget("rates")
