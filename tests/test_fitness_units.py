"""The run metadata of one fitness evaluation (issue 7, mutation testing: survivors of fitness.py)."""

import os
import socket
import time

import torch

from evo_snn.evaluation.fitness import GenomeFitness
from test_fitness import _measuring_teacher, _with_kd, setup  # noqa: F401  (the module fixture: a tiny teacher, data and genome)


def test_a_students_metrics_record_where_and_how_long_it_ran(setup):  # noqa: F811
    ctx, _, _, genome = setup
    fitness = GenomeFitness(_with_kd(ctx, mode="none"), torch.device("cpu"))
    t = time.perf_counter()
    m = fitness(genome, seed=5).metrics
    wall = time.perf_counter() - t
    assert 0.0 < m["wall_s"] <= wall
    assert m["genome_sparsity"] == genome.sparsity
    assert m["worker"] == f"{socket.gethostname()}:{os.getpid()}" and m["device"] == "cpu"
    assert m["threads"] == torch.get_num_threads()
    assert isinstance(m["backend"], str) and m["backend"] == fitness.backend
    assert all(k == k.lower() and "XX" not in k for k in m)  # metric names as documented, no stray keys


def test_the_sparse_teachers_accuracy_is_measured_once_per_genome_key(setup, monkeypatch):  # noqa: F811
    """Issue 26: a second evaluation of the same genome (a retry, a continuation, a final
    retraining) reuses its sparse teacher's validation accuracy instead of another pass."""
    import evo_snn.evaluation.fitness as fitness_mod

    ctx, _, _, genome = setup
    fitness = GenomeFitness(_measuring_teacher(_with_kd(ctx, mode="none")), torch.device("cpu"))
    passes = []
    real = fitness_mod.accuracy
    monkeypatch.setattr(fitness_mod, "accuracy", lambda *a, **k: passes.append(a[0]) or real(*a, **k))
    first = fitness(genome, seed=5).metrics
    second = fitness(genome, seed=6).metrics
    assert first["teacher_accuracy"] == second["teacher_accuracy"] is not None
    assert len(passes) == 3  # the sparse teacher once, each student once
