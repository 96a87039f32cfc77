"""The Prefect UI in a real browser against the local stack (`python -m deployments up`).

Headless Chromium (Debian's `chromium` package, driven by Playwright for Python; nothing is
downloaded at run time) proves what a person does in the UI works end to end:
- the UI served by the stack talks to the stack's own API;
- on the deployment page of ledger-sync, Run > Custom run, typing `batch_size` and
  `max_records` into the parameter form and submitting starts a run that a worker takes to
  Completed, with exactly the typed parameters (the flow loads max_records / batch_size
  batches);
- a paused approval run (amount above the threshold) is resumed through the UI's Resume form
  (approved, reason, approver): approving with no approver is refused, the UI naming the
  field, and the run stays paused; with one it reaches Completed, and the flow logs the
  typed decision.

Missing chromium or playwright fails these tests (`make browser`, `make venv`): never a skip.
On failure a screenshot is saved under the test's tmp_path; its path is in the message.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers.polling import poll_until
from tests.helpers.stack import drain, start_up, stop

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page, Response

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RUN_TIMEOUT_SECONDS = 180


@dataclass
class Stack:
    """A running `python -m deployments up`, and how to talk to it."""

    ui_url: str
    api_url: str
    home: Path
    output: deque[str]

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET (or POST `body` to) the stack's REST API; the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.api_url}{path}", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` with PREFECT_API_URL set to this stack, in a thread of its own: under
        Playwright's running event loop Prefect's sync functions (run_deployment,
        State.result) would return coroutines instead of running."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        def run() -> Any:
            with temporary_settings({PREFECT_API_URL: self.api_url}):
                return fn(*args)

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(run).result()

    def diagnostics(self) -> str:
        """The tails of the server's and the worker's logs and of the stack's output, for
        failure messages."""
        tails = ""
        for name in ("server.log", "worker.log"):
            log = self.home / name
            text = log.read_text(errors="replace") if log.exists() else ""
            tails += f"\n--- {name} (tail) ---\n" + "\n".join(text.splitlines()[-40:])
        return tails + "\n--- stack output (tail) ---\n" + "".join(list(self.output)[-20:])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium under Playwright; fails (never skips) when either is missing."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"playwright is not installed ({exc}): `make venv` installs the dev extra")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One local stack for the module, in a fresh home: stopped with Ctrl-C at the end."""
    home = tmp_path_factory.mktemp("stack")
    # The server logs the cause of any 503 it answers (see `submit`).
    process, lines = start_up(home, {"PREFECT_API_LOG_RETRYABLE_ERRORS": "true"})
    output = drain(process)
    ui_url = lines[-1].split()[1]
    try:
        yield Stack(ui_url=ui_url, api_url=f"{ui_url}/api", home=home, output=output)
    finally:
        stop(process)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@contextlib.contextmanager
def screenshot_on_failure(page: Page, tmp_path: Path, stack: Stack) -> Iterator[None]:
    """Any failure inside becomes an AssertionError naming a screenshot of the page, with the
    API calls the page saw fail and the browser console's errors."""
    failed: list[Response] = []
    console: list[str] = []
    page.on("response", lambda r: failed.append(r) if r.status >= 400 else None)
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    try:
        yield
    except Exception as exc:
        path = tmp_path / "failure.png"
        try:
            page.screenshot(path=str(path), full_page=True)
            where = f"screenshot: {path} (page {page.url})"
        except Exception as shot_error:
            where = f"no screenshot ({shot_error})"
        calls = [f"{r.status} {r.request.method} {r.url}: {_body(r)}" for r in failed]
        raise AssertionError(
            f"{exc}\n{where}\n--- failed calls ---\n"
            + "\n".join(calls)
            + "\n--- console errors ---\n"
            + "\n".join(console[-10:])
            + stack.diagnostics()
        ) from exc


def _body(response: Response) -> str:
    try:
        return response.text()[:500]
    except Exception as exc:
        return f"(no body: {exc})"


def schema_field(page: Page, label: str, scope: Locator | None = None) -> Locator:
    """One property of a schema form (parameters, run input), found by its label text; the
    labels' `for` ids match no input, so get_by_label does not work here."""
    return (
        (scope or page)
        .locator(".schema-form-property")
        .filter(has=page.get_by_text(label, exact=True))
    )


FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def wait_final(stack: Stack, run_id: str) -> dict[str, Any]:
    """Poll the flow run until its state is final; the run as the API returns it."""

    def final() -> dict[str, Any] | None:
        run = stack.api(f"/flow_runs/{run_id}")
        return run if (run.get("state") or {}).get("type") in FINAL else None

    return poll_until(final, RUN_TIMEOUT_SECONDS, interval=1, what=f"run {run_id} ending")


def submit(page: Page) -> Response:
    """Click the run form's Submit; the answer to its create_flow_run. A 503 is Prefect's
    "retry me" (its SQLite server answers it when a write meets another writer's lock, and
    Prefect's own client retries it): the form stays filled, so Submit is clicked once more,
    as a person would; the second answer stands."""

    def click() -> Response:
        with page.expect_response(
            lambda r: r.url.endswith("/create_flow_run") and r.request.method == "POST"
        ) as created:
            page.get_by_role("button", name="Submit").click()
        return created.value

    answer = click()
    if answer.status == 503:
        page.wait_for_timeout(1_000)
        answer = click()
    return answer


def wait_for_log(stack: Stack, run_id: str, expected: str, timeout: float = 30) -> None:
    """Poll the run's logs for a message starting with `expected`: a flow run's process
    ships its logs in batches, so they may arrive after its final state."""

    def logged() -> bool:
        logs = stack.api("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}})
        return any(entry["message"].startswith(expected) for entry in logs)

    poll_until(logged, timeout, interval=0.5, what=f"a log {expected!r} of run {run_id}")


def test_the_ui_talks_to_the_stacks_api(stack: Stack) -> None:
    # The UI asks /ui-settings where the API is; a server on a free port must not send it to
    # the default port 4200 ("Can't connect to Server API at http://127.0.0.1:4200/api").
    with urllib.request.urlopen(f"{stack.ui_url}/ui-settings", timeout=10) as response:
        settings = json.load(response)
    assert settings["api_url"] == stack.api_url, (
        f"the UI at {stack.ui_url} would call the API at {settings['api_url']}, not "
        f"{stack.api_url}: the stack's server needs PREFECT_UI_API_URL={stack.api_url}"
    )


def test_custom_run_from_the_deployment_page(page: Page, stack: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    deployment = stack.api("/deployments/name/ledger-sync/ledger-sync")
    with screenshot_on_failure(page, tmp_path, stack):
        page.goto(f"{stack.ui_url}/deployments/deployment/{deployment['id']}")
        # exact: the side bar's "Runs" link is a button too.
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_role("button", name="Custom run").click()
        page.wait_for_url("**/run?**")

        batch_size = schema_field(page, "batch_size (Optional)").locator("input")
        expect(batch_size).to_have_value("200")  # the form holds the deployment's parameters
        batch_size.fill("40")
        max_records = schema_field(page, "max_records (Optional)")
        max_records.get_by_role("button", name="int", exact=True).click()  # int | None
        max_records.locator("input").fill("120")
        expect(batch_size).to_have_value("40")
        expect(max_records.locator("input")).to_have_value("120")
        created = submit(page)
        assert created.status == 201, created.text()
        run_id, run_name = created.json()["id"], created.json()["name"]
        # The UI's confirmation toast (rendered twice: the page has two toast containers).
        page.get_by_text(f"{run_name} scheduled to start now").first.wait_for()

        run = wait_final(stack, run_id)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert run["parameters"]["batch_size"] == 40
        assert run["parameters"]["max_records"] == 120
        assert run["parameters"]["records_api"] == "sandbox-records"  # the deployment's default
        wait_for_log(stack, run_id, "Loaded 3 batches")  # 120 records, 40 a batch


def test_approve_a_paused_run_through_the_resume_form(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    from deployments.trigger import trigger

    # The deployment's defaults: 25000 EUR, above the 1000 EUR threshold, so it pauses.
    run_id = str(stack.call(trigger, "approval/approval"))

    def paused() -> bool:
        state = stack.api(f"/flow_runs/{run_id}").get("state") or {}
        assert state.get("type") not in FINAL, f"{state}{stack.diagnostics()}"
        return state.get("type") == "PAUSED"

    poll_until(paused, RUN_TIMEOUT_SECONDS, interval=0.5, what=f"run {run_id} pausing")

    resume = f"/flow_runs/{run_id}/resume"
    with screenshot_on_failure(page, tmp_path, stack):
        page.goto(f"{stack.ui_url}/runs/flow-run/{run_id}")
        page.get_by_role("button", name="Resume").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Pay 25000 EUR?").wait_for()  # the form's description
        approved = schema_field(page, "Approved (Optional)", dialog).get_by_role("switch")
        expect(approved).to_have_attribute("aria-checked", "false")  # the form's initial data
        approved.click()
        expect(approved).to_have_attribute("aria-checked", "true")
        schema_field(page, "Reason (Optional)", dialog).locator("textarea").fill("invoice checked")
        # Approving with no approver: the server refuses it, the UI says which field, and the
        # run stays paused (200: no new state) with the form still open.
        with page.expect_response(lambda r: r.url.endswith(resume)) as refused:
            dialog.get_by_role("button", name="Submit").click()
        assert refused.value.status == 200 and refused.value.json()["status"] == "REJECT"
        page.get_by_text("Validation failed for field 'approver'").first.wait_for()
        assert stack.api(f"/flow_runs/{run_id}")["state"]["type"] == "PAUSED"

        schema_field(page, "Approver (Optional)", dialog).locator("textarea").fill("Ada Lovelace")
        with page.expect_response(lambda r: r.url.endswith(resume)) as resumed:
            dialog.get_by_role("button", name="Submit").click()
        assert resumed.value.status == 201, resumed.value.text()
        assert json.loads(resumed.value.request.post_data or "{}") == {
            "run_input": {"approved": True, "reason": "invoice checked", "approver": "Ada Lovelace"}
        }

        run = wait_final(stack, run_id)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert run["state"]["name"] == "Completed"  # a refusal would end Cancelled "Rejected"
        wait_for_log(stack, run_id, "Approval granted by Ada Lovelace: invoice checked")
