"""``recipes``, ``train``, ``evaluate`` and ``info``: the commands every kind of model shares."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from hourglass import recipebook
from hourglass.cli.text import add_search_options, set_search_options
from hourglass.errors import ConfigError, DataError, HourglassError
from hourglass.precision import add_precision, autocast


def register(sub) -> None:
    p = sub.add_parser("recipes", help="list the bundled recipes")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("train", help="train a recipe or a YAML config; prints the run directory last")
    p.add_argument("recipe", nargs="?", help=f"recipe name or CONFIG.yaml (default: {recipebook.DEFAULT})")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override any config key by its dotted path, e.g. --set train.max_epochs=5")
    p.add_argument("--out", help="run directory (default: runs/NAME-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a trained run on its validation split or other data")
    p.add_argument("run")
    p.add_argument("--data", help="evaluate on this data instead of the validation split")
    p.add_argument("--ref", help="the references (targets) of --data, when they are a separate file (parallel text)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_precision(p)
    add_search_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="the model, its size, its data and its best metrics")
    p.add_argument("run")
    p.set_defaults(func=cmd_info)


def cmd_recipes(args) -> int:
    items = recipebook.recipes()
    width = max(map(len, items), default=0)
    for name, text in items.items():
        print(f"{name.ljust(width)}  {text}")
    return 0


def cmd_train(args) -> int:
    from hourglass.resume import stored_config
    from hourglass.training import train

    if args.resume:
        if args.recipe or args.out:
            parts = (args.recipe and f"recipe {args.recipe}", args.out and f"--out {args.out}")
            given = " and ".join(x for x in parts if x)
            raise ConfigError(
                f"--resume {args.resume} continues that run with its own config.yaml, in its own directory, so the "
                f"{given} would be ignored. Leave {'them' if args.recipe and args.out else 'it'} out (change a key "
                "with --set, e.g. --set train.max_epochs=40), or start a new run without --resume."
            )
        run = Path(args.resume)
        config = recipebook.load(str(stored_config(run)), args.overrides)
        run_dir = train(config, resume=run)
    else:
        config = recipebook.load(args.recipe, args.overrides)
        run_dir = train(config, out=args.out)
    if _main_process():
        print(run_dir)
    return 0


def _main_process() -> bool:
    """False in the extra processes that Lightning's DDP launcher starts (they must not print twice)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def _print_metrics(metrics: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics, sort_keys=True))
        return
    for key, value in metrics.items():
        print(f"{key:28s} {value:.6g}" if isinstance(value, float) else f"{key:28s} {value}")


def cmd_evaluate(args) -> int:
    from hourglass.run import Run
    from hourglass.tasks.seq2seq import Seq2SeqTask

    run = Run.load(args.run)
    set_search_options(run, args)
    if args.precision != "32-true" and not isinstance(run.task, Seq2SeqTask):
        raise HourglassError(
            f'--precision {args.precision} applies to sequence-to-sequence runs (translation, captioning), whose '
            f'evaluation is a search; {args.run} is a run of task "{run.config.task.name}". Leave --precision out.'
        )
    with autocast(args.precision, run.task.device):
        metrics = run.evaluate(args.data, args.ref)
    _print_metrics({**metrics, "precision": args.precision} if args.precision != "32-true" else metrics, args.json)
    return 0


def cmd_info(args) -> int:
    from hourglass.run import Run

    try:
        run = Run.load(args.run)
    except DataError as err:  # the training data is gone or elsewhere: say what the run directory alone tells
        return _info_without_data(Path(args.run), err)
    model = run.task.model
    print(f"run         {run.path}")
    print(f"task        {run.config.task.name}")
    print(f"model       {model.describe()}")
    print(f"parameters  {sum(p.numel() for p in model.parameters()):,}")
    try:
        print(f"data        {json.dumps(run.data.describe())}")
    except DataError as err:  # e.g. text runs describe their training files, which may be gone
        print(f"data        not readable from here: {err}")
    _print_run_metrics(run.metrics())
    return 0


def _info_without_data(path: Path, err: Exception) -> int:
    from safetensors import safe_open

    from hourglass.config import read_yaml, validate
    from hourglass.run import read_metrics

    config = validate(read_yaml(path / "config.yaml"), str(path / "config.yaml"))
    m = config.model
    print(f"run         {path}")
    print(f"task        {config.task.name}")
    print(f"model       {m.encoder.name} -> {m.bottleneck.name} -> {m.decoder.name}")
    metrics = read_metrics(path)
    weights = path / "model.safetensors"
    if "parameters" in metrics:  # counted on the model when it was trained: tied weights once
        print(f"parameters  {metrics['parameters']:,}")
    elif weights.is_file():
        with safe_open(str(weights), framework="pt") as f:
            sizes = [math.prod(f.get_slice(k).get_shape()) for k in f.keys()]
        print(f"parameters  {sum(sizes):,} (counted in model.safetensors; tied weights count twice)")
    print(f"data        not readable from here: {err}")
    _print_run_metrics(metrics)
    return 0


def _print_run_metrics(metrics: dict) -> None:
    for key, value in (metrics.get("best") or {}).items():
        print(f"best        {key} = {value}")
    for key, value in (metrics.get("final") or {}).items():
        print(f"final       {key} = {value:.6g}" if isinstance(value, float) else f"final       {key} = {value}")
