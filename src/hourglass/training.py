"""Build data, model and task from a config, train them with Lightning, and fill the run directory.

Run directory: ``config.yaml``, ``checkpoints/{last,best}.safetensors``, ``model.safetensors`` (best
weights), ``metrics.json``, ``logs/`` (CSV and TensorBoard), ``plots/*.png`` and ``report.html``.
"""
from __future__ import annotations

import inspect
import os
import shutil
import signal
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from hourglass import resume as resuming
from hourglass._registry import DATASETS, TASKS, load_components
from hourglass.checkpoint import SafetensorsCheckpointIO, load_tree
from hourglass.config import Config, save_config
from hourglass.errors import ConfigError, closest, did_you_mean
from hourglass.io import atomic_write_json
from hourglass.model import build_model
from hourglass.options import absolute_data_paths, build
from hourglass.weights import save_weights

RUN_DIR_ENV = "HOURGLASS_RUN_DIR"  # shared with the processes Lightning's DDP launcher starts
#: Trainer arguments that make_trainer sets itself -> the config key that sets them.
OWN_TRAINER_ARGS = {
    "max_epochs": "train.max_epochs", "max_steps": "train.max_steps", "gradient_clip_val": "train.gradient_clip",
    "enable_progress_bar": "train.progress", "default_root_dir": "the run directory (--out)",
    "callbacks": "train (checkpoints, early stopping)", "logger": "the run directory (CSV and TensorBoard logs)",
    "plugins": "hourglass (safetensors checkpoints)", "enable_model_summary": "hourglass (off)",
    "use_distributed_sampler": "hourglass (its samplers shard by rank; hourglass.data.sampler)",
}


def build_data(config: Config):
    load_components()
    return build(DATASETS, config.data.name, config.data.options(), {"seed": config.seed}, "data")


def build_task(config: Config, data, *, load_pretrained: bool = True):
    """The task around a freshly built (and pair-checked) model. ``load_pretrained=False`` skips reading
    ``model.pretrained_encoder`` (a trained run's own weights replace those anyway)."""
    load_components()
    task_cls = TASKS.get(config.task.name)
    model = build_model(config.model, data.context(), decoder_protocol=task_cls.decoder_protocol,
                        decoder_output=task_cls.decoder_output, task=config.task.name)
    if config.model.pretrained_encoder or config.model.freeze_encoder:
        from hourglass.pretrained import prepare_encoder

        prepare_encoder(model, config.model, load=load_pretrained)
    context = {"model": model, "train": config.train, "seed": config.seed}
    return build(TASKS, config.task.name, config.task.options(), context, "task")


def _ddp_child() -> bool:
    """True in a process that Lightning's DDP launcher started (it sets LOCAL_RANK/NODE_RANK for them)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def new_run_dir(config: Config, out: str | None) -> Path:
    if _ddp_child() and os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])  # the directory rank 0 chose
    if out:
        return Path(out) if _ddp_child() else _fresh_out(Path(out))  # rank 0 checks (and makes) it
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{config.name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{config.name}-{stamp}-{n}"
    return path


def _fresh_out(path: Path) -> Path:
    """``--out``: a new or empty directory, or a run that stopped before its first checkpoint (nothing to lose; its
    logs are set aside, :func:`_set_aside_logs`); a run with weights, or anything else, is never overwritten. Only
    a run with a checkpoint to continue from is offered ``--resume``."""
    if not path.exists():
        return path
    keep = "give --out a new or empty directory (nothing was written)"
    if not path.is_dir():
        raise ConfigError(f"--out {path} is an existing file, not a run directory, and a new run would need a folder "
                          f"there; {keep}.")
    if not any(path.iterdir()):
        return path
    if not (path / "config.yaml").is_file():
        names = sorted(p.name for p in path.iterdir())
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ConfigError(f"--out {path} is a folder that is not a run (it has no config.yaml; it holds {shown}), and "
                          f"a new run would mix its files with those; {keep}.")
    if not _has_weights(path):
        return path
    if (path / "checkpoints" / "last.safetensors").is_file():
        raise ConfigError(f"Will not train into {path}: it already holds a run, which a new run would overwrite. "
                          f"Continue that run with `hourglass train --resume {path}`, or {keep}.")
    raise ConfigError(f"Will not train into {path}: it already holds a run (its weights, with no checkpoint to "
                      f"continue from), which a new run would overwrite; {keep}.")


def _set_aside_logs(run_dir: Path) -> None:
    """Move the logs of an earlier attempt in ``run_dir`` (a run stopped before its first checkpoint, trained again
    into the same --out) to ``logs-earlier-<time>``, and say so in one line. Lightning's CSV logger would delete
    that attempt's metrics.csv, with a warning of its own naming its source file, and TensorBoard would draw both
    attempts' curves over each other; the earlier ones may be what shows why that attempt stopped."""
    logs = run_dir / "logs"
    if not logs.is_dir():
        return
    files = [p for p in logs.rglob("*") if p.is_file()]
    if not files:
        shutil.rmtree(logs)  # empty folders: nothing to keep
        return
    stamp = datetime.fromtimestamp(max(p.stat().st_mtime for p in files)).strftime("%Y%m%d-%H%M%S")
    dest, n = run_dir / f"logs-earlier-{stamp}", 1
    while dest.exists():
        n += 1
        dest = run_dir / f"logs-earlier-{stamp}-{n}"
    logs.rename(dest)
    warnings.warn(f"{run_dir} held a run that stopped before its first checkpoint; its logs were moved to {dest}, "
                  f"and this run writes its own to {logs}.", UserWarning)


def _has_weights(run: Path) -> bool:
    return (run / "model.safetensors").exists() or any((run / "checkpoints").glob("*.safetensors"))


def trainer_kwargs(config: Config) -> dict:
    """``trainer`` section -> Trainer keyword arguments; an unknown key is a config error."""
    valid = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    kwargs = config.trainer.model_dump()
    for key in kwargs:
        if key in OWN_TRAINER_ARGS:
            where = OWN_TRAINER_ARGS[key]
            example = f" (e.g. --set {where}=...)" if where.startswith("train.") else ""
            raise ConfigError(f'"trainer.{key}" is set by hourglass from {where}: set that instead{example} and '
                              f"leave trainer.{key} out of the config.")
        if key not in valid:
            raise ConfigError(f'Unknown key "trainer.{key}": it is not a lightning.Trainer argument.'
                              f"{did_you_mean(key, valid)}")
    if str(kwargs.get("precision")).startswith("64"):  # Lightning takes it; the float32 batches then meet
        raise ConfigError(  # float64 weights deep inside the first layer
            f"trainer.precision={kwargs['precision']} (float64) is not supported: hourglass's data gives float32 "
            "batches. Use 32-true (the default), bf16-mixed or 16-mixed."
        )
    return kwargs


class ConfiguredPatience(EarlyStopping):
    """Lightning's early stopping, whose patience stays the config's when a resume restores the callback's
    state (Lightning would restore the checkpoint's): a resume may give a stopped run more patience."""

    @property
    def state_key(self) -> str:  # Lightning's own key, so checkpoints written with EarlyStopping restore here
        return "EarlyStopping" + repr({"monitor": self.monitor, "mode": self.mode})

    def load_state_dict(self, state_dict: dict) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience


class FlushLogs(Callback):
    """Write the loggers' pending rows with every checkpoint, so a killed run keeps its log up to the checkpoint
    it resumes from (the CSV logger otherwise writes every 100 steps)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            logger.save()


class MonitoredKeys(Callback):
    """Refuse a ``train.monitor`` or ``train.early_stopping.monitor`` that the task does not log: a validation
    metric at the first validation (the sanity check, before any training step), a ``train/`` one at the first
    validation after training steps. Lightning would raise its own exception only when the first checkpoint is
    due, after a whole epoch, from deep inside its checkpoint callback."""

    def __init__(self, config: Config) -> None:
        tc = config.train
        self.wanted = {"train.monitor": tc.monitor}
        if tc.early_stopping:
            self.wanted["train.early_stopping.monitor"] = tc.early_stopping.monitor

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        """Check each wanted name once its kind of metric (train/ or val/) has been logged."""
        for key, name in list(self.wanted.items()):
            kind = "train/" if name.startswith("train/") else "val/"
            logged = sorted(k for k in trainer.callback_metrics if k.startswith(kind))
            if not logged:  # not yet: train/ metrics come with the first step, val/ with the first validation
                continue
            del self.wanted[key]
            if name in logged:
                continue
            # Compared without the shared prefix, which made "val/bleu" look like "val/mse".
            hit = closest(name.removeprefix(kind), [k.removeprefix(kind) for k in logged])
            hint = f' Did you mean "{kind}{hit}"?' if hit else ""
            raise ConfigError(
                f"{key} is {name!r}, but this task logs no such metric; its {kind} metrics are "
                f"{', '.join(logged)}.{hint} Set {key} to one of them (for example --set {key}={kind}loss) and "
                f"{self._then(trainer, key)}"
            )

    @staticmethod
    def _then(trainer: L.Trainer, key: str) -> str:
        """What to do after fixing the key; a run with a checkpoint already is never trained over."""
        if trainer.sanity_checking:
            return "run the same command again: training stopped before its first step."
        run = trainer.default_root_dir
        stopped = f"training stopped at its first validation, after {trainer.global_step} steps"
        if not _has_weights(Path(run)):
            return f"run the same command again: {stopped}, before its first checkpoint."
        if key == "train.early_stopping.monitor":  # a resume may change it
            return f"continue with `hourglass train --resume {run} --set {key}=...`: {stopped}."
        return f"start again with a new --out: {stopped}, and {run} keeps its checkpoint."


def make_trainer(config: Config, run_dir: Path, extra_callbacks: Sequence[Callback] = (),
                 log_history: Sequence[dict] = ()) -> L.Trainer:
    """The Lightning Trainer of a run; ``extra_callbacks`` run before hourglass's own. ``log_history``: CSV log
    rows of the run being resumed, written back first (:func:`hourglass.resume.log_history`). Creates no file
    until ``fit``, apart from writing back that history."""
    tc = config.train
    ckpt_dir = run_dir / "checkpoints"
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=tc.monitor, mode=tc.mode,
                           save_top_k=1, enable_version_counter=False)
    # "last" is written every N steps (a killed run loses at most N steps) and at every epoch end.
    last_steps = ModelCheckpoint(dirpath=ckpt_dir, filename="last", every_n_train_steps=tc.checkpoint_every_n_steps,
                                 save_top_k=1, enable_version_counter=False)
    last_epoch = ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_on_train_epoch_end=True,
                                 save_top_k=1, enable_version_counter=False)
    for cb in (best, last_steps, last_epoch):
        cb.FILE_EXTENSION = ".safetensors"
    callbacks = [*extra_callbacks, FlushLogs(), MonitoredKeys(config), best, last_steps, last_epoch]
    if tc.progress:  # on stderr: stdout carries only the run directory (RUN=$(hourglass train ...))
        callbacks.append(RichProgressBar(console_kwargs={"stderr": True}))
    if tc.early_stopping:
        es = tc.early_stopping
        # Checked after each validation, not at the end of a training epoch: a run whose train.max_steps ends
        # mid-epoch has no validation metric there, and Lightning would stop it with a RuntimeError.
        callbacks.append(ConfiguredPatience(monitor=es.monitor, mode=es.mode, patience=es.patience,
                                            min_delta=es.min_delta, check_on_train_epoch_end=False))
    if tc.average_last:  # the last N epochs' weights, averaged by finish() (hourglass.averaging)
        from hourglass.averaging import LastEpochs

        callbacks.append(LastEpochs(ckpt_dir, tc.average_last))
    csv_logger = CSVLogger(run_dir, name="logs", version="")
    loggers = [csv_logger, TensorBoardLogger(run_dir, name="logs", version="tb")]
    try:
        trainer = L.Trainer(
            default_root_dir=run_dir, max_epochs=tc.max_epochs, max_steps=tc.max_steps, callbacks=callbacks,
            logger=loggers, plugins=[SafetensorsCheckpointIO()], gradient_clip_val=tc.gradient_clip,
            enable_progress_bar=tc.progress, enable_model_summary=False, use_distributed_sampler=False,
            **trainer_kwargs(config),
        )
    # Lightning's words name the bad value; an accelerator whose package is missing (tpu: torch_xla) raises an
    # ImportError.
    except (ValueError, TypeError, ImportError, MisconfigurationException) as err:
        raise ConfigError(
            f"The trainer section of the config cannot run here: {err} Fix that trainer.* key in the config or with "
            "--set (e.g. trainer.accelerator=cpu, trainer.precision=32-true); nothing was written."
        ) from None
    if log_history and not _ddp_child():
        with warnings.catch_warnings():  # its "previous log files will be deleted": they are written back here
            warnings.filterwarnings("ignore", message=".*Previous log files")
            writer = csv_logger.experiment  # opening it deleted metrics.csv
        writer.metrics[:0] = list(log_history)
        writer.save()
    return trainer


def say_nodes(trainer: L.Trainer) -> None:
    """On a run over several nodes, say (once per node, on stderr) that it waits for the others, and where they
    meet: until every node has joined, Lightning waits without a word (its INFO lines are off, cli._quiet)."""
    if trainer.num_nodes <= 1 or trainer.local_rank != 0:  # Lightning reads SLURM_LOCALID and the like
        return
    env = getattr(trainer.strategy, "cluster_environment", None)
    where = f"{env.main_address}:{env.main_port}" if env is not None else "MASTER_ADDR:MASTER_PORT"
    print(f"Training on {trainer.num_nodes} nodes; this is node {trainer.node_rank}. It waits until every node has "
          f"started the same command and joined at {where}. A cluster's scheduler sets that (Lightning reads SLURM, "
          "TorchElastic, LSF and Kubeflow); by hand, set MASTER_ADDR, MASTER_PORT and NODE_RANK (0 to "
          f"{trainer.num_nodes - 1}) on each node. On one machine, use trainer.devices instead.", file=sys.stderr)


def train(config: Config, *, out: str | None = None, resume: Path | None = None,
          callbacks: Sequence[Callback] = (), report: bool = True) -> Path:
    """Train ``config``; return the run directory. ``resume`` continues that run directory. ``callbacks`` are
    extra Lightning callbacks (run first); ``report=False`` skips the final metrics, pictures and report."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = build_data(config)
    if resume:
        data.resume_from(Path(resume))  # its own vocabulary, not one trained again on today's text
    data.setup("fit")
    config = absolute_data_paths(config)  # stored so, the run works from any directory
    task = build_task(config, data)
    if hasattr(data, "check_model"):  # a model too small for the data is refused before anything is written
        data.check_model(task.model)
    run_dir = Path(resume) if resume else new_run_dir(config, out)
    ckpt, history = None, []
    if resume:
        resuming.check_config(config, run_dir)
        ckpt, steps_done = resuming.checkpoint(run_dir, task, data)
        history = resuming.log_history(run_dir, steps_done)
    trainer = make_trainer(config, run_dir, callbacks, history)  # before any file: a bad trainer key loses nothing
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume and not _ddp_child():
        _set_aside_logs(run_dir)
    save_config(config, run_dir / "config.yaml")
    if data.early_artifacts and not _ddp_child():  # tokenizers: a killed run resumes with them (resume_from)
        data.save_artifacts(run_dir)
    start = time.time()
    fit_data = data
    if config.train.cache_features:  # the frozen encoder's codes, computed once (hourglass.features)
        from hourglass.features import cached_data

        fit_data = cached_data(config, task, data, run_dir)
    os.environ[RUN_DIR_ENV] = str(run_dir)  # inherited by the DDP processes that fit launches
    say_nodes(trainer)
    try:
        trainer.fit(task, datamodule=fit_data, ckpt_path=str(ckpt) if ckpt else None)
    except SystemExit:  # Lightning turns Ctrl-C into a graceful stop, then sys.exit(1)
        if trainer.interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning set it to ignore
            raise KeyboardInterrupt(str(run_dir)) from None
        raise
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    if report and trainer.is_global_zero:
        finish(config, task, data, trainer, run_dir, time.time() - start)
    return run_dir


def finish(config: Config, task, data, trainer: L.Trainer, run_dir: Path, seconds: float) -> None:
    """Export the best weights, then write metrics, pictures and the report."""
    from hourglass.report import write_report

    from hourglass.averaging import averaged_state

    best = trainer.checkpoint_callbacks[0]
    averaged = averaged_state(run_dir / "checkpoints", config.train.average_last) if config.train.average_last else None
    if averaged is not None:  # train.average_last: export the mean of the last N epochs instead of the best
        task.load_state_dict(averaged)
    elif best.best_model_path and Path(best.best_model_path).is_file():
        task.load_state_dict(load_tree(Path(best.best_model_path))["state_dict"])
    else:
        steps = f"{trainer.global_step} step{'s' if trainer.global_step != 1 else ''}"
        warnings.warn(f"Training stopped after {steps}, before any validation that measures "
                      f"{config.train.monitor}, so there is no best checkpoint: model.safetensors holds the last "
                      "weights. Train at least one epoch (raise train.max_steps) to keep the best ones.", UserWarning)
    task.to("cpu")
    save_weights(task.model, run_dir / "model.safetensors", {"config": config.to_dict()})
    if not data.early_artifacts:  # those were written before training (train)
        data.save_artifacts(run_dir)
    metrics = {
        "final": task.evaluate(data),
        "best": {config.train.monitor: _float(best.best_model_score)},
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "train_seconds": round(seconds, 2),
        "parameters": sum(p.numel() for p in task.model.parameters()),
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    task.plots(data, run_dir / "plots")
    write_report(run_dir)


def _float(x) -> float | None:
    return float(x) if isinstance(x, torch.Tensor) else x
