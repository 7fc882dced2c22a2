"""A small GPT-2-style causal language model in plain PyTorch, built from its config (no weights downloaded).

The architecture of GPT-2 (Radford et al. 2019): token and learned position embeddings, pre-LayerNorm blocks of
causal multi-head self-attention and a GELU MLP (4× wide), a final LayerNorm and an output layer tied to the token
embedding; weights drawn from N(0, 0.02²) as GPT-2 does. ``forward(tokens [B, T]) -> logits [B, T, vocab_size]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mu_lightning.errors import ConfigError


class CausalLM(nn.Module):
    """What the language-model track reads of a causal LM (``GPT``, ``models.hf.HFCausalLM``): ``forward(tokens
    [B, T]) -> logits [B, T, vocab_size]`` over the ids of ``mu_lightning.data.qa``, ``hidden(tokens, upto)`` the
    residual stream ``[B, T, width]`` after ``upto`` of its ``num_blocks`` blocks (RMU steers it), the last with
    its final normalisation if None."""

    vocab_size: int
    num_blocks: int
    width: int

    def hidden(self, tokens: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        raise NotImplementedError


class Block(nn.Module):
    """One pre-LayerNorm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.heads, self.dropout = heads, dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                              dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, t, w)))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPT(CausalLM):
    """A causal LM over ``vocab_size`` tokens and contexts of up to ``context`` tokens.

    Args:
        vocab_size: tokens of the vocabulary (the dataset's ``vocab_size``).
        context: the longest sequence (the dataset's ``input_shape[1]``).
        layers, heads, width: transformer blocks, attention heads, embedding width (a multiple of ``heads``).
        dropout: dropout on attention and residual branches.
    """

    def __init__(self, vocab_size: int, context: int, layers: int = 2, heads: int = 4, width: int = 128,
                 dropout: float = 0.0):
        super().__init__()
        if vocab_size is None:
            raise ConfigError("model=gpt needs question-answer data that sets dataset.vocab_size: "
                              "dataset=fictitious_qa or dataset=tofu_json (python train.py experiment=lm_demo runs "
                              "the whole demo)")
        if width % heads:
            raise ValueError(f"model.width={width} is not a multiple of model.heads={heads}")
        self.vocab_size, self.context = int(vocab_size), int(context)
        self.num_blocks, self.width = layers, width
        self.tokens, self.positions = nn.Embedding(vocab_size, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.head.weight = self.tokens.weight  # tied, as in GPT-2
        self.drop = nn.Dropout(dropout)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def hidden(self, tokens: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """The residual stream ``[B, T, width]`` after ``upto`` blocks (all of them, then the final LayerNorm, if
        None): RMU steers the output of one block."""
        x = self.drop(self.tokens(tokens) + self.positions(torch.arange(tokens.shape[1], device=tokens.device)))
        for block in self.blocks[:upto]:
            x = block(x)
        return self.ln(x) if upto is None else x

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits of ``tokens`` ``[B, T]``; a batch shaped like the dataset's samples, ``[B, views, T]``
        (``mu_lightning.data.qa``), is read at its first view, the question and answer, so passes that only know the
        sample shape (a run's FLOP estimate of a step) work as for any other model."""
        if tokens.dim() == 3:
            tokens = tokens[:, 0]
        return self.head(self.hidden(tokens.long()))
