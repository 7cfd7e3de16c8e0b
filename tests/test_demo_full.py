"""The default demo end to end (what ``make demo`` runs): the models learn and the geometry fix shows in the numbers.

Numbers measured on the development machine (deterministic on CPU): held-out exact geometry 4.08 mm mean, reference
geometry 7.47 mm, no-learning baseline 42.1 mm; the bounds below leave room for other platforms' arithmetic.
"""

from __future__ import annotations

import pytest


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_default_demo_learns_and_exact_geometry_wins(full_demo):
    exact = full_demo.headline["exact geometry"]
    reference = full_demo.headline["reference geometry"]
    baseline = full_demo.headline["no-learning baseline"]
    hc_oof = full_demo.headline["hc out-of-fold"]
    assert exact["knees"] == 24 and exact["knees_missing"] == 0
    assert exact["mean_mm"] < 6.0, exact
    assert exact["mean_mm"] * 5 < baseline["mean_mm"], (exact, baseline)
    assert exact["mean_mm"] + 1.0 < reference["mean_mm"], (exact, reference)
    assert hc_oof["mean_mm"] < 6.0, hc_oof
    assert full_demo.report_html.is_file()
