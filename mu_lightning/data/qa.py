"""Question-answer data for causal language models: a word-level tokenizer built from the data, the tensor layout
every LM stage and metric reads, and a reader of TOFU-format JSON files already on disk.

One QA is one sample. Its ``x`` row is int64 ``[VIEWS, seq_len]``: the same question rendered with each answer a
metric needs, as TOFU's evaluation builds them (Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs",
2024; fields of locuslab/tofu's ``forget10_perturbed.json``: ``question``, ``answer``, ``paraphrased_answer``,
``perturbed_answer``; paraphrased questions as in locuslab/open-unlearning's ``TOFU_QA_forget_para``):

- ``QA`` (0): question and answer, the sequence every stage trains on;
- ``PARA_Q`` (1): the paraphrased question and the answer;
- ``PARA_A`` (2): the question and the paraphrased answer (the truth ratio's "correct" answer);
- ``IDK`` (3): the question and an "I don't know" answer from the pool (IdkDPO's preferred answer);
- ``PERTURBED`` (4 …): the question and each perturbed (wrong) answer (the truth ratio's "wrong" answers).

A row is ``BOS question SEP answer EOS PAD …``: the answer tokens are those after ``SEP`` up to and including
``EOS``, and teacher-forced losses and probabilities count those only. ``y`` is the kind of question (the attribute
asked about), ``group`` the entity (the person) the QA is about, so ``forget=entity`` forgets whole people.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mu_lightning.configurable import configurable
from mu_lightning.data.sources import Samples
from mu_lightning.errors import ConfigError

PAD, BOS, SEP, EOS, UNK = 0, 1, 2, 3, 4
SPECIALS = ("<pad>", "<bos>", "<sep>", "<eos>", "<unk>")
QA, PARA_Q, PARA_A, IDK, PERTURBED = 0, 1, 2, 3, 4
WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def words(text: str) -> list[str]:
    """``text`` split into words and punctuation marks: the tokenizer's units."""
    return WORD.findall(text)


class WordTokenizer:
    """Word-level tokens built locally from the texts given: the specials, then every word in sorted order, so the
    same texts always give the same ids and nothing is downloaded."""

    def __init__(self, texts) -> None:
        self.vocab = (*SPECIALS, *sorted({w for t in texts for w in words(t)} - set(SPECIALS)))
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, UNK) for w in words(text)]

    def decode(self, ids) -> str:
        return " ".join(self.vocab[int(i)] for i in ids if int(i) not in (PAD, BOS, SEP, EOS))


@dataclass(frozen=True)
class QASamples(Samples):
    """``Samples`` of question-answer data: ``x`` int64 ``[N, VIEWS, seq_len]`` (the layout above), the
    tokenizer's ``vocab``, which decodes ids into words (the zlib MIA compresses the answer's text), and
    ``truth_view``, the view the truth ratio holds the perturbed answers against: ``PARA_A`` as in TOFU, or ``QA``
    when the perturbed answers keep the answer's own form (generated data, ``fictitious.py``)."""

    vocab: tuple[str, ...] = ()
    truth_view: int = PARA_A


def is_qa(samples: Samples | None) -> bool:
    """Whether ``samples`` is question-answer data for a language model (the layout above)."""
    return isinstance(samples, QASamples)


def row(tokenizer: WordTokenizer, question: str, answer: str, seq_len: int) -> list[int]:
    """``BOS question SEP answer EOS`` padded to ``seq_len``; a ConfigError if it does not fit."""
    ids = [BOS, *tokenizer.encode(question), SEP, *tokenizer.encode(answer), EOS]
    if len(ids) > seq_len:
        raise ConfigError(f"a question and answer take {len(ids)} tokens, more than dataset.input_shape[1]="
                          f"{seq_len}: raise it (question: {question!r})")
    return ids + [PAD] * (seq_len - len(ids))


def encode_records(records: list[dict], idk: list[str], seq_len: int, num_perturbed: int, vocab_size: int,
                   extra_texts=()) -> tuple[torch.Tensor, tuple[str, ...]]:
    """``x`` ``[N, 4 + num_perturbed, seq_len]`` of ``records`` (each with ``question``, ``answer``,
    ``paraphrased_question``, ``paraphrased_answer``, ``perturbed_answer``: a list of at least ``num_perturbed``)
    and the vocabulary; the i-th record's IDK answer is ``idk[i % len(idk)]``."""
    texts = [*idk, *extra_texts]
    for r in records:
        texts += [r["question"], r["answer"], r["paraphrased_question"], r["paraphrased_answer"],
                  *r["perturbed_answer"][:num_perturbed]]
    tokenizer = WordTokenizer(texts)
    if len(tokenizer.vocab) > vocab_size:
        raise ConfigError(f"the data's vocabulary has {len(tokenizer.vocab)} words, more than dataset.vocab_size="
                          f"{vocab_size}: raise it")
    rows = []
    for i, r in enumerate(records):
        if len(r["perturbed_answer"]) < num_perturbed:
            raise ConfigError(f"QA {i} has {len(r['perturbed_answer'])} perturbed answers, fewer than "
                              f"dataset.num_perturbed={num_perturbed}")
        q = r["question"]
        answers = [(q, r["answer"]), (r["paraphrased_question"], r["answer"]), (q, r["paraphrased_answer"]),
                   (q, idk[i % len(idk)]), *((q, a) for a in r["perturbed_answer"][:num_perturbed])]
        rows.append([row(tokenizer, question, answer, seq_len) for question, answer in answers])
    return torch.tensor(rows, dtype=torch.int64), tokenizer.vocab


@configurable
def tofu_json(path: str, seq_len: int, vocab_size: int, test_path: str | None = None, idk_path: str | None = None,
              qa_per_entity: int = 20, num_perturbed: int = 3) -> QASamples:
    """QAs from TOFU-format files you already have (a JSON list or JSON lines of ``question`` and ``answer``, and
    optionally ``paraphrased_question``, ``paraphrased_answer``, ``perturbed_answer`` and ``entity``).

    ``path`` is trained on (split 0), ``test_path`` (optional) is held out (split 1). A record without an
    ``entity`` belongs to entity ``index // qa_per_entity``, TOFU's order of 20 QAs per author. A missing paraphrase
    is the original text and missing perturbed answers are the other records' answers of the same entity in turn,
    so the truth ratio of such data compares against the entity's other facts. ``idk_path``: one "I don't know"
    answer per line (default: a few built-in ones)."""
    train = _read(path, "dataset.path")
    test = _read(test_path, "dataset.test_path") if test_path else []
    records = [*train, *test]
    if not records:
        raise ConfigError(f"dataset.path={path} holds no QA")
    idk = ([s.strip() for s in Path(idk_path).read_text().splitlines() if s.strip()] if idk_path else
           ["I don't know .", "I have no idea .", "I am not sure about that ."])
    group = torch.tensor([int(r.get("entity", i // qa_per_entity)) for i, r in enumerate(records)])
    for i, r in enumerate(records):
        if "question" not in r or "answer" not in r:
            raise ConfigError(f"record {i} of {path} lacks question or answer (keys: {sorted(r)})")
        r.setdefault("paraphrased_question", r["question"])
        r.setdefault("paraphrased_answer", r["answer"])
        if not r.get("perturbed_answer"):
            same = [o["answer"] for j, o in enumerate(records) if group[j] == group[i] and j != i] or [r["answer"]]
            r["perturbed_answer"] = [same[k % len(same)] for k in range(num_perturbed)]
    x, vocab = encode_records(records, idk, seq_len, num_perturbed, vocab_size)
    split = torch.tensor([0] * len(train) + [1] * len(test), dtype=torch.int64)
    return QASamples(x=x, y=torch.zeros(len(records), dtype=torch.int64), group=group,
                     split=split if test else None, vocab=vocab)


def _read(path: str, option: str) -> list[dict]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{option}={path} is not a file")
    text = file.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    return list(data) if isinstance(data, list) else [data]
