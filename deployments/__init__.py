"""Deployment tooling: the local stack, block documents and the demo."""
