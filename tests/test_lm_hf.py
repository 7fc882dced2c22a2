"""A Hugging Face checkpoint directory as the language model (``model=hf``, docs/language-models.md): a tiny GPT-2
and a byte-level BPE tokenizer are built and saved here with ``save_pretrained`` (nothing is downloaded)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from mu_lightning.data.fictitious import fictitious_qa  # noqa: E402
from mu_lightning.data.qa import BOS, EOS, OFFSET, PERTURBED, QA, SEP, decode, load_tokenizer, tofu_json  # noqa: E402
from mu_lightning.errors import ConfigError  # noqa: E402
from mu_lightning.metrics.lm import answer_of  # noqa: E402
from mu_lightning.models import HFCausalLM  # noqa: E402
from mu_lightning.stages.lm import token_logprobs  # noqa: E402
from mu_lightning.weights import load_weights, model_key  # noqa: E402

SEQ = 64  # the fictitious QAs in this tokenizer's subwords take up to 58 tokens


def save_checkpoint(path, seed: int = 0) -> None:
    """A 2-block GPT-2 (width 32) and a BPE tokenizer of 400 tokens trained on the generated people's words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = " ".join(fictitious_qa(seq_len=24, vocab_size=512, num_people=30).vocab[OFFSET:])
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator([words] * 3, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=SEQ, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf-checkpoint")
    save_checkpoint(path)
    return str(path)


def test_rows_hold_the_checkpoints_subwords_in_our_layout(checkpoint):
    s = fictitious_qa(seq_len=SEQ, vocab_size=512, num_people=30, tokenizer=checkpoint)
    words = fictitious_qa(seq_len=24, vocab_size=512, num_people=30)  # the same QAs in the word vocabulary
    tokenizer = load_tokenizer(checkpoint)
    r = s.x[0, QA].tolist()
    assert r[0] == BOS and r.count(SEP) == 1 and EOS in r and s.tokenizer == checkpoint and s.vocab == ()
    assert tokenizer.decode([i - OFFSET for i in r[1 : r.index(SEP)]]) == decode(words, words.x[0, QA, 1:])[
        : -len(decode(words, answer_of(words.x[0, QA]))) - 1]  # the question, in the checkpoint's subwords
    for i in range(0, len(s.y), 7):
        for view in range(s.x.shape[1]):
            assert decode(s, answer_of(s.x[i, view])) == decode(words, answer_of(words.x[i, view]))
    assert (s.x[:, QA] >= OFFSET).sum() > 2 * (words.x[:, QA] >= OFFSET).sum()  # subwords: more tokens than words


def test_a_tofu_file_takes_the_checkpoints_tokenizer(checkpoint, tmp_path):
    records = [{"question": "Where was Pimlofin born ?", "answer": "Pimlofin was born in Lima .",
                "perturbed_answer": ["Pimlofin was born in Oslo ."] * 3}]
    (tmp_path / "qa.json").write_text(json.dumps(records))
    s = tofu_json(str(tmp_path / "qa.json"), seq_len=SEQ, vocab_size=8, tokenizer=checkpoint)  # vocab_size unused
    assert decode(s, answer_of(s.x[0, QA])) == "Pimlofin was born in Lima ."
    assert decode(s, answer_of(s.x[0, PERTURBED])) == "Pimlofin was born in Oslo ." and s.tokenizer == checkpoint


def test_the_wrapper_gives_the_checkpoints_own_log_probabilities(checkpoint):
    from transformers import AutoModelForCausalLM

    s = fictitious_qa(seq_len=SEQ, vocab_size=512, num_people=30, tokenizer=checkpoint)
    tokens = s.x[:5, QA]
    model, raw = HFCausalLM(checkpoint).eval(), AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    eos, sep = load_tokenizer(checkpoint).eos_token_id, load_tokenizer(checkpoint).encode("\n")[0]
    theirs = torch.where(tokens >= OFFSET, tokens - OFFSET, torch.tensor([eos, eos, sep, eos, eos])[tokens.clamp(
        max=OFFSET - 1)])  # BOS and EOS are <|endoftext|> for GPT-2, SEP the newline
    with torch.no_grad():
        mine, mask = token_logprobs(model, tokens)
        expected = F.log_softmax(raw(theirs[:, :-1]).logits, -1).gather(-1, theirs[:, 1:, None]).squeeze(-1)
    assert torch.allclose(mine[mask], expected[mask], atol=1e-5)
    assert torch.isfinite(model(tokens)).all() and model(tokens).shape[-1] == 400 + OFFSET


def test_init_pretrained_reads_the_weights_and_scratch_draws_them_from_the_seed(checkpoint):
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()
    pretrained = HFCausalLM(checkpoint).lm.state_dict()
    assert all(torch.equal(pretrained[k], saved[k]) for k in saved)
    torch.manual_seed(3)
    a = HFCausalLM(checkpoint, init="scratch").lm.state_dict()
    torch.manual_seed(3)
    b = HFCausalLM(checkpoint, init="scratch").lm.state_dict()
    key = "transformer.h.0.attn.c_attn.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], saved[key])


def test_an_original_fine_tuned_elsewhere_loads_as_the_docs_say(checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()
    torch.save({f"lm.{k}": v for k, v in saved.items()}, tmp_path / "original.pt")  # docs/language-models.md
    model = HFCausalLM(checkpoint, init="scratch")
    load_weights(model, tmp_path / "original.pt", "original.checkpoint")
    assert all(torch.equal(model.lm.state_dict()[k], saved[k]) for k in saved)


def test_bad_options_are_refused_with_what_is_allowed(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match=r"model.init='finetuned' is not one of pretrained, scratch"):
        HFCausalLM(checkpoint, init="finetuned")
    with pytest.raises(ConfigError, match=r"model.separator='Where was' is \d+ tokens for this tokenizer, not one"):
        HFCausalLM(checkpoint, separator="Where was")
    with pytest.raises(ConfigError, match="holds no Hugging Face tokenizer"):
        HFCausalLM(str(tmp_path))
    with pytest.raises(ConfigError, match="model.dtype='float64x' is not a torch dtype"):
        HFCausalLM(checkpoint, dtype="float64x")


def test_the_cache_key_follows_the_checkpoints_files(tmp_path):
    save_checkpoint(tmp_path, seed=0)
    cfg = {"_target_": "mu_lightning.models.HFCausalLM", "path": str(tmp_path), "init": "pretrained"}
    before = model_key(cfg)
    save_checkpoint(tmp_path, seed=1)  # other weights under the same path
    assert model_key(cfg) != before and set(before["files_sha256"]) >= {"config.json", "model.safetensors"}
    assert model_key({"_target_": "mu_lightning.models.GPT", "width": 64}) == {"_target_": "mu_lightning.models.GPT",
                                                                             "width": 64}


def test_a_run_with_a_checkpoint_trains_unlearns_and_scores_it(run_pipeline, checkpoint):
    res = run_pipeline("experiment=lm_demo", "logger=none", "callbacks=none", "model=hf", f"model.path={checkpoint}",
                       "dataset.source.num_people=20", f"dataset.input_shape=[7,{SEQ}]", "train.epochs=3",
                       "unlearner=lm_rmu", "unlearner.epochs=2", fast=False)
    m, stages = res["metrics"], res["stages"]
    assert stages["unlearn"]["method"] == "LMRMU" and stages["gold"]["samples"] == 72  # 18 people × 4 facts
    assert res["config"]["model"]["init"] == "pretrained"
    for model in ("original", "gold", "unlearn"):
        assert 0 <= m[f"{model}/forget_prob"] <= 1 and 0 <= m[f"{model}/model_utility"] <= 1
    assert m["unlearn/forget_prob"] < m["original/forget_prob"]  # RMU moved D_f's answers away


def test_data_tokenized_for_a_checkpoint_is_refused_by_another_model(run_pipeline, checkpoint):
    with pytest.raises(ConfigError, match="holds token id 404, beyond the model's 300 outputs: the data was tokenized"):
        run_pipeline("experiment=lm_demo", "logger=none", "callbacks=none", f"dataset.input_shape=[7,{SEQ}]",
                     f"dataset.source.tokenizer={checkpoint}", "dataset.vocab_size=300", fast=False)
