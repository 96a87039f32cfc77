"""Point the default HttpService block documents at a running sandbox.

How to run (with PREFECT_API_URL set, or Prefect's ephemeral mode):
    .venv/bin/python -m sandbox --records 2000 | .venv/bin/python -m deployments.save_blocks &
or, with the JSON line `python -m sandbox` printed:
    .venv/bin/python -m deployments.save_blocks '{"records": "http://127.0.0.1:8001", ...}'
"""

from __future__ import annotations

import json
import sys

from deployments.stack import SANDBOX_BLOCKS, register_blocks, save_sandbox_blocks


def main(argv: list[str]) -> int:
    urls = json.loads(argv[0] if argv else sys.stdin.readline())
    missing = sorted(set(SANDBOX_BLOCKS) - set(urls))
    if missing:
        print(f"no URL for {missing} in {urls}", file=sys.stderr)
        return 2
    register_blocks()
    save_sandbox_blocks(urls)
    for service, block_name in SANDBOX_BLOCKS.items():
        print(f"{block_name} -> {urls[service]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
