"""The do-nothing baseline: M_u = M. Every metric of a method should beat it on forgetting."""

from mu_lightning.unlearners.base import OneShotUnlearner


class NoUnlearning(OneShotUnlearner):
    """Returns the original model unchanged; reads neither set and takes no options."""

    reads = ()

    def __init__(self, model):
        super().__init__(model)

    def edit(self, data):
        """Nothing: M_u is M."""
