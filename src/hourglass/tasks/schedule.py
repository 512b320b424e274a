"""Optimizers and learning-rate schedules from ``train`` config (plain torch; Lightning steps them)."""
from __future__ import annotations

import math

import torch
from torch import nn

from hourglass.config import TrainConfig


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Multiplier of ``cfg.lr`` at ``step``: linear warm-up, then constant, cosine or inverse square root.

    inverse_sqrt follows Vaswani et al. 2017 (lr ~ 1/sqrt(step) after warm-up).
    """
    warm = max(cfg.warmup_steps, 0)
    if warm and step < warm:
        return (step + 1) / warm
    if cfg.scheduler == "inverse_sqrt":
        return math.sqrt(max(warm, 1) / max(step + 1, 1))
    if cfg.scheduler == "cosine":
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def configure(module: nn.Module, cfg: TrainConfig, total_steps: int):
    """The return value of ``LightningModule.configure_optimizers``."""
    opt = make_optimizer(module.parameters(), cfg)
    if cfg.scheduler == "none" and not cfg.warmup_steps:
        return opt
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg, total_steps))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def apply_base_lr(trainer, lr: float) -> None:
    """Make ``lr`` the base learning rate of every optimizer and schedule, keeping the schedule's position.

    A resume restores the optimizer and scheduler state of its checkpoint, learning rate included; this is what
    lets a resumed run take a new ``train.lr`` (e.g. a lower one after a NaN loss). With an unchanged ``lr`` it
    changes nothing.
    """
    scheduled = {id(c.scheduler.optimizer): c.scheduler for c in trainer.lr_scheduler_configs}
    for opt in trainer.optimizers:
        sched = scheduled.get(id(opt))
        if sched is not None:
            sched.base_lrs = [lr] * len(sched.base_lrs)
        lambdas = sched.lr_lambdas if isinstance(sched, torch.optim.lr_scheduler.LambdaLR) else None
        for i, group in enumerate(opt.param_groups):
            group["initial_lr"] = lr
            group["lr"] = lr * (lambdas[i](sched.last_epoch) if lambdas else 1.0)
