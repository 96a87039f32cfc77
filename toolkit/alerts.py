"""Alerts a person should see: through a Prefect notification block, else the log.

The block is configuration (`RESILIENT_FLOWS_ALERT_BLOCK`, e.g. 'custom-webhook/ops-alerts'),
so the same flow pages a webhook, Slack or e-mail without a code change. An alert that cannot
be delivered is logged, never raised: alerting must not fail the work it reports on.
"""

from __future__ import annotations

import logging

from prefect.blocks.core import Block

from toolkit.config import settings

logger = logging.getLogger("resilient_flows.alerts")


def alert(subject: str, body: str) -> bool:
    """Send an alert; True if a notification block accepted it."""
    logger.warning("ALERT %s: %s", subject, body)
    slug = settings().alert_block
    if not slug:
        return False
    try:
        Block.load(slug).notify(body=body, subject=subject)  # type: ignore[attr-defined]
    except Exception:
        logger.exception("Alert %r could not be delivered through %s", subject, slug)
        return False
    return True
