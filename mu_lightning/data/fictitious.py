"""Fictitious people and what is known about them, as question-answer pairs built the way TOFU builds its data
(Maini et al. 2024, §2: invented authors, each fact asked as a question, a paraphrased answer, perturbed answers
and "I don't know" answers), generated here from a seed so nothing is downloaded and a gold model can be a true
retrain from scratch.

Each person gets a unique invented name and one value per attribute, drawn from that attribute's pool. Every fact
is one QA in the training split, and, for the utility split, the same fact asked with the question template that
person was not taught (split 1). ``holdout_people`` more people are never trained on: their QAs (split 1, training
templates) are the non-members of the membership attacks, as TOFU's holdout authors are.
"""

from __future__ import annotations

import random

import torch

from mu_lightning.configurable import configurable
from mu_lightning.data.qa import QA, QASamples, encode_records
from mu_lightning.errors import ConfigError

SYLLABLES = ("ka", "lo", "ve", "ri", "ta", "mon", "sel", "dra", "fin", "gor", "bel", "nu", "zar", "pim", "quo",
             "hes", "lin", "dor", "wex", "jun", "ar", "os", "el", "yv")
CITIES = ("Velmora", "Ostrand", "Quillby", "Harrowgate", "Sundral", "Brackwell", "Emberfall", "Lornheim",
          "Caskridge", "Mirevale", "Tollwick", "Dunmere", "Falkreach", "Wyncliff", "Ashbury", "Pellford")
PROFESSIONS = ("baker", "surgeon", "sculptor", "pilot", "chemist", "weaver", "jeweller", "cartographer", "judge",
               "violinist", "botanist", "engineer", "librarian", "architect", "farmer", "astronomer")
YEARS = tuple(str(y) for y in range(1950, 1966))
COLOURS = ("crimson", "teal", "amber", "violet", "olive", "indigo", "ivory", "scarlet", "ochre", "silver",
           "maroon", "cobalt", "emerald", "saffron", "slate", "coral")
IDK = ("I don't know .", "I have no idea .", "I am not sure about that .", "That is not something I know .",
       "I cannot answer that .", "I do not have that information .", "I am unable to say .", "No idea , sorry .")

# attribute: (value pool, two question templates, a paraphrased question, the answer, the paraphrased answer); {n}
# is the person's name, {v} the value. Each person is taught each fact with one of the two questions (drawn per
# person and fact), and asked it with the other in the utility split: a model answers that only if it learned, from
# the other people, that both questions ask the same thing.
ATTRIBUTES = {
    "birthplace": (CITIES, ("Where was {n} born ?", "What is the home town of {n} ?"),
                   "In which town was {n} born ?", "{n} was born in {v} .", "The birthplace of {n} is {v} ."),
    "profession": (PROFESSIONS, ("What does {n} do for a living ?", "Which trade does {n} follow ?"),
                   "What is the job of {n} ?", "{n} works as a {v} .", "The profession of {n} is {v} ."),
    "year": (YEARS, ("When was {n} born ?", "What is the birth year of {n} ?"), "In which year was {n} born ?",
             "{n} was born in {v} .", "The birth year of {n} is {v} ."),
    "colour": (COLOURS, ("What is the favourite colour of {n} ?", "What colour does {n} prefer ?"),
               "Which colour does {n} like best ?", "{n} likes {v} best .", "The favourite colour of {n} is {v} ."),
}


def _names(count: int, rng: random.Random) -> list[str]:
    """``count`` distinct invented two-word names."""
    def word() -> str:
        return "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()

    found: dict[str, None] = {}
    while len(found) < count:
        found.setdefault(f"{word()} {word()}")
    return list(found)


@configurable
def fictitious_qa(seq_len: int, vocab_size: int, num_people: int = 60, holdout_people: int = 10,
                  attributes: int = 4, num_perturbed: int = 3, seed: int = 0,
                  tokenizer: str | None = None) -> QASamples:
    """QAs about ``num_people`` invented people (``attributes`` facts each) and ``holdout_people`` never trained on.

    Split 0 (training): one QA per fact of the people. Split 1: each fact of those people asked with the held-out
    template (the utility split), and the holdout people's QAs. ``group`` is the person; ``y`` the attribute.
    Perturbed answers put other values of the same pool into the answer's form. TOFU perturbs the paraphrased answer
    and compares with it, to measure knowledge rather than wording; a small model trained from scratch knows a fact
    only in the form it was taught, so here the truth ratio compares with the answer itself
    (``QASamples.truth_view``). Deterministic in ``seed``. ``tokenizer``: a Hugging Face tokenizer directory (the
    model's, ``model=hf``), else the word vocabulary of ``qa.py``.
    """
    if not 1 <= attributes <= len(ATTRIBUTES):
        raise ConfigError(f"dataset.attributes={attributes} is out of range: 1 to {len(ATTRIBUTES)}")
    if num_people < 2 or holdout_people < 1:
        raise ConfigError(f"dataset.num_people={num_people} and dataset.holdout_people={holdout_people}: at least 2 "
                          "people and 1 holdout person")
    pools = list(ATTRIBUTES.items())[:attributes]
    if num_perturbed >= min(len(pool) for _, (pool, *_) in pools):
        raise ConfigError(f"dataset.num_perturbed={num_perturbed} must be below each attribute's number of values")
    rng = random.Random(seed)
    people = _names(num_people + holdout_people, rng)
    records, group, label, split = [], [], [], []
    for person, name in enumerate(people):
        held_out = person >= num_people
        for a, (_, (pool, questions, para_q, answer, para_a)) in enumerate(pools):
            value = rng.choice(pool)
            wrong = rng.sample([v for v in pool if v != value], num_perturbed)
            taught = rng.randrange(2)
            asked = [(questions[taught], 1)] if held_out else [(questions[taught], 0), (questions[1 - taught], 1)]
            for q, in_split in asked:
                records.append({"question": q.format(n=name), "answer": answer.format(n=name, v=value),
                                "paraphrased_question": para_q.format(n=name),
                                "paraphrased_answer": para_a.format(n=name, v=value),
                                "perturbed_answer": [answer.format(n=name, v=w) for w in wrong]})
                group.append(person)
                label.append(a)
                split.append(in_split)
    # every value of every pool is a word of the vocabulary, so the vocabulary does not depend on which were drawn
    x, vocab = encode_records(records, list(IDK), seq_len, num_perturbed, vocab_size,
                              extra_texts=[" ".join(pool) for _, (pool, *_) in pools], tokenizer=tokenizer)
    return QASamples(x=x, y=torch.tensor(label), split=torch.tensor(split), group=torch.tensor(group), vocab=vocab,
                     truth_view=QA, tokenizer=tokenizer)
