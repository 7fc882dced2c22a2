"""The names every metric is built from: ``<model>/<metric>``, evaluated on the splits below, in tiers.

The one source of these lists for the package and its users (``hpo``'s objective check names the same models).
"""

from __future__ import annotations

MODELS = ("original", "gold", "unlearn")  # M, M_g and M_u; extra seeds get other names (gold_seed1, …)
CLEAN = "clean"  # corrective unlearning (poison=...): the reference trained on D without any manipulated sample
SPLITS = ("forget", "retain", "val", "test", "forgotten")  # forgotten: earlier requests (forget=sequential)
TIERS = ("fast", "full", "seeds", "ensemble")  # conf/metric/: full and seeds add to the tier before; ensemble to fast
VAL_METRIC = "avg_gap_val"  # Avg. Gap on D_val instead of D_test: the objective a sweep may tune without D_test
