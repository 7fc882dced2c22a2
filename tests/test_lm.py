"""Language models on question-answer data (docs/language-models.md): the generator, the loader, the model, the
answer scores and each LM metric against values worked out by hand on models whose next-token distribution is
known, and the LM unlearners' losses at a point where their value is known."""

from __future__ import annotations

import json
import math
import re
import zlib

import pytest
import torch
from torch import nn

from mu_lightning.data import UnlearningDataModule
from mu_lightning.data.fictitious import IDK as IDK_POOL
from mu_lightning.data.fictitious import fictitious_qa
from mu_lightning.data.forget import by_entity
from mu_lightning.data.qa import (
    BOS,
    EOS,
    IDK,
    PAD,
    PARA_A,
    PERTURBED,
    QA,
    SEP,
    QASamples,
    WordTokenizer,
    decode,
    tofu_json,
)
from mu_lightning.errors import ConfigError
from mu_lightning.metrics import lm
from mu_lightning.models import GPT
from mu_lightning.stages.lm import answer_loss, answer_mask, answer_nll
from mu_lightning.unlearners import LMNPO, LMSimNPO

V = 8  # the vocabulary of the hand-made models: the 5 specials and tokens 5, 6, 7


class Fixed(nn.Module):
    """A "language model" whose next-token distribution is ``p`` at every position, whatever the input."""

    def __init__(self, p: list[float]):
        super().__init__()
        self.logp = nn.Parameter(torch.tensor(p, dtype=torch.float64).log())

    def forward(self, tokens):
        return self.logp.expand(*tokens.shape[:2], V)


class Successor(nn.Module):
    """After SEP predicts 5, after 5 and 6 the next token, after 7 EOS: a deterministic model for greedy decoding."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, tokens):
        nxt = torch.where(tokens == SEP, 5, torch.where(tokens >= 7, EOS, tokens + 1)).clamp(max=V - 1)
        return torch.nn.functional.one_hot(nxt, V).float() * 10 + self.w


def seq(question, answer, length=8):
    ids = [BOS, *question, SEP, *answer, EOS]
    return ids + [PAD] * (length - len(ids))


P = [0.0, 0.0, 0.0, 0.1, 0.0, 0.2, 0.3, 0.4]  # EOS, then tokens 5, 6, 7


# the generator and the loader

def test_the_generator_is_deterministic_and_seeded():
    a, b = fictitious_qa(seq_len=24, vocab_size=512), fictitious_qa(seq_len=24, vocab_size=512)
    assert torch.equal(a.x, b.x) and torch.equal(a.group, b.group) and a.vocab == b.vocab
    assert not torch.equal(fictitious_qa(seq_len=24, vocab_size=512, seed=1).x, a.x)


def test_entity_forgetting_takes_whole_people_and_splits_are_disjoint_by_person():
    samples = fictitious_qa(seq_len=24, vocab_size=512, num_people=20, holdout_people=5)
    data = UnlearningDataModule(lambda: samples, lambda ids, y, groups: by_entity(ids, y, groups=groups, count=4),
                                test_fraction=0.0, val_fraction=0.0)
    data.setup()
    g = samples.group
    forget, retain, test = (set(g[data.ids[s]].tolist()) for s in ("forget", "retain", "test"))
    assert len(forget) == 4 and not forget & retain and len(retain) == 16
    assert len(data.ids["forget"]) == 4 * 4  # every fact of the 4 people (4 attributes each)
    holdout = set(range(20, 25))
    assert test == retain | forget | holdout and not holdout & (forget | retain)
    # the utility question of a fact asks it in the other template: same answer, different question
    train, utility = data.ids["train"], data.ids["test"][~torch.isin(g[data.ids["test"]], torch.tensor([*holdout]))]
    assert len(utility) == len(train)
    first_train, first_utility = samples.x[train[0], QA], samples.x[utility[0], QA]
    assert lm.answer_of(first_train) == lm.answer_of(first_utility) and not torch.equal(first_train, first_utility)


def test_each_qa_has_its_views_and_the_perturbed_answers_are_wrong():
    s = fictitious_qa(seq_len=24, vocab_size=512, num_people=5, holdout_people=1)
    x, tok = s.x, WordTokenizer([])
    tok.vocab = s.vocab
    assert x.shape[1] == PERTURBED + 3 and s.truth_view == QA
    question, answer = tok.decode(x[0, QA]).split(" ? ")
    assert tok.decode(x[0, PARA_A]).split(" ? ")[0] == question and " ".join(answer.split()[:2]) in question
    assert tok.decode(lm.answer_of(x[0, IDK])) in IDK_POOL
    for k in range(PERTURBED, x.shape[1]):  # the same form with another value of the pool
        wrong = tok.decode(lm.answer_of(x[0, k])).split()
        assert wrong != answer.split() and len(wrong) == len(answer.split())


def test_a_tofu_file_is_read_with_entities_by_position_and_fallbacks(tmp_path):
    records = [{"question": f"Who is author {i // 2} ?", "answer": f"Author {i // 2} writes book {i} ."}
               for i in range(4)]
    records[0].update(paraphrased_answer="A book numbered 0 .", perturbed_answer=["x .", "y .", "z ."])
    path = tmp_path / "qa.json"
    path.write_text("\n".join(json.dumps(r) for r in records))  # JSON lines
    s = tofu_json(str(path), seq_len=16, vocab_size=64, qa_per_entity=2)
    assert isinstance(s, QASamples) and s.group.tolist() == [0, 0, 1, 1] and s.split is None
    words = lambda ids: " ".join(s.vocab[t] for t in lm.answer_of(ids))  # noqa: E731
    assert words(s.x[0, PARA_A]) == "A book numbered 0 ."
    assert words(s.x[1, PERTURBED]) == "Author 0 writes book 0 ."  # the entity's other answer
    with pytest.raises(ConfigError, match="vocab_size=8"):
        tofu_json(str(path), seq_len=16, vocab_size=8)


# the model and the answer scores

def test_the_gpt_is_causal_and_reads_the_qa_view_of_a_sample():
    model = GPT(vocab_size=V, context=8, layers=1, heads=2, width=8).eval()
    a = torch.tensor([seq([5], [6, 7])])
    b = a.clone()
    b[0, -1] = 7  # a later token changes nothing before it
    assert torch.allclose(model(a)[:, :-1], model(b)[:, :-1])
    assert torch.equal(model(torch.stack([a, b], 1)), model(a))  # [B, views, T]: view 0


def test_the_answer_mask_covers_the_answer_and_eos_only():
    tokens = torch.tensor([seq([5, 6], [7, 5])])  # BOS 5 6 SEP 7 5 EOS PAD
    assert answer_mask(tokens).int().tolist() == [[0, 0, 0, 1, 1, 1, 0]]  # targets 7, 5, EOS


def test_answer_scores_against_a_hand_computation():
    model, tokens = Fixed(P), torch.tensor([seq([5], [6, 7]), seq([6], [5])])
    nll, count = answer_nll(model, tokens)
    hand = [-(math.log(0.3) + math.log(0.4) + math.log(0.1)), -(math.log(0.2) + math.log(0.1))]
    assert count.tolist() == [3, 2] and torch.allclose(nll, torch.tensor(hand))
    assert math.isclose(answer_loss(model, tokens).item(), sum(hand) / 5, rel_tol=1e-6)
    per_token, mean = lm.answer_logprobs(model, tokens)
    assert torch.allclose(mean, torch.tensor([-hand[0] / 3, -hand[1] / 2]))
    assert torch.allclose(lm.min_k(per_token, 0.2), torch.tensor([math.log(0.1)] * 2))
    assert math.isclose(float(lm.min_k([per_token[0]], 0.7)[0]), (math.log(0.1) + math.log(0.3)) / 2, rel_tol=1e-6)


# the LM metrics

def test_rouge_l_recall_against_hand_computed_values():
    assert lm.lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # Cormen et al.'s example
    assert lm.rouge_l_recall([1, 2, 3, 4], [1, 3, 4, 5]) == 0.75  # LCS 1 3 4 of 4 reference tokens
    assert lm.rouge_l_recall([9], [1, 2]) == 0.0 and lm.rouge_l_recall([1, 2], []) == 0.0


def test_rouge_words_mode_is_lcs_recall_over_the_words_as_they_are():
    # reference: She is running a shop . (6 words); LCS with "She runs a shop ." is She a shop . = 4
    assert lm.rouge_recalls(["She runs a shop ."], ["She is running a shop ."]) == [4 / 6]
    assert lm.rouge_recalls(["she runs"], ["She runs"], "words") == [1 / 2]  # case is kept
    # on word-level data it is the recall over the token ids, ids past the vocabulary (no text) included
    vocab = ("<pad>", "<bos>", "<sep>", "<eos>", "<unk>", "a", "shop", "runs")
    samples = QASamples(x=torch.zeros(1, 1, 1), y=torch.zeros(1), vocab=vocab)
    answer, reference = [5, 9, 6, 7], [7, 5, 6]
    assert lm.rouge_recalls([decode(samples, answer)], [decode(samples, reference)]) == [
        lm.rouge_l_recall(answer, reference)] == [2 / 3]


def test_rouge_tofu_mode_stems_lowercases_and_drops_punctuation():
    pytest.importorskip("rouge_score")
    # TOFU's scorer: she is run a shop (5 tokens) against she run a shop: LCS 4, "runs" and "running" both stem to run
    assert lm.rouge_recalls(["She runs a shop ."], ["She is running a shop ."], "tofu") == [pytest.approx(4 / 5)]
    assert lm.rouge_recalls(["she runs"], ["She runs"], "tofu") == [1.0]


def test_the_rouge_option_is_checked_with_a_clear_message(monkeypatch):
    from omegaconf import OmegaConf

    from mu_lightning.metrics import check_config

    with pytest.raises(ConfigError, match=r"metric\.rouge='bleu' is not allowed: use words .* or tofu"):
        check_config(OmegaConf.create({"tier": "fast", "rouge": "bleu"}))
    monkeypatch.setattr(lm.importlib.util, "find_spec", lambda name: None)  # rouge_score not installed
    with pytest.raises(ConfigError, match=re.escape("metric.rouge=tofu needs the rouge_score package: pip install -e "
                                                    "'.[lm]'")):
        check_config(OmegaConf.create({"tier": "fast", "rouge": "tofu"}))


def test_the_holdout_people_are_split_alternately_into_non_members_and_rmia_population():
    nonmember, population = lm.holdout_halves(torch.tensor([10, 10, 11, 12, 12, 13, 13]))
    assert nonmember.tolist() == [0, 1, 3, 4] and population.tolist() == [2, 5, 6]  # people 10, 12 | 11, 13


def test_lm_rmia_against_a_hand_computation(monkeypatch):
    """Two members, four holdout people of one QA each (people 3, 5 the non-members, 4, 6 the population Z), two
    reference golds; a = 1, so Pr(x) is the references' mean p_y and ratio(x) = p_y(x) / Pr(x)."""
    from types import SimpleNamespace

    p = {"original": ([0.8, 0.6], [0.3, 0.6, 0.9, 0.2]),  # members [D_f], holdout people 3, 4, 5, 6
         "g1": ([0.4, 0.2], [0.2, 0.3, 0.4, 0.5]), "g2": ([0.6, 0.4], [0.4, 0.5, 0.6, 0.3])}
    p["gold"] = p["unlearn"] = p["original"]
    scores = {m: {"_forget_scores": {"loss": torch.tensor(f, dtype=torch.float64).log()},
                  "_holdout_scores": {"loss": torch.tensor(h, dtype=torch.float64).log()}} for m, (f, h) in p.items()}
    monkeypatch.setattr(lm, "model_metrics", lambda ctx, m: scores[m])
    ids = {"forget": torch.tensor([0, 1]), "retain": torch.tensor([2]), "train": torch.tensor([0, 1, 2]),
           "test": torch.tensor([3, 4, 5, 6])}
    ctx = SimpleNamespace(data=SimpleNamespace(ids=ids, samples=SimpleNamespace(group=torch.arange(7))),
                          cfg=SimpleNamespace(mia_seed=0, rmia=SimpleNamespace(a=1.0, gamma=1.0)))
    # ratios: members 0.8/0.5 = 1.6, 0.6/0.3 = 2; non-members 0.3/0.3 = 1, 0.9/0.5 = 1.8; Z 0.6/0.4 = 1.5, 0.2/0.4 = 0.5
    # score = share of Z with ratio(z) <= ratio(x): members 1, 1; non-members 1/2, 1
    # AUC = (2 wins + ½·2 ties) / 4 = 0.75; no threshold has 0 false positives and a true positive: TPR 0
    out = lm.rmia(ctx, ["g1", "g2"])
    for m in ("original", "gold", "unlearn"):
        assert out[f"{m}/rmia_auc"] == pytest.approx(0.75) and out[f"{m}/rmia_tpr_at_1fpr"] == 0.0
    ctx.data.samples.group = torch.tensor([0, 1, 2, 3, 3, 3, 3])  # one holdout person: no population, no RMIA
    assert lm.rmia(ctx, ["g1", "g2"]) == {}


@pytest.mark.slow  # three gold seeds and three unlearning runs of a small LM, then one more evaluation
def test_lm_rmia_and_tofu_rouge_in_a_small_seeds_run(run_pipeline):
    from tests.test_lm_pipeline import SMALL
    from tests.test_procedures import undocumented

    run = ("train.epochs=20", "unlearner.epochs=1")
    m = run_pipeline(*SMALL, *run, "metric=seeds", "metric.seeds=3", fast=False, shared_cache=True)["metrics"]
    for model in ("original", "gold", "unlearn"):
        assert 0 <= m[f"{model}/rmia_auc"] <= 1 and 0 <= m[f"{model}/rmia_tpr_at_1fpr"] <= 1
    assert abs(m["gold/rmia_auc"] - 0.5) <= 0.25 and m["original/rmia_auc"] >= 0.9 and not undocumented(m)
    tofu = run_pipeline(*SMALL, *run, "metric.rouge=tofu", fast=False, shared_cache=True, out="tofu")["metrics"]
    assert tofu["original/forget_prob"] == m["original/forget_prob"]  # the same model from the stage cache
    assert tofu["original/forget_rouge"] != m["original/forget_rouge"] and 0 <= tofu["original/forget_rouge"] <= 1


def test_greedy_answers_follow_the_argmax_until_eos_or_the_end():
    tokens = torch.tensor([seq([6], [5, 5]), seq([5, 6, 7, 5], [7])])  # the true answers play no part
    assert lm.greedy_answers(Successor(), tokens) == [[5, 6, 7], [5, 6]]  # the second runs out of room


def test_exact_matches_from_one_pass_agree_with_greedy_decoding():
    # Successor answers 5 6 7 EOS after SEP (when there is room): exact for the first row only
    tokens = torch.tensor([seq([6], [5, 6, 7]), seq([6], [5, 6]), seq([6], [5, 7, 7]), seq([5, 6, 7, 5], [7]),
                           seq([6], [6, 6, 7])])
    expected = [a == lm.answer_of(r) for a, r in zip(lm.greedy_answers(Successor(), tokens), tokens, strict=True)]
    assert lm.exact_matches(Successor(), tokens).tolist() == expected == [True, False, False, False, False]


def test_truth_ratio_against_a_hand_computation():
    # QA 0: correct answer [6], perturbed [5] and [7, 7]; the model gives P(6 EOS) per token = sqrt(0.3·0.1)
    x = torch.tensor([[seq([5], [6]), seq([5], [6]), seq([5], [6]), seq([5], [6]), seq([5], [5]), seq([5], [7, 7])]])
    correct = (math.log(0.3) + math.log(0.1)) / 2
    wrong = [(math.log(0.2) + math.log(0.1)) / 2, (2 * math.log(0.4) + math.log(0.1)) / 3]
    hand = math.exp(sum(wrong) / 2 - correct)  # geometric mean of the perturbed answers' normalised probabilities
    assert math.isclose(float(lm.truth_ratios(Fixed(P), x, QA)[0]), hand, rel_tol=1e-5)


def test_forget_quality_is_the_ks_p_value():
    assert lm.forget_quality(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 1.0
    # disjoint samples of 3 and 3: D = 1, exact two-sided p = 2 / C(6, 3) = 0.1
    p = lm.forget_quality(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0, 6.0]))
    assert math.isclose(p, 0.1)


def test_model_utility_is_the_harmonic_mean():
    assert math.isclose(lm.harmonic_mean([0.5, 1.0]), 2 / 3) and lm.harmonic_mean([0.5, 0.0]) == 0.0


def test_zlib_score_divides_by_the_compressed_length():
    text = "Kalo Vesel was born in Velmora ."
    score = lm.zlib_score(torch.tensor([-0.5], dtype=torch.float64), [text])
    assert math.isclose(float(score[0]), -0.5 / len(zlib.compress(text.encode())))


# the unlearners' losses

def lm_batch(model_tokens):
    x = torch.stack([model_tokens] * (PERTURBED + 3), 1)
    return {"forget": (x, torch.zeros(len(x))), "retain": (x, torch.zeros(len(x)))}


def test_npo_starts_at_two_over_beta_log_two_plus_the_retain_loss():
    model = Fixed(P)
    npo = LMNPO(model, beta=0.1, gamma=1.0, alpha=0.5, epochs=0)
    batch = lm_batch(torch.tensor([seq([5], [6, 7])]))
    retain = -(math.log(0.3) + math.log(0.4) + math.log(0.1)) / 3
    assert math.isclose(float(npo.loss(batch).detach()), 2 / 0.1 * math.log(2) + 0.5 * retain, rel_tol=1e-6)


def test_simnpo_loss_against_a_hand_computation():
    simnpo = LMSimNPO(Fixed(P), beta=4.5, delta=0.0, gamma=0.125, alpha=0.0, epochs=0)
    batch = lm_batch(torch.tensor([seq([5], [6, 7])]))
    nll = -(math.log(0.3) + math.log(0.4) + math.log(0.1)) / 3
    hand = 0.125 * 2 / 4.5 * math.log1p(math.exp(-4.5 * nll))  # −(2/β)·log σ(β·nll)
    assert math.isclose(float(simnpo.loss(batch).detach()), hand, rel_tol=1e-6)


def test_lm_methods_refuse_image_models():
    from mu_lightning.models import MLP

    with pytest.raises(ConfigError, match="causal language model"):
        LMNPO.check_model(MLP([1, 8, 8], 10), 10, {})
