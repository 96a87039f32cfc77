"""Shared test helpers: the ledger and sync processes (`ledger`), the local stack (`stack`),
the services the suite needs (`services`), waiting (`polling`), logs (`logs`), HTTP
failures (`http`)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The project's root: where its commands run from."""
