"""Custom Prefect blocks of resilient-flows: `prefect block register -m blocks`."""

from blocks.http_service import HttpService

__all__ = ["HttpService"]
