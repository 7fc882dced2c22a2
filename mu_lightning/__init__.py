"""mu_lightning: machine-unlearning experiments on PyTorch Lightning and Hydra."""

__version__ = "0.1.0"

API = ("unlearn", "evaluate", "load_weights")  # mu_lightning.api, imported on first use: the CLI starts without it


def __getattr__(name: str):
    if name in API:
        from mu_lightning import api

        return getattr(api, name)
    raise AttributeError(f"module 'mu_lightning' has no attribute {name!r}")
