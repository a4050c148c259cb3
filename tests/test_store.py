"""The run's student store (evo_snn.state.store): keyed by genome key, on disk or in memory,
filled by the search as results arrive, files retained while the search or the last
complete checkpoint needs them."""

import numpy as np
import pytest
import torch

from evo_snn.state.checkpoint import CheckpointWriter, student_store
from evo_snn.config import GenomeConfig, SearchConfig
from evo_snn.structure.genome import GenomeOps
from evo_snn.search.nsga import StructureSearch
from evo_snn.evaluation.outcome import FitnessResult
from evo_snn.state.store import StudentStore


def _state(v: float) -> dict:
    return {"w": torch.full((3,), v), "b": torch.tensor([v, -v])}


@pytest.mark.parametrize("on_disk", [False, True])
def test_put_get_and_retain_by_owner(tmp_path, on_disk):
    store = StudentStore(tmp_path / "students" if on_disk else None)
    assert store.keys() == set() and "a" not in store
    with pytest.raises(KeyError):
        store.get("a")
    for i, key in enumerate("abc"):
        store.put(key, _state(float(i)))
    assert store.keys() == {"a", "b", "c"} and "b" in store
    assert torch.equal(store.get("b")["w"], torch.full((3,), 1.0))
    store.put("b", _state(7.0))  # replaced
    assert torch.equal(store.get("b")["b"], torch.tensor([7.0, -7.0]))

    store.retain("checkpoint", {"a", "b"})  # c: needed by nobody
    assert store.keys() == {"a", "b"}
    store.retain("search", {"b", "d"})  # a: the checkpoint still needs it
    assert store.keys() == {"a", "b"}
    store.retain("checkpoint", {"b"})  # a newer checkpoint: now nobody needs a
    assert store.keys() == {"b"}


def test_disk_store_writes_plain_tensor_files_and_sweeps_strays(tmp_path):
    store = StudentStore(tmp_path / "students")
    with pytest.raises(ValueError):
        StudentStore().path("a")
    store.put("k1", _state(2.0))
    path = store.path("k1")
    assert path == tmp_path / "students" / "k1.pt"
    loaded = torch.load(path, weights_only=True)  # no pickle-only formats
    assert set(loaded) == {"w", "b"} and torch.equal(loaded["w"], torch.full((3,), 2.0))
    # a reopened folder is the same store (a resumed run)
    assert StudentStore(tmp_path / "students").keys() == {"k1"}
    (tmp_path / "students" / "k1.pt.tmp-123").write_bytes(b"half")  # an interrupted write
    (tmp_path / "students" / "notes.txt").write_text("x")
    store.retain("search", {"k1"})
    assert sorted(p.name for p in (tmp_path / "students").iterdir()) == ["k1.pt"]


def _ops():
    rng = np.random.default_rng(0)
    return GenomeOps({"a": np.abs(rng.normal(size=(8, 4))), "b": np.abs(rng.normal(size=(20,)))},
                     GenomeConfig(ratio_mutation_prob=0.5, mask_mutation_prob=0.5))


def _fitness(g, seed, *init):
    s = g.sparsity
    return FitnessResult({"accuracy": 1 - s**2 - 0.05 * g.ratios[0], "sparsity": s}, {"a.weight": torch.full((8, 4), float(seed % 97))})


class _Probe:
    """Callback: every successful evaluation's student is in the store when the result is reported."""

    def __init__(self):
        self.seen = 0

    def __call__(self, search):
        pass

    def on_evaluation(self, ind, metrics):
        if ind.status == "ok":
            assert ind.genome.key in self.search.store
            self.seen += 1


def test_search_puts_each_student_as_it_arrives_and_keeps_metrics_only(tmp_path):
    probe = _Probe()
    store = StudentStore(tmp_path / "students")
    search = StructureSearch(_ops(), _fitness, SearchConfig(population=8, generations=3, seed=1, inherit_weights=True),
                             GenomeConfig(mask_mutation="magnitude"), store=store, callbacks=[probe], progress=False)
    probe.search = search
    search.run()
    assert probe.seen > 8
    assert all(isinstance(m, dict) and "student_state" not in m for m in search.results.values())
    assert store.keys() == set(search.results)  # bounded by the population plus the archive
    live = {i.genome.key for i in search.population} | {i.genome.key for i in search.archive}
    assert set(search.results) <= live
    for ind in search.population:
        assert torch.equal(search.student(ind.genome.key)["a.weight"], torch.full((8, 4), float(ind.seed % 97)))


def test_search_reads_parents_students_from_the_store():
    """Weight inheritance and the informed mutation get the parent's student through the store."""

    class Recording(StudentStore):
        def __init__(self):
            super().__init__()
            self.read = []

        def get(self, key):
            self.read.append(key)
            return super().get(key)

    store, jobs, per_gen = Recording(), [], []
    search = StructureSearch(_ops(), lambda *job: (jobs.append(job), _fitness(*job))[1],
                             SearchConfig(population=4, generations=1, seed=3, inherit_weights=True),
                             GenomeConfig(mask_mutation="magnitude"), store=store,
                             callbacks=[lambda s: per_gen.append(len(jobs))], progress=False)
    search.run()
    gen0 = jobs[:per_gen[0]]
    parents = {genome.key for genome, *_ in gen0}
    assert all(init is None for *_, init in gen0)
    gen1 = jobs[per_gen[0]:]
    assert gen1
    for genome, seed, init in gen1:
        assert init is not None and init["a.weight"].shape == (8, 4)
    # each child reads its parent's student twice: informed mutation, then the inherited start
    assert set(store.read) <= parents and len(store.read) >= 2 * len(gen1)


def test_checkpoint_writer_references_the_run_store_only(tmp_path):
    with pytest.raises(ValueError, match="reference students"):
        CheckpointWriter(tmp_path / "checkpoints", StudentStore())
    with pytest.raises(ValueError, match="reference students"):
        CheckpointWriter(tmp_path / "checkpoints", StudentStore(tmp_path / "elsewhere"))
    assert CheckpointWriter(tmp_path / "checkpoints", student_store(tmp_path / "checkpoints")).store.directory == \
        tmp_path / "checkpoints" / "students"


def test_a_checkpoints_students_outlive_the_search_until_the_next_checkpoint(tmp_path):
    """Crash safety: students the last complete checkpoint references stay on disk while the
    search moves on, so an interruption before the next pointer switch can still resume."""
    store = student_store(tmp_path / "checkpoints")
    writer = CheckpointWriter(tmp_path / "checkpoints", store)
    after, outlived = {}, []

    def check(search):
        ckpt_keys = set(after.get("ckpt", ()))
        # the search has already let go of genomes that left; the previous checkpoint's remain
        assert ckpt_keys <= store.keys()
        outlived.extend(ckpt_keys - set(search.results))
        writer(search)
        after["ckpt"] = set(search.results)
        assert store.keys() == set(search.results)

    search = StructureSearch(_ops(), _fitness, SearchConfig(population=4, generations=4, seed=2), GenomeConfig(),
                             store=store, callbacks=[check], progress=False)
    search.run()
    assert outlived  # precondition: genomes did leave the population between checkpoints


@pytest.mark.parametrize("on_disk", [False, True])
def test_need_keeps_students_through_another_owners_retain_until_released(tmp_path, on_disk):
    store = StudentStore(tmp_path / "students" if on_disk else None)
    for key in "abc":
        store.put(key, _state(1.0))
    store.need("recovered", {"c"})  # deletes nothing now
    assert store.keys() == {"a", "b", "c"}
    store.retain("checkpoint", {"a"})
    assert store.keys() == {"a", "c"}  # c survives the checkpoint's retain
    store.release("recovered")
    assert store.keys() == {"a", "c"}  # releasing deletes nothing by itself
    store.retain("checkpoint", {"a"})
    assert store.keys() == {"a"}
    store.put("z", None)  # a reused result whose student was no longer needed: nothing stored
    assert "z" not in store


def test_replay_serves_finished_jobs_from_the_store_and_trains_only_the_rest(tmp_path):
    from evo_snn.evaluation.evaluator import RECOVERED_OWNER, ReplayEvaluator, SerialEvaluator

    store = StudentStore(tmp_path / "students")
    store.put("k1", _state(1.0))
    g = [type("G", (), {"key": k})() for k in ("k0", "k1", "k2", "k3")]
    calls = []

    def fit(genome, seed):
        calls.append(genome.key)
        return FitnessResult({"accuracy": 0.5, "sparsity": 0.1, "trained": True}, _state(2.0))

    finished = {("k1", 11): {"accuracy": 0.9, "sparsity": 0.2}, ("k3", 13): {"accuracy": 0.1, "sparsity": 0.3},
                ("k2", 99): {"accuracy": 0.0, "sparsity": 0.0}}  # k2 finished with another seed: another job
    ev = ReplayEvaluator(SerialEvaluator(), finished, store)
    assert store._needs[RECOVERED_OWNER] == {"k1", "k3", "k2"}
    out = list(ev.map(fit, [(g[0], 10), (g[1], 11), (g[2], 12), (g[3], 13)]))
    assert [i for i, _ in out] == [1, 3, 0, 2]  # the reused ones first, as a serial run had finished them
    res = dict(out)
    assert res[1].metrics == {"accuracy": 0.9, "sparsity": 0.2} and torch.equal(res[1].student_state["w"], _state(1.0)["w"])
    assert res[3].metrics == {"accuracy": 0.1, "sparsity": 0.3} and res[3].student_state is None  # its student was gone
    assert calls == ["k0", "k2"] and ev.reused == 2 and ev.workers == 1
    assert RECOVERED_OWNER in store._needs  # ("k2", 99) was never asked for
    ev.finished.clear()
    list(ev.map(fit, []))
    assert RECOVERED_OWNER not in store._needs


def test_replay_serves_a_grouped_job_whose_members_all_finished(tmp_path):
    from evo_snn.evaluation.evaluator import ReplayEvaluator, SerialEvaluator

    store = StudentStore(tmp_path / "students")
    g = [type("G", (), {"key": k})() for k in ("a", "b", "c", "d")]
    for k in "ab":
        store.put(k, _state(1.0))
    finished = {("a", 1): {"accuracy": 0.5}, ("b", 2): {"accuracy": 0.6}, ("c", 3): {"accuracy": 0.7}}
    calls = []

    def group(members, seed):
        calls.append([m[0].key for m in members])
        return [FitnessResult({"accuracy": 0.0}, _state(0.0)) for _ in members]

    ev = ReplayEvaluator(SerialEvaluator(), finished, store)
    out = dict(ev.map(group, [(((g[0], 1), (g[1], 2)), 1), (((g[2], 3), (g[3], 4)), 3)]))
    assert [r.metrics["accuracy"] for r in out[0]] == [0.5, 0.6]  # both members had finished: served
    assert calls == [["c", "d"]] and ev.reused == 2  # d had not: the whole group trains
