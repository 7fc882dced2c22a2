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

import functools
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
OFFSET = len(SPECIALS)  # a Hugging Face tokenizer's id i is our id i + OFFSET (HFTokenizer)
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


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str):
    """The Hugging Face tokenizer saved in directory ``path`` (``AutoTokenizer``, local files only)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError("a Hugging Face tokenizer needs the transformers package: pip install -e '.[lm]'") from None
    if not Path(path, "tokenizer_config.json").is_file():
        raise ConfigError(f"{path} holds no Hugging Face tokenizer (no tokenizer_config.json): give the directory "
                          "that save_pretrained wrote (model.path=..., or dataset.source.tokenizer=...)")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def to_hf(ids) -> list[int]:
    """The Hugging Face tokenizer's ids of our ids ``ids``, specials left out (``HFTokenizer``)."""
    return [int(i) - OFFSET for i in ids if int(i) >= OFFSET]


class HFTokenizer:
    """A Hugging Face tokenizer's subword ids, shifted past our specials: our id = its id + ``OFFSET``, so a row
    keeps the layout above (``BOS question SEP answer EOS PAD``) and the model (``models.hf.HFCausalLM``) maps our
    specials to the tokenizer's own tokens."""

    def __init__(self, path: str) -> None:
        self.tokenizer, self.vocab = load_tokenizer(path), ()

    def encode(self, text: str) -> list[int]:
        return [i + OFFSET for i in self.tokenizer.encode(text, add_special_tokens=False)]


@dataclass(frozen=True)
class QASamples(Samples):
    """``Samples`` of question-answer data: ``x`` int64 ``[N, VIEWS, seq_len]`` (the layout above), the
    tokenizer's ``vocab``, which decodes ids into words (the zlib MIA compresses the answer's text), and
    ``truth_view``, the view the truth ratio holds the perturbed answers against: ``PARA_A`` as in TOFU, or ``QA``
    when the perturbed answers keep the answer's own form (generated data, ``fictitious.py``); ``tokenizer``, the
    directory of the Hugging Face tokenizer the ids come from (``HFTokenizer``), None for the word vocabulary."""

    vocab: tuple[str, ...] = ()
    truth_view: int = PARA_A
    tokenizer: str | None = None


def decode(samples: QASamples, ids) -> str:
    """The text of token ids of ``samples``: words joined by spaces for the word-level vocabulary, the Hugging Face
    tokenizer's decoding when the data was tokenized with one (``HFTokenizer``). Specials are left out, and so are
    ids past the vocabulary: a model's output layer may be wider than the data's words (``dataset.vocab_size``) or
    the tokenizer (a checkpoint's padded embedding), and such an id, if generated, has no text."""
    if samples.tokenizer is None:
        return " ".join(samples.vocab[i] for i in map(int, ids) if i not in (PAD, BOS, SEP, EOS) and i < len(
            samples.vocab))
    tokenizer = load_tokenizer(samples.tokenizer)
    return tokenizer.decode([i for i in to_hf(ids) if i < len(tokenizer)], skip_special_tokens=True)


def is_qa(samples: Samples | None) -> bool:
    """Whether ``samples`` is question-answer data for a language model (the layout above)."""
    return isinstance(samples, QASamples)


def row(tokenizer: WordTokenizer | HFTokenizer, question: str, answer: str) -> list[int]:
    """``BOS question SEP answer EOS``, unpadded."""
    return [BOS, *tokenizer.encode(question), SEP, *tokenizer.encode(answer), EOS]


def encode_records(records: list[dict], idk: list[str], seq_len: int, num_perturbed: int, vocab_size: int,
                   extra_texts=(), tokenizer: str | None = None) -> tuple[torch.Tensor, tuple[str, ...]]:
    """``x`` ``[N, 4 + num_perturbed, seq_len]`` of ``records`` (each with ``question``, ``answer``,
    ``paraphrased_question``, ``paraphrased_answer``, ``perturbed_answer``: a list of at least ``num_perturbed``)
    and the word vocabulary (empty with a Hugging Face ``tokenizer`` directory, whose ids are the model's); the i-th
    record's IDK answer is ``idk[i % len(idk)]``."""
    texts = [*idk, *extra_texts]
    for r in records:
        texts += [r["question"], r["answer"], r["paraphrased_question"], r["paraphrased_answer"],
                  *r["perturbed_answer"][:num_perturbed]]
    tokenizer = HFTokenizer(tokenizer) if tokenizer else WordTokenizer(texts)
    if isinstance(tokenizer, WordTokenizer) and len(tokenizer.vocab) > vocab_size:
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
        rows.append([row(tokenizer, question, answer) for question, answer in answers])
    longest = max((len(r) for views in rows for r in views), default=0)
    if longest > seq_len:
        raise ConfigError(f"the longest question and answer take {longest} tokens, more than dataset.input_shape[1]"
                          f"={seq_len}: raise it to at least {longest}")
    return torch.tensor([[r + [PAD] * (seq_len - len(r)) for r in views] for views in rows],
                        dtype=torch.int64), tokenizer.vocab


@configurable
def tofu_json(path: str, seq_len: int, vocab_size: int, test_path: str | None = None, idk_path: str | None = None,
              qa_per_entity: int = 20, num_perturbed: int = 3, tokenizer: str | None = None) -> QASamples:
    """QAs from TOFU-format files you already have (a JSON list or JSON lines of ``question`` and ``answer``, and
    optionally ``paraphrased_question``, ``paraphrased_answer``, ``perturbed_answer`` and ``entity``).

    ``path`` is trained on (split 0), ``test_path`` (optional) is held out (split 1). A record without an
    ``entity`` belongs to entity ``index // qa_per_entity``, TOFU's order of 20 QAs per author. A missing paraphrase
    is the original text and missing perturbed answers are the other records' answers of the same entity in turn,
    so the truth ratio of such data compares against the entity's other facts. ``idk_path``: one "I don't know"
    answer per line (default: a few built-in ones). ``tokenizer``: a Hugging Face tokenizer directory (the
    model's, ``model=hf``), else a word vocabulary built from the files."""
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
    x, vocab = encode_records(records, idk, seq_len, num_perturbed, vocab_size, tokenizer=tokenizer)
    split = torch.tensor([0] * len(train) + [1] * len(test), dtype=torch.int64)
    return QASamples(x=x, y=torch.zeros(len(records), dtype=torch.int64), group=group,
                     split=split if test else None, vocab=vocab, tokenizer=tokenizer)


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
