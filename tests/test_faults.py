"""Worker faults: an evaluation that raises, whose worker dies, or that hangs is retried
with the same job and recorded; after ``max_retries`` it fails, and the map goes on.

The evaluator-level tests use ``evo_snn.evaluation.faults.probe`` (milliseconds per job) on the
session's Ray; the search-level ones run the tiny synthetic search.
"""

import json
import os
import signal
import threading
import time

import pytest

from evo_snn.config import ConfigError, FaultsConfig
from evo_snn.evaluation.evaluator import EvaluationTimeout, SerialEvaluator, failure_metrics
from evo_snn.evaluation.faults import InjectedFault, inject, planned_fault, probe

KIND_RECORDED = {"raise": "raise", "exit": "exit", "hang": "timeout"}  # injected kind -> recorded fault kind


def _plan(faults, seed, max_retries):
    """The injected faults of the attempts of evaluation ``seed``: until the first attempt
    without a fault, or max_retries + 1 attempts."""
    out = []
    for attempt in range(1, max_retries + 2):
        kind = planned_fault(faults, seed, attempt)
        if kind is None:
            break
        out.append(kind)
    return out


def _seeds_with(faults, kinds, n, max_retries, start=0):
    """n seeds whose plans together contain every kind in ``kinds`` and never exhaust the retries."""
    seeds, seen = [], set()
    s = start
    while len(seeds) < n or not set(kinds) <= seen:
        plan = _plan(faults, s, max_retries)
        if len(plan) <= max_retries and (len(seeds) < n - len(set(kinds) - seen) or set(plan) - seen):
            seeds.append(s)
            seen |= set(plan)
        s += 1
    return seeds


# ---------------------------------------------------------------------- the plan
def test_planned_faults_are_deterministic_at_the_configured_rate_and_kinds():
    f = FaultsConfig(fail_rate=0.2, kinds=("raise", "hang"), seed=3)
    draws = [planned_fault(f, s, a) for s in range(1500) for a in (1, 2)]
    assert draws == [planned_fault(f, s, a) for s in range(1500) for a in (1, 2)]
    rate = sum(d is not None for d in draws) / len(draws)
    assert 0.17 < rate < 0.23
    assert {d for d in draws if d} == {"raise", "hang"}
    assert [planned_fault(f, s, 1) for s in range(50)] != [planned_fault(f, s, 2) for s in range(50)]  # a retry draws again
    assert all(planned_fault(FaultsConfig(), s, 1) is None for s in range(100))  # off by default
    assert planned_fault(None, 1, 1) is None


def test_inject_raise_and_unknown_kind():
    inject(None)
    with pytest.raises(InjectedFault):
        inject("raise")
    with pytest.raises(ValueError, match="unknown fault kind"):
        inject("melt")


def test_config_validates_the_faults_section():
    from evo_snn.config import load_config

    def tiny_config(**sets):
        return load_config("synthetic", overrides=[f"{k}={v}" for k, v in sets.items()])

    cfg = tiny_config(**{"faults.fail_rate": "0.2", "faults.kinds": "[raise]"})
    assert cfg.faults.fail_rate == 0.2 and cfg.faults.kinds == ("raise",)
    assert cfg.search.max_retries == 2 and cfg.search.eval_timeout_s == 0.0
    with pytest.raises(ConfigError, match="need Ray workers"):
        tiny_config(**{"faults.fail_rate": "0.2"})  # exit and hang with one worker
    with pytest.raises(ConfigError, match="eval_timeout_s > 0"):
        tiny_config(**{"faults.fail_rate": "0.2", "search.workers": "2"})
    with pytest.raises(ConfigError, match="faults.kinds"):
        tiny_config(**{"faults.kinds": "[raise, melt]"})
    with pytest.raises(ConfigError, match="fail_rate"):
        tiny_config(**{"faults.fail_rate": "1.0"})
    with pytest.raises(ConfigError, match="max_retries"):
        tiny_config(**{"search.max_retries": "-1"})


# ---------------------------------------------------------------------- serial
def test_serial_retries_injected_raises_with_the_same_job_and_records_them():
    f = FaultsConfig(fail_rate=0.5, kinds=("raise",), seed=1)
    seeds = list(range(40))
    out = dict(SerialEvaluator(max_retries=2, faults=f).map(probe, [(10 * s, s) for s in seeds]))
    n_failed = 0
    for i, s in enumerate(seeds):
        plan = _plan(f, s, 2)
        if len(plan) == 3:  # every attempt failed
            n_failed += 1
            assert isinstance(out[i], InjectedFault)
            m = failure_metrics(out[i])
            assert m["attempts"] == 3 and [x["injected"] for x in m["faults"]] == plan
            assert m["error"].startswith("InjectedFault")
        else:
            assert out[i].metrics["value"] == 10 * s and out[i].metrics["seed"] == s
            recorded = out[i].metrics.get("faults", [])
            assert [x["injected"] for x in recorded] == plan and [x["attempt"] for x in recorded] == list(range(1, len(plan) + 1))
            assert out[i].metrics.get("attempts", 1) == len(plan) + 1
    assert n_failed >= 1 and sum(len(_plan(f, s, 2)) for s in seeds) >= 10  # the plan exercised both paths


def test_serial_gives_up_after_max_retries_and_refuses_faults_that_would_hit_the_driver():
    calls = []

    def always(x):
        calls.append(x)
        raise KeyError(x)

    out = dict(SerialEvaluator(max_retries=3).map(always, [("a",)]))
    assert calls == ["a"] * 4 and isinstance(out[0], KeyError)
    assert failure_metrics(out[0])["attempts"] == 4 and [x["kind"] for x in out[0].faults] == ["raise"] * 4
    assert dict(SerialEvaluator(max_retries=0).map(always, [("b",)]))[0].attempts == 1
    with pytest.raises(ValueError, match="need Ray workers"):
        SerialEvaluator(faults=FaultsConfig(fail_rate=0.1, kinds=("raise", "exit")))


# ---------------------------------------------------------------------- Ray
def _cuda_error_in(pid):
    if os.getpid() == pid:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    return os.getpid()


@pytest.fixture(scope="module")
def by_value(ray_session):
    """Ship this module's functions to the actors by value (tests/ is not on their path)."""
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray_session
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def ray_ev(by_value, ray_evaluator):
    """The session's shared 2-actor evaluator (tests/conftest.py: actors are slow to start);
    each test sets its retry settings and leaves the actors working."""
    return ray_evaluator


@pytest.fixture
def configured(ray_ev):
    def configure(max_retries=2, eval_timeout_s=0.0, faults=None):
        ray_ev.max_retries, ray_ev.timeout_s, ray_ev.faults = max_retries, eval_timeout_s, faults
        return ray_ev, ray_ev.replaced

    yield configure
    configure()


class TestRayFaults:
    """Faults on the Ray evaluator, with ``evo_snn.evaluation.faults.probe`` as the fitness."""

    def test_ray_survives_injected_raise_exit_and_hang(self, configured):
        f = FaultsConfig(fail_rate=0.3, kinds=("raise", "exit", "hang"), seed=5)
        seeds = _seeds_with(f, ("raise", "exit", "hang"), n=6, max_retries=2)
        plans = {s: _plan(f, s, 2) for s in seeds}
        ev, replaced0 = configured(max_retries=2, eval_timeout_s=3.0, faults=f)
        t0 = time.perf_counter()
        out = dict(ev.map(probe, [(s * 3, s) for s in seeds]))
        wall_s = time.perf_counter() - t0
        assert sorted(out) == list(range(len(seeds)))
        for i, s in enumerate(seeds):
            m = out[i].metrics
            assert m["value"] == 3 * s  # the same job, whatever its attempts
            recorded = m.get("faults", [])
            assert [x["injected"] for x in recorded] == plans[s]
            assert [x["kind"] for x in recorded] == [KIND_RECORDED[k] for k in plans[s]]
            assert m.get("attempts", 1) == len(plans[s]) + 1
        n_replacing = sum(k in ("exit", "hang") for p in plans.values() for k in p)
        assert n_replacing >= 2 and ev.replaced - replaced0 == n_replacing  # every dead or hung worker was replaced
        assert len(ev.actors) == 2 and len({a["pid"] for a in ev.actor_info()}) == 2
        print(f"faults {plans}, replaced {ev.replaced - replaced0}, {wall_s:.1f} s")
        ev.faults = None  # the replaced actors hold the function and keep working
        assert dict(ev.map(probe, [(7, 10**6)]))[0].metrics["value"] == 7


    def test_ray_retries_an_evaluation_whose_worker_is_killed_and_replaces_the_worker(self, configured):
        ev, replaced0 = configured(max_retries=2)
        pids = [a["pid"] for a in ev.actor_info()]
        out, errors = {}, []

        def run():
            try:
                out.update(ev.map(probe, [(i, i, 1.0) for i in range(4)]))
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.5)
        os.kill(pids[0], signal.SIGKILL)  # a worker dies in the middle of an evaluation (job 0 went to actor 0)
        t.join(timeout=60)
        assert not t.is_alive() and not errors
        assert sorted(out) == [0, 1, 2, 3] and [out[i].metrics["value"] for i in range(4)] == [0, 1, 2, 3]
        retried = [out[i].metrics for i in range(4) if "faults" in out[i].metrics]
        assert len(retried) == 1 and retried[0]["attempts"] == 2 and retried[0]["faults"][0]["kind"] == "exit"
        assert retried[0]["pid"] != pids[0] and ev.replaced - replaced0 == 1
        assert pids[0] not in {a["pid"] for a in ev.actor_info()}


    def test_ray_replaces_a_worker_that_died_while_idle_when_it_loads_a_new_function(self, configured):
        ev, replaced0 = configured()
        pid = ev.actor_info()[1]["pid"]
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        out = dict(ev.map(divmod, [(7, 2), (9, 4)]))  # a new function: loaded on every actor first
        assert out == {0: (3, 1), 1: (2, 1)} and ev.replaced - replaced0 == 1
        assert pid not in {a["pid"] for a in ev.actor_info()}

    def test_ray_cuda_error_recreates_the_actor_and_a_timeout_fails_after_the_retries(self, configured):
        ev, replaced0 = configured(max_retries=1)
        pid = ev.actor_info()[0]["pid"]
        out = dict(ev.map(_cuda_error_in, [(pid,)]))  # the first job goes to the first actor
        assert out[0] != pid and ev.replaced - replaced0 == 1  # retried elsewhere; a CUDA context is not trusted
        assert pid not in {a["pid"] for a in ev.actor_info()}
        ev.max_retries, ev.timeout_s = 0, 1.0
        t0 = time.perf_counter()
        out = dict(ev.map(time.sleep, [(60,)]))
        assert time.perf_counter() - t0 < 30
        assert isinstance(out[0], EvaluationTimeout)
        m = failure_metrics(out[0])
        assert m["attempts"] == 1 and [x["kind"] for x in m["faults"]] == ["timeout"]
        assert ev.replaced - replaced0 == 2


# ---------------------------------------------------------------------- search
def _rows(run):
    return [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]


# Long enough that no real evaluation of the tiny search reaches it on a loaded 2-core machine
# (5 s did once: an uninjected timeout then shifts the plan); each injected hang costs this much
# wall time (the run injects one). The timeout counts from submission to an actor that has
# already built the fitness (RayEvaluator.load), so only the evaluation itself runs against it:
# at most 2.9 s measured (an actor's first evaluation) with both cores busy with another job.
HANG_TIMEOUT_S = 10


@pytest.mark.parametrize("kinds", [
    ("raise", "exit"),
    # each injected hang costs HANG_TIMEOUT_S of wall time; the timeout path itself is also
    # checked at the evaluator (TestRayFaults), so the search-level hang runs with the slow tests
    pytest.param(("raise", "exit", "hang"), marks=pytest.mark.slow),
], ids=lambda k: "-".join(k))
def test_search_with_20_percent_faults_of_each_kind_completes_and_records_every_fault(tmp_path, ray_cpus_free,
                                                                                      one_torch_thread, kinds):
    """faults.fail_rate=0.2 over the given kinds on 2 Ray workers: the run completes,
    every injected fault is in evaluations.jsonl, and the front has members."""
    import pandas as pd

    from evo_snn.search.run import main
    from test_search import TINY

    # a fault seed whose plan hits each kind at least once in this run's evaluations
    from evo_snn.search.nsga import eval_seed

    seeds = [eval_seed(3, 0, i) for i in range(4)] + [eval_seed(3, 1, i) for i in range(4, 8)]
    # each 'exit' or 'hang' costs a new actor (a torch import) or HANG_TIMEOUT_S: the fewest of them
    plans = {k: [x for s in seeds for x in _plan(FaultsConfig(0.2, kinds=kinds, seed=k), s, 2)] for k in range(200)}
    fault_seed = min((k for k, p in plans.items() if set(kinds) <= set(p)),
                     key=lambda k: (sum(x != "raise" for x in plans[k]), k))
    f = FaultsConfig(fail_rate=0.2, kinds=kinds, seed=fault_seed)
    out = tmp_path / "faulty"
    code = main(["--dataset", "synthetic", "--population", "4", "--generations", "1", "--seed", "3", "--no-progress",
                 "--workers", "2", *TINY, "--out", str(out), "--set", "faults.fail_rate=0.2",
                 "--set", f"faults.kinds=[{','.join(kinds)}]",
                 "--set", f"faults.seed={fault_seed}", "--set", f"search.eval_timeout_s={HANG_TIMEOUT_S}"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["evaluator"]["kind"] == "ray" and manifest["evaluator"]["eval_timeout_s"] == HANG_TIMEOUT_S
    evaluated = [r for r in _rows(out) if r["status"] != "cached"]
    injected = []
    for r in evaluated:
        plan = _plan(f, r["seed"], 2)
        assert [x["injected"] for x in r.get("faults", [])] == plan, (r["uid"], r.get("faults"))  # injected None: a real timeout
        assert r.get("attempts", 1) == len(plan) + (r["status"] == "ok")
        injected += plan
    assert set(kinds) <= set(injected)
    assert len(pd.read_csv(out / "pareto.csv")) >= 1
    print(f"{len(evaluated)} evaluations, injected faults: {injected}")


@pytest.mark.slow
def test_search_survives_two_worker_kills_and_gives_the_fault_free_front(tmp_path, one_torch_thread):
    """A 2-worker search whose Ray workers get SIGKILL twice while evaluating completes, with
    the same evaluations and front as a fault-free (serial) run of the same seed."""
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd
    import psutil

    from evo_snn.search.run import main
    from test_search import TINY

    args = ["--dataset", "synthetic", "--population", "4", "--generations", "2", "--seed", "3", "--no-progress", *TINY]
    ref = tmp_path / "ref"
    assert main([*args, "--out", str(ref)]) == 0
    root = str(Path(__file__).resolve().parents[1])
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "evo_snn.search", *args, "--workers", "2", "--out", str(out)], cwd=root,
                            env={**os.environ, "PYTHONPATH": root}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed, spared = [], set()  # the second victim is a worker started after the first kill (a replacement)
    try:
        driver = psutil.Process(proc.pid)
        while proc.poll() is None and len(killed) < 2:
            for p in driver.children(recursive=True):
                try:
                    cmd = " ".join(p.cmdline())
                except psutil.Error:
                    continue
                if cmd.startswith("ray::_Actor.evaluate") and p.pid not in spared:
                    if not killed:
                        spared = {c.pid for c in driver.children(recursive=True)}
                    p.send_signal(signal.SIGKILL)  # in the middle of an evaluation
                    killed.append(p.pid)
                    break
            time.sleep(0.02)
        assert proc.wait(timeout=600) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(killed) == 2
    rows = _rows(out)
    recorded = [x for r in rows for x in r.get("faults", [])]
    assert [x["kind"] for x in recorded] == ["exit", "exit"] and all(r["status"] != "failed" for r in rows)
    cols = ["uid", "genome_key", "status", "seed", "accuracy", "sparsity", "train_loss"]
    def table(rs):  # Ray rows come in completion order
        return sorted(({k: r.get(k) for k in cols} for r in rs), key=lambda r: r["uid"])

    assert table(rows) == table(_rows(ref))
    front = ["uid", "accuracy", "sparsity", "genome_key"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "pareto.csv")[front], pd.read_csv(ref / "pareto.csv")[front])
    print(f"killed workers {killed}; faults recorded: {recorded}")


def test_faults_of_a_grouped_job_are_recorded_on_every_member():
    f = FaultsConfig(fail_rate=0.5, kinds=("raise",), seed=2)
    seed = next(s for s in range(100) if len(_plan(f, s, 2)) == 1)  # one fault, then success

    def group(members, _seed):  # the shape of evo_snn.evaluation.grouped.GroupedJobs: one result per member
        return [probe(v, s) for v, s in members]

    out = dict(SerialEvaluator(max_retries=2, faults=f).map(group, [(((1, 5), (2, 6)), seed)]))
    assert [r.metrics["value"] for r in out[0]] == [1, 2]
    assert all(r.metrics["attempts"] == 2 and len(r.metrics["faults"]) == 1 for r in out[0])
