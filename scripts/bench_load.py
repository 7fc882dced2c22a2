"""Benchmark sections on threads and load (scripts/benchmark.py §6–§8), kept apart from the other sections.

§6 thread crossover: one training step of several model × batch sizes, timed with 1 and 2 torch threads, on the
   machine as it is and beside a CPU-burning process: where do intra-op threads start to pay?
§7 the default command (`python train.py`, nothing cached) alone and beside a CPU-burning process, and the same work
   as a plain PyTorch script (torch's default threads), in both conditions: the slowdown under load, and the
   default run against the plain loop.
§8 training samples per second of each stage of the default run, on whatever device the run chose.

Every CPU-burning process is a bounded busy loop that stops by itself (``BURN_SECONDS``) and is also stopped when
its measurement ends. Ratios are medians over interleaved rounds, so a change in the machine's load hits both sides.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BURN_SECONDS = 300  # the longest any burner runs, even if whoever started it dies
SLOWDOWN_TARGET = 1.3  # default run beside one CPU-burning process / alone


@contextmanager
def burner(cores: int = 1):
    """``cores`` CPU-burning processes for the duration of the block (each stops by itself after BURN_SECONDS)."""
    code = f"import time\nend = time.monotonic() + {BURN_SECONDS}\nwhile time.monotonic() < end:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(cores)]
    time.sleep(0.2)  # let them reach their loops
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def crossover_cases():
    """(name, model factory, input shape, batch size): the digits MLP, a wider MLP and the CNN at several batch
    sizes, from 0.007 to 24 GFLOP a training step."""
    from mu_lightning.models import CNN, MLP

    digits, wide = partial(MLP, [1, 8, 8], 10), partial(MLP, [1, 28, 28], 10, hidden=[1024, 1024])
    cnn = partial(CNN, [1, 28, 28], 10)
    return [("digits MLP", digits, (1, 8, 8), 64), ("digits MLP", digits, (1, 8, 8), 256),
            ("wide MLP 784-1024-1024", wide, (1, 28, 28), 64), ("wide MLP 784-1024-1024", wide, (1, 28, 28), 256),
            ("CNN 28×28", cnn, (1, 28, 28), 64), ("CNN 28×28", cnn, (1, 28, 28), 256),
            ("CNN 28×28", cnn, (1, 28, 28), 1024)]  # ~24 GFLOP a step: seconds each on 2 cores


def _step_seconds(model, opt, x, y, seconds: float) -> float:
    """Median seconds of one SGD step over chunks of steps run for about ``seconds`` (after one warm-up chunk)."""
    import torch.nn.functional as F

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    step()
    per = max(time.perf_counter() - t0, 1e-5)
    chunk = max(1, int(0.05 / per))
    rates, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(rates) < 3:
        t0 = time.perf_counter()
        for _ in range(chunk):
            step()
        rates.append((time.perf_counter() - t0) / chunk)
    return statistics.median(rates)


def thread_crossover(rounds: int = 5, seconds: float = 0.6) -> tuple[list[dict], list[dict]]:
    """§6: per case, the median step time with 1 and 2 threads, idle and beside one burner (rounds interleaved)."""
    import torch

    from mu_lightning.runtime.threads import CROSSOVER_FLOPS, training_step_flops

    torch.manual_seed(0)
    cases = []
    for name, make, shape, batch in crossover_cases():
        model = make()
        x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        flops = training_step_flops(model, shape, batch)  # the thread policy's measure of a step
        cases.append({"name": name, "batch": batch, "step_flops": flops, "run": (model, opt, x, y), "times": {}})
    before = torch.get_num_threads()
    try:
        for _ in range(rounds):
            for case in cases:
                for loaded in (False, True):
                    with burner() if loaded else _nothing():
                        for threads in (1, 2):
                            torch.set_num_threads(threads)
                            t = _step_seconds(*case["run"], seconds)
                            case["times"].setdefault((threads, loaded), []).append(t)
    finally:
        torch.set_num_threads(before)
    table = []
    for case in cases:
        med = {k: statistics.median(v) for k, v in case["times"].items()}
        table.append({"model": case["name"], "batch": case["batch"], "step_mflops": case["step_flops"] / 1e6,
                      "idle_1_ms": 1e3 * med[1, False], "idle_2_ms": 1e3 * med[2, False],
                      "loaded_1_ms": 1e3 * med[1, True], "loaded_2_ms": 1e3 * med[2, True],
                      "idle_gain": med[1, False] / med[2, False], "loaded_gain": med[1, True] / med[2, True]})
    rows = [{"section": 6, "measure": f"{t['model']}, batch {t['batch']} ({t['step_mflops']:.2f} MFLOP/step): "
             "1-thread / 2-thread step time, idle | loaded",
             "value": f"{t['idle_gain']:.2f} | {t['loaded_gain']:.2f}", "unit": "×",
             "target": "> 1 above the crossover" if t["step_mflops"] * 1e6 >= CROSSOVER_FLOPS else "",
             "ok": None} for t in table]
    return rows, table


@contextmanager
def _nothing():
    yield


PLAIN = r"""
import sys, time
t_start = time.perf_counter()
import torch, torch.nn as nn, torch.nn.functional as F
from sklearn.datasets import load_digits
d = load_digits()
x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
y = torch.tensor(d.target)
g = torch.Generator().manual_seed(0)
perm = torch.randperm(len(y), generator=g)
train = perm[: int(0.72 * len(y))]
retain = train[int(0.1 * len(train)):]
def fit(ids, epochs, lr, model=None):
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                   nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        order = ids[torch.randperm(len(ids), generator=g)]
        for s in range(0, len(order), 64):
            b = order[s:s + 64]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
        sched.step()
    return model
t0 = time.perf_counter()
original = fit(train, 20, 0.05)
fit(retain, 20, 0.05)
fit(retain, 5, 0.01, original)
print(time.perf_counter() - t0, time.perf_counter() - t_start)
"""


def _default_run(tmp: Path, n: int) -> dict:
    """`python train.py` with nothing cached: wall seconds, the stages' own seconds, threads and their reason."""
    out = tmp / f"run{n}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "train.py", "cache=false", "logger=none", "extras.print_config=false",
                    f"hydra.run.dir={out}"], cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    res = json.loads((out / "results.json").read_text())
    fit = sum(res["metrics"][f"{m}/train_seconds"] for m in ("original", "gold", "unlearn"))
    return {"wall": wall, "fit": fit, "threads": res["threads"], "policy": res.get("threads_policy"),
            "stages": {s: res["stages"][s] for s in ("original", "gold", "unlearn")}}


def _plain_run() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PLAIN], check=True, capture_output=True, text=True, env=env)
    fit, _ = (float(v) for v in out.stdout.split())
    return {"wall": time.perf_counter() - t0, "fit": fit}


def default_under_load(rounds: int = 3) -> tuple[list[dict], dict]:
    """§7: interleaved rounds of (default run, plain script) alone and beside one burner; medians and ratios."""
    runs = {(kind, loaded): [] for kind in ("default", "plain") for loaded in (False, True)}
    with tempfile.TemporaryDirectory() as name:
        for r in range(rounds):
            for loaded in (False, True):
                with burner() if loaded else _nothing():
                    runs["default", loaded].append(_default_run(Path(name), 2 * r + loaded))
                with burner() if loaded else _nothing():
                    runs["plain", loaded].append(_plain_run())
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall", "fit")} for k, v in runs.items()}
    slowdown = med["default", True]["wall"] / med["default", False]["wall"]
    first = runs["default", False][0]
    rows = [{"section": 7, "measure": f"`python train.py` beside a CPU-burning process / alone (wall; threads "
             f"{first['threads']}: {first['policy']})", "value": slowdown, "unit": "×",
             "target": f"≤ {SLOWDOWN_TARGET}", "ok": slowdown <= SLOWDOWN_TARGET}]
    for loaded in (False, True):
        cond = "beside a CPU-burning process" if loaded else "alone"
        d, p = med["default", loaded], med["plain", loaded]
        rows.append({"section": 7, "measure": f"{cond}: default run / plain PyTorch script (torch's default "
                     f"threads), training seconds ({d['fit']:.2f} / {p['fit']:.2f} s)",
                     "value": d["fit"] / p["fit"], "unit": "×", "target": "", "ok": None})
        rows.append({"section": 7, "measure": f"{cond}: default run / plain PyTorch script, wall "
                     f"({d['wall']:.1f} / {p['wall']:.1f} s, imports included)",
                     "value": d["wall"] / p["wall"], "unit": "×", "target": "", "ok": None})
    return rows, {"medians": {f"{k[0]}_{'loaded' if k[1] else 'alone'}": v for k, v in med.items()},
                  "runs": {f"{k[0]}_{'loaded' if k[1] else 'alone'}": v for k, v in runs.items()}}


def samples_per_second(tmp: Path, *args: str) -> list[dict]:
    """§8: training samples per second of each trained stage of one `python train.py` run (nothing cached)."""
    out = tmp / "throughput"
    subprocess.run([sys.executable, "train.py", "cache=false", "logger=none", "extras.print_config=false",
                    f"hydra.run.dir={out}", *args], cwd=ROOT, check=True, capture_output=True)
    res = json.loads((out / "results.json").read_text())
    rows = []
    for stage in ("original", "gold", "unlearn"):
        facts, seconds = res["stages"][stage], res["metrics"][f"{stage}/train_seconds"]
        grad_evals = res["metrics"].get(f"{stage}/grad_evals")
        if not seconds or not grad_evals:
            continue
        device = (facts.get("hardware") or {}).get("device", "?")
        rows.append({"section": 8, "measure": f"{stage}: training samples per second ({device}, "
                     f"threads {res['threads']}{', ' + ' '.join(args) if args else ''})",
                     "value": grad_evals / seconds, "unit": "/s", "target": "", "ok": None})
    return rows


def crossover_table(table: list[dict]) -> str:
    lines = ["| model | batch | MFLOP/step | idle 1 thr ms | idle 2 thr ms | loaded 1 thr ms | loaded 2 thr ms | "
             "2 threads pay, idle | loaded |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in table:
        lines.append(f"| {t['model']} | {t['batch']} | {t['step_mflops']:.2f} | {t['idle_1_ms']:.3f} | "
                     f"{t['idle_2_ms']:.3f} | {t['loaded_1_ms']:.3f} | {t['loaded_2_ms']:.3f} | "
                     f"{t['idle_gain']:.2f}× | {t['loaded_gain']:.2f}× |")
    return "\n".join(lines)
