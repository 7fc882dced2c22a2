"""Hyperparameter search: the objective a Hydra sweeper optimises."""
