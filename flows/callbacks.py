"""Callbacks: a signed webhook tells another system how each run ended.

Scenario
    A downstream system must learn, once, that a run of this flow completed or failed (or
    crashed), and must be able to trust the message: it comes from us, was not altered and
    is not an old request replayed. A receiver that answers 503 for a moment must still get
    it, and a receiver that is down must not turn a finished run into a failed one.

Solution
    The flow declares state hooks with `toolkit.callbacks.webhook_hooks`, naming a
    `SignedWebhook` block document. When the run reaches a final state, the hook loads the
    document, signs a small JSON payload (run id and name, flow name, state, message) with
    its key and POSTs it with an idempotency key, retrying transient failures a few times.
    The work itself knows nothing about callbacks; `fail=True` fails it on purpose so the
    failure callback can be seen too.

How to run
    prefect block register -m blocks
    python -c "from pydantic import SecretStr; from blocks import SignedWebhook; \
        SignedWebhook(url='http://127.0.0.1:9000/callbacks', secret=SecretStr('...')) \
        .save('callback-webhook', overwrite=True)"
    python -c "from flows.callbacks import notify_on_finish; notify_on_finish()"
    python -c "from flows.callbacks import notify_on_finish; notify_on_finish(fail=True)"
"""

from __future__ import annotations

from prefect import flow, task

from toolkit.callbacks import webhook_hooks

CALLBACK_BLOCK = "callback-webhook"
"""The SignedWebhook block document the hooks load when a run ends."""


class RequestedFailure(RuntimeError):
    """Raised when the run was asked to fail (`fail=True`)."""


@task
def count_words(text: str) -> int:
    return len(text.split())


@flow(name="callbacks", **webhook_hooks(CALLBACK_BLOCK))
def notify_on_finish(
    fail: bool = False,
) -> int:
    """Count some words; the hooks report the run's final state to the webhook.

    Args:
      fail: Fail on purpose, to see the failure callback (the webhook is told Failed
        instead of Completed).
    """
    words = count_words("a run that reports how it ended")
    if fail:
        raise RequestedFailure(f"failing on purpose after counting {words} words (fail=True)")
    return words
