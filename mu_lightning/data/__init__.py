"""Datasets, forget requests and the datamodule that serves D, D_f, D_r, val and test."""

from mu_lightning.data.datamodule import SPLITS, UnlearningDataModule
from mu_lightning.data.sources import Samples

__all__ = ["SPLITS", "Samples", "UnlearningDataModule"]
