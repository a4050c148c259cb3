"""The serial and the Ray evaluator are interchangeable behind ``map(fn, jobs)``."""

import os

import numpy as np
import pytest
import torch

from evo_snn.evaluation.evaluator import PerWorker, SerialEvaluator, genome_fitness
from evo_snn.evaluation.fitness import FitnessContext, GenomeFitness
from evo_snn.structure.genome import Genome, GenomeOps
from evo_snn.models import build_model
from evo_snn.structure.pruning import prunable_layers, weight_magnitudes
from evo_snn.training.teacher import train_teacher


@pytest.fixture(scope="module")
def ctx(tiny_cfg, tiny_splits):
    from dataclasses import replace

    teacher, _ = train_teacher(tiny_cfg, tiny_splits, seed=0, device=torch.device("cpu"), progress=False)
    layers = tuple(prunable_layers(teacher))
    cfg = replace(tiny_cfg, search=replace(tiny_cfg.search, measure_teacher=True))  # off by default; compared below
    return FitnessContext(cfg, tiny_splits.train, tiny_splits.val, tiny_splits.frame_shape, tiny_splits.num_classes,
                          teacher.state_dict(), layers)


def _genomes(ctx, n):
    teacher = build_model(ctx.cfg.model, ctx.frame_shape, ctx.num_classes)
    teacher.load_state_dict(ctx.teacher_state)
    ops = GenomeOps(weight_magnitudes(teacher, ctx.layers), ctx.cfg.genome)
    rng = np.random.default_rng(0)
    return [ops.random(rng) for _ in range(n)]


def test_fitness_metrics_and_student_masks(ctx):
    g = _genomes(ctx, 1)[0]
    res = GenomeFitness(ctx)(g, seed=1)
    m = res.metrics
    assert m["sparsity"] == pytest.approx(g.sparsity)
    assert set(m["layer_sparsity"]) == set(ctx.layers)
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["teacher_accuracy"] <= 1 and m["wall_s"] > 0
    for name, mask in g.mask_dict().items():
        assert (res.student_state[name + ".weight"].numpy()[~mask] == 0).all()


def test_student_options_scratch_and_dense(ctx):
    from dataclasses import replace

    g = _genomes(ctx, 1)[0]
    dense_ctx = replace(ctx, cfg=replace(ctx.cfg, kd=replace(ctx.cfg.kd, student_mask="dense", student_init="scratch")))
    res = GenomeFitness(dense_ctx)(g, seed=1)
    assert res.metrics["sparsity"] < 0.01 < g.sparsity  # a dense student trains every weight


def test_failed_evaluation_is_reported_not_raised(ctx):
    bad = Genome(("nope",), (0.0,), (np.ones(3, dtype=bool),))
    results = dict(SerialEvaluator().map(genome_fitness(ctx), [(bad, 0)]))
    assert isinstance(results[0], Exception)


def test_ray_evaluator_matches_serial(ctx, ray_evaluator):
    genomes = _genomes(ctx, 3)
    jobs = [(g, 10 + i) for i, g in enumerate(genomes)]
    serial = dict(SerialEvaluator().map(genome_fitness(ctx), jobs))
    ev = ray_evaluator
    assert ev.workers == 2
    parallel = dict(ev.map(genome_fitness(ctx), jobs))
    assert sorted(parallel) == [0, 1, 2]
    assert all(parallel[i].metrics["threads"] == 1 for i in parallel)  # one thread per 1-CPU actor
    workers = {parallel[i].metrics["worker"] for i in parallel}
    assert not any(w.endswith(f":{os.getpid()}") for w in workers)  # ran in Ray actors, not here
    for i in range(3):
        s, p = serial[i].metrics, parallel[i].metrics
        assert p["sparsity"] == s["sparsity"]
        assert p["teacher_accuracy"] == pytest.approx(s["teacher_accuracy"])
        assert p["accuracy"] == pytest.approx(s["accuracy"], abs=1 / len(ctx.val) + 1e-9)
        # same seed -> same student weights, up to float reduction order across thread counts
        for k, v in s["layer_sparsity"].items():
            assert p["layer_sparsity"][k] == v


def test_weight_inheritance_starts_from_the_parent_student(ctx):
    """search.inherit_weights: a child's student starts from its parent's trained student;
    connections the parent had pruned and the child keeps come from the dense teacher."""
    parent_g, child_g = _genomes(ctx, 2)
    fit = GenomeFitness(ctx)
    parent = fit(parent_g, seed=1)
    start = fit.inherit(parent.student_state)
    dense = fit.teacher.state_dict()
    for name in ctx.layers:
        p, s, t = parent.student_state[name + ".weight"], start.state_dict()[name + ".weight"], dense[name + ".weight"]
        pruned = p == 0
        assert pruned.any() and (~pruned).any()
        assert torch.equal(s[pruned], t[pruned]) and torch.equal(s[~pruned], p[~pruned])
    inherited = fit(child_g, seed=2, init_state=parent.student_state)
    fresh = fit(child_g, seed=2)
    assert inherited.metrics["inherited"] and not fresh.metrics["inherited"]
    for name, mask in child_g.mask_dict().items():
        w = inherited.student_state[name + ".weight"].numpy()
        assert (w[~mask] == 0).all()  # the child's own masks hold
    assert any(not torch.equal(inherited.student_state[k], fresh.student_state[k]) for k in fresh.student_state
               if fresh.student_state[k].is_floating_point())


# ------------------------------------------------------- map(fn, jobs) with plain functions
BUILT = []


def _make_adder():
    BUILT.append(1)
    return lambda x, y=0: x + y


def _broken_factory():
    raise ValueError("bad config")


def test_serial_map_applies_a_plain_function_and_reports_errors_per_job():
    out = dict(SerialEvaluator().map(lambda a, b: a // b, [(7, 2), (1, 0), (9, 3)]))
    assert out[0] == 3 and out[2] == 3 and isinstance(out[1], ZeroDivisionError)
    assert list(SerialEvaluator().map(lambda: 1 / 0, [])) == []


def test_per_worker_builds_once_and_ships_only_its_factory():
    import pickle

    BUILT.clear()
    fn = PerWorker(_make_adder)
    assert dict(SerialEvaluator().map(fn, [(1,), (2, 3)])) == {0: 1, 1: 5}
    assert dict(SerialEvaluator().map(fn, [(4,)])) == {0: 4}
    assert len(BUILT) == 1  # built on first use, then kept
    copy = pickle.loads(pickle.dumps(fn))
    assert copy._fn is None and copy.factory is _make_adder  # a worker builds its own
    assert copy(5, 5) == 10 and len(BUILT) == 2


def test_a_fitness_that_cannot_be_built_stops_the_map_instead_of_failing_each_job():
    with pytest.raises(ValueError, match="bad config"):
        list(SerialEvaluator().map(PerWorker(_broken_factory), [(1,), (2,)]))


def test_ray_map_applies_any_picklable_function(ray_evaluator):
    ev = ray_evaluator
    out = dict(ev.map(pow, [(2, 3), (3, 2), (0, -1)]))
    assert out[0] == 8 and out[1] == 9 and isinstance(out[2], ZeroDivisionError)
    assert dict(ev.map(max, [(2, 3), (5, 1)])) == {0: 3, 1: 5}  # a new function reaches the actors
    from functools import partial

    with pytest.raises(Exception, match="bad config"):  # built in the actor: int('bad config') raises
        list(ev.map(PerWorker(partial(int, "bad config")), [(1,)]))


# ------------------------------------------------------- GPUs and threads from the cluster
def test_gpu_share_packs_whole_actors_into_the_cluster_gpus():
    from evo_snn.evaluation.evaluator import gpu_share

    assert gpu_share(0, 4) == 0.0 and gpu_share(0.5, 2) == 0.0
    assert gpu_share(1, 1) == 1.0 and gpu_share(1, 2) == 0.5 and gpu_share(1, 3) == pytest.approx(1 / 3)
    assert gpu_share(2, 2) == 1.0 and gpu_share(4, 2) == 1.0
    assert gpu_share(2, 3) == 0.5  # two actors on one GPU, one on the other: 2/3 each would leave one unplaced
    assert gpu_share(8, 20) == pytest.approx(1 / 3)


GPU_SCRIPT = r"""
import json, os
os.environ["RAY_ADDRESS"] = "127.0.0.1:9"  # no cluster there: a local search must not try to attach to it
from evo_snn.evaluation.evaluator import PerWorker, RayEvaluator, init_local_ray

def make(device=None):  # a fitness factory that only records its device (no CUDA call)
    return lambda *job: str(device)

def torch_threads(*job):  # was torch loaded before this function, and its threads once loaded
    import sys
    loaded = "torch" in sys.modules
    import torch
    return loaded, torch.get_num_threads()

init_local_ray(num_cpus=4, num_gpus=2)  # GPUs declared to Ray, none present
ev = RayEvaluator(workers=3)  # one pass: 3 actors on 2 GPUs checks the share, the packing and both GPUs in use
out = {"share": ev.gpus_per_worker, "info": ev.actor_info(),
       "torch": dict(ev.map(torch_threads, [(0,)]))[0],  # first, and one job: one actor imports torch
       "devices": [r for _, r in sorted(ev.map(PerWorker(make), [(i,) for i in range(3)]))]}  # torch.device: all do
ev.close()
import sys
torch = sys.modules.get("torch")  # not imported here (1-2 s to import it only to ask): CUDA cannot be initialised
out["driver_cuda_initialized"] = torch is not None and torch.cuda.is_initialized()
print("RESULT " + json.dumps(out))
"""


def test_gpu_share_and_device_come_from_the_cluster_not_the_driver(tmp_path):
    """A Ray with 2 declared GPUs (none real): 3 actors get half a GPU each, at most 2 per
    GPU, so both GPUs are used; each picks 'cuda:0' (its CUDA_VISIBLE_DEVICES is its GPU)
    and builds its fitness with it; threads = the actor's CPU share (1), not the inherited
    OMP_NUM_THREADS=4, also in torch loaded later by a function (actors do not import torch
    before a function needs it). Its own Ray (a subprocess), since the session's has no GPUs. The share
    for other cluster sizes is unit-tested in test_gpu_share_packs_whole_actors_into_the_cluster_gpus."""
    import json
    import subprocess
    import sys

    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])  # evo_snn importable without an install
    env = {**os.environ, "OMP_NUM_THREADS": "4", "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", GPU_SCRIPT], capture_output=True, text=True, env=env, timeout=300,
                          cwd=root)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["share"] == 0.5  # read from the cluster's 2 GPUs, not from the driver's (none)
    ids = [a["gpu_ids"] for a in out["info"]]
    assert len(ids) == 3 and all(len(g) == 1 and g[0] in ("0", "1") for g in ids)
    assert sorted((ids.count(["0"]), ids.count(["1"]))) == [1, 2]  # packed, both GPUs in use
    for a in out["info"]:
        assert a["device"] == "cuda:0" and a["cuda_visible_devices"] == a["gpu_ids"][0]
        assert a["threads"] == 1 and a["node_ip"] == "127.0.0.1"  # its 1 CPU, not OMP_NUM_THREADS=4
    assert out["devices"] == ["cuda:0"] * 3  # the factory got the actor's device
    assert out["torch"] == [False, 1]  # an actor loads torch only for a function that needs it, then with 1 thread
    assert out["driver_cuda_initialized"] is False


def test_an_actor_without_a_gpu_builds_on_the_cpu(ray_evaluator):
    ev = ray_evaluator
    assert ev.gpus_per_worker == 0.0
    for info in ev.actor_info():
        assert info["gpu_ids"] == [] and info["device"] == "cpu"
