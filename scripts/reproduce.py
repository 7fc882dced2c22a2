"""Run the CIFAR-10 ResNet-18 paper protocols for FT, GA, RL, ℓ1-sparse, SalUn, SCRUB and SSD over several seeds and
judge each published number: UA, RA, TA and MIA-Efficacy as mean ± std over the seeds beside the published value
(scripts/published_cifar10.json), and "reproduced" when the mean lies within that value's tolerance, "not
reproduced" otherwise (docs/fidelity.md, "Reproducing the published tables").

    python scripts/reproduce.py [--protocols random10 class] [--methods FT GA ...] [--seeds 0,1,2]
                                [--schedule preset|authors] [--out DIR] [OVERRIDE ...]

Each (protocol, method, seed) is one pipeline run (``experiment=cifar10_resnet18_<protocol> unlearner=<name>
seed=<seed>``) in ``DIR/<protocol>/<name>/seed<seed>``; the runs share one stage cache, so M and M_g are trained
once per protocol and seed. The forget set is the same for every seed (``forget.seed``, an OVERRIDE to change).
``--schedule authors`` trains M and M_g with the authors' step schedule, lr ×0.1 at epochs 91 and 136
(OPTML-Group/Unlearn-Sparse arg_parser.py:76, main_imp.py:97-98 for the original, unlearn/impl.py:98-100 for
Retrain), instead of the presets' shared cosine schedule; the unlearners' own schedules never reach those epochs.
OVERRIDEs are Hydra overrides given to every run (``dataset.data_dir=... trainer=ddp``; a CPU smoke run:
``trainer=cpu model=cnn train.epochs=1``). The presets need a GPU (``trainer=gpu``) and the official
``cifar-10-python.tar.gz``. Writes the table to ``DIR/table.txt`` and every value to ``DIR/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

PROTOCOLS = {"random10": "cifar10_resnet18_random10", "class": "cifar10_resnet18_class"}
METHODS = {"FT": "finetune", "GA": "gradient_ascent", "RL": "random_label", "l1-sparse": "l1_sparse",
           "SalUn": "salun", "SCRUB": "scrub", "SSD": "ssd"}
COLUMNS = ("UA", "RA", "TA", "MIA")  # in percent, as the papers print them
PUBLISHED = Path(__file__).with_name("published_cifar10.json")
SCHEDULES = {  # Hydra overrides of the original and gold models' lr schedule
    "preset": [],
    "authors": ["~train.scheduler.T_max", "train.scheduler._target_=torch.optim.lr_scheduler.MultiStepLR",
                "+train.scheduler.milestones=[91,136]", "+train.scheduler.gamma=0.1"],
}
RunFn = Callable[[str, str, list[str], Path, Path], dict]


def run_one(experiment: str, unlearner: str, overrides: list[str], out: Path, cache: Path) -> dict:
    """One pipeline run, in this process; the contents of its results.json."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

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


def scores(metrics: dict, model: str) -> dict[str, float | None]:
    """UA, RA, TA and MIA-Efficacy of ``model`` (``unlearn`` or ``gold``), in percent; None where the run recorded
    null (an attack no better than chance: docs/metrics.md §9)."""
    def pct(key: str, complement: bool = False) -> float | None:
        value = metrics[f"{model}/{key}"]
        return None if value is None else 100 * (1 - value if complement else value)

    return {"UA": pct("forget_acc", complement=True), "RA": pct("retain_acc"), "TA": pct("test_acc"),
            "MIA": pct("mia_efficacy")}


def collect(protocols: list[str], methods: list[str], seeds: list[int], overrides: list[str], out: Path,
            run: RunFn = run_one) -> dict[tuple[str, str], dict[str, list[float | None]]]:
    """``{(protocol, method): {column: [value per seed]}}``, Retrain (the gold model) included once per seed."""
    found: dict[tuple[str, str], dict[str, list[float | None]]] = {}
    for protocol in protocols:
        for seed in seeds:
            for i, method in enumerate(methods):
                res = run(PROTOCOLS[protocol], METHODS[method], [*overrides, f"seed={seed}"],
                          out / protocol / METHODS[method] / f"seed{seed}", out / "cache")
                models = [("Retrain", "gold")] if i == 0 else []
                for name, model in [*models, (method, "unlearn")]:
                    for column, value in scores(res["metrics"], model).items():
                        found.setdefault((protocol, name), {}).setdefault(column, []).append(value)
    return found


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1) over the seeds; no std from a single seed."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def verdict(values: list[float], published: dict | None) -> str:
    """``reproduced`` when the mean over the seeds is within the published value's tolerance (|mean − value| <=
    tolerance), ``not reproduced`` otherwise; ``unverified`` is added for a published value not checked against the
    paper. ``—`` where no value is published, ``not judged`` where no seed gave a value (``values`` empty)."""
    if not published or published.get("value") is None:
        return "—"
    if not values:
        return "not judged: null in every seed"
    mean, _ = mean_std(values)
    within = abs(mean - published["value"]) <= published["tolerance"]
    return ("reproduced" if within else "not reproduced") + ("" if published.get("verified") else " (unverified)")


def judged(found: dict, published: dict) -> list[dict]:
    """One record per (protocol, method, column): ours over the seeds, the published value, the verdict."""
    records = []
    for (protocol, method), columns in found.items():
        for column in COLUMNS:
            values = [v for v in columns[column] if v is not None]  # a null (chance-level attack) is no value
            paper = (published.get(protocol, {}).get(method) or {}).get(column)
            mean, std = mean_std(values) if values else (None, None)
            records.append({"protocol": protocol, "method": method, "metric": column, "seeds": len(values),
                            "runs": len(columns[column]), "values": columns[column], "mean": mean, "std": std,
                            "published": paper, "verdict": verdict(values, paper)})
    return records


def table(records: list[dict]) -> str:
    """Markdown, one row per judged value."""
    lines = ["| protocol | method | metric | ours (mean ± std, n) | paper | tolerance | verdict |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in records:
        paper = r["published"] or {}
        std = "—" if r["std"] is None else f"{r['std']:.2f}"
        n = f"n={r['seeds']}" + ("" if r["seeds"] == r["runs"] else f" of {r['runs']}")
        ours = f"— ({n})" if r["mean"] is None else f"{r['mean']:.2f} ± {std} ({n})"
        value, tol = paper.get("value"), paper.get("tolerance")
        cells = [r["protocol"], r["method"], r["metric"], ours, "—" if value is None else f"{value:.2f}",
                 "—" if tol is None else f"±{tol:g}", r["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tally(records: list[dict]) -> str:
    """How many published values were reproduced, of those judged, and how many of them are unverified."""
    published = [r for r in records if r["verdict"] != "—"]
    judged_ = [r for r in published if r["mean"] is not None]
    hits = sum(r["verdict"].startswith("reproduced") for r in judged_)
    unverified = sum(r["verdict"].endswith("(unverified)") for r in judged_)
    return (f"reproduced {hits} of {len(judged_)} published values ({unverified} of them unverified against the "
            f"paper; {len(published) - len(judged_)} not judged: null in every seed)")


def seed_list(text: str) -> list[int]:
    return [int(s) for s in text.split(",")]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocols", nargs="+", choices=sorted(PROTOCOLS), default=list(PROTOCOLS))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2], help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="preset",
                        help="preset: the presets' cosine schedule; authors: MultiStepLR at 91/136 for M and M_g")
    parser.add_argument("--out", type=Path, default=Path("outputs/reproduce"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, run: RunFn = run_one) -> str:
    args = parse(argv)
    found = collect(args.protocols, args.methods, args.seeds, [*SCHEDULES[args.schedule], *args.overrides],
                    args.out, run)
    data = json.loads(PUBLISHED.read_text())
    records = judged(found, data["values"])
    text = (f"{table(records)}\n\n{tally(records)}; seeds {args.seeds}, schedule {args.schedule}\n"
            f"Paper values: {data['source']}\nTolerances: {data['tolerance_note']}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.txt").write_text(text)  # Markdown
    (args.out / "summary.json").write_text(json.dumps({"seeds": args.seeds, "schedule": args.schedule,
                                                       "records": records}, indent=1))
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
