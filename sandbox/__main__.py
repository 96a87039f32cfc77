"""Run the sandbox upstream in the foreground for a separate-process user.

Scenario: end-to-end runs start flows in other processes that need the fake upstreams up.
Solution: start a Sandbox, print its URLs as one JSON line on stdout, serve until SIGTERM or
SIGINT; faults can be preset here and changed later through the control port, which also lets
the data set live between runs (``POST /grow``, ``/repeat``, ``/expire``, ``/loop``).
How to run: ``python -m sandbox --records 2000 --fault ledger:error_rate=0.2 rates:down=true``
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Sequence

from sandbox.faults import Faults, parse_fault_arg
from sandbox.server import Sandbox


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="number of records")
    parser.add_argument("--invalid-fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--fault",
        action="extend",
        nargs="+",
        default=[],
        metavar="SERVICE:FIELD=VALUE",
        help="preset a fault, e.g. ledger:error_rate=0.2 or records:force_status=429,503",
    )
    args = parser.parse_args(argv)

    try:
        sandbox = Sandbox(args.records, args.invalid_fraction, args.seed, args.host)
        presets: dict[str, dict[str, str]] = {}
        for spec in args.fault:
            service, name, value = parse_fault_arg(spec)
            presets.setdefault(service, {})[name] = value
        for service, fields in presets.items():
            sandbox.set_faults(service, Faults.from_fields(fields))
    except ValueError as exc:
        parser.error(str(exc))

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with sandbox:
        print(json.dumps(sandbox.urls), flush=True)
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
