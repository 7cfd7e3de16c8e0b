"""The end-to-end demo on synthetic data (``kneel demo``, ``make demo``).

:func:`run_demo` generates a synthetic training cohort and a held-out test cohort, prepares the datasets, trains the
tiny low-cost and high-cost models (cross-validated, LC -> HC transfer), predicts the held-out films with the exact
geometry and with the reference's geometry (same weights), evaluates everything and writes ``report.html`` and
``summary.md``. Each step leaves a stamp, so a second run reuses what is finished.
"""

from kneel.demo.pipeline import DEMO_PRESETS, DemoError, DemoSettings
from kneel.demo.run import DemoResult, run_demo

__all__ = ["run_demo", "DemoSettings", "DEMO_PRESETS", "DemoResult", "DemoError"]
