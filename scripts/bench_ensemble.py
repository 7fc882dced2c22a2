"""Section 9 of scripts/benchmark.py: the ensemble engine (mu_lightning/stages/ensemble.py) against stages alone.

    python scripts/benchmark.py --only 9        # or: python scripts/bench_ensemble.py [--members 32]

32 gold models of the default digits-MLP recipe (seeds 0-31, on D_r of the default random 10% request), trained
once as 32 one-at-a-time gold stages (``pipeline.trained_model``: Trainer, stage, FLOP count, cache entry, as a
sweep trains them) and once together (``Ensembles.golds``), each into an empty stage cache, in the order
alone, together, together, alone, so that load drifting over the run weighs on both sides alike; the same torch
thread count on both sides, once with one thread (what the default thread policy gives a digits model: every side
step is below its 10 GFLOP crossover) and once with every core of the machine. Reported: both wall times (medians
of the two rounds), the speed-up, each set's test accuracy (mean ± std over members), the largest per-member
accuracy difference and the largest weight difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 5.0  # issue #23: at least 5× faster in wall time


def ensemble_speedup(tmp: Path, members: int = 32, threads: int = 1) -> list[dict]:
    """Section 9: ``members`` digits-MLP golds trained together against as many one-at-a-time gold stages."""
    import torch
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from mu_lightning.cache import StageCache
    from mu_lightning.pipeline import build_data, quiet_lightning, run_ensembles, trained_model

    quiet_lightning()
    torch.set_num_threads(threads)
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", "callbacks=none"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # the paths interpolate Hydra's run directory
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / "ensemble-run")
        del cfg.hydra
    data = build_data(cfg)
    seeds = list(range(members))
    x, y = data.tensors("test")

    def alone(cache_dir: Path) -> tuple[float, list]:
        t0 = time.perf_counter()
        models = [trained_model(cfg, data, StageCache(cache_dir), "gold", s).model for s in seeds]
        return time.perf_counter() - t0, models

    def together(cache_dir: Path) -> tuple[float, list]:
        t0 = time.perf_counter()
        models = run_ensembles(cfg, StageCache(cache_dir)).golds(data, seeds)
        return time.perf_counter() - t0, models

    a1, seq = alone(tmp / "ens-alone-1")
    t1, tog = together(tmp / "ens-together-1")
    t2, _ = together(tmp / "ens-together-2")
    a2, _ = alone(tmp / "ens-alone-2")
    seq_s, tog_s = statistics.median([a1, a2]), statistics.median([t1, t2])

    def acc(model) -> float:
        with torch.no_grad():
            return (model.eval()(x).argmax(1) == y).float().mean().item()

    acc_seq, acc_tog = [acc(m) for m in seq], [acc(m) for m in tog]
    worst_acc = max(abs(a - b) for a, b in zip(acc_seq, acc_tog, strict=True))
    worst_w = max((ms.state_dict()[k] - t).abs().max().item() for ms, mt in zip(seq, tog, strict=True)
                  for k, t in mt.state_dict().items())
    speedup = seq_s / tog_s
    fmt = lambda v: f"{statistics.fmean(v):.4f} ± {statistics.stdev(v):.4f}"  # noqa: E731
    return [
        {"section": 9, "measure": f"{members} digits-MLP golds together: speed-up over {members} stages alone, "
                                  f"{threads} torch thread{'s' if threads > 1 else ''} each side",
         "value": speedup, "unit": "×", "target": f"≥ {TARGET:g}", "ok": speedup >= TARGET,
         "detail": {"alone_s": [a1, a2], "together_s": [t1, t2]}},
        {"section": 9, "measure": f"of which: {members} stages alone (median of 2)", "value": seq_s, "unit": "s",
         "target": "", "ok": None},
        {"section": 9, "measure": f"of which: {members} members together (median of 2)", "value": tog_s, "unit": "s",
         "target": "", "ok": None},
        {"section": 9, "measure": f"test accuracy, alone / together (mean ± std over {members})",
         "value": f"{fmt(acc_seq)} / {fmt(acc_tog)}", "unit": "", "target": "same distribution", "ok": None},
        {"section": 9, "measure": "largest per-member test-accuracy difference; largest weight difference",
         "value": f"{worst_acc:.4f}; {worst_w:.2e}", "unit": "", "target": "≤ 1 sample; float tolerance",
         "ok": worst_acc <= 1 / len(y) + 1e-9},
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        rows = [row for threads in sorted({1, os.cpu_count() or 1})
                for row in ensemble_speedup(Path(name) / str(threads), args.members, threads)]
        for row in rows:
            value = f"{row['value']:.2f}" if isinstance(row["value"], float) else row["value"]
            print(f"| {row['measure']} | {value} {row['unit']} | {row['target']} |")
