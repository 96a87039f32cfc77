"""Flows of resilient-flows, one module per pattern."""
