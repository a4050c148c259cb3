"""evo_snn.threads: OpenMP environment before torch loads, thread counts fitted to the free cores."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from evo_snn import threads
from evo_snn.config import ConfigError, load_config


class FakeMeter:
    """A CpuMeter that reports the given others-busy readings (cores), one per read; the
    governor's first read (in its constructor) only starts the interval, as CpuMeter's does."""

    def __init__(self, readings, cpus=2):
        self.readings = list(readings)
        self.cpus = list(range(cpus))

    def read(self):
        return (self.readings.pop(0), 1.0) if self.readings else (0.0, 1.0)


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    saved = threads._GOVERNOR
    yield
    threads._GOVERNOR = saved
    torch.set_num_threads(n)


@pytest.mark.parametrize("value,expected", [(None, "auto"), ("", "auto"), ("auto", "auto"), ("TORCH", "torch"), ("3", 3)])
def test_env_mode(value, expected):
    env = {} if value is None else {threads.ENV: value}
    assert threads.env_mode(env) == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_env_mode_rejects_bad_values_naming_the_variable(value):
    with pytest.raises(ValueError, match=threads.ENV):
        threads.env_mode({threads.ENV: value})


def test_openmp_defaults_sets_spincount_only_where_the_user_set_nothing():
    env = {}
    assert threads.openmp_defaults(env) == {"GOMP_SPINCOUNT": threads.SPINCOUNT}
    assert env["GOMP_SPINCOUNT"] == threads.SPINCOUNT
    for given in ({"GOMP_SPINCOUNT": "5"}, {"OMP_WAIT_POLICY": "ACTIVE"}, {threads.ENV: "torch"}):
        env = dict(given)
        assert threads.openmp_defaults(env) == {}
        assert env == given


def test_import_evo_snn_sets_the_spincount_before_torch_loads():
    """In a fresh interpreter: importing evo_snn first leaves GOMP_SPINCOUNT in the
    environment that libgomp reads when torch loads (and that Ray workers inherit)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", threads.ENV)}
    code = "import os, sys, evo_snn; assert 'torch' not in sys.modules; print(os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == threads.SPINCOUNT
    out = subprocess.run([sys.executable, "-c", code], env={**env, threads.ENV: "torch"}, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "None"


@pytest.mark.parametrize("share,others,cpus,expected", [
    (2, 0.0, 2, 2),    # alone: the whole share
    (2, 0.25, 2, 2),   # daemons' noise is ignored
    (2, 0.9, 2, 1),    # a 1-thread neighbour takes a core
    (2, 1.9, 2, 1),    # never fewer than one thread
    (4, 5.0, 8, 3),    # 8 CPUs, 5 busy elsewhere
    (4, 0.0, 16, 4),   # never more than the share
])
def test_threads_for(share, others, cpus, expected):
    assert threads.threads_for(share, others, cpus) == expected


def test_cpu_share():
    assert threads.cpu_share(1, cpus=2) == 2
    assert threads.cpu_share(2, cpus=2) == 1
    assert threads.cpu_share(3, cpus=2) == 1
    assert threads.cpu_share(4, cpus=16) == 4
    assert threads.cpu_share(1) == len(threads.usable_cpus())


def test_governor_follows_the_free_cores(restore_threads):
    gov = threads.ThreadGovernor(2, interval_s=0.0, meter=FakeMeter([0.0, 0.1, 1.0, 1.0, 0.05]))
    assert torch.get_num_threads() == 2
    seen = []
    for _ in range(4):
        time.sleep(0.26)  # past the first re-check delay
        seen.append(gov.tick())
    assert seen == [2, 1, 1, 2]
    assert gov.changes == 2 and torch.get_num_threads() == 2


def test_governor_waits_for_its_interval(restore_threads):
    gov = threads.ThreadGovernor(2, interval_s=3600.0, meter=FakeMeter([0.0, 1.0]))
    assert gov.tick() == 2  # the first re-check comes only after 0.25 s
    time.sleep(0.26)
    assert gov.tick() == 1  # the first re-check
    gov.meter.readings = [0.0]
    assert gov.tick() == 1  # the next one waits an hour
    assert gov.meter.readings == [0.0]


def test_fixed_threads_are_never_changed(restore_threads):
    gov = threads.ThreadGovernor(2, fixed=1, interval_s=0.0, meter=FakeMeter([0.0, 0.0]))
    time.sleep(0.26)
    assert gov.tick() == 1 and torch.get_num_threads() == 1 and gov.changes == 0


def test_configure_torch_mode_installs_nothing(restore_threads, monkeypatch):
    monkeypatch.setenv(threads.ENV, "torch")
    assert threads.configure(1) is None and threads.governor() is None
    threads.tick()  # a no-op without a governor
    assert threads.configure(1, requested=1).fixed == 1  # --threads wins over the environment


def test_cpu_meter_sees_a_busy_neighbour():
    """A busy-looping neighbour process shows as (at least) most of one busy core."""
    meter = threads.CpuMeter()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"])
    try:
        time.sleep(0.3)
        meter.read()
        time.sleep(1.5)
        others, wall = meter.read()
    finally:
        busy.wait()
    assert wall >= 1.4
    assert 0.6 <= others <= len(meter.cpus) + 0.1


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "true", "auto"])
def test_train_threads_config_errors(value):
    with pytest.raises(ConfigError, match="train.threads"):
        load_config("synthetic", None, [f"train.threads={value}"])


def test_train_threads_config_accepts_null_and_counts():
    assert load_config("synthetic", None, []).train.threads is None
    assert load_config("synthetic", None, ["train.threads=3"]).train.threads == 3
