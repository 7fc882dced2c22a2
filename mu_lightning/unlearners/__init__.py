"""Unlearning methods, one short file each; ``conf/unlearner/<name>.yaml`` selects one by ``_target_``.

``base.py`` holds what they build on (``Unlearner``, ``OneShotUnlearner``, ``Pass``) and the steps to add one.
"""

from mu_lightning.unlearners.amnesiac import Amnesiac
from mu_lightning.unlearners.bad_teacher import BadTeacher
from mu_lightning.unlearners.base import OneShotUnlearner, Pass, Unlearner
from mu_lightning.unlearners.boundary_expand import BoundaryExpand
from mu_lightning.unlearners.boundary_shrink import BoundaryShrink
from mu_lightning.unlearners.cf_k import CFk
from mu_lightning.unlearners.eu_k import EUk
from mu_lightning.unlearners.finetune import Finetune
from mu_lightning.unlearners.fisher import Fisher
from mu_lightning.unlearners.gradient_ascent import GradientAscent
from mu_lightning.unlearners.influence import Influence
from mu_lightning.unlearners.l1_sparse import L1Sparse
from mu_lightning.unlearners.neggrad_plus import NegGradPlus
from mu_lightning.unlearners.none import NoUnlearning
from mu_lightning.unlearners.random_label import RandomLabel
from mu_lightning.unlearners.salun import SalUn
from mu_lightning.unlearners.scrub import SCRUB
from mu_lightning.unlearners.ssd import SSD
from mu_lightning.unlearners.unsir import UNSIR

__all__ = [
    "Amnesiac",
    "BadTeacher",
    "BoundaryExpand",
    "BoundaryShrink",
    "CFk",
    "EUk",
    "Finetune",
    "Fisher",
    "GradientAscent",
    "Influence",
    "L1Sparse",
    "NegGradPlus",
    "NoUnlearning",
    "OneShotUnlearner",
    "Pass",
    "RandomLabel",
    "SalUn",
    "SCRUB",
    "SSD",
    "UNSIR",
    "Unlearner",
]
