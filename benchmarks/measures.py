"""Speed and memory of every array measure, and N-LEEP against its plain scikit-learn formulation.

Run by hand (not in CI):

    .venv/bin/python benchmarks/measures.py                      # full size: N=20,000, D=1,280, C=100
    .venv/bin/python benchmarks/measures.py --n 3000 --d 256 --classes 20 --family-n 1500 --family-d 128

What it does:
1. Builds synthetic float32 "CNN features" (N, D), labels, softmax outputs of a 1000-class source head, and
   a train/test split, saved to a temporary folder.
2. Times every measure in `neucrab.measures.REGISTRY` that needs features, source probabilities or
   features+test, each in its own subprocess so that its peak memory is its own: the kernel's peak RSS
   (VmHWM, reset just before the call; ru_maxrss where it cannot be reset), which does see BLAS and torch
   buffers, unlike tracemalloc. Measures not yet written print "not yet implemented"; a measure still
   running after --timeout seconds is stopped and reported as such.
3. Times the plain scikit-learn formulation of N-LEEP, PCA(0.8, svd_solver="full") + GaussianMixture(5 x C,
   "full", random_state=seed) + LEEP of its posteriors, on the same features, and prints the speed ratio.
   Given float32 features scikit-learn computes in float32 (which can fail outright on rank-deficient
   components: "ill-defined empirical covariance"); it is timed both on them as given and cast to float64.
4. Builds a family of feature sets of varied quality ("checkpoints") at a smaller size and prints Kendall's
   tau between neucrab's nleep and the scikit-learn formulation over the family.

Wall-clock times on a shared machine move with the load; the load average is printed with each figure, and
CPU time (user + system, all threads) alongside. The machine this was written on has 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

SOURCE_CLASSES = 1000


# ----------------------------------------------------------------------------------------------- data
def make_features(n, d, classes, *, separation=1.0, decay=1.0, latent=256, seed=0):
    """Float32 features (n, d) and int labels (n,) that look like pooled CNN features.

    Real penultimate-layer features have a low effective rank (a power-law spectrum: a few directions carry
    most of the variance), class structure, and are non-negative after the ReLU. Here: `latent` factors
    with variances ~ i^-decay, class means drawn in that factor space (scaled by `separation`: larger =
    easier task), within-class noise with the same spectrum, an orthonormal map to d dimensions, a shift
    and a ReLU, and a little isotropic noise. With decay=1, PCA keeping 80% of the variance keeps ~70-80
    of the 1,280 dimensions at full size (printed below), the order of what real 1-2k-d features need.
    """
    rng = np.random.default_rng(seed)
    latent = min(latent, d)
    labels = rng.integers(0, classes, n)
    scale = np.arange(1, latent + 1) ** (-decay / 2)
    centres = rng.standard_normal((classes, latent)) * scale * separation
    factors = centres[labels] + rng.standard_normal((n, latent)) * scale
    mixing = np.linalg.qr(rng.standard_normal((d, latent)))[0].T  # (latent, d), orthonormal rows
    features = np.maximum(5.0 * factors @ mixing + 0.05 * rng.standard_normal((n, d)) + 0.5, 0.0)
    return features.astype(np.float32), labels


def make_source_probs(features, seed=1):
    """Softmax (float32) of a random linear head over SOURCE_CLASSES classes: a stand-in classifier."""
    rng = np.random.default_rng(seed)
    x = features.astype(np.float64)
    x = (x - x.mean(axis=0)) / (x.std() + 1e-12)
    logits = x @ rng.standard_normal((x.shape[1], SOURCE_CLASSES)) * (3.0 / np.sqrt(x.shape[1]))
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs.astype(np.float32)


def kept_dimension(features, energy=0.8):
    """How many principal components keep `energy` of the variance (scikit-learn's rule)."""
    x = features.astype(np.float64)
    x -= x.mean(axis=0)
    values = np.clip(np.linalg.eigvalsh(x.T @ x)[::-1], 0, None)
    return int(np.searchsorted(np.cumsum(values / values.sum()), energy, side="right")) + 1


# --------------------------------------------------------------------------------- scikit-learn N-LEEP
def sklearn_nleep(features, labels, seed=0):
    """N-LEEP as the plain scikit-learn formulation (Google's reference code does this)."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    from neucrab.measures import leep

    classes = len(np.unique(labels))
    reduced = PCA(0.8, svd_solver="full").fit_transform(features)
    mixture = GaussianMixture(5 * classes, covariance_type="full", random_state=seed).fit(reduced)
    return leep(mixture.predict_proba(reduced), labels)


# ------------------------------------------------------------------------------------------- workers
def _status_mib(field):
    """VmRSS (now) or VmHWM (peak since start or since the last reset) of this process, in MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak seen afterwards is the measure's own:
    importing torch & co. leaves a transient peak that would otherwise hide smaller measures."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def worker(task, folder):
    """Run one timed job in this (fresh) process; print one JSON line."""
    import sklearn.decomposition  # noqa: F401 - imported before the peak is reset, for every task alike
    import sklearn.mixture  # noqa: F401

    from neucrab.measures import REGISTRY

    data = Path(folder)
    labels = np.load(data / "labels.npy")
    if task.startswith("measure:"):
        info = REGISTRY[task.split(":", 1)[1]]
        if info.needs == "features":
            args = (np.load(data / "features.npy"), labels)
        elif info.needs == "source_probs":
            args = (np.load(data / "source_probs.npy"), labels)
        else:
            args = tuple(np.load(data / f"{name}.npy") for name in ("train_x", "train_y", "test_x", "test_y"))
        function = info.function
    else:
        function, args = sklearn_nleep, (np.load(data / "features.npy"), labels)
        if task == "sklearn-nleep-float64":
            args = (args[0].astype(np.float64), labels)
    reset = _reset_peak()
    rss_before = _status_mib("VmRSS")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    result = {"task": task}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result["value"] = float(function(*args))
        result["status"] = "ok"
    except NotImplementedError:
        result["status"] = "not yet implemented"
    except Exception as error:  # noqa: BLE001 - reported, not hidden
        result["status"] = f"failed: {type(error).__name__}: {str(error)[:160]}"
    result["wall_s"] = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = usage.ru_utime + usage.ru_stime - cpu_before
    result["peak_rss_mib"] = _status_mib("VmHWM") if reset else usage.ru_maxrss / 1024
    result["rss_before_mib"] = rss_before
    print(json.dumps(result))


def run_worker(task, folder, timeout):
    load = os.getloadavg()[0]
    command = [sys.executable, __file__, "--worker", task, "--data", folder]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"task": task, "status": f"stopped after {timeout} s (--timeout)", "load": load}
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"task": task, "status": f"crashed: {completed.stderr.strip()[-200:]}", "load": load}
    result = json.loads(lines[-1])
    result["load"] = (load, os.getloadavg()[0])
    return result


def show(name, needs, result):
    if result["status"] != "ok":
        print(f"  {name:<22} {needs:<14} {result['status']}")
        return
    extra = result["peak_rss_mib"] - result["rss_before_mib"]
    print(
        f"  {name:<22} {needs:<14} {result['value']:>12.5g} {result['wall_s']:>9.2f} s wall"
        f" {result['cpu_s']:>8.1f} s cpu   peak RSS {result['peak_rss_mib']:>7.0f} MiB"
        f" (+{extra:.0f} during the call)"
        f"   load {result['load'][0]:.1f}->{result['load'][1]:.1f}"
    )


# ---------------------------------------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="samples (default 20000)")
    parser.add_argument("--d", type=int, default=1_280, help="feature dimension (default 1280)")
    parser.add_argument("--classes", type=int, default=100, help="target classes (default 100)")
    parser.add_argument("--checkpoints", type=int, default=8, help="size of the Kendall family (default 8)")
    parser.add_argument(
        "--family-n", type=int, default=4_000, help="samples per family member (default 4000)"
    )
    parser.add_argument(
        "--family-d", type=int, default=512, help="feature dimension of the family (default 512)"
    )
    parser.add_argument("--family-classes", type=int, default=20, help="classes of the family (default 20)")
    parser.add_argument("--skip-family", action="store_true", help="skip the Kendall family")
    parser.add_argument("--only", nargs="*", help="time only these measures")
    parser.add_argument(
        "--timeout", type=float, default=1200, help="seconds allowed per timed job (default 1200)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data)
        return
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when redirected to a file

    import neucrab
    from neucrab.measures import REGISTRY

    print(
        f"neucrab {neucrab.__version__}, numpy {np.__version__}, {os.cpu_count()} CPU(s), "
        f"load {os.getloadavg()}"
    )
    features, labels = make_features(args.n, args.d, args.classes)
    print(
        f"features: float32 ({args.n}, {args.d}), {args.classes} classes; PCA 80% keeps "
        f"{kept_dimension(features)} dimensions; N-LEEP fits {5 * args.classes} components"
    )
    with tempfile.TemporaryDirectory(prefix="neucrab-bench-") as folder:
        split = int(0.8 * args.n)
        arrays = {
            "features": features,
            "labels": labels,
            "source_probs": make_source_probs(features),
            "train_x": features[:split],
            "train_y": labels[:split],
            "test_x": features[split:],
            "test_y": labels[split:],
        }
        for name, array in arrays.items():
            np.save(Path(folder) / f"{name}.npy", array)
        del arrays

        print("\nmeasure                needs                 value      time")
        results = {}
        for name, info in sorted(REGISTRY.items()):
            if info.needs not in ("features", "source_probs", "features+test"):
                print(f"  {name:<22} {info.needs:<14} needs the model: not timed here")
                continue
            if args.only and name not in args.only:
                continue
            results[name] = run_worker(f"measure:{name}", folder, args.timeout)
            show(name, info.needs, results[name])

        print("\nN-LEEP, plain scikit-learn formulation (PCA(0.8, svd_solver='full') + GaussianMixture):")
        ours = results.get("nleep") or run_worker("measure:nleep", folder, args.timeout)
        show("neucrab nleep", "features", ours)
        # As given (float32: scikit-learn then computes in float32), and cast to float64 (same precision
        # as neucrab; also what one must do where float32 fails on rank-deficient components).
        for task, label in (("sklearn-nleep", "float32"), ("sklearn-nleep-float64", "float64")):
            baseline = run_worker(task, folder, args.timeout)
            show(f"sklearn, {label} input", "features", baseline)
            if ours["status"] == "ok" and baseline["status"] == "ok":
                print(
                    "    speed-up of neucrab's nleep over it: "
                    f"{baseline['wall_s'] / ours['wall_s']:.1f}x wall, "
                    f"{baseline['cpu_s'] / ours['cpu_s']:.1f}x cpu; "
                    f"|difference of values| = {abs(baseline['value'] - ours['value']):.2e}"
                )

    if not args.skip_family:
        family(args)


def family(args):
    """Kendall's tau between neucrab's nleep and the scikit-learn formulation over feature sets."""
    from scipy.stats import kendalltau

    from neucrab.measures import nleep

    print(
        f"\nfamily of {args.checkpoints} checkpoints: float32 ({args.family_n}, {args.family_d}), "
        f"{args.family_classes} classes"
    )
    ours, theirs = [], []
    separations = np.linspace(0.1, 0.7, args.checkpoints)
    decays = np.resize([1.0, 0.8, 1.2, 0.9], args.checkpoints)  # different architectures: different spectra
    for i, (separation, decay) in enumerate(zip(separations, decays)):
        x, y = make_features(
            args.family_n,
            args.family_d,
            args.family_classes,
            separation=separation,
            decay=decay,
            seed=100 + i,
        )
        start = time.perf_counter()
        ours.append(nleep(x, y))
        mid = time.perf_counter()
        note = ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                theirs.append(sklearn_nleep(x, y))
            except ValueError:
                theirs.append(sklearn_nleep(x.astype(np.float64), y))
                note = "  (scikit-learn failed on float32; float64 input)"
        end = time.perf_counter()
        print(
            f"  checkpoint {i}: separation {separation:.2f}, PCA dim {kept_dimension(x):>3}: "
            f"neucrab {ours[-1]:+.6f} ({mid - start:.1f} s)  "
            f"scikit-learn {theirs[-1]:+.6f} ({end - mid:.1f} s){note}"
        )
    tau = kendalltau(ours, theirs).statistic
    print(f"  Kendall tau between the two implementations: {tau:.3f}")


if __name__ == "__main__":
    main()
