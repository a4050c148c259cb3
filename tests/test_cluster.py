"""A real two-node Ray cluster on this machine (``ray start --head`` and ``ray start
--address``, 1 CPU each, their own temp dir and ports): a search with ``--address``
spreads its 2 workers over both nodes and gives the serial run's evaluations and front.

Slow, and it starts Ray processes outside the test process: it cleans them up by their
temp dir (never ``ray stop``, which would stop every Ray on the machine; the address
file ``ray start`` writes goes into that temp dir too, so a later ``ray.init()`` on
this machine never finds this cluster). Opt-in (``EVO_SNN_CLUSTER_TEST=1``).

Not loopback, as a real cluster is not: in Ray 2.60 a second node cannot join a head
that listens on 127.0.0.1 only. With ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (what keeps
a local search on loopback, ``evaluator.init_local_ray``) ``ray start --address``
refuses to start a worker node ("Multi-node Ray clusters are not supported on Windows
and OSX", ``ray/scripts/scripts.py``); without it ``ray start`` rewrites an
``--address`` or ``--node-ip-address`` of 127.0.0.1 to the machine's address
(``services.resolve_ip_for_localhost``), so the worker node looks for the GCS there and
times out (measured: "Failed to connect to GCS at address 192.0.2.2:..."). So both
nodes run on the machine's address and listen on all interfaces for the few minutes of
the test, with Ray's token authentication on (``RAY_AUTH_MODE=token`` for every node and
driver, the token of ``~/.ray/auth_token``, which ``ray start`` only reads; without the
variable a worker node's ``ray start --address`` sends no token and is refused); the
test checks that the drivers see token mode.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = str(Path(__file__).resolve().parents[1])

PROBE = r"""
import json, sys
from evo_snn.evaluation.evaluator import RayEvaluator
from evo_snn.evaluation.faults import probe
ev = RayEvaluator(workers=2, address=sys.argv[1])
info = ev.actor_info()
values = [r.metrics["value"] for _, r in sorted(ev.map(probe, [(i, i) for i in range(4)]))]
print("RESULT " + json.dumps({"info": info, "values": values, "describe": ev.describe()}))
ev.close()
"""


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _mine(tmp):
    """The processes of this test's cluster: those whose command line names its temp dir
    (gcs_server, raylets, agents: every daemon ``ray start --temp-dir=tmp`` launches), and
    their descendants (workers, whose titles ``ray::...`` no longer show their arguments).
    No other process can match: ``tmp`` is a fresh ``mkdtemp`` path."""
    import psutil

    found = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if tmp in " ".join(p.info["cmdline"] or []):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
        except psutil.Error:
            pass
    return list(found.values())


def _listening(procs):
    """{process name: sorted listening 'ip:port'} of ``procs``."""
    import psutil

    out = {}
    for p in procs:
        try:
            name = p.name()
            addrs = [f"{c.laddr.ip}:{c.laddr.port}" for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
        if addrs:
            out.setdefault(name, []).extend(addrs)
    return {k: sorted(v) for k, v in sorted(out.items())}


def _rows(run):
    return sorted((json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()), key=lambda r: r["uid"])


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EVO_SNN_CLUSTER_TEST") != "1",
                    reason="starts a Ray cluster with `ray start` (machine-wide daemons): set EVO_SNN_CLUSTER_TEST=1 "
                           "on a machine where no other Ray job runs")
def test_two_node_cluster_search_equals_the_serial_run(tmp_path, one_torch_thread):
    pytest.importorskip("psutil")
    ray_cli = shutil.which("ray") or pytest.skip("no ray CLI")
    from evo_snn.search.run import main
    from test_search import TINY

    args = ["--dataset", "synthetic", "--population", "4", "--generations", "2", "--seed", "3", "--no-progress", *TINY]
    ref = tmp_path / "serial"
    assert main([*args, "--out", str(ref)]) == 0

    tmp = tempfile.mkdtemp(prefix="evo-cl-")  # short: Ray's unix socket paths must fit 107 bytes
    gcs, client, *node_ports = _free_ports(2 + 2 * 6)
    # RAY_AUTH_MODE=token on every node and driver, as a multi-machine cluster needs (README): without it a
    # worker node's `ray start --address` does not send the token ("InvalidAuthToken ... RAY_AUTH_MODE is 'disabled'")
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)

    def node_flags(i):
        a, b, c, d, e, f = node_ports[6 * i:6 * i + 6]
        return ["--num-cpus=1", "--disable-usage-stats", f"--node-manager-port={a}", f"--object-manager-port={b}",
                f"--dashboard-agent-listen-port={c}", f"--dashboard-agent-grpc-port={d}", f"--metrics-export-port={e}",
                f"--runtime-env-agent-port={f}", "--object-store-memory=200000000"]

    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # see the module docstring
    try:
        head = subprocess.run([ray_cli, "start", "--head", f"--port={gcs}", f"--ray-client-server-port={client}",
                               "--include-dashboard=false", f"--temp-dir={tmp}", *node_flags(0)],
                              env=env, capture_output=True, text=True, timeout=180)
        assert head.returncode == 0, head.stdout[-2000:] + head.stderr[-2000:]
        address = (Path(tmp) / "ray_current_cluster").read_text().strip()  # the head's GCS, on the machine's address
        assert address.endswith(f":{gcs}"), address
        print(f"cluster head: {address}")
        worker = subprocess.run([ray_cli, "start", f"--address={address}", f"--temp-dir={tmp}", *node_flags(1)],
                                env=env, capture_output=True, text=True, timeout=180)
        assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]

        probe = subprocess.run([sys.executable, "-c", PROBE, address], env=env, cwd=ROOT, capture_output=True, text=True,
                               timeout=300)
        line = [x for x in probe.stdout.splitlines() if x.startswith("RESULT ")]
        assert probe.returncode == 0 and line, probe.stderr[-3000:]
        found = json.loads(line[0][len("RESULT "):])
        print("cluster probe:", found)
        assert found["values"] == [0, 1, 2, 3]
        assert len({a["node_id"] for a in found["info"]}) == 2  # one worker on each node
        assert found["describe"]["auth"] == "token"  # the cluster is reachable from the network: token mode

        out = tmp_path / "cluster"
        t0 = time.perf_counter()
        search = subprocess.run([sys.executable, "-m", "evo_snn.search", *args, "--workers", "2", "--address", address,
                                 "--out", str(out)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert search.returncode == 0, search.stderr[-3000:]
        print(f"cluster search: {time.perf_counter() - t0:.0f} s, manifest evaluator "
              f"{json.loads((out / 'manifest.json').read_text()).get('evaluator')}")
        workers = sorted({r.get("worker") for r in _rows(out) if r.get("status") == "ok"}, key=str)
        print(f"cluster search: evaluations ran on workers (host:pid) {workers}")  # 1 CPU per node: one actor on each
        assert len(workers) == 2
        assert json.loads((out / "manifest.json").read_text())["evaluator"]["auth"] == "token"
        sockets = _listening(_mine(tmp))
        print(f"cluster listening sockets: {sockets}")
        assert any(a.endswith(f":{gcs}") for a in sockets.get("gcs_server", [])), sockets  # we listed our own cluster
    finally:
        import psutil

        procs = _mine(tmp)
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=30)
        left = _mine(tmp)
        print(f"killed {len(procs)} Ray processes of the cluster, {len(left)} left")
        shutil.rmtree(tmp, ignore_errors=True)
    assert left == []
    cols = ["uid", "genome_key", "status", "seed", "accuracy", "sparsity", "train_loss"]
    assert [{k: r.get(k) for k in cols} for r in _rows(out)] == [{k: r.get(k) for k in cols} for r in _rows(ref)]
    front = ["uid", "accuracy", "sparsity", "genome_key"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "pareto.csv")[front], pd.read_csv(ref / "pareto.csv")[front])
