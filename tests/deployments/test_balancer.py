"""The load balancer's configuration and the reading of its stats (pure functions); HAProxy
itself runs in tests/scale, which `make test-scale` installs it for."""

from __future__ import annotations

from pathlib import Path

from deployments.balancer import balancer_config, parse_stats


def test_config_balances_over_every_replica_that_passes_its_health_check() -> None:
    config = balancer_config(
        4300, ["http://127.0.0.1:5001/api", "http://127.0.0.1:5002/api"], Path("/run/lb.sock")
    )
    lines = [line.strip() for line in config.splitlines()]

    assert "bind 127.0.0.1:4300" in lines
    assert "server api-0 127.0.0.1:5001 check" in lines
    assert "server api-1 127.0.0.1:5002 check" in lines
    assert "option httpchk GET /api/health" in lines
    assert "stats socket /run/lb.sock mode 600 level admin" in lines
    # A request that never reached a replica goes to another; one that did is not resent.
    assert "retry-on conn-failure" in lines and "option redispatch" in lines


def test_stats_are_the_replicas_rows_by_name() -> None:
    answer = (
        "# pxname,svname,scur,stot,status,\n"
        "api,FRONTEND,1,10,OPEN,\n"
        "replicas,api-0,0,7,UP,\n"
        "replicas,api-1,0,3,DOWN,\n"
        "replicas,BACKEND,0,10,UP,\n"
    )
    stats = parse_stats(answer)

    assert sorted(stats) == ["api-0", "api-1"]
    assert (stats["api-1"]["status"], stats["api-1"]["stot"]) == ("DOWN", "3")
