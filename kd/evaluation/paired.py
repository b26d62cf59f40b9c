"""Two models on the same reviews, paired: each one's accuracy, how often they agree, and whether
the gap is more than chance (McNemar's exact test on the reviews exactly one of them gets right;
a paired 95% interval). `tools/compare_teachers.py` uses it on two teachers' soft labels."""

import math

import numpy as np
from scipy.stats import binomtest


def compare(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Paired comparison of two models' per-review correctness (bool arrays of one length)."""
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((correct_b & ~correct_a).sum())
    differences = correct_b.astype(np.float64) - correct_a.astype(np.float64)
    half_width = 1.96 * differences.std(ddof=1) / math.sqrt(len(differences))
    return {
        "reviews": len(correct_a),
        "accuracy_a": float(correct_a.mean()),
        "accuracy_b": float(correct_b.mean()),
        "difference_b_minus_a": float(differences.mean()),
        "difference_95ci": [float(differences.mean() - half_width),
                            float(differences.mean() + half_width)],
        "both_right": int((correct_a & correct_b).sum()),
        "only_a_right": only_a,
        "only_b_right": only_b,
        "both_wrong": int((~correct_a & ~correct_b).sum()),
        "mcnemar_exact_p": (float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
                            if only_a + only_b else 1.0),
    }
