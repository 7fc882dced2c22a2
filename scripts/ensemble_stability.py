"""How many shadow models U-LiRA and KLoM need for a stable number (docs/metrics.md §12, §11).

    python scripts/ensemble_stability.py [--sizes 8 16 32 64] [--draws 3] [overrides of train.py ...]

For each draw (``metric.ensemble.seed`` = 0, 1, …) the script trains the largest N of shadow models once (members of
a draw are nested: the first N of the 64 are the N a run with ``metric.ensemble.size=N`` uses), unlearns each with
the configured method, and scores U-LiRA on D_f with the first N of them; the same for KLoM on D_f with the first N
originals, unlearned models and golds (one draw: the seeds are fixed). Printed: per N, the mean and spread over
draws of U-LiRA's balanced accuracy and TPR at 1% FPR, and KLoM's mean and 95th percentile with its floor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[8, 16, 32, 64])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="stage cache (default: a temporary one)")
    parser.add_argument("overrides", nargs="*", help="train.py overrides (default: the digits MLP, finetune)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        rows = measure(args.sizes, args.draws, args.cache or Path(name) / "cache", Path(name), args.overrides)
    print("| N | U-LiRA accuracy (mean ± std over draws) | TPR at 1% FPR | KLoM D_f mean / p95 | gold floor mean |")
    print("|---:|---|---|---|---|")
    for n, row in rows.items():
        print(f"| {n} | {row['acc']} | {row['tpr']} | {row['klom']} | {row['floor']} |")


def measure(sizes: list[int], draws: int, cache_dir: Path, tmp: Path, overrides: list[str]) -> dict[int, dict]:
    import numpy as np
    import torch
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from mu_lightning.cache import StageCache
    from mu_lightning.data.shadows import shadow_forget, view
    from mu_lightning.metrics import klom as k
    from mu_lightning.metrics import ulira as u
    from mu_lightning.pipeline import _build_model, _shapes, build_data, quiet_lightning, run_ensembles
    from mu_lightning.stages.ensemble import margins

    quiet_lightning()
    torch.set_num_threads(1)
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", "callbacks=none", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / "run")
        del cfg.hydra
    data = build_data(cfg)
    ens = run_ensembles(cfg, StageCache(cache_dir, shapes=_shapes(_build_model(cfg))))
    top, seed = max(sizes), int(cfg.seed)
    train, target = data.ids["train"], data.ids["forget"]
    x, y = data.tensors("forget")
    per_draw = []
    for draw in range(draws):
        masks, originals = ens.shadows(data, top, draw, seed)
        forgets = [shadow_forget(train, m, target, len(target), draw * 100_003 + i) for i, m in enumerate(masks)]
        unlearned = [ens.unlearn(view(data, train=train[m], forget=f), model, seed + i)
                     for i, (m, f, model) in enumerate(zip(masks, forgets, originals, strict=True))]
        phi = margins(unlearned, x, y).numpy()
        included = np.stack([np.isin(target.numpy(), train[m].numpy()) for m in masks])
        positive = np.stack([np.isin(target.numpy(), f.numpy()) for f in forgets])
        per_draw.append({n: attack(u, phi[:n], positive[:n], ~included[:n]) for n in sizes})
    originals = ens.originals(data, [seed + i for i in range(top)])
    golds = ens.golds(data, [seed + i for i in range(2 * top)])
    unlearned = [ens.unlearn(data, m, seed + i) for i, m in enumerate(originals)]
    g, un = margins(golds, x, y).numpy(), margins(unlearned, x, y).numpy()
    rows = {}
    for n in sizes:
        accs = [d[n]["acc"] for d in per_draw]
        tprs = [d[n]["tpr"] for d in per_draw]
        kl = k.tail(k.klom(g[:n], un[:n]))
        floor = k.tail(k.klom(g[:n], g[top:top + n]))
        rows[n] = {"acc": spread(accs), "tpr": spread(tprs), "klom": f"{kl['']:.3f} / {kl['_p95']:.3f}",
                   "floor": f"{floor['']:.3f}"}
    return rows


def attack(u, phi, positive, negative) -> dict[str, float]:
    import numpy as np

    llr, _ = u.scores(phi, positive, negative)
    acc = u.per_example(llr, positive, negative)
    return {"acc": float(np.nanmean(acc)) if (~np.isnan(acc)).any() else float("nan"),
            "tpr": u.pooled(llr, positive, negative)["tpr_0.01"]}


def spread(values: list[float]) -> str:
    ok = [v for v in values if v == v]
    if not ok:
        return "undefined (too few shadows per Gaussian)"
    return f"{statistics.fmean(ok):.4f} ± {statistics.stdev(ok):.4f}" if len(ok) > 1 else f"{ok[0]:.4f}"


if __name__ == "__main__":
    main()
