"""The `neucrab` command line. Each subcommand is a small function; heavy imports happen inside it.

Exit codes, the same for every subcommand: 0 all went well, 1 some units (checkpoints, runs) failed and are
reported in their rows, 2 bad input (one line on stderr naming what to fix), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

from .errors import CacheWriteError, InputError

OK, SOME_FAILED, BAD_INPUT, INTERRUPTED = 0, 1, 2, 130
UNSURE = 0.5  # a calibrated P(best) below this: the terminal suggests confirming by fine-tuning


def _exit_code(failures: int) -> int:
    return SOME_FAILED if failures else OK


def _use_example(args: argparse.Namespace) -> None:
    """--example: the built-in pool (and its task and image size, unless given) in place of CHECKPOINTs."""
    if args.example:
        from .example import EXAMPLE_IMAGE_SIZE, EXAMPLE_TASK, example_entries

        if args.checkpoints:
            raise InputError(f"{args.command} --example: expected no CHECKPOINT (the example brings its pool)")
        args.checkpoints = example_entries()
        args.task = args.task or EXAMPLE_TASK
        args.image_size = args.image_size or EXAMPLE_IMAGE_SIZE


def _pool(args: argparse.Namespace, checkpoints=None) -> list:
    """The CHECKPOINTs, then the rows of each --pool manifest (neucrab.pool_manifest), names checked unique."""
    from .pool_manifest import combine, read_manifest

    checkpoints = list(args.checkpoints if checkpoints is None else checkpoints)
    entries = [entry for manifest in args.pool or () for entry in read_manifest(manifest)]
    combined = combine(checkpoints, entries)
    if not combined:
        raise InputError(f"{args.command}: expected at least one CHECKPOINT or --pool POOL")
    return combined


@contextmanager
def _executor(args: argparse.Namespace):
    """The executor the --executor options name (see neucrab.executors and docs/ray.md), closed afterwards."""
    from .executors import DEFAULT_MAX_RETRIES, LocalExecutor, RayExecutor

    ray_options = {"--address": args.address, "--ray-num-cpus": args.ray_num_cpus,
                   "--ray-num-gpus": args.ray_num_gpus, "--ray-max-retries": args.ray_max_retries}
    if args.executor == "ray":
        retries = DEFAULT_MAX_RETRIES if args.ray_max_retries is None else args.ray_max_retries
        executor = RayExecutor(args.address, num_cpus=args.ray_num_cpus, num_gpus=args.ray_num_gpus,
                               max_retries=retries)
    else:
        given = [flag for flag, value in ray_options.items() if value is not None]
        if given:
            raise InputError(f"{given[0]}: only applies with --executor ray; expected --executor ray or no {given[0]}")
        executor = LocalExecutor()
    try:
        yield executor
    finally:
        executor.close()


def _measures(args: argparse.Namespace) -> int:
    from .measures import REGISTRY, get

    if args.name:
        print(_measure_details(get(args.name)))
        return OK
    width = args.width or 80
    for info in REGISTRY.values():
        start = f"{info.name:<17} {info.needs.value:<13} "
        summary = info.description.split(". ")[0].rstrip(".")
        room = max(10, width - len(start))
        if len(summary) > room:  # cut at a word, so the line reads as a phrase
            summary = summary[:room - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."
        print(start + summary)
    print("\nneucrab measures NAME: what a measure does, its citation, options and care taken", file=sys.stderr)
    return OK


def _measure_details(info) -> str:
    import textwrap

    def field_(label: str, text: str) -> str:
        return textwrap.fill(text, 80, initial_indent=f"{label:<12}", subsequent_indent=" " * 12)

    options = ", ".join(f"{name}={value!r}" for name, value in info.options.items()) or "none"
    position = "no" if info.default is None else f"yes (position {info.default + 1})"
    targets = ["class labels"] + ["real-valued targets"] * info.regression + ["multi-hot labels"] * info.multilabel
    lines = [info.name, field_("needs", info.needs.value), field_("what", info.description),
             field_("citation", info.citation), field_("targets", ", ".join(targets)), field_("options", options),
             field_("default set", position), field_("cost model", "yes" if info.cost else "none")]
    if info.care:
        lines.append(field_("care taken", info.care))
    return "\n".join(lines)


def _rank(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from .ranking import rank
    from .report import ranking_table, write_outputs

    _use_example(args)
    checkpoints, task = args.checkpoints, args.task
    if not checkpoints and not args.pool:
        raise InputError("rank: expected at least one CHECKPOINT (or --pool POOL, or --example)")
    checkpoints = _pool(args, checkpoints)
    if not task:
        raise InputError(f"--task: expected a task ({_task_kinds()})")
    with _executor(args) as executor:
        ranking = rank(checkpoints, task, args.measure, cache_dir=args.cache_dir, trust_pickle=args.trust_pickle,
                       trust_remote_code=args.trust_remote_code, layer=args.layer, batch_size=args.batch_size,
                       pooling=args.pooling,
                       progress=not args.no_progress, image_size=args.image_size, executor=executor)
    if args.format == "json":
        print(ranking.to_json())
    elif args.format == "csv":
        print(ranking.to_csv(), end="")
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)  # a log or a pipe: do not squeeze the table into 80 columns
        recommendation = ranking.recommendation()
        if recommendation and recommendation["checkpoint"]:  # the answer first, then the evidence
            pick, recipe = recommendation["checkpoint"], " and ".join(recommendation["recipe"]["measures"])
            sure = recommendation["p_best"].get(pick)
            how_sure = f", P(best) {sure:.2f}, calibrated on Mini-NeuCRaB v2" if sure is not None else ""
            console.print(f"[bold]recommended: {escape(pick)}[/bold] (mean pool rank by {recipe}{how_sure})")
            close, wins = recommendation["indistinguishable"], recommendation["p_best_subsamples"]
            if close:
                console.print("  cannot be told apart from it at this sample size: " + ", ".join(
                    f"{escape(name)} (wins {wins[name]:.0%} of training subsamples)" for name in close))
            if close or (sure is not None and sure < UNSURE):
                shortlist = 1 + max(1, len(close))  # the pick and what cannot be told from it, or the runner-up
                console.print(f"  next step: confirm by fine-tuning the top {shortlist}: "
                              f"{escape(_select_command(args, shortlist))}")
            for measure, reason in recommendation["left_out"].items():
                console.print(f"  left out of the combination: {measure}: {reason}")
        if args.example:
            _print_example_check(console, ranking, args)
        console.print(ranking_table(ranking))
    if args.out:
        paths = write_outputs(ranking, args.out)
        print(f"report: {paths['report.html']} (also ranking.json, ranking.csv, scores.png)", file=sys.stderr)
    return _exit_code(sum(bool(row.error) for row in ranking.rows))


def _select_command(args: argparse.Namespace, shortlist: int) -> str:
    """The `neucrab select` command line that confirms this ranking's top `shortlist` (same pool and task)."""
    import shlex

    if args.example:
        return f"neucrab select --example --shortlist {shortlist} --budget STEPS"
    pool = [shlex.quote(spec) for spec in args.checkpoints] + [f"--pool {shlex.quote(p)}" for p in args.pool or ()]
    size = f" --image-size {args.image_size}" if args.image_size else ""
    return (f"neucrab select {' '.join(pool)} --task {shlex.quote(args.task)}{size} --shortlist {shortlist} "
            "--budget STEPS")


def _print_example_check(console, ranking, args: argparse.Namespace) -> None:
    """How the recommendation did against the example's committed ground truth (same task and image size only)."""
    from rich.markup import escape

    from .example import EXAMPLE_IMAGE_SIZE, EXAMPLE_TASK, GROUNDTRUTH_COMMAND, check_against_groundtruth

    if args.task != EXAMPLE_TASK or args.image_size != EXAMPLE_IMAGE_SIZE:
        return
    check = check_against_groundtruth(ranking)
    if check is None:
        return
    outcome = "the true best" if check["pick_place"] == 1 else f"number {check['pick_place']} of {check['checkpoints']}"
    console.print(f"  against fine-tuning ({GROUNDTRUTH_COMMAND.split(' --out')[0]}): the pick is {outcome} "
                  f"({check['pick_accuracy']:.3f} test accuracy); the best: {escape(' and '.join(check['best']))} "
                  f"({check['best_accuracy']:.3f})")


def _extract(args: argparse.Namespace) -> int:
    from .cache import default_cache_dir
    from .extract_pool import extract_pool
    from .tasks import load as load_task

    checkpoints = _pool(args)
    task = load_task(args.task)
    if task.skipped:
        print(f"skipped {len(task.skipped)} unreadable file(s), e.g. {task.skipped[0]}", file=sys.stderr)
    splits = ("train", "test") if args.split == "both" else (args.split,)
    with _executor(args) as executor:
        print(f"cache: {args.cache_dir or default_cache_dir()}")
        outcomes = extract_pool(checkpoints, args.task, splits=splits, executor=executor,
                                progress=not args.no_progress, cache_dir=args.cache_dir, layer=args.layer,
                                pooling=args.pooling,
                                trust_pickle=args.trust_pickle, trust_remote_code=args.trust_remote_code,
                                batch_size=args.batch_size)
    for spec, summaries, error in outcomes:
        if error is not None:  # one bad checkpoint is reported; the others go on
            print(f"neucrab: error: {spec}: {error}" if len(checkpoints) > 1 else f"neucrab: error: {error}",
                  file=sys.stderr)
            continue
        for summary in summaries:
            shape = " x ".join(map(str, summary["shape"]))
            how = "cache hit" if summary["cached"] else "computed"
            print(f"{summary['checkpoint']} / {summary['task']} {summary['split']}: {shape} features, {how} in "
                  f"{summary['seconds']:.2f} s" + (f" -> {summary['path']}" if summary["path"] else ""))
    return _exit_code(sum(error is not None for _, _, error in outcomes))


def _groundtruth(args: argparse.Namespace) -> int:
    from rich.console import Console

    from . import groundtruth as gt
    from .tasks import load as load_task

    lrs, steps = gt.check_grid(args.lr or gt.PAPER_LRS, args.steps or gt.PAPER_STEPS)  # before any training
    out = gt.check_output(args.out) if args.out else None
    _use_example(args)
    if not args.task:
        raise InputError(f"--task: expected a task ({_task_kinds()})")
    checkpoints = _pool(args)
    task = load_task(args.task)
    with _executor(args) as executor:  # one bad checkpoint is reported in its row; the others go on
        results, errors = gt.groundtruth_pool(checkpoints, args.task, executor=executor,
                                              progress=not args.no_progress, cache_dir=args.cache_dir, lrs=lrs,
                                              steps=steps, batch_size=args.batch_size, image_size=args.image_size,
                                              seed=args.seed, seeds=args.seeds, device=args.device,
                                              trust_pickle=args.trust_pickle,
                                              trust_remote_code=args.trust_remote_code, layer=args.layer,
                                              pooling=args.pooling)
    Console().print(gt.table(task.name, results, errors))
    if out is not None:
        print(f"wrote {gt.write_results(out, task.name, results, errors)}", file=sys.stderr)
    diverged = sum(result.best_accuracy is None for result in results.values())  # every run diverged: no truth
    return _exit_code(len(errors) + diverged)


def _select(args: argparse.Namespace) -> int:
    from .select import select

    _use_example(args)
    if not args.task:
        raise InputError(f"--task: expected a task ({_task_kinds()})")
    chosen = select(_pool(args), args.task, budget=args.budget, shortlist=args.shortlist, lr=args.lr,
                    how=args.schedule,
                    batch_size=args.batch_size, image_size=args.image_size, seed=args.seed,
                    cache_dir=args.cache_dir, device=args.device, trust_pickle=args.trust_pickle,
                    trust_remote_code=args.trust_remote_code, progress=not args.no_progress)
    for round_ in chosen.rounds:
        scores = ", ".join(f"{name} {accuracy:.3f}" for name, accuracy in round_["accuracies"].items())
        print(f"{round_['steps']} steps: {scores} -> keep {', '.join(round_['kept'])}")
    print(f"pick: {chosen.pick} (recommended before fine-tuning: {chosen.recommended}); spent {chosen.spent_steps} "
          f"of {chosen.budget_steps} steps")
    return OK


def _evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .bench import evaluate_files as ef

    report = ef.evaluate_files(args.scores, args.groundtruth, intersect=args.intersect)
    for task, names in report.left_out.items():
        print(f"--intersect: task {task}: left out {', '.join(names)} (not in both files)", file=sys.stderr)
    if args.format == "table":
        Console().print(ef.to_table(report))
    else:
        writer = {"json": ef.to_json, "csv": ef.to_csv, "markdown": ef.to_markdown}[args.format]
        print(writer(report), end="" if args.format == "csv" else "\n")
    return OK


def _bench(args: argparse.Namespace) -> int:
    from .bench.run import failures, run_bench, to_markdown
    from .bench.suite import load_suite

    suite = load_suite(args.suite, quick=args.quick)  # validated before any work
    with _executor(args) as executor:
        document = run_bench(suite, args.out, cache_dir=args.cache_dir, device=args.device,
                             progress=not args.no_progress, trust_pickle=args.trust_pickle, executor=executor,
                             trust_remote_code=args.trust_remote_code)
    print(to_markdown(document))
    print(f"wrote {args.out}: table.md, table.csv, results.json, figure1_*.png, scatter_*.png", file=sys.stderr)
    if args.nleep_grid:  # the paper's Figure 2, on the features and ground truth the bench just cached
        from .bench import nleep_grid

        report = nleep_grid.compute_grid(suite, document, cache_dir=args.cache_dir, progress=not args.no_progress,
                                         trust_pickle=args.trust_pickle, trust_remote_code=args.trust_remote_code)
        files = nleep_grid.write_grid(report, args.out)
        print(nleep_grid.to_markdown(report))
        print(f"wrote {args.out}: {', '.join(files)}", file=sys.stderr)
    return _exit_code(failures(document))


def _pretrain_mini(args: argparse.Namespace) -> int:
    from .bench.pretrain import pretrain_mini

    manifest = pretrain_mini(args.out, seed=args.seed, epochs=args.epochs, quick=args.quick,
                             progress=not args.no_progress, log=lambda line: print(line, file=sys.stderr))
    for name, entry in sorted(manifest["files"].items()):
        print(f"{name}: {entry['held_out_metric']} {entry['held_out']:.4f}, {entry['seconds']} s")
    print(f"wrote {args.out}: *.safetensors, manifest.json", file=sys.stderr)
    return OK


def _task_kinds() -> str:
    from .tasks import BUILTINS

    return f"an image folder, a CSV, a .npz, or a built-in: {', '.join(BUILTINS)}"


CACHE_HELP = "cache root (default $NEUCRAB_CACHE or ~/.cache/neucrab)"
POOL_HELP = ("checkpoints from a manifest, one per row: a .csv (header name,spec[,group,...]) or .json (array of "
             "{name, spec, ...}) file, or a folder holding pool.csv or pool.json beside the weights; relative "
             "paths are resolved against the manifest's folder; other columns are carried into the output; "
             "repeatable, and added after the CHECKPOINTs (README: Pools of many checkpoints)")


def _add_common(parser: argparse.ArgumentParser, *names: str, defaults: dict | None = None) -> None:
    """Add the options several subcommands share, each declared once here."""
    defaults = defaults or {}
    declared = {
        "task": lambda: parser.add_argument("--task", required=defaults.get("task_required", True),
                                            help=_task_kinds()),
        "layer": lambda: _add_layer_options(parser),
        "cache-dir": lambda: parser.add_argument("--cache-dir", help=CACHE_HELP),
        "batch-size": lambda: parser.add_argument("--batch-size", type=int, default=defaults.get("batch_size", 64),
                                                  help=f"default {defaults.get('batch_size', 64)}"),
        "image-size": lambda: parser.add_argument("--image-size", type=int, metavar="N",
                                                  help="input size instead of the checkpoint's own"),
        "device": lambda: parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)"),
        "trust-pickle": lambda: parser.add_argument("--trust-pickle", action="store_true", help="allow unpickling "
                                                    "checkpoint files (runs code from the file: only files you "
                                                    "trust)"),
        "trust-remote-code": lambda: parser.add_argument("--trust-remote-code", action="store_true",
                                                         help="let transformers run the Python code a Hugging Face "
                                                         "folder's auto_map names (only folders you trust)"),
        "no-progress": lambda: parser.add_argument("--no-progress", action="store_true", help="no progress bars"),
        "pool": lambda: parser.add_argument("--pool", action="append", metavar="POOL", help=POOL_HELP),
        "executor": lambda: _add_executor_options(parser),
        "example": lambda: parser.add_argument("--example", action="store_true", help="the built-in real pool "
                                               "(EfficientNet-Lite0/1/2, from-scratch, RapidOCR) on digits:400 at "
                                               "64 px, in place of CHECKPOINTs and the default --task"),
    }
    for name in names:
        declared[name]()


def _add_layer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layer", help="features from this named layer instead of the head's input; for text "
                        "encoders also a hidden state K (0 = embeddings .. L), mean (the mean of layers 1..L), all "
                        "(one row per hidden state) or a list such as 0,3,mean")
    parser.add_argument("--pooling", choices=("mean", "first"), help="text encoders: pool the tokens by their mean "
                        "(padding left out) or take the first token (default: the model's own pooling)")


def _add_executor_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the work runs (docs/ray.md)")
    group.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: here, one unit after another (default); ray: each unit as a Ray task "
                            "(pip install 'neucrab[ray]'; --cache-dir must be a folder every worker reaches)")
    group.add_argument("--address", metavar="ADDR", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: "
                       "$RAY_ADDRESS, else a new local Ray instance)")
    group.add_argument("--ray-num-cpus", type=float, metavar="N", help="CPUs each unit asks for (default 1)")
    group.add_argument("--ray-num-gpus", type=float, metavar="N", help="GPUs each unit asks for (default: 1 where the "
                       "checkpoint file is 100 MB or more and the cluster has GPUs, else 0)")
    group.add_argument("--ray-max-retries", type=int, metavar="N",
                       help="retries of a unit whose worker died (default 3)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neucrab", description="Rank pre-trained checkpoints for transfer learning.")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("measures", help="list the measures (one line each), or one measure in detail")
    listing.add_argument("name", nargs="?", metavar="NAME", help="show this measure's details")
    listing.add_argument("--width", type=int, default=None, help="line width in characters (default 80)")
    listing.set_defaults(run=_measures)

    ranking = commands.add_parser("rank", help="rank checkpoints for a task")
    ranking.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT",
                         help="FILE (.onnx, TorchScript, .npz), ARCH=WEIGHTS, timm:NAME, hf:NAME or a model DIR")
    _add_common(ranking, "pool", "task", "example", defaults={"task_required": False})
    ranking.add_argument("--measure", action="append", metavar="NAME",
                         help="a measure (repeatable), 'recommended' (neucrab's combined score) or 'all'; "
                              "default: recommended, then nleep and the fast measures")
    ranking.add_argument("--format", choices=("table", "json", "csv"), default="table",
                         help="json and csv are what `neucrab evaluate --scores` reads")
    ranking.add_argument("--out", metavar="DIR", help="also write ranking.json, ranking.csv, scores.png, report.html")
    _add_common(ranking, "layer", "cache-dir", "batch-size", "image-size", "trust-pickle", "trust-remote-code",
                "no-progress", "executor")
    ranking.set_defaults(run=_rank)

    extracting = commands.add_parser("extract", help="fill the feature cache for checkpoints and a task")
    extracting.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT", help="checkpoint specs, as for rank")
    _add_common(extracting, "pool", "task", "layer")
    extracting.add_argument("--split", choices=("train", "test", "both"), default="both")
    _add_common(extracting, "cache-dir", "batch-size", "trust-pickle", "trust-remote-code", "no-progress", "executor")
    extracting.set_defaults(run=_extract)

    truth = commands.add_parser("groundtruth", help="fine-tune over a grid and keep the best test accuracy (the "
                                "paper's ground truth)")
    truth.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT", help="checkpoint specs, as for rank "
                       "(PyTorch ones: ONNX and precomputed features cannot be fine-tuned)")
    _add_common(truth, "pool", "task", "example", defaults={"task_required": False})
    truth.add_argument("--lr", type=float, action="append", metavar="X",
                       help="a learning rate (repeatable); default the paper's 0.0001 ... 0.5")
    truth.add_argument("--steps", type=int, action="append", metavar="N",
                       help="a step count (repeatable); default the paper's 2500 ... 40000")
    truth.add_argument("--seed", type=int, default=0, help="data order and dropout seed")
    truth.add_argument("--seeds", type=int, default=1, metavar="K", help="rerun the best configuration with K "
                       "seeds in all (seed, seed+1, ...); the ground truth is their mean (default 1)")
    truth.add_argument("--out", metavar="FILE", help="write task,checkpoint,accuracy rows (.csv) or all runs (.json)")
    _add_common(truth, "batch-size", "image-size", "device", "layer", "cache-dir", "trust-pickle", "trust-remote-code",
                "no-progress", "executor", defaults={"batch_size": 512})
    truth.set_defaults(run=_groundtruth)

    from .select import DEFAULT_LR, DEFAULT_SCHEDULE, SCHEDULES

    selecting = commands.add_parser("select", help="confirm the recommendation within a budget: short "
                                    "fine-tunes of the recommended shortlist")
    selecting.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT", help="checkpoint specs, as for rank")
    _add_common(selecting, "pool", "task", "example", defaults={"task_required": False})
    selecting.add_argument("--budget", type=int, required=True, metavar="STEPS",
                           help="fine-tuning steps to spend in all (cache hits are free)")
    selecting.add_argument("--shortlist", type=int, default=4, metavar="K", help="how many to confirm (default 4)")
    selecting.add_argument("--schedule", choices=SCHEDULES, default=DEFAULT_SCHEDULE,
                           help="equal: each of the shortlist budget/K steps, the best wins; halving: successive "
                                f"halving (default {DEFAULT_SCHEDULE}, chosen on Mini-NeuCRaB: docs/mini-neucrab.md)")
    selecting.add_argument("--lr", type=float, default=DEFAULT_LR,
                           help=f"learning rate of the runs (default {DEFAULT_LR:g})")
    selecting.add_argument("--seed", type=int, default=0)
    _add_common(selecting, "batch-size", "image-size", "device", "cache-dir", "trust-pickle", "trust-remote-code",
                "no-progress", defaults={"batch_size": 32})
    selecting.set_defaults(run=_select)

    judging = commands.add_parser("evaluate", help="judge saved rankings against a ground truth (Recall@k, Rel@k, "
                                  "Pearson, Kendall, weighted Kendall), per task and averaged")
    judging.add_argument("--scores", required=True, action="append", metavar="FILE",
                         help="`neucrab rank --format json` or `--format csv` output, or a CSV "
                              "task,checkpoint,measure,score; repeatable")
    judging.add_argument("--groundtruth", required=True, metavar="FILE",
                         help="CSV task,checkpoint,accuracy, its JSON forms, or paper:group1 .. paper:group4")
    judging.add_argument("--format", choices=("table", "json", "csv", "markdown"), default="table",
                         help="table and markdown in percent; json and csv in fractions")
    judging.add_argument("--intersect", action="store_true",
                         help="judge only the checkpoints both files name (default: a mismatch is an error)")
    judging.set_defaults(run=_evaluate)

    benching = commands.add_parser("bench", help="run a benchmark suite: scores, fine-tuning ground truth, the "
                                   "paper's tables and figures")
    benching.add_argument("suite", metavar="SUITE", help="a shipped suite (mini: Mini-NeuCRaB, paper: NeuCRaB with "
                          "hub stand-ins) or a JSON/TOML suite file; see neucrab.bench.suite")
    benching.add_argument("--out", required=True, metavar="DIR", help="folder for table.md/.csv, results.json, PNGs")
    benching.add_argument("--quick", action="store_true", help="the suite's quick variant (SUITE-quick): a subset "
                          "of checkpoints and tasks with a tiny sweep, a smoke test in minutes")
    benching.add_argument("--nleep-grid", action="store_true", help="also N-LEEP's PCA energy x components grid "
                          "(the paper's Figure 2): nleep_grid.md/.json and a heat map per group")
    _add_common(benching, "cache-dir", "device", "trust-pickle", "trust-remote-code", "no-progress", "executor")
    benching.set_defaults(run=_bench)

    pretraining = commands.add_parser("pretrain-mini", help="pre-train Mini-NeuCRaB's checkpoints on MNIST 5k (CPU, "
                                      "seeded; skips files that are up to date)")
    pretraining.add_argument("--out", required=True, metavar="DIR", help="folder for *.safetensors and manifest.json")
    pretraining.add_argument("--seed", type=int, default=0)
    pretraining.add_argument("--epochs", type=int, metavar="N", help="epochs per model (default 6; 1 with --quick)")
    pretraining.add_argument("--quick", action="store_true", help="a tiny run (500 images) for tests")
    _add_common(pretraining, "no-progress")
    pretraining.set_defaults(run=_pretrain_mini)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except InputError as error:
        # Bad input is the user's to fix: one line, no traceback.
        print(f"neucrab: error: {error}", file=sys.stderr)
        return BAD_INPUT
    except CacheWriteError as error:
        print(f"neucrab: {error}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        print("neucrab: interrupted; cached work is kept and the next run resumes from it", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
