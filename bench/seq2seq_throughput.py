"""Seq2seq training throughput: hourglass's ``train()`` vs a plain PyTorch loop, same model, same batches.

Both sides build the recipe's model with the same builder and seed, read the same batches (the data module's
length-bucketed, token-budget sampler, epoch 0), and take the same optimizer steps: Adam(W) with the recipe's
warm-up schedule, label-smoothed cross-entropy ignoring padding, gradient clipping. "ours" is
``hourglass.training.train`` itself (Lightning, per-step seeding, logging, checkpoints every
``train.checkpoint_every_n_steps``); the plain loop is what one would write by hand. Only training steps are
timed: the first ``--warmup`` steps are not, the next ``--steps`` are, and ``data.train_limit`` keeps them
inside the first epoch, so no validation falls in the window. Rounds alternate which side goes first.
Throughput is target tokens (labels that are not padding) per second. Goal: ours / plain >= 0.97.

    python bench/seq2seq_throughput.py                                   # multi30k-gru-attention
    python bench/seq2seq_throughput.py --recipe multi30k-transformer --steps 30
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

import hourglass.training as hg_train
from hourglass.allocator import keep_freed_memory
from hourglass import recipebook
from hourglass.data.tokenizer import PAD_ID
from hourglass.tasks.schedule import lr_factor, make_optimizer

ROOT = Path(__file__).resolve().parents[1]


def tokens(batch) -> int:
    return int((batch["target"][:, 1:] != PAD_ID).sum())


class Window(Callback):
    """Times optimizer steps [warmup, warmup + steps) of a Lightning run."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps, self.start, self.seconds, self.tokens = warmup, steps, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.warmup < trainer.global_step <= self.warmup + self.steps:
            self.tokens += tokens(batch)
        if trainer.global_step == self.warmup + self.steps:
            self.seconds = time.perf_counter() - self.start


def load(args, extra=()):
    total = args.warmup + args.steps
    base = [f"train.max_steps={total}", "train.max_epochs=1", f"data.train_limit={args.train_limit}",
            "train.progress=false", "train.early_stopping=null"]
    return recipebook.load(args.recipe, base + list(extra))


def run_ours(args) -> dict:
    config = load(args)
    window = Window(args.warmup, args.steps)
    with tempfile.TemporaryDirectory() as out:
        hg_train.train(config, out=out, callbacks=[window], report=False)  # report (metrics, plots): after
    return {"seconds": window.seconds, "tokens": window.tokens}


def run_plain(args) -> dict:
    config = load(args)
    L.seed_everything(config.seed, verbose=False)
    data = hg_train.build_data(config)
    data.setup("fit")
    model = hg_train.build_task(config, data).model  # the same builder and seed as the hourglass side
    model.train()
    cfg, ls = config.train, config.task.options().get("label_smoothing", 0.1)
    opt = make_optimizer(model.parameters(), cfg)
    total = args.warmup + args.steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg, total))
    start, count = 0.0, 0
    for step, batch in enumerate(data.train_dataloader()):
        if step == args.warmup:
            start = time.perf_counter()
        target = batch["target"]
        state = model.decoder.init_state(model.encode(batch["source"]))
        logits, _ = model.decoder(target[:, :-1], state)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1), ignore_index=PAD_ID,
                               label_smoothing=ls)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.gradient_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.gradient_clip)
        opt.step()
        sched.step()
        if step >= args.warmup:
            count += tokens(batch)
        if step + 1 == total:
            break
    return {"seconds": time.perf_counter() - start, "tokens": count}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="multi30k-gru-attention")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--train-limit", type=int, default=6000, help="training pairs (keeps the window in epoch 0)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    # As the `hourglass` command does when it starts; HOURGLASS_KEEP_FREED_MEMORY=0 measures glibc's defaults.
    kept = keep_freed_memory()
    ours, plain = [], []
    for r in range(args.rounds):
        order = (("ours", run_ours), ("plain", run_plain)) if r % 2 == 0 else (("plain", run_plain), ("ours", run_ours))
        for name, fn in order:
            res = fn(args)
            res["tokens_per_s"] = res["tokens"] / res["seconds"]
            (ours if name == "ours" else plain).append(res)
            print(f"round {r + 1} {name:5s} {res['tokens']} tokens in {res['seconds']:.2f}s = "
                  f"{res['tokens_per_s']:.0f} tokens/s", flush=True)
    assert all(o["tokens"] == q["tokens"] for o, q in zip(ours, plain)), "the two sides saw different batches"
    o, q = (statistics.median(r["tokens_per_s"] for r in side) for side in (ours, plain))
    summary = {"recipe": args.recipe, "steps": args.steps, "rounds": args.rounds, "ours_tokens_per_s": o,
               "plain_tokens_per_s": q, "ratio": o / q, "threads": torch.get_num_threads(), "keep_freed_memory": kept}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "ours": ours, "plain": plain}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
