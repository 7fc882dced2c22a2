"""Run the CIFAR-10 ResNet-18 paper protocols for FT, GA, RL, ℓ1-sparse, SalUn, SCRUB and SSD and print UA, RA, TA
and MIA-Efficacy beside the published numbers (scripts/published_cifar10.json; docs/fidelity.md).

    python scripts/reproduce.py [--protocols random10 class] [--methods FT GA ...] [--out DIR] [OVERRIDE ...]

Each (protocol, method) is one pipeline run (``experiment=cifar10_resnet18_<protocol> unlearner=<name>``) in
``DIR/<protocol>/<name>``, the table in ``DIR/table.txt``; the runs share one stage cache, so M and M_g are trained
once per protocol. OVERRIDEs are Hydra overrides given to every run (``dataset.data_dir=... trainer=ddp``; a CPU
smoke run: ``trainer=cpu model=cnn train.epochs=1``). The presets need a GPU (``trainer=gpu``) and the official
``cifar-10-python.tar.gz``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

PROTOCOLS = {"random10": "cifar10_resnet18_random10", "class": "cifar10_resnet18_class"}
METHODS = {"FT": "finetune", "GA": "gradient_ascent", "RL": "random_label", "l1-sparse": "l1_sparse",
           "SalUn": "salun", "SCRUB": "scrub", "SSD": "ssd"}
COLUMNS = ("UA", "RA", "TA", "MIA")  # in percent, as the papers print them
PUBLISHED = Path(__file__).with_name("published_cifar10.json")


def run_one(experiment: str, unlearner: str, overrides: list[str], out: Path, cache: Path) -> dict:
    """One pipeline run, in this process; the contents of its results.json."""
    from mu_lightning.pipeline import run

    GlobalHydra.instance().clear()
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}", f"unlearner={unlearner}", *overrides],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir, cfg.paths.cache_dir = str(out), str(cache)
        del cfg.hydra
    out.mkdir(parents=True, exist_ok=True)
    run(cfg)
    return json.loads((out / "results.json").read_text())


def scores(metrics: dict, model: str) -> dict[str, float]:
    """UA, RA, TA and MIA-Efficacy of ``model`` (``unlearn`` or ``gold``), in percent."""
    return {"UA": 100 * (1 - metrics[f"{model}/forget_acc"]), "RA": 100 * metrics[f"{model}/retain_acc"],
            "TA": 100 * metrics[f"{model}/test_acc"], "MIA": 100 * metrics[f"{model}/mia_efficacy"]}


def table(rows: list[tuple[str, str, dict[str, float]]], published: dict) -> str:
    """Markdown: ours (this run) beside the published values of the same protocol and method ("—": none)."""
    head = ["protocol", "method", *COLUMNS, *(f"paper {c}" for c in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 2 * len(COLUMNS)) + "|"]
    for protocol, method, ours in rows:
        paper = published.get(protocol, {}).get(method) or {}
        cells = [f"{ours[c]:.2f}" for c in COLUMNS] + [
            "—" if paper.get(c) is None else f"{paper[c]:.2f}" for c in COLUMNS]
        lines.append("| " + " | ".join([protocol, method, *cells]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocols", nargs="+", choices=sorted(PROTOCOLS), default=list(PROTOCOLS))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("outputs/reproduce"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args(argv)
    rows = []
    for protocol in args.protocols:
        for i, method in enumerate(args.methods):
            res = run_one(PROTOCOLS[protocol], METHODS[method], args.overrides, args.out / protocol / METHODS[method],
                          args.out / "cache")
            if i == 0:
                rows.append((protocol, "Retrain", scores(res["metrics"], "gold")))
            rows.append((protocol, method, scores(res["metrics"], "unlearn")))
    data = json.loads(PUBLISHED.read_text())
    text = table(rows, data["values"]) + f"\n\nPaper values: {data['source']}\n"
    (args.out / "table.txt").write_text(text)  # Markdown
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
