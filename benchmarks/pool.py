"""Ranking pools of 10, 30 and 100 checkpoints on one task: how wall time, per-checkpoint overhead, peak memory and
the recommendation's bootstrap grow with the pool (run by hand, not in CI).

    .venv/bin/python benchmarks/pool.py [--sizes 10 30 100] [--task mnist5k] [--measure NAME ...]

The pool: 100 random-weight variants (seeded) of neucrab's small 32x32 architectures (mini_cnn, mini_resnet,
mini_mobilenet, mini_mlp, mini_vit, with their 10-way heads), in four formats: `ARCH:random:SEED` (built in
memory), `ARCH=weights.safetensors`, a TorchScript file (a traced nn.Sequential of mini_cnn's or mini_mobilenet's
trunk, pooling and head) and an ONNX file (torch.onnx), in a cycle of 10 (CYCLE) so that every pool size has the
same mix; written to a temp folder with a pool.csv manifest; a pool of P is the manifest's first P rows. All
are fed 32x32 images (rank's image_size).

Each pool size runs in its own subprocess (`--child`) with an empty cache, so every forward pass, export and
measure is computed; the parent reads that process's peak resident memory from os.wait4. The child ranks the
rows with `neucrab.rank` (default: rank's default measures, the recommended score and its 50 subsample draws
included) and reports, per checkpoint, from the rows' timings: load, set-up (the probe and the faster copy of
the network: an export to onnxruntime or the inference copy), cache (reading and writing the feature cache), the
forward pass (the batches: decoding and the network), the measures, and the draws (the bootstrap). Wall time is
the ranking's, from the call to the returned Ranking; the child's start-up (imports, loading the task) is
reported apart.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

# One cycle of 10 (architecture, format) pairs, repeated: every pool size (a multiple of 10) has the same mix.
CYCLE = (("mini_cnn", "random"), ("mini_resnet", "safetensors"), ("mini_mobilenet", "onnx"), ("mini_mlp", "random"),
         ("mini_vit", "safetensors"), ("mini_cnn", "torchscript"), ("mini_resnet", "onnx"),
         ("mini_mobilenet", "torchscript"), ("mini_mlp", "onnx"), ("mini_vit", "random"))
IMAGE_SIZE = 32  # the mini networks' own size (a TorchScript file says none, and would get 224)


def write_pool(folder: Path, count: int) -> Path:
    """`count` manifest rows, architectures and formats in turn, each with its own seed; returns pool.csv."""
    import torch
    from safetensors.torch import save_file

    from neucrab.checkpoints.mini import MINI_ARCHS

    (folder / "weights").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        arch, form = CYCLE[index % len(CYCLE)]
        name = f"{arch}-{form}-{index}"
        if form == "random":
            spec = f"{arch}:random:{index}"
        else:
            torch.manual_seed(index)
            network = MINI_ARCHS[arch]().eval()
            if form == "safetensors":
                save_file({k: v.contiguous() for k, v in network.state_dict().items()},
                          str(folder / "weights" / f"{name}.safetensors"))
                spec = f"{arch}=weights/{name}.safetensors"
            elif form == "torchscript":
                sequence = torch.nn.Sequential(network.features, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                               network.head).eval()  # what mini_cnn / mini_mobilenet compute
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch.jit.trace's deprecation note
                    torch.jit.trace(sequence, torch.zeros(2, 3, 32, 32)).save(str(folder / "weights" / f"{name}.pt"))
                spec = f"weights/{name}.pt"
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(network, (torch.zeros(2, 3, 32, 32),), str(folder / "weights" / f"{name}.onnx"),
                                      dynamo=False, input_names=["x"], output_names=["logits"],
                                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
                spec = f"weights/{name}.onnx"
        rows.append({"name": name, "spec": spec, "group": arch})
    path = folder / "pool.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "spec", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def child(pool: Path, size: int, task_spec: str, measures: list[str] | None, cache: Path) -> dict:
    """Rank the first `size` rows of `pool` on the task in this process; the timings as a dict."""
    started = time.perf_counter()
    import neucrab
    from neucrab.pool_manifest import read_manifest
    from neucrab.tasks import load as load_task

    task = load_task(task_spec)
    entries = read_manifest(pool)[:size]
    startup = time.perf_counter() - started
    started = time.perf_counter()
    ranking = neucrab.rank(entries, task, measures=measures, cache_dir=cache, progress=False, image_size=IMAGE_SIZE)
    wall = time.perf_counter() - started
    rows = []
    for row in ranking.rows:
        if row.error:
            rows.append({"checkpoint": row.checkpoint, "error": row.error})
            continue
        seconds = row.seconds
        measured = sum(value for key, value in seconds.items() if key in ranking.measures)
        rows.append({"checkpoint": row.checkpoint, "load": seconds["load"], "setup": seconds["forward_setup"],
                     "cache": seconds["forward"] - seconds["forward_batches"] - seconds["forward_setup"],
                     "forward": seconds["forward_batches"], "measures": measured, "draws": seconds.get("draws", 0.0)})
    return {"size": size, "startup": startup, "wall": wall, "task": task.name, "train": len(task.train),
            "test": len(task.test), "measures": ranking.measures, "rows": rows,
            "recommended": ranking.rows[0].checkpoint}


def run_child(pool: Path, size: int, args) -> dict:
    """One pool size in a fresh process with an empty cache; its report plus its peak RSS (MiB)."""
    with tempfile.TemporaryDirectory() as cache:
        command = [sys.executable, __file__, "--child", str(pool), "--sizes", str(size), "--task", args.task,
                   "--cache", cache]
        for measure in args.measure or []:
            command += ["--measure", measure]
        with tempfile.TemporaryFile("w+") as output:
            process = subprocess.Popen(command, stdout=output, env=os.environ)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            output.seek(0)
            text = output.read()
    if process.returncode != 0:
        raise SystemExit(f"pool of {size} failed (exit {process.returncode}):\n{text[-2000:]}")
    report = json.loads(text.strip().splitlines()[-1])
    report["peak_mib"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return report


def summary(report: dict) -> str:
    rows = [row for row in report["rows"] if "error" not in row]
    total = {key: sum(row[key] for row in rows) for key in ("load", "setup", "cache", "forward", "measures", "draws")}
    overhead = sorted((row["load"] + row["setup"]) / row["forward"] for row in rows)
    draws = sorted(row["draws"] / row["forward"] for row in rows)
    return (f"pool {report['size']:4d}: wall {report['wall']:7.1f} s ({report['wall'] / report['size']:5.2f} s a "
            f"checkpoint; start-up {report['startup']:4.1f} s); peak RSS {report['peak_mib']:6.0f} MiB; in all: "
            + ", ".join(f"{key} {value:.1f} s" for key, value in total.items())
            + f"; per checkpoint against its forward pass: overhead (load + set-up) median "
            f"{overhead[len(rows) // 2]:.1%}, 90th percentile {overhead[int(0.9 * (len(rows) - 1))]:.1%}, "
            f"max {overhead[-1]:.1%}, "
            f"{sum(o >= 0.1 for o in overhead)} of {len(rows)} at 10% or more; bootstrap median "
            f"{draws[len(rows) // 2]:.1%}, max {draws[-1]:.1%}; {len(report['rows']) - len(rows)} failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--task", default="mnist5k")
    parser.add_argument("--measure", action="append", help="measures to rank by (default: rank's default set)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, help="write the per-checkpoint reports here as JSON")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.sizes[0], args.task, args.measure, args.cache)))
        return 0

    print(f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}", flush=True)
    reports = []
    with tempfile.TemporaryDirectory() as scratch:
        pool = write_pool(Path(scratch), max(args.sizes))
        for size in args.sizes:
            report = run_child(pool, size, args)
            reports.append(report)
            if size == args.sizes[0]:
                print(f"task {report['task']}: {report['train']} train, {report['test']} test images; measures "
                      f"{', '.join(report['measures'])}")
            print(summary(report), flush=True)
    if len(reports) > 1:
        first, last = reports[0], reports[-1]
        per_first, per_last = first["wall"] / first["size"], last["wall"] / last["size"]
        print(f"wall per checkpoint, pool {last['size']} against pool {first['size']}: {per_last / per_first:.2f}x; "
              f"peak RSS {last['peak_mib'] / first['peak_mib']:.2f}x")
    if args.keep:
        args.keep.write_text(json.dumps(reports, indent=1))
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
