"""The reproduction protocol on a tiny synthetic setting."""

import pandas as pd
import pytest

from evo_snn.analysis.reproduce import main

TINY = ["--set", "data.synthetic_classes=3", "--set", "data.synthetic_train_per_class=12",
        "--set", "data.synthetic_test_per_class=4", "--set", "data.synthetic_size=8", "--set", "data.frames=4",
        "--set", "model.channels=[4]", "--set", "teacher.epochs=1"]


def test_reproduce_writes_table_summary_and_plot(tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(["--dataset", "synthetic", "--ratios", "0,0.5", "--kd", "sparse,default,none", "--seeds", "2",
               "--student-epochs", "1", "--out", str(out), "--no-progress", *TINY])
    assert rc == 0
    rows = pd.read_csv(out / "reproduce.csv")
    assert len(rows) == 2 * 2 * 3
    assert set(rows.columns) >= {"seed", "kd", "teacher_ratio", "teacher_accuracy", "student_accuracy",
                                 "improvement_over_none"}
    # 'none' is the baseline: zero improvement by definition; ratio-free variants repeat per ratio
    assert (rows[rows.kd == "none"].improvement_over_none == 0).all()
    for (seed, kd), part in rows.groupby(["seed", "kd"]):
        if kd != "sparse":
            assert part.student_accuracy.nunique() == 1
    # improvement = student accuracy - the same seed's 'none' accuracy
    none = rows[rows.kd == "none"].groupby("seed").student_accuracy.first()
    for _, r in rows.iterrows():
        assert r.improvement_over_none == pytest.approx(r.student_accuracy - none[r.seed])
    # the dense teacher (ratio 0) and the pruned teacher differ only through pruning
    r0 = rows[rows.teacher_ratio == 0.0]
    assert (r0.teacher_accuracy == r0.dense_teacher_accuracy).all()
    summary = pd.read_csv(out / "reproduce_summary.csv")
    assert len(summary) == 2 * 3 and (summary.seeds == 2).all()
    m = rows.groupby(["kd", "teacher_ratio"]).student_accuracy.agg(["mean", "std"]).reset_index()
    merged = summary.merge(m, on=["kd", "teacher_ratio"])
    assert merged.student_accuracy_mean.tolist() == pytest.approx(merged["mean"].tolist())
    assert merged.student_accuracy_std.tolist() == pytest.approx(merged["std"].tolist())
    assert (out / "plots" / "reproduce.png").stat().st_size > 1000
    assert "improvement_mean" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["--ratios", "0,1.5"], ["--kd", "sparse,magic"]])
def test_reproduce_rejects_bad_arguments(bad, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "x"), *bad])
    assert e.value.code == 2
    assert not (tmp_path / "x").exists()


def test_students_do_not_replay_the_teacher(tmp_path):
    """With the teacher's budget, a 'none' student from the teacher's seed would be the teacher itself."""
    out = tmp_path / "rep"
    assert main(["--dataset", "synthetic", "--ratios", "0", "--kd", "none", "--seeds", "2", "--out", str(out),
                 "--no-progress", *TINY]) == 0
    rows = pd.read_csv(out / "reproduce.csv")
    assert (rows.student_seed != rows.seed).all() and rows.student_seed.nunique() == 2
