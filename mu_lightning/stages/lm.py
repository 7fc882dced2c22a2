"""The original and gold language models (``LMModule``) and the teacher-forced answer scores every LM stage and
metric shares.

A sequence is ``BOS question SEP answer EOS PAD …`` (``mu_lightning.data.qa``). Only the answer tokens (after
``SEP``, ``EOS`` included) are scored: the question is the prompt, as in TOFU's fine-tuning and evaluation, where
the question's labels are masked out (locuslab/tofu ``data_module.py``; open-unlearning's ``QADataset``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mu_lightning.data.qa import PAD, QA, SEP
from mu_lightning.stages.classifier import ClassifierModule


def answer_mask(tokens: torch.Tensor) -> torch.Tensor:
    """``[B, T-1]`` bool: which next-token targets ``tokens[:, 1:]`` are answer tokens."""
    after_sep = (tokens == SEP).int().cumsum(1) > 0
    return (after_sep & (tokens != SEP) & (tokens != PAD))[:, 1:]


def token_logprobs(model: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(token_t | tokens_<t), answer mask)``, both ``[B, T-1]``, teacher-forced."""
    logits = model(tokens[:, :-1])
    lp = F.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return lp, answer_mask(tokens)


def answer_nll(model: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(summed NLL of each sequence's answer tokens [B], their number [B])``."""
    lp, mask = token_logprobs(model, tokens)
    return -lp.masked_fill(~mask, 0.0).sum(1), mask.sum(1)  # not lp·mask: a masked −inf would give NaN


def answer_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The mean NLL over every answer token of the batch: the causal-LM loss with the question masked out."""
    nll, count = answer_nll(model, tokens)
    return nll.sum() / count.sum().clamp(min=1)


class LMModule(ClassifierModule):
    """The original (on every QA of D) and gold (on D_r's QAs) language models: next-token cross-entropy on the
    answer tokens of each QA (view ``QA`` of ``x``); the same recipe for both, as for the image models."""

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, _ = batch
        return answer_loss(self.model, x[:, QA])
