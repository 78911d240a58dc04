"""N-LEEP speed and agreement against its plain scikit-learn formulation, in the same process.

Run by hand (not in CI), one configuration per run (a few minutes each on 2 cores; scikit-learn takes most of it):

    .venv/bin/python benchmarks/nleep.py --config small                     # 6,000 x 64, 10 classes
    .venv/bin/python benchmarks/nleep.py --config big --skip-family         # 20,000 x 1,280, 100 classes
    .venv/bin/python benchmarks/nleep.py --config big --members 0 1 2 3 --skip-timing  # the big family in two
    .venv/bin/python benchmarks/nleep.py --config big --members 4 5 6 7 --skip-timing  # halves (1.5-9 min each)

Reports, for one feature set (measures.py's synthetic CNN features, float32): neucrab's `nleep` time, the
scikit-learn formulation's (PCA(0.8, svd_solver="full") + GaussianMixture(5 x C, "full") + LEEP of its posteriors)
on the float32 features as given and cast to float64, the ratios (wall and CPU time), |neucrab - sklearn float64|,
and neucrab's stages (PCA, k-means start, EM and LEEP). Timings alternate between the implementations (--repeats
rounds) so that a change of load hits both; the ratio of the medians is what counts on a shared machine. Then a
family of 8 feature sets with different amounts of class signal and spectra ("checkpoints"): both values per member,
the largest difference and Kendall's tau between the two orders. With CUDA present, neucrab runs on the GPU by
itself (--device cpu hides it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measures import make_features, sklearn_nleep  # noqa: E402

CONFIGS = {"small": (6_000, 64, 10), "big": (20_000, 1_280, 100)}


def family_member(config, i, checkpoints=8):
    n, d, classes = CONFIGS[config]
    separation = np.linspace(0.1, 0.7, checkpoints)[i]
    decay = np.resize([1.0, 0.8, 1.2, 0.9], checkpoints)[i]  # different architectures: different spectra
    return make_features(n, d, classes, separation=separation, decay=decay, seed=100 + i)


def timed(function, *args):
    """(value, wall seconds, CPU seconds of the whole process): CPU time is less moved by other users'
    load than wall time, though busy-waiting BLAS threads still count in it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start, cpu = time.perf_counter(), time.process_time()
        value = function(*args)
    return value, time.perf_counter() - start, time.process_time() - cpu


@contextmanager
def stage_timer(seconds: dict):
    """Wall seconds of N-LEEP's stages, summed into `seconds`: the PCA, the k-means start (k-means++ and Lloyd) and
    the EM with LEEP (the rest)."""
    import importlib

    leep = importlib.import_module("neucrab.measures.leep")
    mixture = importlib.import_module("neucrab.measures.mixture")
    stages = [(leep, "_reduce", "PCA"), (mixture, "kmeans_labels", "k-means")]
    originals = [getattr(module, name) for module, name, _ in stages]

    def timing(function, label):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - start
        return wrapper

    for (module, name, label), original in zip(stages, originals):
        setattr(module, name, timing(original, label))
    try:
        yield
    finally:
        for (module, name, _), original in zip(stages, originals):
            setattr(module, name, original)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 3 small, 1 big)")
    parser.add_argument("--members", type=int, nargs="*", default=list(range(8)), help="family members")
    parser.add_argument("--skip-family", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    import sklearn.cluster  # noqa: F401 - imports outside the timings
    import sklearn.mixture  # noqa: F401
    import torch

    from neucrab.measures import nleep

    if args.device == "cpu":
        torch.cuda.is_available = lambda: False
    n, d, classes = CONFIGS[args.config]
    print(
        f"{args.config}: float32 ({n}, {d}), {classes} classes, {5 * classes} components; "
        f"{os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.1f}, cuda {torch.cuda.is_available()}"
    )
    if not args.skip_timing:
        x, y = make_features(n, d, classes)
        repeats = args.repeats or (3 if args.config == "small" else 1)
        times = {"neucrab": [], "sklearn float32": [], "sklearn float64": []}
        cpu = {name: [] for name in times}
        stages = []
        for _ in range(repeats):
            stages.append({})
            with stage_timer(stages[-1]):
                ours, seconds, cpu_seconds = timed(nleep, x, y)
            stages[-1]["EM and LEEP"] = seconds - sum(stages[-1].values())
            times["neucrab"].append(seconds)
            cpu["neucrab"].append(cpu_seconds)
            _, seconds, cpu_seconds = timed(sklearn_nleep, x, y)
            times["sklearn float32"].append(seconds)
            cpu["sklearn float32"].append(cpu_seconds)
            reference, seconds, cpu_seconds = timed(sklearn_nleep, x.astype(np.float64), y)
            times["sklearn float64"].append(seconds)
            cpu["sklearn float64"].append(cpu_seconds)
        median = {name: float(np.median(values)) for name, values in times.items()}
        cpu_median = {name: float(np.median(values)) for name, values in cpu.items()}
        for name, values in times.items():
            print(
                f"  {name:<16} median {median[name]:7.2f} s  ({', '.join(f'{v:.2f}' for v in values)}), "
                f"CPU {cpu_median[name]:.2f} s"
            )
        print("  neucrab's stages (median wall s): " + ", ".join(
            f"{label} {np.median([stage[label] for stage in stages]):.2f}" for label in stages[0]))
        for name in ("sklearn float32", "sklearn float64"):
            print(
                f"  speed-up over {name}: {median[name] / median['neucrab']:.1f}x wall, "
                f"{cpu_median[name] / cpu_median['neucrab']:.1f}x CPU"
            )
        print(
            f"  value {ours:+.6f}, sklearn float64 {reference:+.6f}, |difference| {abs(ours - reference):.2e}  "
            f"(load now {os.getloadavg()[0]:.1f})"
        )
    if args.skip_family:
        return
    from scipy.stats import kendalltau

    ours, theirs = [], []
    for i in args.members:
        x, y = family_member(args.config, i)
        value, seconds, _ = timed(nleep, x, y)
        reference, reference_seconds, _ = timed(sklearn_nleep, x.astype(np.float64), y)
        ours.append(value)
        theirs.append(reference)
        print(
            f"  member {i}: neucrab {value:+.6f} ({seconds:.2f} s)  sklearn float64 {reference:+.6f} "
            f"({reference_seconds:.2f} s)  |difference| {abs(value - reference):.2e}"
        )
    print(
        f"  family {args.members}: max |difference| {np.max(np.abs(np.subtract(ours, theirs))):.2e}, "
        f"Kendall tau {kendalltau(ours, theirs).statistic:.3f}"
    )


if __name__ == "__main__":
    main()
