"""Benchmark: ledger_sync against a bare asyncio + httpx script doing the same HTTP work.

Both move the same records (pages of 500 from the records service, conversion to EUR, one
ledger POST per page with an Idempotency-Key) through the same sandbox process, one after the
other in one run, with the ledger reset in between; the figure to report is the ratio.
`ledger_sync` runs inside this already warm process, a figure no user sees: `make bench`
(benchmarks/whole_process.py) times whole processes, with `bare_sync` here as its floor.

How to run:
    .venv/bin/python -m benchmarks.ledger_sync_vs_httpx --records 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import httpx

from toolkit.stopwatch import Stopwatch

MAX_POSTS_IN_FLIGHT = 8
"""Posts a careful script keeps in flight while it pages on: all at once swamps any pool."""


async def bare_sync(urls: dict[str, str], page_size: int, clock: Stopwatch | None = None) -> int:
    """What a careful script would do without Prefect: page, convert, post; no checkpoints.
    `clock` times its waits and its conversion as the flagship's stopwatch does."""
    clock = clock or Stopwatch()
    async with httpx.AsyncClient(timeout=30) as client:
        rates_body = (await client.get(f"{urls['rates']}/rates", params={"base": "EUR"})).json()
        rates = {c: Decimal(r) for c, r in rates_body["rates"].items()}
        cursor, posts, pending = None, 0, []
        while True:
            params = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
            with clock.phase("GET wait"):
                page = (await client.get(f"{urls['records']}/records", params=params)).json()
            with clock.phase("validate"):
                entries = convert(page["items"], rates)
            if entries:  # the ledger refuses an empty batch, as ledger_sync knows
                batch = {"batch_id": f"bare-{posts}", "entries": entries}
                pending.append(
                    asyncio.ensure_future(
                        client.post(
                            f"{urls['ledger']}/ledger/batches",
                            json=batch,
                            headers={"Idempotency-Key": f"bare-{posts}"},
                        )
                    )
                )
                posts += 1
            if len(pending) >= MAX_POSTS_IN_FLIGHT:  # as a careful script would: bounded
                with clock.phase("POST wait"):
                    (await pending.pop(0)).raise_for_status()
            cursor = page["next_cursor"]
            if not cursor:
                break
        with clock.phase("POST wait"):
            for response in await asyncio.gather(*pending):
                response.raise_for_status()
        return posts


def convert(items: list[dict], rates: dict[str, Decimal]) -> list[dict]:
    """The script's validation: what it can convert, it loads; anything else it drops."""
    entries = []
    for item in items:
        try:
            amount = Decimal(item["amount"])
            rate = rates[item["currency"]]
            account = item["account"]
        except Exception:
            continue
        if amount < 0:
            continue
        eur = (amount / rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
        entries.append({"record_id": item["id"], "account": account, "amount_eur": str(eur)})
    return entries


def floor(urls_json: str, page_size: int) -> None:
    """The floor of benchmarks/whole_process.py: `bare_sync` as a process of its own, its
    time by phase written where RESILIENT_FLOWS_TIMINGS_FILE says (read from the environment:
    the project's settings would add their import to the floor's time)."""
    clock = Stopwatch()
    asyncio.run(bare_sync(json.loads(urls_json), page_size, clock))
    if timings := os.environ.get("RESILIENT_FLOWS_TIMINGS_FILE"):
        Path(timings).write_text(json.dumps({"seconds": clock.seconds}))


def control(urls: dict[str, str], path: str, body: dict | None = None) -> dict:
    with httpx.Client(base_url=urls["control"], timeout=30) as client:
        response = client.post(path, json=body or {}) if body is not None else client.get(path)
        response.raise_for_status()
        return response.json() if response.content else {}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=500)
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
    os.environ.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    from deployments.stack import register_blocks, save_sandbox_blocks, start_server

    sandbox = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--records", str(args.records)],
        stdout=subprocess.PIPE,
        text=True,
    )
    server = start_server(home)
    try:
        urls = json.loads(sandbox.stdout.readline())
        os.environ["PREFECT_API_URL"] = server.api_url
        register_blocks()
        save_sandbox_blocks(urls)

        started = time.perf_counter()
        posts = asyncio.run(bare_sync(urls, args.page_size))
        bare = time.perf_counter() - started
        bare_total = control(urls, "/ledger")["summary"]["total_eur"]
        control(urls, "/reset", {})

        from flows.ledger_sync import ledger_sync

        started = time.perf_counter()
        if os.environ.get("BENCH_PROFILE"):
            import cProfile

            with cProfile.Profile() as profile:
                summary = ledger_sync(batch_size=args.page_size)
            profile.dump_stats(os.environ["BENCH_PROFILE"])
        else:
            summary = ledger_sync(batch_size=args.page_size)
        flow = time.perf_counter() - started
        flow_total = control(urls, "/ledger")["summary"]["total_eur"]

        assert bare_total == flow_total == str(summary.total_eur), (bare_total, flow_total)
        print(f"records={args.records} pages={posts} ledger_total={flow_total}")
        print(f"bare asyncio+httpx: {bare:.2f} s")
        print(f"ledger_sync:        {flow:.2f} s")
        print(f"ratio:              {flow / bare:.1f}x")
        return 0
    finally:
        server.stop()
        sandbox.terminate()
        sandbox.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
