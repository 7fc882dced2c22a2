"""What the language-model unlearners share (``LMMethod``, a mixin beside ``Unlearner``, not a method itself).

Their losses follow locuslab/open-unlearning (``src/trainer/unlearn/`` and ``trainer/utils.py``) on teacher-forced
answer tokens (``mu_lightning.stages.lm``): a step takes one D_f batch and, for methods with a retain term, the next
D_r batch alongside (open-unlearning's ``anchor: forget``). ``y`` of a QA (the attribute asked about) is never used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mu_lightning.data.qa import QA, is_qa
from mu_lightning.errors import ConfigError
from mu_lightning.models.gpt import CausalLM
from mu_lightning.stages.lm import answer_loss, answer_nll
from mu_lightning.unlearners.base import Pass

RETAIN_LOSSES = ("NLL", "KL")


class LMMethod:
    """Mixin of the LM unlearners: refuses data and models that are not a causal LM on question-answer data, and
    gives the answer-token losses. Put it before ``Unlearner`` in the bases."""

    reads_text = True  # runtime/checks.py: a method that reads data without it refuses question-answer data

    @classmethod
    def check_request(cls, data) -> None:
        if not is_qa(data.samples):
            raise ConfigError(f"unlearner={cls.__name__} reads question-answer data for a language model "
                              "(dataset=fictitious_qa or tofu_json, model=gpt; docs/language-models.md)")

    @classmethod
    def check_model(cls, model: nn.Module, num_classes: int, options: dict) -> None:
        if not isinstance(model, CausalLM):
            raise ConfigError(f"unlearner={cls.__name__} unlearns a causal language model (model=gpt or hf), not "
                              f"model={type(model).__name__}")

    @staticmethod
    def check_retain_loss(value: str) -> str:
        if value not in RETAIN_LOSSES:
            raise ConfigError(f"unlearner.retain_loss={value!r} is not one of {', '.join(RETAIN_LOSSES)}")
        return value

    def passes(self, epoch):
        return (Pass("forget", alongside=tuple(r for r in self.reads if r != "forget")),)

    def nll(self, batch, name: str = "forget", view: int = QA) -> torch.Tensor:
        """The mean NLL of the answer tokens of set ``name``'s batch, on view ``view`` of its QAs."""
        return answer_loss(self.model, batch[name][0][:, view])

    def log_ratio(self, tokens: torch.Tensor) -> torch.Tensor:
        """log π_θ(a|q) − log π_ref(a|q) per sequence, each the summed answer log-probability, π_ref the frozen M
        (open-unlearning ``compute_dpo_loss``)."""
        mine, _ = answer_nll(self.model, tokens)
        with torch.no_grad():
            ref, _ = answer_nll(self.frozen_original, tokens)
        return ref - mine

    def retain_term(self, batch, kind: str) -> torch.Tensor:
        """NLL on the D_r batch, or (``KL``) the KL divergence of M_u's next-token distributions from M's on it, per
        token (open-unlearning ``compute_kl_divergence``: ``batchmean`` over every position)."""
        tokens = batch["retain"][0][:, QA]
        if kind == "NLL":
            return answer_loss(self.model, tokens)
        with torch.no_grad():
            ref = F.log_softmax(self.frozen_original(tokens).float(), -1).flatten(0, 1)
        mine = F.log_softmax(self.model(tokens).float(), -1).flatten(0, 1)
        return F.kl_div(mine, ref, reduction="batchmean", log_target=True)


class Preference(LMMethod):
    """Mixin of the methods that compare M_u's answer log-probabilities with the frozen M's (NPO, IdkDPO): their
    options β (the inverse temperature of the preference loss), γ and α (the forget and retain terms' weights) and
    the retain loss, with open-unlearning's defaults. Put it before ``Unlearner`` in the bases."""

    reads = ("forget", "retain")
    needs_frozen_original = True

    def __init__(self, model, beta: float = 0.1, gamma: float = 1.0, alpha: float = 1.0, retain_loss: str = "NLL",
                 **train):
        super().__init__(model, **train)
        self.beta, self.gamma, self.alpha = beta, gamma, alpha
        self.retain_loss = self.check_retain_loss(retain_loss)

