"""The scale profile's load balancer: HAProxy in front of the API replicas.

Scenario: with two API replicas, a client that holds one replica's URL fails with it. Every
client of a highly available Prefect (workers, flow runs, the background services, the UI)
needs one URL that stays up while any replica does.

Solution: HAProxy (Debian's `haproxy`; `make scale-extra` installs it), run by
deployments/scale.py with the configuration `balancer_config` writes. HAProxy rather than
code of ours: it is what such a deployment puts in front of its replicas anyway (or a
Kubernetes Service), with health checks, websockets and a stats socket. In production, point
PREFECT_API_URL at your own load balancer and nothing of this module runs.

How to run: `make up-scale` starts it; `replica_stats(socket)` shows what it sees.
"""

from __future__ import annotations

import csv
import shutil
import socket
from pathlib import Path
from urllib.parse import urlsplit

BACKEND = "replicas"


def balancer_config(port: int, replica_urls: list[str], stats_socket: Path) -> str:
    """HAProxy's configuration: `port` on loopback in front of the replicas at `replica_urls`.

    HTTP mode balances each request (not each connection) round robin over the replicas that
    pass `GET /api/health` (every second; down after two failures, up after two successes).
    A request that cannot connect goes to the other replica; one that was sent is not sent
    again (a POST may have taken effect): Prefect's client retries it. Websockets (events,
    logs) are tunnelled for up to an hour, then the client reconnects.
    """
    servers = [
        f"    server api-{n} {urlsplit(url).hostname}:{urlsplit(url).port} check"
        for n, url in enumerate(replica_urls)
    ]
    return "\n".join(
        [
            "global",
            f"    stats socket {stats_socket} mode 600 level admin",
            "    maxconn 4096",
            "defaults",
            "    mode http",
            "    timeout connect 2s",
            "    timeout client 5m",
            "    timeout server 5m",
            "    timeout tunnel 1h",
            "    retries 3",
            "    retry-on conn-failure",
            "    option redispatch",
            "frontend api",
            f"    bind 127.0.0.1:{port}",
            "    default_backend replicas",
            f"backend {BACKEND}",
            "    balance roundrobin",
            "    option httpchk GET /api/health",
            "    http-check expect status 200",
            "    default-server inter 1s fall 2 rise 2",
            *servers,
            "",
        ]
    )


def haproxy_binary() -> str:
    """The `haproxy` program, or a RuntimeError that says how to install it."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError(
            "the scale profile's load balancer is HAProxy, which is not installed: "
            "`make scale-extra` installs it (apt-get install haproxy)"
        )
    return found


def replica_stats(stats_socket: Path) -> dict[str, dict[str, str]]:
    """HAProxy's `show stat` row of each replica (`api-0`, ...), from its stats socket: among
    others `status` (UP, DOWN, ...) and `stot` (requests it was sent)."""
    with socket.socket(socket.AF_UNIX) as stats:
        stats.connect(str(stats_socket))
        stats.sendall(b"show stat\n")
        answer = b"".join(iter(lambda: stats.recv(65536), b"")).decode()
    return parse_stats(answer)


def parse_stats(answer: str) -> dict[str, dict[str, str]]:
    """The replicas' rows of a `show stat` answer (CSV under a `# ` header), by server name."""
    rows = csv.DictReader(answer.removeprefix("# ").splitlines())
    return {
        row["svname"]: row
        for row in rows
        if row["pxname"] == BACKEND and row["svname"] != "BACKEND"
    }
