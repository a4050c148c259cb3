import json
import platform

import numpy as np
import pytest
import torch

from evo_snn.deploy import export, writer
from evo_snn.state.checkpoint import SparseFormatError, load_sparse_state, save_sparse_state
from evo_snn.deploy.export import ExportError, choose_member, knee_index, parse_pick


def test_knee_is_the_bend_of_a_convex_front():
    pts = np.array([[0.95, 0.1], [0.94, 0.5], [0.90, 0.7], [0.6, 0.8], [0.2, 0.9]])
    assert knee_index(pts) == 2


def test_knee_of_degenerate_fronts():
    # two distinct members normalise to (1, 0) and (0, 1): a tie, the first wins
    assert knee_index(np.array([[0.9, 0.2], [0.5, 0.9]])) == 0
    assert knee_index(np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.9]])) == 2
    assert knee_index(np.array([[0.9, 0.2]])) == 0
    with pytest.raises(ValueError):
        knee_index(np.zeros((0, 2)))


def test_knee_is_never_in_a_concave_dent():
    # (0.5, 0.45) lies farther from the extremes' line than (0.9, 0.12), but below it
    # (away from the ideal point): an unsigned distance would pick it
    assert knee_index(np.array([(1, 0), (0.9, 0.12), (0.5, 0.45), (0, 1)])) == 1
    assert knee_index(np.array([(0, 1), (0.5, 0.45), (0.9, 0.12), (1, 0)])) == 2


# ------------------------------------------------------------------ choosing a member


def _records(points, energy=None):
    return [{"uid": f"u{i}", "metrics": {"accuracy": a, "sparsity": s, **({"energy_pj": energy[i]} if energy else {})}}
            for i, (a, s) in enumerate(points)]


FRONT = [(0.95, 0.1), (0.94, 0.5), (0.90, 0.7), (0.6, 0.8), (0.6, 0.85), (0.2, 0.9)]


def test_picks_choose_on_validation_metrics():
    recs = _records(FRONT)
    assert choose_member(recs, "knee")["uid"] == "u2"
    assert choose_member(recs, "max-accuracy")["uid"] == "u0"
    assert choose_member(recs, "sparsity>=0.8")["uid"] == "u4"  # equal accuracy: the sparser
    assert choose_member(recs, "sparsity>=0.5")["uid"] == "u1"
    assert choose_member(recs, "sparsity >= 0.9")["uid"] == "u5"
    assert choose_member(recs, "uid=u3")["uid"] == "u3"
    energy = [5.0, 4.0, 3.0, 1.0, 2.0, 1.0]  # a tie at 1.0: the more accurate
    assert choose_member(_records(FRONT, energy), "min-energy")["uid"] == "u3"


def test_bad_picks_are_clear_errors():
    recs = _records(FRONT)
    with pytest.raises(ExportError, match="needs an energy metric"):
        choose_member(recs, "min-energy")
    with pytest.raises(ExportError, match="not on the run's front; its members: u0, u1"):
        choose_member(recs, "uid=nope")
    for bad in ("kneee", "sparsity>0.5", "sparsity>=1.5", "uid=", ""):
        with pytest.raises(ExportError, match="expected one of knee"):
            parse_pick(bad)
    with pytest.raises(ExportError, match="empty"):
        choose_member([], "knee")


def test_an_unquoted_shell_expression_names_the_quoting():
    # `--pick sparsity>=0.8` unquoted: the shell redirects to a file '=0.8' and passes 'sparsity'
    for bad in ("sparsity", "sparsity "):
        with pytest.raises(ExportError, match=r"expected one of knee.*quote it, --pick 'sparsity>=0\.8'"):
            parse_pick(bad)
    for bad in ("sparsity>0.5", "sparsity=0.5", "sparsity=>0.5"):
        with pytest.raises(ExportError, match=r"expected one of knee.*'>='.*--pick 'sparsity>=0\.8'"):
            parse_pick(bad)
    with pytest.raises(ExportError) as e:
        parse_pick("kneee")
    assert "quote" not in str(e.value)


def test_a_threshold_no_member_reaches_picks_the_sparsest_and_says_so(capsys):
    recs = _records([*FRONT, (0.3, 0.9)])  # two members at 0.9: ties to the more accurate
    rec, note = export.pick_member(recs, "sparsity>=0.95")
    assert rec["uid"] == "u6" and "no front member is that sparse" in note and "u6 (sparsity 0.9000" in note
    assert choose_member(recs, "sparsity>=0.95")["uid"] == "u6"
    assert "picked the nearest" in capsys.readouterr().err
    assert export.pick_member(recs, "sparsity>=0.9") == (recs[6], None)


# ------------------------------------------------------------------ sparse weight format
def _sparse_state(seed=0, ratio=0.8):
    g = torch.Generator().manual_seed(seed)
    state = {"conv.weight": torch.randn(8, 3, 3, 3, generator=g), "conv.bias": torch.randn(8, generator=g),
             "fc.weight": torch.randn(10, 72, generator=g), "steps": torch.tensor(7)}
    masks = {n: (torch.rand(state[n + ".weight"].shape, generator=g) >= ratio).numpy() for n in ("conv", "fc")}
    for n, m in masks.items():
        state[n + ".weight"][~torch.from_numpy(m)] = 0
    return state, masks


def test_sparse_format_reloads_identical_weights_and_is_smaller(tmp_path):
    state, masks = _sparse_state()
    size = save_sparse_state(tmp_path / "s.sparse.npz", state, masks)
    assert size == (tmp_path / "s.sparse.npz").stat().st_size
    back, back_masks = load_sparse_state(tmp_path / "s.sparse.npz")
    assert list(back) == list(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and back[k].shape == state[k].shape and torch.equal(back[k], state[k])
    for n in masks:
        assert (back_masks[n] == masks[n]).all()
    torch.save(state, tmp_path / "dense.pt")
    assert size < 0.5 * (tmp_path / "dense.pt").stat().st_size  # 80 % zeros: well under half
    with np.load(tmp_path / "s.sparse.npz", allow_pickle=False) as z:  # no pickle inside
        assert z["values/fc.weight"].size == int(masks["fc"].sum())


def test_sparse_format_errors_name_the_tensor_or_file(tmp_path):
    state, masks = _sparse_state()
    state["fc.weight"][~torch.from_numpy(masks["fc"])] = 0.5
    with pytest.raises(SparseFormatError, match="fc.weight: .* pruned weights are not zero"):
        save_sparse_state(tmp_path / "x.npz", state, masks)
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(SparseFormatError, match="lacks"):
        save_sparse_state(tmp_path / "x.npz", {}, masks)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(SparseFormatError, match="bad.npz: not a readable"):
        load_sparse_state(tmp_path / "bad.npz")


# ------------------------------------------------------------------ the export CLI on a tiny run
# a teacher that learns (as in test_wiring), so that reproduced accuracies are not chance
TINY_SETS = ["data.synthetic_classes=3", "data.synthetic_train_per_class=16", "data.synthetic_test_per_class=6",
             "data.synthetic_size=8", "data.frames=4", "data.val_fraction=0.25", "model.channels=[4]",
             "teacher.epochs=10", "teacher.lr=0.01", "teacher.batch_size=8", "kd.epochs=1"]


def tiny_run(tmp_path_factory):
    """A finished tiny synthetic search (population 4, 1 generation), made once per test session
    and shared by the export tests; tests copy it before writing into it."""
    out = tmp_path_factory.getbasetemp() / "evo_snn_tiny_export_run"
    if not (out / "manifest.json").is_file() or json.loads((out / "manifest.json").read_text())["status"] != "completed":
        from evo_snn.search.run import main

        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            args = ["--dataset", "synthetic", "--population", "4", "--generations", "1", "--seed", "5", "--out", str(out),
                    "--no-progress"]
            assert main(args + [a for s in TINY_SETS for a in ("--set", s)]) == 0
        finally:
            torch.set_num_threads(n)
    return out


@pytest.fixture
def run_copy(tmp_path_factory, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(tiny_run(tmp_path_factory), dst)
    return dst


def _archive(run):
    from evo_snn.state.checkpoint import load_checkpoint

    return [r for r in load_checkpoint(run / "checkpoints").state["archive"] if r["status"] != "failed"]


def test_the_search_exports_members_with_a_model_card_and_sparse_weights(tmp_path_factory):
    run = tiny_run(tmp_path_factory)
    dirs = [d for d in (run / "exported").iterdir()]
    assert dirs and all(not d.name.startswith(".") for d in dirs)
    for d in dirs:
        rec = json.loads((d / "metrics.json").read_text())
        card = (d / "MODEL_CARD.md").read_text()
        assert rec["model_args"]["frame_shape"] == [4, 2, 8, 8] and rec["model_args"]["num_classes"] == 3
        assert f"test (once, here) | {rec['test_accuracy']:.4f}" in card
        assert "dense teacher" in card and "python -m evo_snn.search" in card
        dense = torch.load(d / "student.pt", weights_only=True)
        sparse, _ = load_sparse_state(d / "student.sparse.npz")
        assert all(torch.equal(dense[k], sparse[k]) for k in dense)


def test_export_cli_writes_the_chosen_member(run_copy, tmp_path, capsys):
    def snapshot():
        return {str(p.relative_to(run_copy)): (p.stat().st_mtime_ns, p.stat().st_size) for p in run_copy.rglob("*")}

    before = sorted(p.name for p in (run_copy / "exported").iterdir())
    files = snapshot()
    out = tmp_path / "out"
    assert export.main([str(run_copy), "--pick", "sparsity>=0", "--out", str(out), "--no-progress"]) == 0
    assert snapshot() == files  # --out: the run is only read (no lock file, no folder, nothing touched)
    recs = _archive(run_copy)
    best = max(recs, key=lambda r: (r["metrics"]["accuracy"], r["metrics"]["sparsity"]))
    assert [p.name for p in out.iterdir()] == [best["uid"]]  # nothing hidden left behind
    d = out / best["uid"]
    assert sorted(p.name for p in d.iterdir()) == ["MODEL_CARD.md", "genome.json", "masks.npz", "metrics.json", "student.pt",
                                                   "student.sparse.npz", "teacher.pt", "teacher.sparse.npz"]
    rec = json.loads((d / "metrics.json").read_text())
    assert rec["roles"] == ["sparsity>=0"] and rec["accuracy"] == best["metrics"]["accuracy"]
    assert rec["student_val_accuracy"] == best["metrics"]["accuracy"] and "final_epochs" not in rec
    assert rec["export_command"][:3] == ["python", "-m", "evo_snn.export"]
    card = (d / "MODEL_CARD.md").read_text()
    for text in ("synthetic, 3 classes", "| time steps T | 4 |", "| neuron | IF", "| surrogate gradient | atan |",
                 "none: the student trained during the search", "--pick sparsity>=0",
                 f"| validation, at selection | {rec['accuracy']:.4f}"):
        assert text in card, text
    if "energy_pj" in rec:  # the fitness counts energy (evo_snn.evaluation.energy)
        assert f"| energy_pj | {rec['energy_pj']:.6g} pJ |" in card and "**Not measured**" not in card
        assert "| connection layer | synops | effective_ops |" in card and "| neuron layer | spikes | firing_rate |" in card
    else:
        assert "**Not measured**" in card
    for layer, s in rec["exported_layer_sparsity"].items():
        assert f"| `{layer}` |" in card and f"{s:.4f} |" in card
    assert sorted(p.name for p in (run_copy / "exported").iterdir()) == before  # --out: the run's exports untouched
    assert f"exported {best['uid']}" in capsys.readouterr().out


def test_retrain_epochs_reuse_the_final_retraining_path_and_keep_the_masks(run_copy, tmp_path, monkeypatch):
    from evo_snn.analysis.baselines import Comparison
    from evo_snn.structure.genome import Genome

    calls = []
    real = Comparison.evaluate

    def spy(self, jobs, epochs=None, desc="evaluations"):
        calls.append(epochs)
        return real(self, jobs, epochs=epochs, desc=desc)

    monkeypatch.setattr(Comparison, "evaluate", spy)
    recs = _archive(run_copy)
    before = {p.name: json.loads((p / "metrics.json").read_text())["roles"] for p in (run_copy / "exported").iterdir()}
    member = next(r for r in recs if r["uid"] in before)  # exported by the search already
    uid, key = member["uid"], member["genome_key"]
    stored = torch.load(run_copy / "checkpoints" / "students" / f"{key}.pt", weights_only=True)
    # retraining for kd.epochs (1) with the member's seed replays its evaluation exactly: the same code path
    assert export.main([str(run_copy), "--pick", f"uid={uid}", "--retrain-epochs", "1", "--out", str(tmp_path / "o1"),
                        "--no-progress"]) == 0
    replay = torch.load(tmp_path / "o1" / uid / "student.pt", weights_only=True)
    assert all(torch.equal(replay[k], stored[k]) for k in stored)
    assert export.main([str(run_copy), "--pick", f"uid={uid}", "--retrain-epochs", "2", "--no-progress"]) == 0
    assert calls == [1.0, 2.0]  # Comparison.evaluate(epochs=N): GenomeFitness(with_epochs(ctx, N)), as baselines retrain
    d = run_copy / "exported" / uid
    rec = json.loads((d / "metrics.json").read_text())
    assert rec["roles"] == [*before[uid], f"uid={uid}"]  # the search's roles kept
    assert rec["final_epochs"] == 2.0 and rec["student_val_accuracy"] == rec["retrained_val_accuracy"]
    assert rec["retrain_samples"] > 0 and "| retraining | 2 KD epochs" in (d / "MODEL_CARD.md").read_text()
    student = torch.load(d / "student.pt", weights_only=True)
    assert any(not torch.equal(student[k], stored[k]) for k in student if student[k].is_floating_point())
    for name, mask in Genome.load(d).mask_dict().items():
        assert (student[name + ".weight"].numpy()[~mask] == 0).all()


def _strip_energy(run):
    """The run as made before energy counting: no energy metric in the checkpoint's archive."""
    ckpt = run / "checkpoints"
    doc_path = ckpt / json.loads((ckpt / "state.json").read_text())["dir"] / "search.json"
    doc = json.loads(doc_path.read_text())
    for rec in doc["archive"] + doc["population"]:
        rec["metrics"].pop("energy_pj", None)
    doc_path.write_text(json.dumps(doc))


def test_min_energy(run_copy, tmp_path, capsys):
    recs = _archive(run_copy)
    if all("energy_pj" in r["metrics"] for r in recs):  # the fitness counts energy (evo_snn.evaluation.energy)
        assert export.main([str(run_copy), "--pick", "min-energy", "--out", str(tmp_path / "e"), "--no-progress"]) == 0
        lowest = min(recs, key=lambda r: (r["metrics"]["energy_pj"], -r["metrics"]["accuracy"]))
        assert [p.name for p in (tmp_path / "e").iterdir()] == [lowest["uid"]]
    _strip_energy(run_copy)
    out = tmp_path / "out"
    assert export.main([str(run_copy), "--pick", "min-energy", "--out", str(out), "--no-progress"]) == 2
    assert "needs an energy metric" in capsys.readouterr().err and not out.exists()


def test_export_errors_exit_2_and_leave_nothing(run_copy, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    _strip_energy(run_copy)
    assert export.main([str(run_copy), "--pick", "min-energy", "--out", str(out), "--no-progress"]) == 2
    assert "needs an energy metric" in capsys.readouterr().err and not out.exists()
    assert export.main([str(tmp_path / "nope"), "--pick", "knee"]) == 2
    assert "config.json not found" in capsys.readouterr().err
    assert export.main([str(run_copy), "--pick", "knee", "--retrain-epochs", "-1"]) == 2
    assert export.main([str(run_copy), "--pick", "best"]) == 2
    assert "expected one of knee" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export.main(["--help"])

    # a failure while writing: no half-written folder, the previous export of the member intact
    assert export.main([str(run_copy), "--pick", "knee", "--out", str(out), "--no-progress"]) == 0
    (uid,) = [p.name for p in out.iterdir()]
    before = {p.name: p.read_bytes() for p in (out / uid).iterdir()}

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "save_sparse_state", boom)  # where export_member writes the files
    with pytest.raises(OSError, match="disk full"):
        export.main([str(run_copy), "--pick", "knee", "--out", str(out), "--no-progress"])
    assert [p.name for p in out.iterdir()] == [uid]
    assert {p.name: p.read_bytes() for p in (out / uid).iterdir()} == before


def test_a_running_search_is_exported_only_elsewhere(run_copy, tmp_path, capsys):
    import os

    from evo_snn.state.rundir import RunDir

    before = sorted(p.name for p in (run_copy / "exported").iterdir())
    holder = RunDir(run_copy)
    holder.lock()  # a search (or --resume) writing the run holds run.lock
    try:
        assert export.main([str(run_copy), "--pick", "knee", "--no-progress"]) == 2
        assert "pass --out DIR" in capsys.readouterr().err
        assert sorted(p.name for p in (run_copy / "exported").iterdir()) == before
        assert export.main([str(run_copy), "--pick", "knee", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    finally:
        holder.unlock()
    m = json.loads((run_copy / "manifest.json").read_text())  # a killed search's manifest, its pid reused
    m.update(status="running", pid=os.getppid(), host=platform.node())  # a live process that is not a search
    (run_copy / "manifest.json").write_text(json.dumps(m))
    assert export.main([str(run_copy), "--pick", "knee", "--no-progress"]) == 0  # only run.lock refuses
    assert len(list((run_copy / "exported").iterdir())) >= len(before)


def test_nir_flag(run_copy, tmp_path, capsys, monkeypatch):
    import builtins

    out = tmp_path / "o"
    real_import = builtins.__import__

    def no_nir(name, *args, **kwargs):
        if name.endswith("nir_export") or (args and len(args) > 2 and args[2] and "nir_export" in str(args[2])):
            raise ImportError("No module named 'evo_snn.deploy.nir_export'")
        return real_import(name, *args, **kwargs)

    with monkeypatch.context() as m:  # without the writer: exit 2 before any work, nothing written
        m.setattr(builtins, "__import__", no_nir)
        assert export.main([str(run_copy), "--pick", "knee", "--nir", "--out", str(out), "--no-progress"]) == 2
        assert "NIR export not available" in capsys.readouterr().err and not out.exists()
    pytest.importorskip("evo_snn.deploy.nir_export")
    pytest.importorskip("nir")
    import nir

    assert export.main([str(run_copy), "--pick", "knee", "--nir", "--out", str(out), "--no-progress"]) == 0
    (d,) = out.iterdir()
    graph = nir.read(str(d / "student.nir"))
    _, _, info = __import__("evo_snn").load_exported(d)
    weights = [n.weight for n in graph.nodes.values() if getattr(n, "weight", None) is not None]
    zeros = sum(int((np.asarray(w) == 0).sum()) for w in weights)
    expected = sum(int((~m).sum()) for m in info["masks"].values())
    assert zeros >= expected  # pruned weights stay zero in the graph
    assert "student.nir" in (d / "MODEL_CARD.md").read_text()


def test_help_names_no_internal_functions_and_quotes_the_pick(capsys):
    with pytest.raises(SystemExit):
        export.main(["--help"])
    out = capsys.readouterr().out
    for internal in ("``", "Comparison", "GenomeFitness", "with_epochs", "finalize", "torch.nn.utils.prune"):
        assert internal not in out
    assert "--pick 'sparsity>=0.8'" in out
