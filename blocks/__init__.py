"""Custom Prefect blocks of resilient-flows: `prefect block register -m blocks`."""

from blocks.http_service import HttpService
from blocks.signed_webhook import SignedWebhook as SignedWebhook

__all__ = ["HttpService"]
