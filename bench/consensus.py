"""Benchmark the aggregators: real crowd data, simulated annotator pools, Dawid–Skene at 1M answers.

Run from the repository root:

    .venv/bin/python bench/consensus.py                # everything (a few minutes on 2 cores)
    .venv/bin/python bench/consensus.py --quick        # 10k/100k simulated items only, 3 timing runs

Prints plain-text tables; docs/benchmarks.md holds a copy of the output.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mltasks.core.answers import AnswerTable  # noqa: E402
from mltasks.core.consensus import MACE, DawidSkene, MajorityVote, OneCoinDawidSkene  # noqa: E402
from mltasks.datasets import crowd_root, load_crowd  # noqa: E402

METHODS: dict[str, Callable[[], MajorityVote]] = {
    "majority vote": MajorityVote,
    "one-coin DS": OneCoinDawidSkene,
    "Dawid-Skene": DawidSkene,
    "DS smoothing=0": lambda: DawidSkene(smoothing=0.0),
    "MACE": MACE,
}


def timed_fit(factory: Callable[[], MajorityVote], table: AnswerTable) -> tuple[MajorityVote, float]:
    t0 = time.perf_counter()
    model = factory().fit(table)
    return model, time.perf_counter() - t0


def cpu_timed_fit(factory: Callable[[], MajorityVote], table: AnswerTable) -> tuple[MajorityVote, float, float]:
    """(model, wall seconds, CPU seconds of this process). On a shared, overloaded machine the CPU
    time is the better estimate of the wall time an idle machine would show."""
    c0, t0 = time.process_time(), time.perf_counter()
    model = factory().fit(table)
    return model, time.perf_counter() - t0, time.process_time() - c0


def section_real() -> None:
    print("== (a) real crowd data: accuracy vs truth (runtime) ==")
    print(f"{'method':<16}" + "".join(f"{n:>24}" for n in ("D_Product", "S_Dog")))
    data = {name: load_crowd(name) for name in ("d_product", "s_dog")}
    if any(v is None for v in data.values()):
        print(f"  skipped: crowd data not found under {crowd_root()}")
        return
    for label, factory in METHODS.items():
        cells = []
        for loaded in data.values():
            assert loaded is not None
            table, items, truth = loaded
            model, dt = timed_fit(factory, table)
            acc = float((model.labels_[items] == truth).mean())
            cells.append(f"{acc:.4f} ({dt * 1000:6.1f} ms, {model.n_iter_:>3} it)")
        print(f"{label:<16}" + "".join(f"{c:>24}" for c in cells))
    print("  crowd-kit 1.4.2 published: MV 0.897/0.812, one-coin DS 0.908/-, DS 0.940/0.843, MACE 0.929/0.835")
    print()


def noisy(k: int, accuracy: float) -> np.ndarray:
    m = np.full((k, k), (1 - accuracy) / (k - 1))
    np.fill_diagonal(m, accuracy)
    return m


def over_caller(k: int, accuracy: float, target: int, share: float) -> np.ndarray:
    """Right with probability ``accuracy``; of the errors, ``share`` go to ``target``."""
    m = noisy(k, accuracy)
    for j in range(k):
        if j == target:
            continue
        rest = 1 - accuracy
        m[j] = rest * (1 - share) / (k - 2) if k > 2 else 0.0
        m[j, j] = accuracy
        m[j, target] = rest * share if k > 2 else rest
    return m


def pool_mixed(k: int) -> tuple[list[str], np.ndarray]:
    """7 readers: two good ones with a class confusion, two who over-call class 0, a weak one,
    a spammer (uniform random) and an adversary (always a wrong class)."""
    good_a = noisy(k, 0.9)
    good_b = noisy(k, 0.85)
    good_b[1, 1], good_b[1, 2] = 0.7, good_b[1, 2] + 0.15  # confuses class 1 with 2
    adversary = np.roll(np.eye(k), 1, axis=1)
    names = ["good 0.90", "good 0.85 (1->2)", "over-calls 0", "over-calls 0", "weak 0.65", "spammer", "adversary"]
    confs = [
        good_a,
        good_b,
        over_caller(k, 0.7, 0, 0.9),
        over_caller(k, 0.75, 0, 0.9),
        noisy(k, 0.65),
        np.full((k, k), 1 / k),
        adversary,
    ]
    return names, np.stack(confs)


def simulate(
    rng: np.random.Generator, n_items: int, confusions: np.ndarray, per_item: int, priors: np.ndarray
) -> tuple[AnswerTable, np.ndarray]:
    n_a, k, _ = confusions.shape
    truth = rng.choice(k, size=n_items, p=priors)
    # per_item distinct annotators per item: the first per_item of a random permutation.
    who = np.argsort(rng.random((n_items, n_a)), axis=1)[:, :per_item].astype(np.int64)
    item = np.repeat(np.arange(n_items, dtype=np.int64), per_item)
    annotator = who.ravel()
    cum = confusions[annotator, truth[item]].cumsum(axis=1)  # (n, k)
    label = (rng.random(item.size)[:, None] > cum).sum(axis=1).astype(np.int64)
    label = np.minimum(label, k - 1)
    table = AnswerTable(item, annotator, label, n_items=n_items, n_annotators=n_a, n_classes=k)
    return table, truth


def section_simulated(sizes: list[int]) -> None:
    k = 4
    priors = np.array([0.4, 0.3, 0.2, 0.1])
    rng = np.random.default_rng(0)
    names, confs = pool_mixed(k)
    print("== (b) simulated pools: accuracy vs truth ==")
    print(f"k={k} classes, priors {priors.tolist()}")
    print("pool 'mixed': 7 readers (" + ", ".join(names) + "); 3 or 5 of them per item")
    header = f"{'pool':<26}{'items':>9}{'answers':>10}" + "".join(f"{m:>16}" for m in METHODS)
    print(header)
    cases: list[tuple[str, np.ndarray, int]] = [("mixed, 3 per item", confs, 3), ("mixed, 5 per item", confs, 5)]
    cases.append(("5 readers 0.9..0.6", np.stack([noisy(k, a) for a in (0.9, 0.8, 0.75, 0.7, 0.6)]), 3))
    cases.append(("3 similar readers 0.80", np.stack([noisy(k, 0.8), noisy(k, 0.79), noisy(k, 0.81)]), 3))
    cases.append(("3 similar readers 0.70", np.stack([noisy(k, 0.7), noisy(k, 0.7), noisy(k, 0.7)]), 3))
    for label, conf, per_item in cases:
        for n_items in sizes:
            table, truth = simulate(rng, n_items, conf, per_item, priors)
            accs = []
            for factory in METHODS.values():
                model = factory().fit(table)
                accs.append(float((model.labels_ == truth).mean()))
            row = f"{label:<26}{n_items:>9}{table.n_answers:>10}" + "".join(f"{a:>16.4f}" for a in accs)
            if label.startswith("3 similar"):
                row += f"   DS-MV {100 * (accs[2] - accs[0]):+.2f} pt"
            print(row)
    print()


def section_runtime(n_answers: int, runs: int) -> None:
    k = 4
    per_item = 3
    n_items = n_answers // per_item
    rng = np.random.default_rng(1)
    _, confs = pool_mixed(k)
    table, truth = simulate(rng, n_items, confs, per_item, np.array([0.4, 0.3, 0.2, 0.1]))
    print(f"== (c) runtime: {table.n_answers:,} answers, {n_items:,} items, 7 annotators, k={k} ==")
    for label, factory in METHODS.items():
        walls, cpus = [], []
        model = None
        for _ in range(runs):
            model, wall, cpu = cpu_timed_fit(factory, table)
            walls.append(wall)
            cpus.append(cpu)
        assert model is not None
        tracemalloc.start()
        factory().fit(table)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        acc = float((model.labels_ == truth).mean())
        print(
            f"{label:<16} wall median {statistics.median(walls):6.2f} s (min {min(walls):5.2f})  "
            f"CPU median {statistics.median(cpus):5.2f} s (min {min(cpus):5.2f})  {runs} runs, "
            f"{model.n_iter_:>3} it, peak numpy memory {peak / 2**20:4.0f} MiB, accuracy {acc:.4f}"
        )
    print(f"max RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 1M-item pools, 3 timing runs")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, {platform.machine()}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print()
    section_real()
    section_simulated([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    section_runtime(1_000_000, 3 if args.quick else 5)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
