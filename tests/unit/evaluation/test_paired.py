"""Two models compared review by review: counts, accuracies, McNemar's exact p, the interval."""

import numpy as np
import pytest

from kd.evaluation.paired import compare


def test_teachers_are_compared_review_by_review():
    pulled = np.array([True] * 10 + [False] * 4)
    made = np.array([True] * 4 + [False] * 10)  # misses 6 the pulled one gets, and its 4
    result = compare(pulled, made)
    assert (result["both_right"], result["only_a_right"], result["only_b_right"],
            result["both_wrong"]) == (4, 6, 0, 4)
    assert result["accuracy_a"] == pytest.approx(10 / 14)
    assert result["difference_b_minus_a"] == pytest.approx(-6 / 14)
    assert result["mcnemar_exact_p"] == pytest.approx(2 * 0.5 ** 6)  # 6 discordant, all one way
    low, high = result["difference_95ci"]
    assert low < -6 / 14 < high < 0
