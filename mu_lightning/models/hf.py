"""A causal language model from a Hugging Face checkpoint directory you already have (``model=hf``; needs the
``[lm]`` extra). Nothing is downloaded: the directory is read with ``local_files_only``.

The question-answer rows (``mu_lightning.data.qa``) hold the checkpoint tokenizer's ids shifted past five specials of
ours (``BOS question SEP answer EOS PAD``). This module maps those specials to tokens the checkpoint knows (BOS to
its BOS, or its EOS when it has none; SEP to ``separator``; EOS to its EOS) and its logits back to our ids, so every
stage, unlearner and metric of the LM track runs on it unchanged, and a log-probability read from our ids equals the
checkpoint's own on the mapped sequence: our PAD, BOS, SEP and UNK columns get a logit of ``finfo.min / 2`` (no
probability) and the EOS logit moves to our EOS column.
"""

from __future__ import annotations

import torch

from mu_lightning.data.qa import BOS, EOS, OFFSET, PAD, SEP, UNK, load_tokenizer
from mu_lightning.errors import ConfigError
from mu_lightning.models.gpt import CausalLM

INITS = ("pretrained", "scratch")


class HFCausalLM(CausalLM):
    """A Hugging Face ``AutoModelForCausalLM`` read from ``path`` (``config.json``, its weights and its tokenizer,
    as ``save_pretrained`` writes them).

    Args:
        path: the checkpoint directory.
        init: ``pretrained``, the checkpoint's weights, so M and M_g are fine-tunes of it on D and on D_r (TOFU's
            protocol, where gold is a fine-tune of the same base); or ``scratch``, its architecture with weights
            drawn anew from the stage's seed, so M_g is a true retrain on D_r.
        separator: the token between question and answer, a token of the vocabulary or a text the tokenizer makes
            one token of (``"\\n"`` for GPT-2).
        dtype: the parameters' dtype (``float32``, ``bfloat16``, ``float16``); mixed precision is the trainer's.
    """

    def __init__(self, path: str, init: str = "pretrained", separator: str = "\n", dtype: str = "float32"):
        super().__init__()
        try:
            from transformers import AutoConfig, AutoModelForCausalLM
        except ImportError:
            raise ConfigError("model=hf needs the transformers package: pip install -e '.[lm]'") from None
        if init not in INITS:
            raise ConfigError(f"model.init={init!r} is not one of {', '.join(INITS)}")
        if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise ConfigError(f"model.dtype={dtype!r} is not a torch dtype (float32, bfloat16, float16)")
        tokenizer = load_tokenizer(str(path))
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        if init == "pretrained" and torch.get_default_device().type != "meta":  # on meta: the shapes only
            self.lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=getattr(torch, dtype))
        else:
            self.lm = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
        self.lm.train()  # from_pretrained returns it in eval mode, which Lightning would keep (no dropout)
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ConfigError(f"the tokenizer of model.path={path} has no EOS token: an answer could not end")
        sep = self.separator_id(tokenizer, separator)
        bos = eos if tokenizer.bos_token_id is None else tokenizer.bos_token_id
        mapped = {PAD: eos if tokenizer.pad_token_id is None else tokenizer.pad_token_id, BOS: bos, SEP: sep,
                  EOS: eos, UNK: eos if tokenizer.unk_token_id is None else tokenizer.unk_token_id}
        self.register_buffer("specials", torch.tensor([mapped[i] for i in range(OFFSET)]), persistent=False)
        self.eos = eos
        self.checkpoint_vocab = self.lm.get_output_embeddings().weight.shape[0]
        self.vocab_size = self.checkpoint_vocab + OFFSET
        self.num_blocks, self.width = config.num_hidden_layers, config.hidden_size

    @staticmethod
    def separator_id(tokenizer, separator: str) -> int:
        """The id of ``separator``: a token of the vocabulary as it is, or the one token its text encodes to."""
        token = tokenizer.convert_tokens_to_ids(separator)
        if token is not None and token != tokenizer.unk_token_id:
            return int(token)
        ids = tokenizer.encode(separator, add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(f"model.separator={separator!r} is {len(ids)} tokens for this tokenizer, not one: give "
                              "a token of its vocabulary (its tokenize() shows how it splits a text)")
        return ids[0]

    def checkpoint_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Our ids → the checkpoint's: the specials mapped, every other id less ``OFFSET``."""
        return torch.where(tokens < OFFSET, self.specials[tokens.clamp(max=OFFSET - 1)], tokens - OFFSET)

    def hidden(self, tokens: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        out = self.lm(input_ids=self.checkpoint_ids(tokens), output_hidden_states=True)
        return out.hidden_states[-1 if upto is None else upto]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() == 3:
            tokens = tokens[:, 0]
        logits = self.lm(input_ids=self.checkpoint_ids(tokens.long())).logits[..., : self.checkpoint_vocab]
        floor = torch.finfo(logits.dtype).min / 2  # no probability, and no −inf to make a KL term NaN
        out = torch.cat([logits[..., [self.eos] * OFFSET], logits], -1)  # one copy of the logits: a large vocabulary
        out[..., [PAD, BOS, SEP, UNK, OFFSET + self.eos]] = floor  # EOS only in our EOS column
        return out
