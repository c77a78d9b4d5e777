"""One trainer for every model and defense.

Defaults are MAD's (Adam, learning rate 1e-3); SGD with momentum and a cosine schedule is an option.
An input transform ``transform(images, generator) -> images`` is applied to every training batch:
this is where MAD's grid masking plugs in (``maskdefense.masking.GridMask``).

After every epoch the trainer writes, atomically, ``<out>/model.safetensors`` (+ ``model.json``) and
``<out>/train_state.pt`` (optimizer, epoch, generator state, history). ``fit(resume=True)`` continues
from there, so a run killed at any moment loses at most the epoch in progress.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import Tensor, nn

from ..checkpoint import CheckpointError, load_into, load_state_dict_file, save_checkpoint, save_state
from ..provenance import run_metadata
from ..validation import check_images, check_labels


class Transform(Protocol):
    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor: ...


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"  # "adam" (MAD's choice) or "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"  # "none" or "cosine"
    seed: int = 0
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("none", "cosine"):
            raise ValueError(f"schedule must be 'none' or 'cosine', got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float | None
    seconds: float
    lr: float


@torch.no_grad()
def predict_labels(model: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Argmax predictions of ``model`` in batches (the model is used in whatever mode it is in)."""
    out = [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    was = model.training
    model.eval()
    try:
        return float((predict_labels(model, images, batch_size) == labels).float().mean())
    finally:
        model.train(was)


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        train: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor] | None = None,
        config: TrainConfig | None = None,
        *,
        transform: Transform | None = None,
        out_dir: str | Path | None = None,
        meta: dict[str, Any] | None = None,
        progress: bool | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.config = config or TrainConfig()
        x, y = train
        check_images(x, name="training images")
        self.train_x, self.train_y = x, check_labels(y, len(x), name="training labels")
        if val is not None:
            check_images(val[0], name="validation images")
            val = (val[0], check_labels(val[1], len(val[0]), name="validation labels"))
        self.val = val
        self.transform = transform
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.meta = dict(meta or {})
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.history: list[EpochStats] = []
        self.generator = torch.Generator().manual_seed(self.config.seed)
        torch.manual_seed(self.config.seed)  # parameter init of layers created later, dropout
        self.optimizer = self._make_optimizer()
        steps = self.config.epochs * math.ceil(len(x) / self.config.batch_size)
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=steps)
            if self.config.schedule == "cosine" else None
        )

    # -- setup -------------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=True)

    def _run_config(self) -> dict[str, Any]:
        """What must match for a resume to be valid (epochs may grow)."""
        cfg = asdict(self.config)
        cfg.pop("epochs")
        cfg.pop("eval_batch_size")
        return {
            "train": cfg,
            "arch": getattr(self.model, "spec", {}),
            "transform": self.transform.config() if hasattr(self.transform, "config") else repr(self.transform) if self.transform else None,
            "n_train": len(self.train_x),
        }

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / "model.safetensors" if self.out_dir else None

    @property
    def state_path(self) -> Path | None:
        return self.out_dir / "train_state.pt" if self.out_dir else None

    # -- checkpointing -----------------------------------------------------------------------
    def _save(self, wall: float) -> None:
        if self.out_dir is None:
            return
        last = self.history[-1]
        meta = {
            **run_metadata(self.config.seed),
            **self.meta,
            "epochs": last.epoch,
            "val_accuracy": last.val_accuracy,
            "train_config": asdict(self.config),
            "transform": self._run_config()["transform"],
            "history": [asdict(h) for h in self.history],
            "wall_time_s": round(wall, 2),
        }
        save_checkpoint(self.model, self.checkpoint_path, meta)  # type: ignore[arg-type]
        save_state(self.state_path, {  # type: ignore[arg-type]
            "run_config": json.dumps(self._run_config(), sort_keys=True, default=str),
            "epoch": last.epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": json.dumps([asdict(h) for h in self.history]),
            "wall": wall,
        })

    def _try_resume(self) -> float:
        sp, cp = self.state_path, self.checkpoint_path
        if sp is None or cp is None or not sp.exists() or not cp.exists():
            return 0.0
        state = load_state_dict_file(sp)
        mine = json.dumps(self._run_config(), sort_keys=True, default=str)
        if state["run_config"] != mine:
            raise CheckpointError(
                f"{self.out_dir} holds a run with another configuration; use a new --out folder "
                f"or delete it.\n  saved:   {state['run_config']}\n  current: {mine}"
            )
        load_into(self.model, cp)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.history = [EpochStats(**h) for h in json.loads(state["history"])]
        self.log(f"resumed from {cp} after epoch {state['epoch']}")
        return float(state["wall"])

    # -- training ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> tuple[float, float]:
        c = self.config
        self.model.train()
        n = len(self.train_x)
        order = torch.randperm(n, generator=self.generator)
        total_loss = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        steps = range(0, n, c.batch_size)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(steps, desc=f"epoch {epoch}/{c.epochs}", leave=False, unit="batch")
            steps = bar  # type: ignore[assignment]
        for k, i in enumerate(steps):
            idx = order[i : i + c.batch_size]
            xb, yb = self.train_x[idx], self.train_y[idx]
            if self.transform is not None:
                xb = self.transform(xb, self.generator)
            logits = self.model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler:
                self.scheduler.step()
            # running totals stay tensors: no host sync per batch
            total_loss += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
            if bar is not None and k % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        return float(total_loss) / n, int(correct) / n

    def fit(self, resume: bool = True) -> list[EpochStats]:
        wall0 = self._try_resume() if resume else 0.0
        t_start = time.perf_counter()
        for epoch in range(len(self.history) + 1, self.config.epochs + 1):
            t0 = time.perf_counter()
            loss, train_acc = self.train_epoch(epoch)
            val_acc = (
                accuracy(self.model, *self.val, batch_size=self.config.eval_batch_size)
                if self.val is not None else None
            )
            lr = self.optimizer.param_groups[0]["lr"]
            self.history.append(EpochStats(epoch, loss, train_acc, val_acc, time.perf_counter() - t0, lr))
            self.log(
                f"epoch {epoch}/{self.config.epochs}: loss {loss:.4f}  train acc {train_acc:.4f}"
                + (f"  val acc {val_acc:.4f}" if val_acc is not None else "")
                + f"  ({time.perf_counter() - t0:.1f}s)"
            )
            self._save(wall0 + time.perf_counter() - t_start)
        self.model.eval()
        return self.history

    def wall_time(self) -> float:
        return sum(h.seconds for h in self.history)


__all__ = ["TrainConfig", "Trainer", "EpochStats", "accuracy", "predict_labels", "Transform"]


def train_on_dataset(
    dataset: str,
    model_name: str,
    config: TrainConfig,
    *,
    out_dir: str | Path,
    model_kwargs: dict[str, Any] | None = None,
    transform: Transform | None = None,
    data_root: str | Path | None = None,
    limit: int | None = None,
    resume: bool = True,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load ``dataset``, train ``model_name`` on its train split (validating on the fixed val split),
    measure test accuracy, and write the checkpoint to ``out_dir/model.safetensors``.
    Returns ``(model, metadata record)``."""
    from ..checkpoint import read_metadata
    from ..data import load_dataset
    from ..models import create_model

    train = load_dataset(dataset, "train", root=data_root, limit=limit)
    val = load_dataset(dataset, "val", root=data_root)
    test = load_dataset(dataset, "test", root=data_root)
    _, c, h, _ = train.images.shape
    kwargs = {"in_channels": c, "input_size": h, "num_classes": len(train.classes), **(model_kwargs or {})}
    torch.manual_seed(config.seed)  # parameter initialization draws from the global generator
    model = create_model(model_name, **kwargs)
    trainer = Trainer(
        model, train.tensors(), val.tensors(), config, transform=transform, out_dir=out_dir,
        meta={"dataset": dataset, "n_train": len(train), "n_val": len(val)}, progress=progress, log=log,
    )
    trainer.fit(resume=resume)
    test_acc = accuracy(model, *test.tensors(), batch_size=config.eval_batch_size)
    assert trainer.checkpoint_path is not None
    meta = read_metadata(trainer.checkpoint_path)
    meta["test_accuracy"] = test_acc
    meta["n_test"] = len(test)
    save_checkpoint(model, trainer.checkpoint_path, meta)
    return model, meta
