"""Metrics of language models on question-answer data (docs/metrics.md §15), beside gold's values.

Per example, the scalar signal is the length-normalised answer log-probability (the mean log-probability of the
answer's tokens given the question, teacher-forced): the loss of TOFU's ``Q_A_Prob`` (Maini et al. 2024, §2.5)
and the loss of the threshold MIA. On top of it, per model and split:

- ``<split>_acc``: exact-match recall, the share of questions whose greedy answer is the answer, token for token;
- ``<split>_rouge``: ROUGE-L recall of the greedy answer's text against the answer's (``qa.decode``; TOFU's
  ``rougeL_recall``), over ``qa.words`` as they are (``metric.rouge=words``) or by TOFU's stemming scorer
  (``metric.rouge=tofu``, the ``rouge_score`` package; ``rouge_recalls``);
- ``<split>_prob``: the mean of P(a|q)^(1/|a|) (TOFU's ``Q_A_Prob``);
- ``<split>_truth_ratio``: TOFU's truth ratio R = P̄(perturbed) / P(correct), each P the length-normalised
  probability, "correct" the paraphrased answer (TOFU) or the answer (``QASamples.truth_view``), and P̄ the geometric
  mean over the perturbed answers (locuslab/open-unlearning
  ``evals/metrics/memorization.py: truth_ratio``), aggregated on D_f as mean(min(R, 1/R)) (closer to 1 is better)
  and elsewhere as mean(max(0, 1 − R)) (the true answer should win);
- ``forget_quality``: the p-value of the two-sample KS test between the model's and the gold model's per-example
  truth ratios on D_f (TOFU §2.5; open-unlearning ``privacy.py: ks_test``); 1.0 for gold itself;
- ``model_utility``: the harmonic mean of prob, ROUGE-L and truth ratio on D_r and on the utility split (TOFU's
  model utility, whose other two sets, real authors and world facts, this data has not);
- ``mia_loss_auc``, ``mia_mink_auc``, ``mia_zlib_auc``: AUC of the loss, Min-K% Prob (Shi et al. 2024, k = 20%) and
  zlib (Carlini et al. 2021) attacks, D_f (members) against the holdout people's QAs (non-members);
- with ``metric=seeds``, ``rmia_auc`` and ``rmia_tpr_at_1fpr``: offline RMIA (Zarifzadeh et al. 2024) on the
  length-normalised answer probability, the other gold seeds as references (``rmia``).

Splits: ``forget`` (D_f), ``retain`` (D_r), ``test`` (the utility split: held-out questions about people still in
D_r) and ``holdout`` (people no model trained on), all from the datamodule's splits.
"""

from __future__ import annotations

import importlib.util
import math
import zlib

import numpy as np
import torch
from torch import nn

from mu_lightning.data.qa import EOS, IDK, PAD, PARA_A, PERTURBED, QA, SEP, decode, words
from mu_lightning.errors import ConfigError
from mu_lightning.metrics import mia
from mu_lightning.metrics.challenge import forget_score
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.fast import efficiency
from mu_lightning.metrics.gold import weight_distance
from mu_lightning.metrics.memo import CACHE
from mu_lightning.metrics.names import MODELS
from mu_lightning.metrics.seeds import rmia_attack
from mu_lightning.stages.lm import answer_mask, token_logprobs

MIN_K = 0.2  # Min-K% Prob's k (Shi et al. 2024, "Detecting Pretraining Data from Large Language Models", §3)
LM_SPLITS = ("forget", "retain", "test")
# the result table's LM columns (outputs.summary_table), in order: names no classifier run writes
TABLE_COLUMNS = {"forget_truth_ratio": "forget TR", "forget_quality": "forget quality",
                 "model_utility": "model utility", "mia_mink_auc": "Min-K% AUC"}
ROUGE = ("words", "tofu")  # metric.rouge: ROUGE-L recall over our word units, or TOFU's stemming scorer


def lcs_length(a: list, b: list) -> int:
    """The length of the longest common subsequence of ``a`` and ``b`` (dynamic programming, one row)."""
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l_recall(candidate: list, reference: list) -> float:
    """ROUGE-L recall (Lin 2004): LCS(candidate, reference) / |reference|; 0 for an empty reference."""
    return lcs_length(candidate, reference) / len(reference) if reference else 0.0


def check_rouge(mode: str) -> None:
    """``metric.rouge`` is one of ``ROUGE``, and ``tofu`` finds the ``rouge_score`` package (checked before training
    by ``evaluate.check_config``)."""
    if mode not in ROUGE:
        raise ConfigError(f"metric.rouge={mode!r} is not allowed: use words (ROUGE-L recall over the words and "
                          "punctuation marks as they are) or tofu (TOFU's scorer: the rouge_score package, stemmed)")
    if mode == "tofu" and importlib.util.find_spec("rouge_score") is None:
        raise ConfigError("metric.rouge=tofu needs the rouge_score package: pip install -e '.[lm]'")


def rouge_recalls(candidates: list[str], references: list[str], mode: str = "words") -> list[float]:
    """ROUGE-L recall of each candidate text against its reference text (``metric.rouge``).

    ``words``: ``rouge_l_recall`` over ``qa.words`` of both, case and punctuation kept and nothing stemmed (the word
    tokenizer's units: on word-level data the same numbers as over the token ids). ``tofu``: the ``rouge_score``
    package, ``RougeScorer(["rouge1", "rougeL"], use_stemmer=True).score(reference, candidate)["rougeL"].recall``,
    as TOFU (locuslab/tofu ``evaluate_util.py``: ``eval_rouge_recall``) and locuslab/open-unlearning
    (``evals/metrics/utils.py``) score the decoded generation: lower-cased, punctuation dropped, Porter-stemmed."""
    check_rouge(mode)
    pairs = list(zip(candidates, references, strict=True))
    if mode == "words":
        return [rouge_l_recall(words(c), words(r)) for c, r in pairs]
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    return [scorer.score(r, c)["rougeL"].recall for c, r in pairs]


def answer_of(tokens: torch.Tensor) -> list[int]:
    """The answer tokens of one sequence: after ``SEP``, up to (not including) ``EOS`` or the end."""
    ids = tokens.tolist()
    start = ids.index(SEP) + 1 if SEP in ids else len(ids)
    out = []
    for t in ids[start:]:
        if t in (EOS, PAD):
            break
        out.append(t)
    return out


@torch.no_grad()
def exact_matches(model: nn.Module, tokens: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``[N]`` bool: whether the greedy answer to each question of ``tokens`` is its answer, token for token, from one
    teacher-forced pass: greedy decoding reproduces the answer exactly when, at every answer position (EOS included),
    the argmax given the true prefix is the true next token, and leaves it at the first position where it is not.
    The same as comparing ``greedy_answers`` with ``answer_of``, without decoding token by token."""
    device, hits = next(model.parameters()).device, []
    for i in range(0, len(tokens), batch_size):
        seq = tokens[i : i + batch_size].to(device)
        right = model(seq[:, :-1]).argmax(-1) == seq[:, 1:]
        hits.append((right | ~answer_mask(seq)).all(1).cpu())
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


@torch.no_grad()
def greedy_answers(model: nn.Module, tokens: torch.Tensor, batch_size: int = 256) -> list[list[int]]:
    """The greedy answer to each question of ``tokens`` (``BOS question SEP …``): the argmax token after ``SEP``,
    appended, until ``EOS`` or the end of the sequence; the answer without ``EOS``.

    The sequences stay right-padded: under causal attention the prediction at a position sees no later token, so
    the padding after it changes nothing, and each step runs only the questions still being answered, cut after
    the furthest position among them (no key-value cache: a step recomputes the prefix)."""
    device = next(model.parameters()).device
    out: list[list[int]] = []
    for i in range(0, len(tokens), batch_size):
        seq = tokens[i : i + batch_size].to(device).clone()
        length = seq.shape[1]
        pos = (seq == SEP).int().argmax(1)  # the position whose prediction is the next answer token
        seq[torch.arange(length, device=device)[None] > pos[:, None]] = PAD
        rows = (pos < length - 1).nonzero().squeeze(1)  # those still being answered
        while len(rows):
            at = pos[rows]
            nxt = _next_token_logits(model, seq[rows, : int(at.max()) + 1], at).argmax(-1)
            seq[rows, at + 1] = nxt
            pos[rows] = at + 1
            rows = rows[(nxt != EOS) & (at + 1 < length - 1)]
        out += [answer_of(s) for s in seq.cpu()]
    return out


def _next_token_logits(model: nn.Module, seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """The logits at position ``pos[i]`` of each sequence: through the output layer at those positions only when the
    model exposes ``hidden`` and ``head`` (``GPT``; a large vocabulary makes the full logits the cost), else all."""
    rows = torch.arange(len(seq), device=seq.device)
    if hasattr(model, "hidden") and hasattr(model, "head"):
        return model.head(model.hidden(seq)[rows, pos])
    return model(seq)[rows, pos]


@torch.no_grad()
def answer_logprobs(model: nn.Module, tokens: torch.Tensor, batch_size: int = 256) -> tuple[list, torch.Tensor]:
    """Per example: the log-probabilities of its answer tokens (a list of 1-D tensors) and their mean, the
    length-normalised answer log-probability (``[N]``)."""
    device = next(model.parameters()).device
    per_token = []
    for i in range(0, len(tokens), batch_size):
        lp, mask = token_logprobs(model, tokens[i : i + batch_size].to(device))
        per_token += [row[m].cpu() for row, m in zip(lp, mask, strict=True)]
    return per_token, torch.stack([t.mean() for t in per_token]) if per_token else torch.empty(0)


def min_k(per_token: list[torch.Tensor], k: float = MIN_K) -> torch.Tensor:
    """Min-K% Prob: the mean of the lowest ``k`` share (at least one) of each answer's token log-probabilities."""
    return torch.stack([t.sort().values[: max(1, int(len(t) * k))].mean() for t in per_token])


def zlib_score(mean_logprob: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """The zlib attack's score: the answer's mean log-probability over its zlib-compressed length in bytes
    (Carlini et al. 2021, §5.1; open-unlearning ``mia/zlib.py``), higher for a member."""
    return mean_logprob / torch.tensor([len(zlib.compress(t.encode())) for t in texts], dtype=torch.float64)


def truth_ratios(model: nn.Module, x: torch.Tensor, correct_view: int = PARA_A) -> torch.Tensor:
    """Per-example truth ratio P̄(perturbed) / P(correct) from length-normalised probabilities (the module doc); the
    correct answer is view ``correct_view``: the paraphrased answer in TOFU, the answer for generated data."""
    _, correct = answer_logprobs(model, x[:, correct_view])
    wrong = torch.stack([answer_logprobs(model, x[:, k])[1] for k in range(PERTURBED, x.shape[1])], 1)
    return torch.exp(wrong.double().mean(1) - correct.double())


def harmonic_mean(values: list[float]) -> float:
    """n / Σ 1/v; 0 if any value is 0 (TOFU's model utility; scipy's ``hmean`` on non-negative values)."""
    return 0.0 if min(values) <= 0 else len(values) / sum(1 / v for v in values)


def lm_splits(ctx: EvalContext) -> dict[str, torch.Tensor]:
    """Sample ids of forget, retain, test (held-out questions about people still in D_r) and holdout (QAs of
    people with no training sample)."""
    ids, group = ctx.data.ids, ctx.data.samples.group
    test = ids["test"]
    kept = torch.isin(group[test], group[ids["retain"]])
    unseen = ~torch.isin(group[test], group[ids["train"]])
    return {"forget": ids["forget"], "retain": ids["retain"], "test": test[kept], "holdout": test[unseen]}


def model_metrics(ctx: EvalContext, m: str) -> dict[str, object]:
    """Everything about model ``m`` that depends on it alone (cached per process under its identity): the scalar
    metrics and the per-example truth ratios on D_f (for forget quality)."""
    return CACHE.get(("lm", *ctx.identity(m)), lambda: _model_metrics(ctx, m))


def _model_metrics(ctx: EvalContext, m: str) -> dict[str, object]:
    model, samples = ctx.models[m], ctx.data.samples
    x_all = samples.x
    was_training = model.training
    model.eval()
    out: dict[str, object] = {}
    splits = lm_splits(ctx)
    for s in (*LM_SPLITS, "holdout"):
        x = x_all[splits[s]]
        if len(x) == 0:
            continue
        per_token, mean_lp = answer_logprobs(model, x[:, QA])
        if s == "holdout" or s == "forget":
            out[f"_{s}_scores"] = {"loss": mean_lp.double(), "mink": min_k(per_token).double(),
                                   "zlib": zlib_score(mean_lp.double(), [decode(samples, answer_of(r))
                                                                         for r in x[:, QA]])}
        if s == "holdout":
            continue
        answers = greedy_answers(model, x[:, QA])
        if s == "forget":
            out["_forget_answers"] = answers  # the no-effect rule compares them (metrics/warnings.py)
        refs = [answer_of(r) for r in x[:, QA]]
        out[f"{s}_acc"] = sum(a == r for a, r in zip(answers, refs, strict=True)) / len(refs)
        rouge = rouge_recalls([decode(samples, a) for a in answers], [decode(samples, r) for r in refs],
                              getattr(ctx.cfg, "rouge", None) or "words")
        out[f"{s}_rouge"] = sum(rouge) / len(refs)
        out[f"{s}_prob"] = float(mean_lp.double().exp().mean())
        ratios = truth_ratios(model, x, ctx.data.samples.truth_view)
        if s == "forget":
            out["_forget_ratios"] = ratios
            out[f"{s}_truth_ratio"] = float(torch.minimum(ratios, 1 / ratios).mean())
        else:
            out[f"{s}_truth_ratio"] = float((1 - ratios).clamp(min=0).mean())
        out[f"{s}_idk_prob"] = float(answer_logprobs(model, x[:, IDK])[1].double().exp().mean())
    useful = [out[f"{s}_{k}"] for s in ("retain", "test") if f"{s}_prob" in out for k in ("prob", "rouge",
                                                                                          "truth_ratio")]
    out["model_utility"] = harmonic_mean(useful)
    if "_holdout_scores" in out and "_forget_scores" in out:
        for name in ("loss", "mink", "zlib"):
            roc = mia.threshold_attack(out["_forget_scores"][name], out["_holdout_scores"][name])
            out[f"mia_{name}_auc"] = roc["auc"]
    model.train(was_training)
    return out


def forget_quality(mine: torch.Tensor, gold: torch.Tensor) -> float:
    """The KS-test p-value of two samples of truth ratios (TOFU's forget quality); 1.0 when they are the same."""
    from scipy.stats import ks_2samp

    return 1.0 if torch.equal(mine, gold) else float(ks_2samp(mine.numpy(), gold.numpy()).pvalue)


def lm(ctx: EvalContext) -> dict[str, float]:
    """Every LM metric of M, M_g and M_u, named ``<model>/<metric>`` (the module doc)."""
    per_model = {m: model_metrics(ctx, m) for m in MODELS}
    out: dict[str, float] = {}
    for m, values in per_model.items():
        out.update({f"{m}/{k}": float(v) for k, v in values.items() if not k.startswith("_")})
        if "_forget_ratios" in values:
            out[f"{m}/forget_quality"] = forget_quality(values["_forget_ratios"], per_model["gold"]["_forget_ratios"])
    if ctx.cfg.tier in ("full", "seeds"):
        out.update(gold_seeds(ctx, per_model))
    out["unlearn/weight_dist_original"] = weight_distance(ctx.models["unlearn"], ctx.models["original"])
    out.update(efficiency(ctx))
    return {k: v for k, v in out.items() if v is None or not math.isnan(v)}


def gold_seeds(ctx: EvalContext, per_model: dict[str, dict]) -> dict[str, float]:
    """With ``metric=full`` or ``seeds`` (the other gold seeds of ``metric.seeds``): gold's forget quality becomes
    the noise floor, the mean KS p-value of each other gold seed's truth ratios on D_f against the reference gold's;
    with ``seeds`` also the challenge forget score over ``metric.seeds`` unlearning runs and gold seeds, on the
    scalar signal (the length-normalised answer log-probability in place of a classifier's φ, docs/metrics.md §3.6),
    and offline RMIA with the other gold seeds as references (``rmia``)."""
    golds = ctx.other_seeds("gold")
    reference = per_model["gold"]["_forget_ratios"]
    out = {"gold/forget_quality": float(np.mean([forget_quality(model_metrics(ctx, g)["_forget_ratios"], reference)
                                                 for g in golds]))}
    if ctx.cfg.tier == "seeds":
        unlearned = ["unlearn", *ctx.other_seeds("unlearn")]
        x = ctx.data.samples.x[lm_splits(ctx)["forget"]][:, QA]

        def signal(m: str) -> np.ndarray:
            return answer_logprobs(ctx.models[m], x)[1].double().numpy()

        score, _ = forget_score(np.stack([signal(m) for m in unlearned]),
                                np.stack([signal(m) for m in ["gold", *golds]]))
        out.update({"unlearn/forget_score": score, "unlearn/forget_score_models": float(len(unlearned))})
        out.update(rmia(ctx, golds))
    return out


def holdout_halves(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions, within the holdout split whose people are ``groups``, of RMIA's non-members and of its population
    Z: the holdout people in id order go alternately to each (the first, third, … to the non-members), so the two
    halves share no person and each holds every fact of its people."""
    in_z = torch.isin(groups, groups.unique()[1::2])
    return (~in_z).nonzero().squeeze(1), in_z.nonzero().squeeze(1)


def rmia(ctx: EvalContext, references: list[str]) -> dict[str, float]:
    """``rmia_auc`` and ``rmia_tpr_at_1fpr`` of M, M_g and M_u: offline RMIA (Zarifzadeh et al. 2024) as the
    classifier tier computes it (``seeds.rmia_attack``, docs/metrics.md §3.5), with p_y = exp(the scalar signal), the
    length-normalised answer probability P(a|q)^(1/|a|), and ``references`` (the other gold seeds) as OUT models.

    Members: D_f; non-members and the population Z: the holdout people's QAs, split by person (``holdout_halves``).
    The classifier tier's Z is D_val, data no model trained on and the attack does not score; QA data has no
    validation split (every training QA is a fact to learn), so half the holdout people, whom no model saw either,
    play it, and the other half are the non-members, subsampled with D_f to equal size as in the classifier tier.
    Nothing (no key) with fewer than two holdout people or an empty D_f."""
    splits = lm_splits(ctx)
    nonmember, population = holdout_halves(ctx.data.samples.group[splits["holdout"]])
    if len(splits["forget"]) == 0 or len(population) == 0:
        return {}

    def p_y(m: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scores = model_metrics(ctx, m)
        held = scores["_holdout_scores"]["loss"].exp()
        return scores["_forget_scores"]["loss"].exp(), held[nonmember], held[population]

    return rmia_attack(p_y, references, ctx.cfg)
