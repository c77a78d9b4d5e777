"""The task protocol: what a training run trains, and how.

A :class:`Task` owns its networks (``networks``: name -> ``nn.Module``, saved as the named components
of the checkpoint), one optimizer (and schedule) per phase, and the training step. The
:class:`~maskdefense.training.loop.Trainer` owns the data, the seeded generator, the epochs, resuming,
checkpoints, progress and validation; every epoch it runs each of the task's :meth:`~Task.phases` in
order, each phase one shuffled pass over the training data, calling :meth:`~Task.step` per batch.

During a phase, the networks the phase trains (:meth:`~Task.trains`) are in train mode with their
parameters trainable; every other network is in eval mode with its parameters frozen (no gradient, no
BatchNorm statistics updated). A subclass defines at least :meth:`~Task.loss`; :meth:`~Task.step`
(loss, backward, optimizer step, post-step hooks, schedule) rarely needs overriding.

The trainer's *targets* are class labels ``(N,)`` unless a task says otherwise: :meth:`~Task.check_targets`
validates them and :meth:`~Task.augment` crops and flips a training batch (a segmentation task's targets are
per-pixel maps, cropped and flipped with their images).

Metrics returned by :meth:`~Task.loss` and :meth:`~Task.step` are 0-d tensors averaged over the batch
(the trainer accumulates them without a host synchronization per batch).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...validation import check_labels
from ..config import TrainConfig
from ..transforms import augment

#: ``hook(task, phase)``: run under ``torch.no_grad()`` after every optimizer step.
Hook = Callable[["Task", str], None]


def describe(obj: Any) -> Any:
    """A stable, JSON-able description of a component of a task (for the run configuration): its
    ``config()`` when it has one, a network's registered spec, else its qualified name."""
    if obj is None:
        return None
    if hasattr(obj, "config") and callable(obj.config):
        return obj.config()
    if isinstance(obj, nn.Module):
        spec = getattr(obj, "spec", None)
        if spec:
            return dict(spec)
        return {"class": f"{type(obj).__module__}.{type(obj).__qualname__}",
                "parameters": sum(p.numel() for p in obj.parameters()),
                "buffers": sorted(k for k, _ in obj.named_buffers())}
    target = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{target.__module__}.{target.__qualname__}"


def make_optimizer(params: Sequence[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` names (Adam, or SGD with Nesterov momentum) over ``params``; with
    ``weight_decay_norm=False`` the one-dimensional parameters (norm scales and shifts, biases) form a
    second group without weight decay."""
    groups: list[dict[str, Any]] = [{"params": list(params)}]
    if not config.weight_decay_norm and config.weight_decay > 0:
        groups = [{"params": [p for p in params if p.dim() > 1]},
                  {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.momentum > 0)


def make_schedule(opt: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> Any:
    """The learning-rate schedule ``config`` names over all steps of the run (``None`` for "none")."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, pct_start=config.warmup,
                                                   cycle_momentum=config.optimizer == "sgd" and config.momentum > 0)
    return None


class Task:
    """Base class of training tasks (see the module docstring)."""

    #: Name recorded in the run configuration and the checkpoint.
    name = "task"

    def __init__(self, networks: Mapping[str, nn.Module], *, hooks: Sequence[Hook] = ()) -> None:
        if not networks:
            raise ValueError("a task needs at least one network")
        for k, v in networks.items():
            if not isinstance(v, nn.Module):
                raise TypeError(f"network {k!r} must be an nn.Module, got {type(v).__name__}")
        self.networks: dict[str, nn.Module] = dict(networks)
        self.hooks: list[Hook] = list(hooks)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.train_config: TrainConfig | None = None  # set by setup()
        self._params: dict[str, list[nn.Parameter]] = {}

    # -- what a task defines ---------------------------------------------------------------------
    def phases(self) -> tuple[str, ...]:
        """The phases of every epoch, in order (each is one pass over the training data)."""
        return ("train",)

    def trains(self, phase: str) -> tuple[str, ...]:
        """The networks that ``phase`` updates (default: all)."""
        return tuple(self.networks)

    def loss(self, phase: str, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of one batch and its metrics (0-d tensors, detached)."""
        raise NotImplementedError

    def validate(self, val: tuple[Tensor, Tensor], generator: torch.Generator) -> dict[str, float]:
        """Validation metrics after an epoch (``generator`` is seeded the same way every epoch)."""
        return {}

    def config(self) -> dict[str, Any]:
        """What defines the task, for the run configuration (a resume must match it) and the record."""
        return {"task": self.name, "networks": {k: describe(v) for k, v in self.networks.items()},
                "trains": {p: list(self.trains(p)) for p in self.phases()},
                "hooks": [describe(h) for h in self.hooks]}

    def check_targets(self, y: Any, n: int, name: str = "labels") -> Tensor:
        """The targets of ``n`` images, checked (one clear error otherwise): class labels ``(n,)``."""
        return check_labels(y, n, name=name)

    def augment(self, x: Tensor, y: Tensor, generator: torch.Generator, crop_padding: int,
                hflip: bool) -> tuple[Tensor, Tensor]:
        """A training batch after the configuration's random crop and flip (drawn from ``generator``):
        the images; class labels are unchanged."""
        return augment(x, generator, crop_padding, hflip), y

    def extra_state(self) -> dict[str, Any]:
        """State besides networks, optimizers and schedules to save for resuming (plain data)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # -- machinery -------------------------------------------------------------------------------
    def setup(self, config: TrainConfig, steps_per_epoch: int) -> None:
        """Build one optimizer (and schedule) per phase over the trainable parameters of its networks
        (those with ``requires_grad`` when the task is set up)."""
        self.train_config = config
        self._params = {k: [p for p in v.parameters() if p.requires_grad] for k, v in self.networks.items()}
        self.optimizers, self.schedulers = {}, {}
        for phase in self.phases():
            names = self.trains(phase)
            unknown = [n for n in names if n not in self.networks]
            if unknown:
                raise ValueError(f"phase {phase!r} trains unknown network(s) {unknown}")
            params = [p for n in names for p in self._params[n]]
            if not params:
                raise ValueError(f"phase {phase!r} has no trainable parameters")
            self.optimizers[phase] = opt = make_optimizer(params, config)
            sched = make_schedule(opt, config, steps_per_epoch)
            if sched is not None:
                self.schedulers[phase] = sched
        if config.channels_last:
            for net in self.networks.values():
                net.to(memory_format=torch.channels_last)

    def begin_phase(self, phase: str) -> None:
        trained = set(self.trains(phase))
        for k, net in self.networks.items():
            net.train(k in trained)
            for p in self._params[k]:
                p.requires_grad_(k in trained)

    def finish(self) -> None:
        """After training: every network in eval mode, the trainable parameters trainable again."""
        for k, net in self.networks.items():
            net.eval()
            for p in self._params.get(k, []):
                p.requires_grad_(True)

    def step(self, phase: str, x: Tensor, y: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """One optimizer step of ``phase`` on the batch; returns its metrics (``loss`` included). The loss
        runs under bfloat16 autocast when the configuration asks for it, on a channels-last batch when
        it asks for that."""
        c = self.train_config
        if c is not None and c.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=c is not None and c.precision == "bf16"):
            loss, metrics = self.loss(phase, x, y, generator)
        loss = loss.float()
        opt = self.optimizers[phase]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if self.hooks:
            with torch.no_grad():
                for hook in self.hooks:
                    hook(self, phase)
        sched = self.schedulers.get(phase)
        if sched is not None:
            sched.step()
        return {"loss": loss.detach(), **{k: v.float() for k, v in metrics.items()}}

    def cross_entropy(self, logits: Tensor, y: Tensor) -> Tensor:
        """The training cross-entropy, with the configuration's label smoothing."""
        smoothing = self.train_config.label_smoothing if self.train_config is not None else 0.0
        return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)

    def lr(self) -> float:
        """The current learning rate of the first phase."""
        return float(self.optimizers[self.phases()[0]].param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.load_extra_state(state.get("extra", {}))


@torch.no_grad()
def batched_mean(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int) -> float:
    """Mean over all images of ``fn(x_batch, y_batch)`` (per-image values), computed in batches."""
    total = torch.zeros((), dtype=torch.float64)
    for i in range(0, len(x), batch_size):
        total += fn(x[i : i + batch_size], y[i : i + batch_size]).double().sum()
    return float(total) / max(1, len(x))


def transform_batched(fn: Callable[[Tensor, torch.Generator], Tensor], x: Tensor, generator: torch.Generator,
                      batch_size: int) -> Tensor:
    """``fn(batch, generator)`` over ``x`` in batches, concatenated (validation images corrupted the way
    training corrupts them)."""
    if not len(x):
        return x
    return torch.cat([fn(x[i : i + batch_size], generator) for i in range(0, len(x), batch_size)])


def eval_batch_size(task: Task) -> int:
    return task.train_config.eval_batch_size if task.train_config is not None else 1000


__all__ = ["Task", "Hook", "describe", "make_optimizer", "make_schedule", "batched_mean", "transform_batched", "eval_batch_size"]
