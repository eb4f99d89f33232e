"""Metrics against hand-computed values (protocol.md §4)."""

import numpy as np
import pytest

from clift.metrics import all_metrics, average_accuracy, backward_transfer, forgetting, forward_transfer

# R[i, j]: accuracy on task j after training task i
R = [
    [80.0, 10.0, 20.0],
    [60.0, 70.0, 30.0],
    [50.0, 65.0, 90.0],
]
B = [5.0, 15.0, 25.0]


def test_average_accuracy_is_macro_mean_of_last_row():
    assert average_accuracy(R) == pytest.approx((50 + 65 + 90) / 3)  # 68.333…


def test_backward_transfer_hand_computed():
    # ((50 - 80) + (65 - 70)) / 2 = -17.5
    assert backward_transfer(R) == pytest.approx(-17.5)


def test_backward_transfer_sign_positive_when_tasks_improve():
    improving = [[10.0, 0.0], [40.0, 50.0]]
    assert backward_transfer(improving) == pytest.approx(30.0)


def test_forward_transfer_hand_computed():
    # ((R[0,1] - b1) + (R[1,2] - b2)) / 2 = ((10 - 15) + (30 - 25)) / 2 = 0
    assert forward_transfer(R, B) == pytest.approx(0.0)
    assert forward_transfer(R, [0.0, 0.0, 0.0]) == pytest.approx((10 + 30) / 2)


def test_forgetting_hand_computed():
    # task 0: max(80, 60) - 50 = 30 ; task 1: max(10, 70) - 65 = 5 ; mean = 17.5
    assert forgetting(R) == pytest.approx(17.5)


def test_forgetting_uses_every_earlier_stage_including_before_training():
    # task 1's best earlier value is at stage 0 (before it was trained): 40 - 35 = 5; task 0: 20 - 30 = -10
    m = [[20.0, 40.0, 0.0], [10.0, 30.0, 0.0], [30.0, 35.0, 50.0]]
    assert forgetting(m) == pytest.approx((-10 + 5) / 2)


def test_single_row_matrix_has_only_aa():
    out = all_metrics([[10.0, 20.0, 30.0]], [0.0, 0.0, 0.0])
    assert out == {"aa": pytest.approx(20.0), "bwt": None, "fwt": None, "forgetting": None}


def test_fractions_and_numpy_input():
    m = np.asarray(R) / 100
    assert backward_transfer(m) == pytest.approx(-0.175)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="2-D"):
        average_accuracy([1.0, 2.0])
    with pytest.raises(ValueError, match="one per task"):
        forward_transfer(R, [1.0, 2.0])
