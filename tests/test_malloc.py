"""evo_snn.malloc: glibc's mmap / trim thresholds fixed at import, and the opt-outs."""

import os

import pytest

from evo_snn import malloc


class FakeLibc:
    def __init__(self, accept=True):
        self.calls, self.accept = [], accept

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1 if self.accept else 0


def test_env_mode_parses_and_rejects():
    assert malloc.env_mode({}) == "tuned"
    assert malloc.env_mode({"EVO_SNN_MALLOC": " System "}) == "system"
    with pytest.raises(ValueError, match="EVO_SNN_MALLOC='fast'.*'tuned'.*'system'"):
        malloc.env_mode({"EVO_SNN_MALLOC": "fast"})


def test_defaults_set_both_thresholds_and_respect_every_opt_out():
    libc = FakeLibc()
    assert malloc.malloc_defaults({}, libc) == {"M_MMAP_THRESHOLD": 32 << 20, "M_TRIM_THRESHOLD": 512 << 20}
    assert libc.calls == [(-3, 32 << 20), (-1, 512 << 20)]  # glibc's M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    for environ in ({"EVO_SNN_MALLOC": "system"}, {"EVO_SNN_MALLOC": "bad"}, {"MALLOC_TRIM_THRESHOLD_": "0"},
                    {"MALLOC_MMAP_THRESHOLD_": "1"}, {"MALLOC_TOP_PAD_": "0"}):
        untouched = FakeLibc()
        assert malloc.malloc_defaults(environ, untouched) == {} and untouched.calls == [], environ
    assert malloc.malloc_defaults({}, FakeLibc(accept=False)) == {}  # glibc refused: nothing claimed


@pytest.mark.skipif(malloc._glibc() is None, reason="glibc only: elsewhere malloc_defaults does nothing")
def test_this_glibc_takes_both_thresholds():
    # import evo_snn has set them already (unless EVO_SNN_MALLOC=system); setting them again must succeed too
    assert malloc.malloc_defaults({}) == {"M_MMAP_THRESHOLD": malloc.MMAP_THRESHOLD, "M_TRIM_THRESHOLD": malloc.TRIM_THRESHOLD}


# The effect (minor page faults and seconds of one evaluation, tuned against glibc's own
# thresholds) is measured by benchmarks/malloc_faults.py, not here: glibc's own thresholds
# fault a lot in some processes and hardly at all in others (the heap's placement differs
# from one process to the next), so a unit test of it would be flaky.


def test_import_records_what_it_set_for_the_manifest():
    import evo_snn  # noqa: F401 - the import applies malloc_defaults

    expected = {} if malloc._glibc() is None or malloc.env_mode() == "system" else \
        {"M_MMAP_THRESHOLD": malloc.MMAP_THRESHOLD, "M_TRIM_THRESHOLD": malloc.TRIM_THRESHOLD}
    if not any(v in os.environ for v in malloc.GLIBC_VARIABLES):
        assert malloc.APPLIED == expected
    assert malloc.malloc_defaults({}, FakeLibc()) and malloc.APPLIED == expected  # a test double does not count
