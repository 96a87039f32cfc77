"""The profiles of the stack (local, scale): their settings, read from deployments/profiles.toml.

Scenario: the same flows run on a laptop and on a scaled-out Prefect (PostgreSQL, Redis,
several API replicas, workers on many machines, shared object storage). What differs is only
where state lives, and that must be configuration, chosen in one place.

Solution: each profile is a table of environment variables in profiles.toml; a variable set in
the environment wins over the file, so a real deployment points a profile at its own services
without editing it. The tooling (`python -m deployments up --profile NAME`) exports them to
everything it starts; a worker on another machine gets the same variables from its own
environment. Nothing in flows/, blocks/ or prefect.yaml reads a profile name.

How to run:
    python -m deployments.profiles scale      # print the scale profile's settings, resolved
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

PROFILES_FILE = Path(__file__).with_name("profiles.toml")


def profile_names() -> list[str]:
    return list(tomllib.loads(PROFILES_FILE.read_text()))


def profile_settings(name: str, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables of profile `name`, each overridden by `environ` where it is set there."""
    profiles = tomllib.loads(PROFILES_FILE.read_text())
    if name not in profiles:
        raise ValueError(f"no profile {name!r} in {PROFILES_FILE} (known: {', '.join(profiles)})")
    return {key: environ.get(key, str(value)) for key, value in profiles[name].items()}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(f"usage: python -m deployments.profiles {{{','.join(profile_names())}}}")
        return 2
    for key, value in profile_settings(argv[0]).items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
