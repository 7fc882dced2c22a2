"""CF-k: catastrophic forgetting of the last k blocks (Goel et al., "Towards Adversarial Evaluation of Machine
Unlearning", 2022, §4; SCRUB's notebooks)."""

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import Pass, Unlearner

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


def blocks(model: nn.Module) -> list[list[nn.Module]]:
    """The model's blocks, input to output: its top-level children that hold parameters, a normalisation layer
    joining the block before it. MLP: each Linear; CNN: conv+BN, conv+BN, head; ResNet-18: stem, layer1-4, head."""
    found: list[list[nn.Module]] = []
    for child in model.children():
        if not any(True for _ in child.parameters()):
            continue
        if found and isinstance(child, NORMS):
            found[-1].append(child)
        else:
            found.append([child])
    return found


class CFk(Unlearner):
    """Fine-tune only the last ``k`` blocks on D_r; the rest stay M's. Reads: retain only.

    The head (the last block) counts as one of the k; ``train_head: false`` leaves it at M's weights, so on
    ResNet-18 ``k: 2, train_head: false`` trains layer4 alone, as the SCRUB notebook's CF-k does.

    While it unlearns, every parameter outside the trained blocks has ``requires_grad`` off (and back as it was
    afterwards): the frozen prefix then runs without autograd, its features reach the first trained block detached,
    and a step's backward pass, hence its FLOPs and time, covers the trained blocks (and what lies after them) only.
    The trained weights are those of a backward pass through the whole network, which gives frozen weights gradients
    nobody uses.
    """

    reads = ("retain",)

    @classmethod
    def check_model(cls, model, num_classes, options):
        """``k`` blocks must exist (``blocks``: top-level children with parameters)."""
        k, found = options.get("k", 1), len(blocks(model))
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= found:
            raise ConfigError(f"unlearner.k={k!r} is out of range: model={type(model).__name__} has {found} blocks "
                              f"(top-level children with parameters), so k must be an integer with 1 <= k <= {found}")

    def __init__(self, model, k: int = 1, train_head: bool = True, **train):
        super().__init__(model, **train)
        self.check_model(model, 0, {"k": k})
        found = blocks(model)
        if k == 1 and not train_head:
            raise ConfigError("unlearner.k=1 with unlearner.train_head=false leaves nothing to train: the last "
                              "block is the head; use k >= 2 or train_head=true")
        chosen = found[-k:] if train_head else found[-k:-1]
        self.k, self.train_head = k, bool(train_head)
        self.tail = [m for block in chosen for m in block]  # a plain list: not registered twice

    def trainable_parameters(self):
        return (p for m in self.tail for p in m.parameters() if p.requires_grad)

    def unlearn(self, data, make_trainer, seed: int) -> None:
        with self.untrained_frozen():
            super().unlearn(data, make_trainer, seed)

    @contextmanager
    def untrained_frozen(self) -> Iterator[None]:
        """Inside, the parameters outside the trained blocks need no gradient (see the class doc)."""
        tail = {id(p) for m in self.tail for p in m.parameters()}
        frozen = [p for p in self.model.parameters() if p.requires_grad and id(p) not in tail]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def passes(self, epoch):
        return (Pass("retain"),)

    def loss(self, batch):
        x, y = batch["retain"]
        return nn.functional.cross_entropy(self.model(x), y)
