"""A real two-node Ray cluster on this machine (``ray start --head`` and ``ray start
--address``, 1 CPU each, their own temp dir and ports): a search with ``--address``
spreads its 2 workers over both nodes and gives the serial run's evaluations and front.

Slow, and it starts Ray processes outside the test process: it cleans them up by their
temp dir (never ``ray stop``, which would stop every Ray on the machine). Opt-in
(``EVO_SNN_CLUSTER_TEST=1``). The head runs with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
and so on 127.0.0.1; the second node cannot: Ray 2.60's ``ray start --address`` refuses
to start a worker node with that switch (``ray/scripts/scripts.py``: "Multi-node Ray
clusters are not supported on Windows and OSX"), and without it ``--node-ip-address=127.0.0.1``
is replaced by the machine's address, so the second node listens on all interfaces.
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
from evo_snn.evaluator import RayEvaluator
from evo_snn.faults import probe
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
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if tmp in " ".join(p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _rows(run):
    return sorted((json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()), key=lambda r: r["uid"])


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EVO_SNN_CLUSTER_TEST") != "1",
                    reason="starts a Ray cluster with `ray start` (machine-wide daemons): set EVO_SNN_CLUSTER_TEST=1 "
                           "on a machine where no other Ray job runs")
def test_two_node_cluster_search_equals_the_serial_run(tmp_path, one_torch_thread):
    pytest.importorskip("psutil")
    ray_cli = shutil.which("ray") or pytest.skip("no ray CLI")
    from evo_snn.search import main
    from test_search import TINY

    args = ["--dataset", "synthetic", "--population", "4", "--generations", "2", "--seed", "3", "--no-progress", *TINY]
    ref = tmp_path / "serial"
    assert main([*args, "--out", str(ref)]) == 0

    tmp = tempfile.mkdtemp(prefix="evo-cl-")  # short: Ray's unix socket paths must fit 107 bytes
    gcs, client, *node_ports = _free_ports(2 + 2 * 5)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)

    def node_flags(i):
        a, b, c, d, e = node_ports[5 * i:5 * i + 5]
        return ["--num-cpus=1", "--disable-usage-stats", f"--node-manager-port={a}", f"--object-manager-port={b}",
                f"--dashboard-agent-listen-port={c}", f"--dashboard-agent-grpc-port={d}", f"--metrics-export-port={e}"]

    address = f"127.0.0.1:{gcs}"
    try:
        head = subprocess.run([ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                               f"--ray-client-server-port={client}", "--include-dashboard=false", f"--temp-dir={tmp}",
                               *node_flags(0)], env={**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                              capture_output=True, text=True, timeout=180)
        assert head.returncode == 0, head.stdout[-2000:] + head.stderr[-2000:]
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

        out = tmp_path / "cluster"
        t0 = time.perf_counter()
        search = subprocess.run([sys.executable, "-m", "evo_snn.search", *args, "--workers", "2", "--address", address,
                                 "--out", str(out)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert search.returncode == 0, search.stderr[-3000:]
        print(f"cluster search: {time.perf_counter() - t0:.0f} s, manifest evaluator "
              f"{json.loads((out / 'manifest.json').read_text()).get('evaluator')}")
    finally:
        procs = _mine(tmp)
        for p in procs:
            p.kill()
        print(f"killed {len(procs)} Ray processes of the cluster")
        shutil.rmtree(tmp, ignore_errors=True)
    cols = ["uid", "genome_key", "status", "seed", "accuracy", "sparsity", "train_loss"]
    assert [{k: r.get(k) for k in cols} for r in _rows(out)] == [{k: r.get(k) for k in cols} for r in _rows(ref)]
    front = ["uid", "accuracy", "sparsity", "genome_key"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "pareto.csv")[front], pd.read_csv(ref / "pareto.csv")[front])
