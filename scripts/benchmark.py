"""Performance benchmark: every speed target of the project, measured in one run and printed as a table.

    python scripts/benchmark.py                 # all sections, ~25 minutes on 2 cores (6-8: ~12 of them)
    python scripts/benchmark.py --only 1 2      # some sections
    python scripts/benchmark.py --json bench.json

Sections: 1 framework overhead (Lightning stage vs a plain PyTorch loop doing the same work), 2 end-to-end wall time
of `python train.py`, 3 sweep cost (originals/golds trained, cache-hit time), 4 unlearning efficiency (FLOP
speed-up over gold retraining, then the comparable wall-clock speed-up, and Avg. Gap; every unlearner, class-wise and
random 10%), 5 evaluation cost (fast-tier metrics as a share of stage time); threads and load (scripts/bench_load.py):
6 where a second intra-op thread starts to pay (model × batch, idle and beside a CPU-burning process), 7 the default
`python train.py` beside a CPU-burning process against alone, and against a plain PyTorch script in both conditions,
8 training samples per second of each stage on this machine's device; 9 the ensemble engine (scripts/bench_ensemble.py):
32 digits-MLP golds trained together against 32 gold stages alone. Ratios are medians over interleaved pairs or
rounds, so machine load affects both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_ensemble  # noqa: E402 - section 9, after the path is set
import bench_load  # noqa: E402 - sections 6-8, after the path is set


def overhead(repeats: int) -> list[dict]:
    """Section 1: the ClassifierModule stage (Trainer built from conf/trainer/cpu.yaml) against a plain loop."""
    import torch
    from omegaconf import OmegaConf

    from mu_lightning.data.sources import digits, synthetic
    from mu_lightning.models import CNN, MLP
    from mu_lightning.pipeline import quiet_lightning

    quiet_lightning()
    warnings.filterwarnings("ignore")
    trainer_kwargs = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/trainer/cpu.yaml"))
    trainer_kwargs["enable_progress_bar"] = False  # as the pipeline runs when no terminal watches (logs, sweeps)
    d, s = digits(), synthetic(num_samples=1024, input_shape=(1, 28, 28))
    cases = [
        ("digits MLP", partial(MLP, [1, 8, 8], 10), d.x[:1294], d.y[:1294], 20, 1.3),
        ("28×28 CNN", partial(CNN, [1, 28, 28], 10), s.x, s.y, 4, 1.05),
    ]
    sgd = partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
    with_lightning = partial(_fit_with_lightning, trainer_kwargs, sgd)
    plain = partial(_fit_plain, sgd)
    rows = []
    for name, make, x, y, epochs, target in cases:
        with_lightning(make, x, y, 1), plain(make, x, y, 1)  # warm-up: lazy imports, allocator
        pairs = [(with_lightning(make, x, y, epochs), plain(make, x, y, epochs)) for _ in range(repeats)]
        ratio = statistics.median(a / b for a, b in pairs)
        steps = epochs * -(-len(x) // 64)
        rows.append({"section": 1, "measure": f"overhead, {name} ({steps} steps): Lightning / plain loop",
                     "value": ratio, "unit": "×", "target": f"≤ {target}", "ok": ratio <= target,
                     "detail": {"lightning_s": statistics.median(a for a, _ in pairs),
                                "plain_s": statistics.median(b for _, b in pairs), "pairs": pairs}})
    return rows


def _fit_with_lightning(trainer_kwargs: dict, sgd, make, x, y, epochs: int) -> float:
    """Seconds to train ``make()`` on ``(x, y)`` as a ClassifierModule stage, batches of 64."""
    import lightning as L

    from mu_lightning.data.batches import TensorBatches
    from mu_lightning.stages import ClassifierModule

    L.seed_everything(0, verbose=False)
    t0 = time.perf_counter()
    module = ClassifierModule(make(), epochs=epochs, batch_size=64, optimizer=sgd)
    L.Trainer(**trainer_kwargs, max_epochs=epochs, logger=False).fit(
        module, train_dataloaders=module.chunks(TensorBatches(x, y, 64, shuffle=True, seed=0)))
    return time.perf_counter() - t0


def _fit_plain(sgd, make, x, y, epochs: int) -> float:
    """Seconds to train ``make()`` on ``(x, y)`` with a plain PyTorch loop over the same batches."""
    import lightning as L
    import torch.nn.functional as F

    from mu_lightning.data.batches import TensorBatches

    L.seed_everything(0, verbose=False)
    t0 = time.perf_counter()
    model = make()
    opt = sgd(model.parameters())
    batches = TensorBatches(x, y, 64, shuffle=True, seed=0)
    for _ in range(epochs):
        for xb, yb in batches:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    return time.perf_counter() - t0


def train(*args: str, cwd: Path = ROOT) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0, out


def end_to_end(tmp: Path) -> list[dict]:
    """Section 2: `python train.py` as a user runs it: cold (trains everything) and warm (stage cache hits)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import mu_lightning.pipeline"], cwd=ROOT, check=True)
    imports = time.perf_counter() - t0
    cold, _ = train(f"paths.cache_dir={tmp / 'e2e-cache'}", f"hydra.run.dir={tmp / 'e2e-cold'}")
    warm, _ = train(f"paths.cache_dir={tmp / 'e2e-cache'}", f"hydra.run.dir={tmp / 'e2e-warm'}")
    return [
        {"section": 2, "measure": "`python train.py`, empty stage cache", "value": cold, "unit": "s",
         "target": "≤ 20", "ok": cold <= 20},
        {"section": 2, "measure": "`python train.py`, original and gold cached", "value": warm, "unit": "s",
         "target": "", "ok": None},
        {"section": 2, "measure": "of which: importing the pipeline", "value": imports, "unit": "s", "target": "",
         "ok": None},
    ]


def sweep(tmp: Path, *args: str, name: str) -> list[dict]:
    out_dir = tmp / name
    train("-m", *args, "logger=none", f"paths.cache_dir={tmp / (name + '-cache')}", f"hydra.sweep.dir={out_dir}")
    return [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/results.json"))]


def sweep_cost(tmp: Path) -> list[dict]:
    """Section 3: 4 unlearners × 2 seeds must train 2 originals and 2 golds; each cache hit should be cheap."""
    t0 = time.perf_counter()
    results = sweep(tmp, "unlearner=none,finetune,gradient_ascent,random_label", "seed=0,1", name="sweep")
    wall = time.perf_counter() - t0
    trained = {s: sum(not r["stages"][s]["cache_hit"] for r in results) for s in ("original", "gold")}
    hits = [r["seconds"][s] for r in results for s in ("original", "gold") if r["stages"][s]["cache_hit"]]
    return [
        {"section": 3, "measure": f"sweep of {len(results)} jobs: originals / golds trained",
         "value": f"{trained['original']} / {trained['gold']}", "unit": "", "target": "2 / 2",
         "ok": trained == {"original": 2, "gold": 2}},
        {"section": 3, "measure": f"slowest of {len(hits)} cache hits", "value": max(hits), "unit": "s",
         "target": "≤ 1", "ok": max(hits) <= 1},
        {"section": 3, "measure": "sweep wall time", "value": wall, "unit": "s", "target": "", "ok": None},
    ]


def efficiency(tmp: Path) -> tuple[list[dict], list[dict]]:
    """Sections 4 and 5: every unlearner on digits, class-wise and random 10%."""
    names = sorted(p.stem for p in (ROOT / "conf/unlearner").glob("*.yaml") if p.stem != "none")
    table, eval_share = [], []
    for setting, args in (("random 10%", ["forget=random"]), ("class 3", ["forget=class", "forget.classes=[3]"])):
        usable = [n for n in names if setting.startswith("class") or n != "unsir"]  # UNSIR: whole classes only
        results = sweep(tmp, f"unlearner={','.join(usable)}", *args, name=f"eff-{setting[:5].strip()}")
        for r in results:
            m, st = r["metrics"], r["stages"]
            table.append({"forget": setting, "unlearner": r["config"]["unlearner"]["_target_"].rsplit(".", 1)[-1],
                          "flop_speedup": m.get("unlearn/flop_speedup"), "speedup": m.get("unlearn/speedup"),
                          "avg_gap": m.get("unlearn/avg_gap"),
                          "unlearn_s": r["seconds"]["unlearn"], "gold_fit_s": st["gold"]["fit_seconds"],
                          "forget_acc": m["unlearn/forget_acc"], "retain_acc": m["unlearn/retain_acc"],
                          "test_acc": m["unlearn/test_acc"]})
            stage_s = st["original"]["fit_seconds"] + st["gold"]["fit_seconds"] + r["seconds"]["unlearn"]
            eval_share.append(r["seconds"]["evaluate"] / stage_s)
    # FLOPs, not seconds: the same on any machine and under any load (docs/metrics.md §5)
    good = [t for t in table if t["flop_speedup"] and t["avg_gap"] is not None and t["flop_speedup"] >= 10
            and t["avg_gap"] <= 2]  # avg_gap is in points
    best = max(good or table, key=lambda t: t["flop_speedup"] or 0)
    rows = [{"section": 4, "measure": "methods ≥ 10× fewer FLOPs than retraining with Avg. Gap ≤ 2 points",
             "value": len(good), "unit": "", "target": "≥ 1", "ok": bool(good),
             "detail": f"e.g. {best['unlearner']} ({best['forget']}): {best['flop_speedup']:.1f}× fewer FLOPs, "
                       f"Avg. Gap {best['avg_gap']:.2f}"},
            {"section": 5, "measure": "fast-tier evaluation / stage time (median over jobs)",
             "value": 100 * statistics.median(eval_share), "unit": "%", "target": "≤ 10",
             "ok": statistics.median(eval_share) <= 0.10}]
    return rows, table


def markdown(rows: list[dict]) -> str:
    lines = ["| § | measure | value | target | met |", "|---|---|---:|---|---|"]
    for r in rows:
        value = f"{r['value']:.2f}" if isinstance(r["value"], float) else str(r["value"])
        met = {True: "yes", False: "**no**", None: ""}[r["ok"]]
        lines.append(f"| {r['section']} | {r['measure']} | {value} {r['unit']} | {r['target']} | {met} |")
    return "\n".join(lines)


def method_table(table: list[dict]) -> str:
    lines = ["| forget | unlearner | forget acc | retain acc | test acc | FLOP speed-up | speed-up | unlearn s | "
             "Avg. Gap |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t in sorted(table, key=lambda t: (t["forget"], t["unlearner"])):
        gap = f"{t['avg_gap']:.2f}" if t["avg_gap"] is not None else "–"
        flops, speed = (f"{t[k]:.1f}×" if t[k] else "–" for k in ("flop_speedup", "speedup"))
        lines.append(f"| {t['forget']} | {t['unlearner']} | {t['forget_acc']:.3f} | {t['retain_acc']:.3f} | "
                     f"{t['test_acc']:.3f} | {flops} | {speed} | {t['unlearn_s']:.2f} | {gap} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=int, nargs="*", default=[1, 2, 3, 4, 6, 7, 8, 9],
                        help="sections (4 includes 5)")
    parser.add_argument("--repeats", type=int, default=5, help="pairs per overhead ratio (at least 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of sections 6 and 7")
    parser.add_argument("--throughput", nargs="*", default=None,
                        help="train.py overrides of section 8 (default: the default run, and trainer=gpu if a GPU is "
                             "visible)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    args = parser.parse_args()
    rows, table, loaded = [], [], {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if 1 in args.only:
            rows += overhead(max(args.repeats, 5))
        if 2 in args.only:
            rows += end_to_end(tmp)
        if 3 in args.only:
            rows += sweep_cost(tmp)
        if 4 in args.only:
            more, table = efficiency(tmp)
            rows += more
        loaded = threads_and_load(args, tmp, rows)
        if 9 in args.only:
            for threads in sorted({1, os.cpu_count() or 1}):  # the default policy's one thread, and every core
                rows += bench_ensemble.ensemble_speedup(tmp / f"threads{threads}", threads=threads)
    print(markdown(rows))
    if table:
        print("\nUnlearning efficiency on digits (MLP), one seed:\n")
        print(method_table(table))
    if loaded.get("crossover"):
        print(f"\nOne training step, median ms, 1 and 2 torch threads ({os.cpu_count()} cores):\n")
        print(bench_load.crossover_table(loaded["crossover"]))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "methods": table, **loaded}, indent=1, default=str))


def threads_and_load(args: argparse.Namespace, tmp: Path, rows: list[dict]) -> dict:
    """Sections 6–8 (scripts/bench_load.py), appended to ``rows``; their raw numbers."""
    raw: dict = {"load_average_before": os.getloadavg()}
    if 6 in args.only:
        more, raw["crossover"] = bench_load.thread_crossover(max(args.rounds, 3))
        rows += more
    if 7 in args.only:
        more, raw["default_under_load"] = bench_load.default_under_load(max(args.rounds, 3))
        rows += more
    if 8 in args.only:
        import torch

        runs = [args.throughput] if args.throughput is not None else [[]] + (
            [["trainer=gpu"]] if torch.cuda.is_available() else [])
        for overrides in runs:
            rows += bench_load.samples_per_second(tmp, *overrides)
    raw["load_average_after"] = os.getloadavg()
    return raw


if __name__ == "__main__":
    main()
