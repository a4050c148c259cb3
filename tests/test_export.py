import numpy as np
import pytest

from evo_snn.export import knee_index


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
