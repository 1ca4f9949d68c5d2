"""Active-learning benchmark: simulated annotators on Animal-MNIST (or an ImageFolder directory).

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 .venv/bin/python bench/active_learning.py
    .venv/bin/python bench/active_learning.py --folder /data/my_images      # root/<class>/<image files>

What it does (everything through the product's own mltasks.core code):

1. embeds every image once with the default backbone via ``features.extract_features`` (28x28 images are
   upscaled to 224), cached in bench/out/;
2. holds out a fixed, stratified test split (never used for anything but the reported numbers);
3. for every seed, starts every strategy from the same seed set (1 label per class), grows the labeled set by
   ``--growth`` (x1.41) per round up to ``--budget`` (1,280 labels: 10, 14, 20, ..., 905, 1280) with each strategy
   (``--batch B`` for fixed batches instead), retrains the head from scratch every round (default TrainConfig), and
   records accuracy, balanced accuracy and worst-class recall on the test split;
4. random is also run on a longer budget (same x1.41 grid up to the whole pool) so that "labels random needs for
   accuracy T" is measured, not guessed; ``--validation`` reports on a split carved out of the pool instead of the
   test split (how the default strategy's design was chosen);
5. cold start: from zero labels, 1 and 2 labels per class picked by TypiClust / k-center vs at random;
6. scale: embedding throughput (product vs a bare PyTorch loop, same PNG files, decode + resize included),
   one selection round at 1M x 1280 per strategy (time, peak memory), a 100k retrain + rescore.

Prints the figures; writes curves (CSV, PNG) to bench/out/. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import csv
import resource
import statistics
import sys
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script, Python puts bench/ first on sys.path, where a sibling benchmark module could shadow the
# standard library: import from the repository root instead.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

from bench.common import OUT, cpu_setup, embed_cached  # noqa: E402

# The strategies a project can choose (Project.Strategy). TypiClust is the cold-start method; continued past the
# cold start it is available with --strategies ... typiclust (slow at large label counts: L + k clusters).
DEFAULT_STRATEGIES = (
    "random",
    "hybrid",
    "margin",
    "cluster_margin",
    "least_confidence",
    "entropy",
    "bald",
    "badge",
    "kcenter",
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", type=Path, help="ImageFolder-style root/<class>/<images> instead of Animal-MNIST")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--budget", type=int, default=1280, help="labels at the last round")
    p.add_argument(
        "--growth",
        type=float,
        default=2**0.5,
        help="labels grow by this factor per round (1 label/class x growth^r, rounded, up to --budget)",
    )
    p.add_argument("--batch", type=int, help="fixed labels per round instead of --growth")
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument(
        "--strategies",
        nargs="+",
        default=list(DEFAULT_STRATEGIES),
        help="registry names, or name:field=value,... for a variant (e.g. hybrid:min_per_class=3)",
    )
    p.add_argument(
        "--validation",
        action="store_true",
        help="design mode: carve a validation split out of the pool and report on it; the test split is unused",
    )
    p.add_argument("--mc-samples", type=int, default=20)
    p.add_argument("--scale-n", type=int, default=1_000_000, help="pool size of the selection-cost benchmark")
    p.add_argument("--skip-scale", action="store_true", help="skip the 1M / 100k / throughput measurements")
    p.add_argument("--only-scale", action="store_true", help="only the 1M / 100k / throughput measurements")
    p.add_argument("--throughput-images", type=int, default=384)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


# ------------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------------


def load_data(folder: Path | None) -> tuple[list[Any], np.ndarray, tuple[str, ...], str]:
    if folder is None:
        from mltasks.datasets import load_animal_mnist

        ds = load_animal_mnist()
        return list(ds.images), ds.labels, ds.class_names, "animal-mnist"
    classes = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir()))
    paths, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((folder / name).rglob("*")):
            if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}:
                paths.append(str(f))
                labels.append(c)
    return paths, np.asarray(labels, dtype=np.int64), classes, f"folder-{folder.name}"


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    test = np.zeros(y.size, dtype=bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        test[rng.choice(members, size=int(round(fraction * members.size)), replace=False)] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


# ------------------------------------------------------------------------------------------------------------------
# Simulation
# ------------------------------------------------------------------------------------------------------------------


def train_and_score(x_lab: np.ndarray, y_lab: np.ndarray, n_classes: int, seed: int) -> Any:
    from mltasks.core.heads import train_head

    return train_head(x_lab, y_lab, n_classes, seed=seed)


def test_metrics(result: Any, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    from mltasks.core.heads import evaluate_head

    m = evaluate_head(result, x_test, y_test)
    return {
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "worst_class_recall": m["worst_class_recall"],
    }


def strategy_get(spec: str) -> Any:
    """A registry strategy, or a variant ``name:field=value,...`` (numbers only), e.g. hybrid:min_per_class=3."""
    import dataclasses

    from mltasks.core.acquisition import strategy_get as registry_get

    name, _, fields = spec.partition(":")
    strat = registry_get(name)
    if not fields:
        return strat
    changes: dict[str, Any] = {}
    for item in fields.split(","):
        key, _, value = item.partition("=")
        changes[key] = float(value) if "." in value else int(value)
    return dataclasses.replace(strat, **changes)


def schedule(start: int, budget: int, growth: float | None, batch: int | None) -> list[int]:
    """Labeled-set sizes after each round: start, ..., budget (geometric with ``growth``, or + ``batch``)."""
    sizes = [start]
    while sizes[-1] < budget:
        nxt = sizes[-1] + batch if batch else round(start * growth ** len(sizes)) if growth else budget
        sizes.append(min(budget, max(nxt, sizes[-1] + 1)))
    return sizes


def select_round(
    strategy: str,
    k: int,
    result: Any,
    x_pool: np.ndarray,
    x_lab: np.ndarray,
    y_lab: np.ndarray,
    mc_samples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    from mltasks.core.acquisition import PoolInputs
    from mltasks.core.heads import mc_dropout_proba, penultimate_features, predict_proba

    strat = strategy_get(strategy)
    needs = strat.needs
    inputs: dict[str, Any] = {
        "labeled_embeddings": x_lab,
        "labeled_counts": np.bincount(y_lab, minlength=result.n_classes),
    }
    if "probs" in needs or strat.name == "random":
        inputs["probs"] = predict_proba(result, x_pool)
    if strat.name == "badge":
        inputs["embeddings"] = penultimate_features(result, x_pool)  # the last layer's input (BADGE's x)
    elif "embeddings" in needs:
        inputs["embeddings"] = x_pool
    if "mc_probs" in needs:
        inputs["mc_probs"] = mc_dropout_proba(result, x_pool, T=mc_samples, seed=int(rng.integers(2**31)))
    picks: np.ndarray = strat.select(k, PoolInputs(**inputs), rng=rng)
    return picks


def run_curve(
    strategy: str,
    seed_set: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    pool: np.ndarray,
    test: np.ndarray,
    n_classes: int,
    *,
    sizes: list[int],
    seed: int,
    mc_samples: int,
) -> list[dict[str, float]]:
    rng = np.random.default_rng(10_000 + seed)
    labeled = list(seed_set)
    unlabeled_mask = np.zeros(x.shape[0], dtype=bool)
    unlabeled_mask[pool] = True
    unlabeled_mask[labeled] = False
    rows = []
    for r, size in enumerate(sizes):
        lab = np.asarray(labeled)
        assert lab.size == size
        result = train_and_score(x[lab], y[lab], n_classes, seed)
        rows.append({"round": r, "n_labels": lab.size, **test_metrics(result, x[test], y[test])})
        if r == len(sizes) - 1:
            break
        pool_idx = np.flatnonzero(unlabeled_mask)
        k = sizes[r + 1] - size
        picks = pool_idx[select_round(strategy, k, result, x[pool_idx], x[lab], y[lab], mc_samples, rng)]
        unlabeled_mask[picks] = False
        labeled.extend(int(i) for i in picks)
    return rows


def labels_to_reach(curve: list[dict[str, float]], target: float, key: str = "accuracy") -> float:
    """Labels at which the curve first reaches ``target`` (linear interpolation); inf if never."""
    prev_n, prev_a = None, None
    for row in curve:
        n, a = row["n_labels"], row[key]
        if a >= target:
            if prev_n is None or prev_a is None:
                return float(n)
            return float(prev_n + (target - prev_a) / (a - prev_a) * (n - prev_n))
        prev_n, prev_a = n, a
    return float("inf")


def aulc(curve: list[dict[str, float]], key: str = "accuracy") -> float:
    n = np.array([r["n_labels"] for r in curve], dtype=float)
    a = np.array([r[key] for r in curve], dtype=float)
    return float(np.trapezoid(a, n) / (n[-1] - n[0]))


def fmt(values: list[float], pct: bool = True) -> str:
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    scale = 100 if pct else 1
    if finite.size == 0:
        return "n/a"
    text = f"{scale * finite.mean():+6.1f} ± {scale * finite.std():4.1f}"
    return text + (f" ({v.size - finite.size} seed(s) not reached)" if finite.size < v.size else "")


# ------------------------------------------------------------------------------------------------------------------
# Scale
# ------------------------------------------------------------------------------------------------------------------


THROUGHPUT_PASSES = 5


def throughput(images: list[Any], n: int) -> None:
    import torch
    from PIL import Image

    from mltasks.core.backbones import load_backbone
    from mltasks.core.features import extract_features

    png_dir = OUT / "throughput-png"
    png_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images[:n]):
        path = png_dir / f"{i:05d}.png"
        if not path.exists():
            Image.fromarray(np.asarray(img)).save(path)
        paths.append(str(path))
    model, spec = load_backbone("efficientnet_lite0")
    size = spec.input_size
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)

    def bare(chunk: list[str]) -> None:
        # The plain loop a PyTorch user would write: decode, resize, stack, normalise, forward.
        with torch.inference_mode():
            for s in range(0, len(chunk), 64):
                arrs = [
                    np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
                    for p in chunk[s : s + 64]
                ]
                x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float().div(255)
                model((x - mean) / std)

    def product(chunk: list[str]) -> None:
        extract_features(chunk, model, spec, batch_size=64, num_workers=0)

    bare(paths[:8])  # warm-up (first-call allocations, lazy init)
    product(paths[:8])
    rates: dict[str, list[float]] = {"bare": [], "product": []}
    # Interleaved full passes, the ratio taken per pass: the machine is shared, so a load spike
    # hits one pass of each side rather than one side only. Median over passes.
    for _ in range(THROUGHPUT_PASSES):
        for name, fn in (("bare", bare), ("product", product)):
            started = time.perf_counter()
            fn(paths)
            rates[name].append(len(paths) / (time.perf_counter() - started))
    ratios = [p / b for p, b in zip(rates["product"], rates["bare"], strict=True)]
    bare_rate, prod_rate = statistics.median(rates["bare"]), statistics.median(rates["product"])
    print(
        f"\nEmbedding throughput ({len(paths)} PNG files, decode + resize to {size} + forward, CPU, "
        f"median of {THROUGHPUT_PASSES} interleaved passes):"
    )
    print(f"  bare PyTorch loop : {bare_rate:6.2f} img/s   passes {' '.join(f'{r:.1f}' for r in rates['bare'])}")
    print(f"  product pipeline  : {prod_rate:6.2f} img/s   passes {' '.join(f'{r:.1f}' for r in rates['product'])}")
    print(
        f"  ratio product/bare: median {statistics.median(ratios):.3f} "
        f"(per pass {' '.join(f'{r:.3f}' for r in ratios)}; aim >= 0.90)"
    )


def scale_selection(n: int, d: int = 1280, c: int = 10, k: int = 1000, mc: int = 20) -> None:
    from mltasks.core.acquisition import STRATEGIES, select

    rng = np.random.default_rng(0)
    print(f"\nOne selection round at {n:,} x {d} float32 embeddings ({n * d * 4 / 2**30:.1f} GiB), k = {k}:")
    started = time.perf_counter()
    # Low-rank + a per-row scale: CNN embeddings are far from isotropic, and it is 10x cheaper to generate.
    x = np.empty((n, d), dtype=np.float32)
    basis = rng.standard_normal((64, d), dtype=np.float32)
    for s in range(0, n, 100_000):
        z = rng.standard_normal((min(100_000, n - s), 64), dtype=np.float32)
        x[s : s + z.shape[0]] = np.maximum(z @ basis, 0.0)
    w = rng.standard_normal((d, c), dtype=np.float32) / np.sqrt(d)
    logits = np.empty((n, c), dtype=np.float32)
    for s in range(0, n, 100_000):
        logits[s : s + 100_000] = x[s : s + 100_000] @ w
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    mc_probs = np.empty((mc, n, c), dtype=np.float32)
    for t in range(mc):
        noisy = logits + rng.standard_normal((n, c), dtype=np.float32) * 0.5
        e = np.exp(noisy - noisy.max(1, keepdims=True))
        mc_probs[t] = e / e.sum(1, keepdims=True)
    labeled = x[rng.choice(n, size=1000, replace=False)]
    print(f"  (synthetic data generated in {time.perf_counter() - started:.0f} s)")
    inputs: dict[str, Any] = {"probs": probs, "embeddings": x, "labeled_embeddings": labeled, "mc_probs": mc_probs}
    runs: list[tuple[str, str, dict[str, Any]]] = [(name, name, inputs) for name in STRATEGIES]
    # hybrid above runs in its late phase (1,000 labels = 100 per class: pure cluster-margin); its early phase,
    # 1 label per class (80% TypiClust + 20% cluster-margin), is timed separately.
    early = {**inputs, "labeled_embeddings": labeled[:c], "labeled_counts": np.ones(c, dtype=np.int64)}
    runs.append(("hybrid, 1 label/class", "hybrid", early))
    for label, name, kwargs in runs:
        tracemalloc.start()
        started = time.perf_counter()
        picks = select(name, k, rng=np.random.default_rng(1), **kwargs)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert picks.size == k
        print(f"  {label:22s} {seconds:7.2f} s   extra peak memory {peak / 2**20:8.1f} MiB")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"  process max RSS (inputs included: embeddings, probs, {mc} MC samples): {rss:.1f} GiB")


def scale_retrain(n: int = 100_000, d: int = 1280, c: int = 10, n_labels: int = 3000, k: int = 50) -> None:
    """Retrain + rescore as the product does it: default head, default strategy, a batch of retrain_every (50)."""
    from mltasks.core.acquisition import DEFAULT_STRATEGY, select
    from mltasks.core.heads import predict_proba, train_head

    rng = np.random.default_rng(0)
    means = rng.standard_normal((c, d), dtype=np.float32)
    y = rng.integers(0, c, size=n)
    x = means[y] + rng.standard_normal((n, d), dtype=np.float32) * 3.0
    lab = rng.choice(n, size=n_labels, replace=False)
    started = time.perf_counter()
    result = train_head(x[lab], y[lab], c, seed=0)
    trained = time.perf_counter()
    probs = predict_proba(result, x)
    pool = np.setdiff1d(np.arange(n), lab)
    select(
        DEFAULT_STRATEGY,
        k,
        probs=probs[pool],
        embeddings=x[pool],
        labeled_embeddings=x[lab],
        labeled_counts=np.bincount(y[lab], minlength=c),
        rng=rng,
    )
    done = time.perf_counter()
    print(
        f"\nRetrain + rescore, {n:,} items x {d}, {n_labels:,} labels (default linear head, CPU): "
        f"{done - started:.2f} s (train {trained - started:.2f} s over {result.epochs} epochs + refit, "
        f"predict + {DEFAULT_STRATEGY} select of {k} {done - trained:.2f} s; aim < 10 s)"
    )


# ------------------------------------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    cpu_setup(args.threads)
    from mltasks.core.acquisition import DEFAULT_STRATEGY, select
    from mltasks.core.heads import train_head

    sources, y, class_names, key = load_data(args.folder)
    n_classes = len(class_names)
    if args.only_scale:
        throughput(sources, args.throughput_images)
        scale_retrain()
        scale_selection(args.scale_n)
        return
    strategies = list(dict.fromkeys(["random", *args.strategies]))
    print(f"dataset {key}: {len(sources)} images, {n_classes} classes")
    x, info = embed_cached(key, sources)
    how = "cached" if info["cached"] else f"computed in {info['seconds']:.0f} s"
    print(f"embeddings {x.shape} ({how})")
    pool, test = stratified_split(y, args.test_fraction, seed=12345)
    eval_name = "test"
    if args.validation:
        # Design mode: the fixed test split is set aside untouched; a validation split carved out of the pool
        # plays its role, and the active-learning pool is what is left.
        keep, val = stratified_split(y[pool], args.test_fraction, seed=54321)
        pool, test, eval_name = pool[keep], pool[val], "validation"
        key += "-validation"
    print(f"pool {pool.size}, fixed {eval_name} split {test.size}")

    full = train_head(x[pool], y[pool], n_classes, seed=0)
    full_acc = test_metrics(full, x[test], y[test])["accuracy"]
    print(f"full-data head (all {pool.size} pool labels): {eval_name} accuracy {full_acc:.4f}")

    sizes = schedule(n_classes, args.budget, None if args.batch else args.growth, args.batch)
    final_n = sizes[-1]
    print(f"labels after each round: {sizes}")
    curves: dict[str, list[list[dict[str, float]]]] = defaultdict(list)
    random_long: list[list[dict[str, float]]] = []
    cold: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    # Random beyond the budget, on the same geometric grid, so "labels random needs for T" is measured (a grid point
    # within 5% of the whole pool is dropped: the whole pool is the last point).
    long_sizes = [n for n in schedule(final_n, pool.size, 2**0.5, None) if final_n < n and n < 0.95 * pool.size]
    long_sizes.append(pool.size)
    t99 = 0.99 * full_acc
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        pool_y = y[pool]
        seed_set = np.array([rng.choice(pool[pool_y == c]) for c in range(n_classes)])
        for strategy in strategies:
            t0 = time.perf_counter()
            curves[strategy].append(
                run_curve(
                    strategy, seed_set, x, y, pool, test, n_classes, sizes=sizes, seed=seed, mc_samples=args.mc_samples
                )
            )
            seconds[strategy] += time.perf_counter() - t0
            final = curves[strategy][-1][-1]
            print(
                f"  seed {seed} {strategy:17s} final acc {final['accuracy']:.4f} "
                f"bal {final['balanced_accuracy']:.4f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        order = np.random.default_rng(20_000 + seed).permutation(np.setdiff1d(pool, seed_set))
        long_rows = []
        for n_lab in long_sizes:
            lab = np.concatenate([seed_set, order[: n_lab - n_classes]])
            res = train_head(x[lab], y[lab], n_classes, seed=seed)
            long_rows.append({"n_labels": lab.size, **test_metrics(res, x[test], y[test])})
            if long_rows[-1]["accuracy"] >= t99:
                break  # only the first crossing of T2 is used (labels_to_reach)
        random_long.append(curves["random"][-1] + long_rows)
        # Cold start: zero labels, no model.
        for per_class in (1, 2):
            k = per_class * n_classes
            picks = {
                "random": np.random.default_rng(30_000 + seed).choice(pool, size=k, replace=False),
                "typiclust": pool[select("typiclust", k, embeddings=x[pool], rng=np.random.default_rng(seed))],
                "kcenter": pool[select("kcenter", k, embeddings=x[pool], rng=np.random.default_rng(seed))],
            }
            for name, lab in picks.items():
                res = train_head(x[lab], y[lab], n_classes, seed=seed)
                cold[name][per_class].append(test_metrics(res, x[test], y[test])["accuracy"])
    print(f"simulation: {time.perf_counter() - started:.0f} s")

    # ---------------------------------------------------------------------------- report
    growth = f"+{args.batch}" if args.batch else f"x{args.growth:.3g}"
    print(
        f"\nActive learning on the {eval_name} split, {args.seeds} seeds, start {n_classes} labels (1/class), "
        f"{len(sizes) - 1} rounds -> {final_n} labels ({growth}/round); mean ± std over seeds of the paired "
        "difference with random on the same seed."
    )
    print(f"T1 = random's accuracy at {final_n} labels (per seed); T2 = 99% of full-data accuracy = {t99:.4f}")
    header = (
        f"{'strategy':17s} {'final acc':>9s} {'final bal':>9s} {'worst rec':>9s} {'saving@T1 %':>20s} "
        f"{'saving@T2 %':>26s} {'AULC-rand (pts)':>16s} {'min Δbal (pts)':>17s} {'seeds < -0.5':>12s} {'s/seed':>7s}"
    )
    print(header)
    for strategy in strategies:
        savings1, savings2, daulc = [], [], []
        for s in range(args.seeds):
            c, r = curves[strategy][s], curves["random"][s]
            t1 = r[-1]["accuracy"]
            n_r1 = labels_to_reach(r, t1)
            n_s1 = labels_to_reach(c, t1)
            savings1.append(1 - n_s1 / n_r1 if np.isfinite(n_s1) else -np.inf)
            n_r2 = labels_to_reach(random_long[s], t99)
            n_s2 = labels_to_reach(c, t99)
            savings2.append(1 - n_s2 / n_r2 if np.isfinite(n_s2) and np.isfinite(n_r2) else np.nan)
            daulc.append(aulc(c) - aulc(r))
        bal = np.array([[row["balanced_accuracy"] for row in curve] for curve in curves[strategy]])
        bal_r = np.array([[row["balanced_accuracy"] for row in curve] for curve in curves["random"]])
        # (seeds, rounds), paired; round 0 is the same seed set for every strategy, so it is left out
        delta = (bal - bal_r)[:, 1:] if strategy != "random" else (bal - bal_r)
        worst = int(delta.mean(axis=0).argmin())
        min_delta = f"{100 * delta.mean(axis=0)[worst]:+.2f} ± {100 * delta[:, worst].std():.2f}"
        below = f"{int((delta.min(axis=1) < -0.005).sum())}/{args.seeds}"  # seeds with some round > 0.5 pts below
        finals = [curve[-1] for curve in curves[strategy]]
        s2 = fmt([v for v in savings2 if not np.isnan(v)]) if not all(np.isnan(savings2)) else "not reached"
        if any(np.isnan(savings2)) and not all(np.isnan(savings2)):
            s2 = fmt([v for v in savings2 if not np.isnan(v)]) + f" ({int(np.isnan(savings2).sum())} not reached)"
        print(
            f"{strategy:17s} {np.mean([f['accuracy'] for f in finals]):9.4f} "
            f"{np.mean([f['balanced_accuracy'] for f in finals]):9.4f} "
            f"{np.mean([f['worst_class_recall'] for f in finals]):9.4f} {fmt(savings1):>20s} {s2:>26s} "
            f"{fmt(daulc):>16s} {min_delta:>17s} {below:>12s} {seconds[strategy] / args.seeds:7.1f}"
        )
    n_r2 = [labels_to_reach(rl, t99) for rl in random_long]
    print(f"labels random needs for T2: {[round(v) if np.isfinite(v) else 'not reached' for v in n_r2]}")
    print(f"\nPer-round Δ balanced accuracy vs random, points, mean over seeds (labels: {sizes})")
    bal_r = np.array([[row["balanced_accuracy"] for row in curve] for curve in curves["random"]])
    for strategy in strategies[1:]:
        bal = np.array([[row["balanced_accuracy"] for row in curve] for curve in curves[strategy]])
        print(f"  {strategy:17s}" + "".join(f"{v:+6.1f}" for v in 100 * (bal - bal_r).mean(axis=0)))
    print(f"(default strategy of the product: {DEFAULT_STRATEGY})")
    print("\nCold start (zero labels, no model): accuracy, mean ± std over seeds")
    for per_class in (1, 2):
        base = np.array(cold["random"][per_class])
        line = f"  {per_class} label(s)/class: random {100 * base.mean():5.1f} ± {100 * base.std():4.1f}"
        for name in ("typiclust", "kcenter"):
            v = np.array(cold[name][per_class])
            line += f" | {name} {100 * v.mean():5.1f} (gain {fmt(list(v - base))} pts)"
        print(line)

    # ---------------------------------------------------------------------------- files
    OUT.mkdir(parents=True, exist_ok=True)
    csv_path = OUT / f"al-curves-{key}.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["strategy", "seed", "round", "n_labels", "accuracy", "balanced_accuracy", "worst_class_recall"]
        )
        for strategy, per_seed in curves.items():
            for s, curve in enumerate(per_seed):
                for row in curve:
                    writer.writerow(
                        [strategy, s, row.get("round", ""), row["n_labels"], row["accuracy"], row["balanced_accuracy"],
                         row["worst_class_recall"]]
                    )  # fmt: skip
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(16, 5))
        for ax, metric in zip(axes, ("accuracy", "balanced_accuracy", "worst_class_recall"), strict=True):
            for strategy, per_seed in curves.items():
                n = np.array([row["n_labels"] for row in per_seed[0]])
                v = np.array([[row[metric] for row in curve] for curve in per_seed])
                ax.plot(n, v.mean(0), label=strategy, lw=2 if strategy in ("random", DEFAULT_STRATEGY) else 1)
                ax.fill_between(n, v.mean(0) - v.std(0), v.mean(0) + v.std(0), alpha=0.1)
            ax.set_xscale("log")
            ax.set_xlabel("labels")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        axes[0].axhline(t99, color="k", ls=":", label="99% of full data")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Active learning on {key} ({args.seeds} seeds)")
        fig.tight_layout()
        fig.savefig(OUT / f"al-curves-{key}.png", dpi=110)
        print(f"\nwrote {csv_path} and {OUT / f'al-curves-{key}.png'}")
    except ImportError:
        print(f"\nwrote {csv_path} (matplotlib missing: no PNG)")

    if not args.skip_scale:
        throughput(sources, args.throughput_images)
        scale_retrain()
        scale_selection(args.scale_n)


if __name__ == "__main__":
    main()
