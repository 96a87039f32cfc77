"""A task worker for the message queue: `python -m flows.message_queue_worker --limit 3`.

The same as `prefect task serve --module flows.message_queue_items --limit 3`, without the
CLI's start-up cost, and without importing the producer. It serves `process_item`
(flows/message_queue_items.py) until stopped; SIGTERM stops it after Prefect's graceful
shutdown, SIGKILL leaves its items for the producer to re-deliver (see the delivery guarantee
in flows/message_queue.py). Point it at the producer's server and result storage
(PREFECT_API_URL, PREFECT_RESULTS_LOCAL_STORAGE_PATH or the storage blocks).
"""

from __future__ import annotations

import argparse

from prefect.task_worker import serve

from flows.message_queue_items import process_item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10, help="items run at once (default 10)")
    serve(process_item, limit=parser.parse_args().limit)


if __name__ == "__main__":
    main()
