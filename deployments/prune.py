"""`python -m deployments prune [--older-than 30d] [--dry-run]`: the maintenance run, now.

Runs flows/maintenance.py's flow in this process against the server in PREFECT_API_URL and the
result storage of this process's settings (the same the deployment's runs use), and prints
the files and bytes freed per kind; `--dry-run` deletes nothing.
"""

from __future__ import annotations

import argparse
import re

EXAMPLE = "e.g. http://127.0.0.1:4200/api"
UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def days(text: str) -> float:
    """A retention such as `30d`, `12h`, `90m`, `0`, in days."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([dhms]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"--older-than {text!r}: a number and a unit, d, h, m or s (e.g. 30d)"
        )
    number, unit = match.groups()
    return float(number) * UNITS[unit or "d"] / 86400


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments prune", description=__doc__)
    parser.add_argument("--older-than", type=days, default=30.0, help="the retention (default 30d)")
    parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    args = parser.parse_args(argv)
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        # Prefect would start a throwaway server of its own, whose artifacts are not yours.
        parser.exit(2, f"prune: set PREFECT_API_URL to the API of the server to prune, {EXAMPLE}\n")

    from flows.maintenance import maintenance, table

    freed = maintenance(older_than_days=args.older_than, dry_run=args.dry_run)
    print(table(freed, args.dry_run))
    return 0
