"""The trainer's settings and its per-epoch record."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Options added with the CPU training recipe: left out of :meth:`TrainConfig.key` at their defaults, so
#: models trained before they existed keep their keys (their run folders and resumes stay valid).
_RECIPE_OPTIONS = ("warmup", "label_smoothing", "weight_decay_norm", "precision", "channels_last")


@dataclass
class TrainConfig:
    """Settings of one training run. Defaults are MAD's (Adam, learning rate 1e-3, fp32, no augmentation);
    the CPU recipe (:data:`maskdefense.training.presets.CPU_RECIPE`) turns on the options below. Every
    optimizer of a task is built from these settings.

    * ``optimizer``: ``"adam"`` or ``"sgd"`` (SGD uses Nesterov momentum when ``momentum`` > 0).
    * ``schedule`` over all steps of the run: ``"none"``; ``"cosine"`` (from ``lr`` to 0); ``"onecycle"``
      (PyTorch's ``OneCycleLR``: warm-up from ``lr / 25`` to ``lr`` over the first ``warmup`` fraction of the
      steps, then cosine annealing to ``lr / 1e5``; SGD's momentum cycles 0.95 -> 0.85 -> 0.95 meanwhile).
    * ``label_smoothing``: of the training cross-entropy (adversarial tasks' inner attack keeps plain
      cross-entropy).
    * ``weight_decay_norm``: ``False`` keeps weight decay off one-dimensional parameters (batch-norm scales
      and shifts, biases), the usual practice; ``True`` decays every parameter.
    * ``precision``: ``"fp32"``, or ``"bf16"``: the forward pass and loss run under CPU autocast to
      bfloat16 (weights, gradients and optimizer state stay fp32); a speed option (see
      ``bench/bench_train_speed.py``). Evaluation always runs in fp32.
    * ``channels_last``: networks and training batches in the channels-last memory format (faster
      convolutions on CPU); checkpoints store contiguous weights either way.

    Data augmentation (off by default: digits must not be flipped): ``crop_padding`` > 0 pads each
    training image by that many zero pixels and crops it back at a random offset; ``hflip`` mirrors each
    image left-right with probability 1/2. Both are drawn from the trainer's seeded generator.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"  # "adam" or "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"  # "none", "cosine" or "onecycle"
    warmup: float = 0.25  # fraction of the steps spent warming up ("onecycle" only)
    label_smoothing: float = 0.0
    weight_decay_norm: bool = True
    precision: str = "fp32"  # "fp32" or "bf16"
    channels_last: bool = False
    seed: int = 0
    eval_batch_size: int = 1000
    crop_padding: int = 0
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("none", "cosine", "onecycle"):
            raise ValueError(f"schedule must be 'none', 'cosine' or 'onecycle', got {self.schedule!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if not 0 < self.warmup < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError(f"warmup must be in (0, 1) and label_smoothing in [0, 1), got {self.warmup!r} and "
                             f"{self.label_smoothing!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1 and lr > 0")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1 or self.crop_padding < 0:
            raise ValueError("weight_decay and crop_padding must be >= 0 and momentum in [0, 1)")

    def key(self) -> dict[str, Any]:
        """What defines the trained weights (for run keys and resume checks): every setting except
        ``eval_batch_size``, and the recipe options only when they differ from their defaults (``warmup``
        only with the one-cycle schedule)."""
        defaults = {f.name: f.default for f in fields(self)}
        out = asdict(self)
        out.pop("eval_batch_size")
        for k in _RECIPE_OPTIONS:
            if out[k] == defaults[k] or (k == "warmup" and self.schedule != "onecycle"):
                out.pop(k)
        return out


@dataclass
class EpochStats:
    """One epoch: the training metrics averaged over the epoch's images (``metrics``; a task with several
    phases names them ``<phase>/<metric>``), the validation metrics (``val``), wall seconds and the
    learning rate of the first phase at the epoch's end. ``train_loss``, ``train_accuracy`` and
    ``val_accuracy`` repeat the usual ones (``None`` when the task has none). ``monitor``: metrics on the
    trainer's monitoring set (e.g. the test set, for accuracy-against-time curves), measured after
    ``seconds`` was taken, in ``monitor_seconds``; they never influence training."""

    epoch: int
    train_loss: float | None
    train_accuracy: float | None
    val_accuracy: float | None
    seconds: float
    lr: float
    metrics: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    monitor: dict[str, float] = field(default_factory=dict)
    monitor_seconds: float = 0.0
