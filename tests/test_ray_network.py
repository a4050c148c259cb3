"""A local Ray (``evo_snn.evaluation.evaluator.init_local_ray``) listens on loopback only and has
token authentication on.

Ray 2.60 turns ``ray.init(_node_ip_address='127.0.0.1')`` into the machine's routable
address (``services.resolve_ip_for_localhost``) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``
is false, and with a routable node IP its gcs_server, raylet and workers listen on '::'
(all interfaces); ``init_local_ray`` keeps 127.0.0.1 (see ``_loopback_node_ip``). The
session's Ray (tests/conftest.py) is started by ``init_local_ray``, so this test looks at
the very processes the other tests use.
"""

import ipaddress

import pytest

psutil = pytest.importorskip("psutil")


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _listening(processes) -> dict:
    """{(pid, name): ['ip:port', ...]} of the TCP/UDP sockets each process listens on."""
    out = {}
    for p in processes:
        try:
            socks = [c for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
            out[(p.pid, p.name())] = [f"{c.laddr.ip}:{c.laddr.port}" for c in socks]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def test_local_ray_processes_listen_on_loopback_only_with_token_auth(ray_session, ray_evaluator):
    from evo_snn.evaluation.evaluator import ray_auth_mode
    from evo_snn.evaluation.faults import probe

    ray = ray_session
    ev = ray_evaluator  # 2 actors
    assert [r.metrics["value"] for _, r in sorted(ev.map(probe, [(1, 1), (2, 2)]))] == [1, 2]  # workers up
    node = ray._private.worker._global_node
    assert node.node_ip_address == "127.0.0.1"
    assert node.gcs_address.startswith("127.0.0.1:")
    me = psutil.Process()
    # gcs_server, raylet and the agents are children of this (driver) process, the workers of the raylet
    listening = _listening([me] + me.children(recursive=True))
    names = " ".join(name for (_, name) in listening)
    assert "gcs_server" in names and "raylet" in names
    actor_pids = {a["pid"] for a in ev.actor_info()}
    assert actor_pids <= {pid for (pid, _) in listening}
    sockets = [s for socks in listening.values() for s in socks]
    print("listening sockets:", {f"{pid} {name}": socks for (pid, name), socks in listening.items() if socks})
    assert len(sockets) >= 5  # gcs, raylet (2), each worker, this driver
    assert all(_is_loopback(s.rsplit(":", 1)[0]) for s in sockets), listening
    assert {a["node_ip"] for a in ev.actor_info()} == {"127.0.0.1"}
    assert ray_auth_mode() == "token"  # Ray's default for a new local instance; init_local_ray keeps it
    d = ev.describe()
    assert (d["auth"], d["node_ip"], d["workers"], d["gpus_per_worker"]) == ("token", "127.0.0.1", 2, 0.0)


def test_is_loopback():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("::") and not _is_loopback("0.0.0.0") and not _is_loopback("192.0.2.2")
