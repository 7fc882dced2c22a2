"""The do-nothing baseline: M_u = M. Every metric of a method should beat it on forgetting."""

from mu_lightning.stages.unlearner import Unlearner


class NoUnlearning(Unlearner):
    """Returns the original model unchanged; reads neither set."""

    reads = ()

    def __init__(self, model, **_ignored):
        super().__init__(model, epochs=0)
