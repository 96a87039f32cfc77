"""ledger_sync when upstreams misbehave: transient-only retries, fallback rates, degradation,
approval. Counted at the sandbox, on a real Prefect server."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from sandbox.receiver import Receiver
from sandbox.server import Sandbox
from tests.helpers.ledger import assert_ledger_exact, paused_run

pytestmark = pytest.mark.usefixtures("sandbox_blocks")

PAGES = 10


def sync(**parameters):
    from flows.ledger_sync import ledger_sync

    return ledger_sync(**{"batch_size": 100, **parameters}, return_state=True)


@pytest.mark.parametrize("statuses", [[400], [404], [400, 404]])
def test_records_answering_only_4xx_is_never_retried(sandbox: Sandbox, statuses) -> None:
    sandbox.set_faults("records", force_status=statuses)

    state = sync()

    assert state.is_failed()
    assert sandbox.counters()["records"]["requests"] == 1  # no task retry, no flow retry
    assert sandbox.counters()["ledger"]["requests"] == 0


def test_only_transient_answers_are_retried(sandbox: Sandbox) -> None:
    sandbox.set_faults("records", error_rate=0.3, rate_limit_rate=0.1, retry_after=0)

    assert sync().is_completed()

    by_status = sandbox.counters()["records"]["by_status"]
    assert by_status["200"] == PAGES  # each page fetched once it answered
    assert set(by_status) <= {"200", "429", "500", "502", "503", "504"}
    assert sum(by_status.values()) > PAGES  # the transient answers were retried
    assert_ledger_exact(sandbox)


def test_primary_rates_down_completes_through_the_fallback(sandbox: Sandbox) -> None:
    from toolkit.breaker import breaker_for
    from toolkit.config import settings

    breaker = breaker_for(f"rates:{sandbox.urls['rates']}")
    breaker.reset()
    sandbox.set_faults("rates", error_rate=1.0)  # answers 5xx, so its requests can be counted

    first = sync()
    sandbox.grow(100)  # a new snapshot needs rates again
    second = sync()

    assert first.is_completed() and second.is_completed()
    assert first.result().rates_source == second.result().rates_source == "fallback"
    assert_ledger_exact(sandbox)
    primary_calls = sandbox.counters()["rates"]["requests"]
    threshold = settings().breaker_failure_threshold
    assert primary_calls == threshold  # then the breaker answered for it, without a call
    assert breaker.state().state == "open"


def test_stored_rates_stand_in_when_both_rates_services_are_down(sandbox: Sandbox) -> None:
    assert sync(max_records=100).is_completed()  # stores the last known good rates
    sandbox.grow(100)  # a new snapshot needs rates again
    sandbox.set_down("rates", True)
    sandbox.set_down("rates_fallback", True)

    state = sync()

    assert state.is_completed() and state.name == "Completed"
    assert state.result().rates_source == "last known good (primary)"
    assert_ledger_exact(sandbox)


def test_without_any_rates_the_run_fails_and_loads_nothing(
    sandbox: Sandbox, alert_receiver: Receiver
) -> None:
    sandbox.set_down("rates", True)
    sandbox.set_down("rates_fallback", True)

    state = sync()

    assert state.is_failed() and "nothing loaded" in state.message
    assert sandbox.counters()["ledger"]["requests"] == 0
    subjects = [a["subject"] for a in alert_receiver.json_bodies()]
    assert subjects.count("Ledger sync failed: too much lost") == 1  # and no flow retry


def test_without_any_rates_a_tolerant_run_ends_degraded_loading_only_eur(
    sandbox: Sandbox, alert_receiver: Receiver
) -> None:
    sandbox.set_down("rates", True)
    sandbox.set_down("rates_fallback", True)

    state = sync(max_loss_fraction=1.0)

    assert state.name == "Degraded" and state.is_completed()
    summary = state.result()
    eur = {
        r["id"]
        for r in sandbox.dataset.records
        if r.get("currency") == "EUR" and r["id"] not in sandbox.dataset.invalid
    }
    loaded = set(sandbox.ledger_state()["net_applications"])
    assert loaded == eur and summary.valid == len(eur) and summary.skipped > 0
    assert any("degraded" in a["subject"].lower() for a in alert_receiver.json_bodies())


def test_records_skipped_for_want_of_rates_are_loaded_once_the_rates_are_back(
    sandbox: Sandbox, alert_receiver: Receiver
) -> None:
    from toolkit.breaker import breaker_for

    sandbox.set_down("rates", True)
    sandbox.set_down("rates_fallback", True)
    assert sync(max_loss_fraction=1.0).name == "Degraded"  # the EUR records only
    sandbox.set_down("rates", False)
    breaker_for(f"rates:{sandbox.urls['rates']}").reset()  # as its cooldown would, in time

    state = sync()  # the same snapshot: not "nothing new", since records were skipped

    assert state.name == "Completed" and not state.result().nothing_new
    assert_ledger_exact(sandbox)  # no record applied twice


def test_a_missing_page_degrades_the_run(sandbox: Sandbox) -> None:
    sandbox.set_missing_pages({900})

    state = sync(max_loss_fraction=0.2)

    assert state.name == "Degraded"
    assert "page 10 answered 404" in state.message
    summary = state.result()
    assert summary.pages == 9 and summary.ended == "missing_page: page 10 answered 404"
    assert sandbox.counters()["ledger"]["applied"] == 9


def test_a_missing_page_above_the_loss_threshold_fails_loading_nothing(sandbox: Sandbox) -> None:
    sandbox.set_missing_pages({500})

    state = sync(max_loss_fraction=0.05)

    assert state.is_failed()
    assert sandbox.counters()["ledger"]["requests"] == 0


@pytest.mark.parametrize("approved", [True, False])
def test_approval_pause_is_resumed_with_input(
    sandbox: Sandbox, alert_receiver: Receiver, approved: bool
) -> None:
    from prefect.flow_runs import resume_flow_run

    thread, holder, run_id = paused_run(approval_above_eur=Decimal("1000"))
    assert sandbox.counters()["ledger"]["requests"] == 0  # paused before loading
    assert any("Approval needed" in a["subject"] for a in alert_receiver.json_bodies())

    resume_flow_run(
        run_id, run_input={"approved": approved, "reason": "checked", "approver": "ops@example"}
    )
    thread.join(timeout=60)

    state = holder["state"]
    if approved:
        assert state.name == "Completed"
        assert_ledger_exact(sandbox)
    else:
        assert state.name == "Rejected" and "ops@example" in state.message
        assert sandbox.counters()["ledger"]["requests"] == 0


@pytest.mark.parametrize(("policy", "final"), [("reject", "Rejected"), ("approve", "Completed")])
def test_approval_timeout_follows_its_policy(
    sandbox: Sandbox, alert_receiver: Receiver, policy: str, final: str
) -> None:
    state = sync(
        approval_above_quarantine_rate=0.01,
        approval_timeout_seconds=2,
        on_approval_timeout=policy,
    )

    assert state.name == final
    assert any("timed out" in a["subject"] for a in alert_receiver.json_bodies())
    assert (sandbox.counters()["ledger"]["applied"] > 0) == (policy == "approve")


def run_events_text(client, run_id) -> str:
    """Every event of the run and its task runs, as JSON, once the run's end has arrived."""
    from prefect.events.filters import EventAnyResourceFilter, EventFilter

    run_filter = EventFilter(any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{run_id}"]))
    deadline = time.monotonic() + 15
    while True:
        page = client.read_events(filter=run_filter, limit=50)  # the server's page cap
        events = list(page.events)
        while page.next_page:
            page = client.read_events_page(page.next_page)
            events += page.events
        text = "".join(event.model_dump_json() for event in events)
        if "prefect.flow-run.Completed" in text or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def test_bearer_token_leaks_nowhere(sandbox: Sandbox, result_storage) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter
    from pydantic import SecretStr

    from blocks import HttpService

    token = "tok-3a5f9c1d7e-never-print-me"
    for name, service in (("sandbox-records", "records"), ("sandbox-ledger", "ledger")):
        HttpService(base_url=sandbox.urls[service], bearer_token=SecretStr(token)).save(
            name, overwrite=True
        )

    state = sync()
    assert state.name == "Completed"

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id={"any_": [run_id]}), limit=200)
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
        events_text = run_events_text(client, run_id)
    assert logs and artifacts
    assert all(token not in log.message for log in logs)
    assert all(token not in str(artifact.data) for artifact in artifacts)
    assert "prefect.flow-run.Completed" in events_text and token not in events_text
    stored = [p.read_bytes() for p in result_storage.rglob("*") if p.is_file()]
    assert stored and all(token.encode() not in content for content in stored)
