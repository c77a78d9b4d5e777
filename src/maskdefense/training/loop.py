"""One trainer for every model and defense: it runs a training *task* (:mod:`maskdefense.training.tasks`)
that owns the networks, optimizers and the training step, and keeps for every task:

* seeded randomness: one ``torch.Generator`` (seeded from ``TrainConfig.seed``) draws the shuffling, the
  data augmentation and every random choice of the task's step;
* per-epoch validation, progress bars (tqdm) and a log line per epoch;
* after every epoch, atomically, ``<out>/train_state.pt`` (networks, optimizers, generator, history:
  everything a resume needs, one file) and then the checkpoint ``<out>/model.safetensors`` + ``model.json``
  (one network: :func:`~maskdefense.checkpoint.save_checkpoint`; several: one artefact of named
  components, :func:`~maskdefense.checkpoint.save_components`). ``fit(resume=True)`` continues from the
  training state, so a run killed at any moment loses at most the epoch in progress; a checkpoint left
  behind the state by a kill between the two writes is rewritten from the state.
* run metadata: the checkpoint's embedded record is fixed and ordered (identical training gives
  identical bytes); the command, start time and wall times go to ``model.json`` and the training state.
* an exclusive lock on the output folder while training (:func:`maskdefense.rundir.exclusive`).

``Trainer(model, train, val, config, transform=...)`` is sugar for
``Trainer(ClassificationTask(model, transform=...), ...)``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..checkpoint import (
    CheckpointError, components_of, load_state_dict_file, read_metadata, read_sidecar, save_checkpoint,
    save_components, save_state, weights_sha256,
)
from ..provenance import run_metadata
from ..rundir import exclusive
from ..validation import check_images
from .config import EpochStats, TrainConfig
from .predict import accuracy, predict_labels
from .tasks import ClassificationTask, SegmentationTask, Task, make_task
from .tasks.base import describe
from .transforms import Transform

__all__ = ["TrainConfig", "Trainer", "EpochStats", "accuracy", "predict_labels", "Transform", "train_on_dataset",
           "train_autoencoder_on_dataset", "train_sfm_on_dataset", "train_denoiser_on_dataset", "train_on_part_data",
           "training_key", "sfm_training_key", "denoiser_training_key", "part_training_key", "PART_TASKS"]

STATE_FORMAT = "maskdefense-train-state-v2"
#: Run metadata that stays out of the checkpoint's embedded record (it differs between identical runs).
_RUN_KEYS = ("command", "machine", "started")
_LABELS = {"accuracy": "acc"}


class Trainer:
    """Runs a task on in-memory data ``(images, targets)`` (class labels, or what the task trains on:
    :meth:`~maskdefense.training.tasks.Task.check_targets`): see the module docstring."""

    def __init__(
        self,
        task: Task | nn.Module,
        train: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor] | None = None,
        config: TrainConfig | None = None,
        *,
        transform: Transform | None = None,
        monitor: tuple[Tensor, Tensor] | None = None,
        out_dir: str | Path | None = None,
        meta: dict[str, Any] | None = None,
        progress: bool | None = None,
        log: Callable[[str], None] | None = None,
        lock: bool = True,
    ) -> None:
        """``task``: a :class:`~maskdefense.training.tasks.Task`, or a classifier (then trained with
        cross-entropy on ``transform(images)``). ``meta`` is added to the checkpoint's record. ``lock``:
        hold the output folder's lock during :meth:`fit` (``False`` when the caller holds it). ``monitor``:
        images and labels the task's validation metrics are also measured on after every epoch, outside the
        epoch's timed ``seconds`` (test-accuracy-against-time curves); never used for any decision."""
        if isinstance(task, Task):
            if transform is not None:
                raise ValueError("give the transform to the task, not to the Trainer")
        elif isinstance(task, nn.Module):
            task = ClassificationTask(task, transform=transform)
        else:
            raise TypeError(f"task must be a Task or an nn.Module, got {type(task).__name__}")
        self.task: Task = task
        self.config = config or TrainConfig()
        x, y = train
        check_images(x, name="training images")
        self.train_x, self.train_y = x, task.check_targets(y, len(x), name="training labels")
        if len(x) == 0:
            raise ValueError("no training images")
        if val is not None:
            check_images(val[0], name="validation images")
            val = (val[0], task.check_targets(val[1], len(val[0]), name="validation labels"))
        self.val = val
        if monitor is not None:
            check_images(monitor[0], name="monitoring images")
            monitor = (monitor[0], task.check_targets(monitor[1], len(monitor[0]), name="monitoring labels"))
        self.monitor = monitor
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.meta = dict(meta or {})
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.lock = lock
        self.history: list[EpochStats] = []
        self.generator = torch.Generator().manual_seed(self.config.seed)
        torch.manual_seed(self.config.seed)  # parameter init of layers created later, dropout
        self.steps_per_epoch = math.ceil(len(x) / self.config.batch_size)
        self.task.setup(self.config, self.steps_per_epoch)
        self._prov: dict[str, Any] = {}
        self._wall = 0.0

    # -- the task's parts, as attributes of the classic trainer ----------------------------------
    @property
    def model(self) -> nn.Module:
        """The network ``"model"`` of the task (else its first network)."""
        nets = self.task.networks
        return nets["model"] if "model" in nets else next(iter(nets.values()))

    @property
    def transform(self) -> Transform | None:
        return getattr(self.task, "transform", None)

    def _run_config(self) -> dict[str, Any]:
        """What must match for a resume to be valid: epochs may grow, unless a schedule depends on them
        (a cosine schedule's length is the run's length: extending it would restart the learning rate)."""
        cfg = self.config.key()
        if self.config.schedule == "none":
            cfg.pop("epochs")
        return {"train": cfg, "task": self.task.config(), "n_train": len(self.train_x)}

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / "model.safetensors" if self.out_dir else None

    @property
    def state_path(self) -> Path | None:
        return self.out_dir / "train_state.pt" if self.out_dir else None

    # -- checkpointing -----------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """The checkpoint's embedded record: what the weights are, nothing about the run (see the module docstring)."""
        last = self.history[-1]
        task = self.task.config()
        return {
            **{k: v for k, v in self._prov.items() if k not in _RUN_KEYS},
            **self.meta,
            "epochs": last.epoch,
            "val_accuracy": last.val_accuracy,
            "val": last.val,
            "train_config": asdict(self.config),
            "task": task,
            "transform": task.get("transform"),
            "history": [{k: v for k, v in asdict(h).items() if k not in ("seconds", "monitor_seconds")}
                        for h in self.history],
        }

    def run_info(self) -> dict[str, Any]:
        """The run's metadata for the sidecar: command, start, machine, wall time, seconds per epoch."""
        return {**{k: self._prov[k] for k in _RUN_KEYS if k in self._prov}, "wall_time_s": round(self._wall, 2),
                "history": [asdict(h) for h in self.history]}

    def _export(self) -> None:
        """Write the checkpoint of the current weights (after the training state)."""
        nets = self.task.networks
        path = self.checkpoint_path
        assert path is not None
        if list(nets) == ["model"]:
            save_checkpoint(nets["model"], path, self.record(), run=self.run_info())
        else:
            save_components(nets, path, self.record(), run=self.run_info())

    def _save(self) -> None:
        if self.out_dir is None:
            return
        nets = {k: {n: t.detach().cpu() for n, t in v.state_dict().items()} for k, v in self.task.networks.items()}
        save_state(self.state_path, {  # type: ignore[arg-type]
            "format": STATE_FORMAT,
            "run_config": json.dumps(self._run_config(), sort_keys=True, default=str),
            "epoch": self.history[-1].epoch,
            "networks": nets,
            "weights_sha256": {k: weights_sha256(s) for k, s in nets.items()},
            "task": self.task.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": json.dumps([asdict(h) for h in self.history]),
            "wall": self._wall,
        })
        self._export()

    def _checkpoint_holds(self, hashes: dict[str, str]) -> bool:
        try:
            record = read_metadata(self.checkpoint_path)  # type: ignore[arg-type]
            return {k: c.get("weights_sha256") for k, c in components_of(record).items()} == hashes
        except CheckpointError:
            return False

    def _try_resume(self) -> None:
        sp = self.state_path
        if sp is None or not sp.exists():
            return
        state = load_state_dict_file(sp)
        if state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{sp} was written by an older version of maskdefense and cannot be resumed; "
                                  "start over (--no-resume, resume=False) or use another output folder")
        mine = json.dumps(self._run_config(), sort_keys=True, default=str)
        if state["run_config"] != mine:
            raise CheckpointError(
                f"{self.out_dir} holds a run with another configuration; use a new --out folder "
                f"or delete it.\n  saved:   {state['run_config']}\n  current: {mine}"
            )
        hashes = state["weights_sha256"]
        for k, net in self.task.networks.items():
            if weights_sha256(state["networks"][k]) != hashes[k]:
                raise CheckpointError(f"{sp} is corrupted (the weights of {k!r} do not match their hash); "
                                      "start over (--no-resume, resume=False)")
            net.load_state_dict(state["networks"][k])
        self.task.load_state_dict(state["task"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.history = [EpochStats(**h) for h in json.loads(state["history"])]
        self._wall = float(state["wall"])
        self.log(f"resumed from {sp} after epoch {state['epoch']}")
        if not self._checkpoint_holds(hashes):
            self.log(f"{self.checkpoint_path} does not hold the weights of epoch {state['epoch']} (the run stopped "
                     "between writing the training state and the checkpoint): writing it again")
            self._export()

    # -- training ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Run every phase of the task once over the training data; returns the metrics averaged over
        the images (named ``<phase>/<metric>`` when the task has several phases)."""
        c, task = self.config, self.task
        n = len(self.train_x)
        phases = task.phases()
        aug = c.crop_padding > 0 or c.hflip
        out: dict[str, float] = {}
        for phase in phases:
            task.begin_phase(phase)
            order = torch.randperm(n, generator=self.generator)
            totals: dict[str, Tensor] = {}
            steps = range(0, n, c.batch_size)
            bar = None
            if self.progress:
                from tqdm import tqdm

                desc = f"epoch {epoch}/{c.epochs}" + (f" {phase}" if len(phases) > 1 else "")
                bar = tqdm(steps, desc=desc, leave=False, unit="batch")
                steps = bar  # type: ignore[assignment]
            for k, i in enumerate(steps):
                idx = order[i : i + c.batch_size]
                xb, yb = self.train_x[idx], self.train_y[idx]
                if aug:
                    xb, yb = task.augment(xb, yb, self.generator, c.crop_padding, c.hflip)
                metrics = task.step(phase, xb, yb, self.generator)
                # running totals stay tensors: no host sync per batch
                b = len(idx)
                for key, v in metrics.items():
                    t = totals.get(key)
                    if t is None:
                        totals[key] = v * b
                    else:
                        t.add_(v, alpha=b)
                if bar is not None and k % 20 == 0:
                    bar.set_postfix(loss=f"{float(metrics['loss']):.3f}")
            prefix = f"{phase}/" if len(phases) > 1 else ""
            out.update({prefix + key: float(t) / n for key, t in totals.items()})
        return out

    def _measure(self, data: tuple[Tensor, Tensor] | None) -> dict[str, float]:
        """The task's validation metrics on ``data`` (none without data), with a generator seeded the same
        way every epoch."""
        return self.task.validate(data, torch.Generator().manual_seed(self.config.seed)) if data is not None else {}

    def fit(self, resume: bool = True) -> list[EpochStats]:
        """Train to ``config.epochs`` epochs (continuing a saved run when ``resume``); refuses a saved run
        that is already longer than asked."""
        lock = exclusive(self.out_dir, "train") if self.out_dir is not None and self.lock else nullcontext()
        with lock:
            return self._fit(resume)

    def _fit(self, resume: bool) -> list[EpochStats]:
        c = self.config
        self._prov = run_metadata(c.seed)
        if resume:
            self._try_resume()
        done = len(self.history)
        if done > c.epochs:
            raise CheckpointError(
                f"{self.out_dir} holds a run trained for {done} epochs, more than the {c.epochs} asked for; "
                f"a run cannot be shortened: use another output folder, or start over (--no-resume, resume=False)")
        if done and done == c.epochs:
            self.log(f"{self.out_dir} already holds the finished {done}-epoch run: nothing to train")
        wall0, t_start = self._wall, time.perf_counter()
        for epoch in range(done + 1, c.epochs + 1):
            t0 = time.perf_counter()
            metrics = self.train_epoch(epoch)
            val = self._measure(self.val)
            seconds = time.perf_counter() - t0
            mon = self._measure(self.monitor)
            mon_s = time.perf_counter() - t0 - seconds if self.monitor is not None else 0.0
            self.history.append(EpochStats(epoch, metrics.get("loss"), metrics.get("accuracy"), val.get("accuracy"),
                                           seconds, self.task.lr(), metrics, val, mon, mon_s))
            self.log(f"epoch {epoch}/{c.epochs}: " + "  ".join(
                [f"{_LABELS.get(k, k)} {v:.4f}" for k, v in metrics.items()]
                + [f"val {_LABELS.get(k, k)} {v:.4f}" for k, v in val.items()]
                + [f"monitor {_LABELS.get(k, k)} {v:.4f}" for k, v in mon.items()]) + f"  ({seconds:.1f}s)")
            self._wall = wall0 + time.perf_counter() - t_start
            self._save()
        self.task.finish()
        return self.history


def training_key(dataset: str | Mapping[str, Any], model_name: str, model_kwargs: dict[str, Any] | None,
                 config: TrainConfig,
                 transform: Transform | nn.Module | None = None, limit: int | None = None,
                 init: str | None = None, loss: str | None = None,
                 task: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that defines a model trained by :func:`train_on_dataset` (recorded in its checkpoint as
    ``training_key``): two runs with equal keys train the same model. ``init``: the weights hash of the
    checkpoint training started from (fine-tuning), absent when trained from scratch. ``loss``: the
    reconstruction loss of an autoencoder (:func:`train_autoencoder_on_dataset`; its ``transform`` is the
    corruption), absent for a classifier. ``task``: what else a task trains and how (a masker trained with
    the classifier: :func:`train_sfm_on_dataset`; ``transform`` is then its preprocessing; the inner attack of
    adversarial training; the kind of a network trained on part data), absent otherwise. ``dataset``: a
    registered dataset's name, or the description of generated or part-annotated data."""
    cfg = config.key()
    key = {"dataset": dataset, "model": model_name, "model_kwargs": dict(model_kwargs or {}), "train": cfg,
           "transform": describe(transform), "limit": limit, **({"init": init} if init is not None else {}),
           **({"reconstruction_loss": loss} if loss is not None else {}), **({"task": task} if task else {})}
    return json.loads(json.dumps(key, sort_keys=True, default=str))


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
    meta: dict[str, Any] | None = None,
    init_from: str | Path | None = None,
    monitor_test: bool = False,
    task: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load ``dataset``, train ``model_name`` on its train split (validating on the fixed val split),
    measure test accuracy, and write the checkpoint to ``out_dir/model.safetensors``, holding the output
    folder's lock throughout. ``meta`` is added to the checkpoint's record (e.g. ``{"preset": ...}``, whose
    test setting ``predict`` uses). ``init_from``: a checkpoint of the same architecture to start from
    (fine-tuning; its weights hash joins the training key). ``monitor_test``: also measure test accuracy
    after every epoch (outside the epoch's timed seconds; for accuracy-against-time curves). ``task``: how the
    model is trained (:func:`~maskdefense.training.tasks.make_task`: adversarial training, the Parseval retraction,
    PCL; ``None``: cross-entropy), part of the training key. Returns ``(model, metadata)``: the record with the
    run's metadata."""
    from ..checkpoint import load_into
    from ..data import load_dataset
    from ..models import create_model

    with exclusive(out_dir, "train"):
        train = load_dataset(dataset, "train", root=data_root, limit=limit)
        val = load_dataset(dataset, "val", root=data_root)
        test = load_dataset(dataset, "test", root=data_root)
        _, c, h, _ = train.images.shape
        kwargs = {"in_channels": c, "input_size": h, "num_classes": len(train.classes), **(model_kwargs or {})}
        torch.manual_seed(config.seed)  # parameter initialization draws from the global generator
        model = create_model(model_name, **kwargs)
        init = None
        if init_from is not None:
            init = components_of(load_into(model, init_from))["model"]["weights_sha256"]
        trainer = Trainer(
            make_task(model, task, transform=transform, num_classes=len(train.classes)), train.tensors(),
            val.tensors(), config, out_dir=out_dir, lock=False,
            meta={**(meta or {}), "dataset": dataset, "n_train": len(train), "n_val": len(val),
                  "training_key": training_key(dataset, model_name, model_kwargs, config, transform, limit, init,
                                               task=task)},
            progress=progress, log=log, monitor=test.tensors() if monitor_test else None,
        )
        trainer.fit(resume=resume)
        test_acc = accuracy(model, *test.tensors(), batch_size=config.eval_batch_size)
        path = trainer.checkpoint_path
        assert path is not None
        meta = read_metadata(path)
        meta["test_accuracy"] = test_acc
        meta["n_test"] = len(test)
        save_checkpoint(model, path, meta, run=trainer.run_info())
        return model, read_sidecar(path)


def train_autoencoder_on_dataset(
    dataset: str,
    model_name: str,
    corrupt: Transform,
    config: TrainConfig,
    *,
    out_dir: str | Path,
    loss: str = "mse",
    model_kwargs: dict[str, Any] | None = None,
    data_root: str | Path | None = None,
    resume: bool = True,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the image-to-image network ``model_name`` to restore clean images of ``dataset`` from
    ``corrupt(images)`` (a denoiser: Gaussian noise; an inpainter: removed pixels) with
    :class:`~maskdefense.training.tasks.ReconstructionTask`, validating on the fixed val split; then
    measure the reconstruction error on the test split (``test_mse``, and ``test_input_mse`` of the corrupted
    input itself) and write the checkpoint to ``out_dir/model.safetensors``, holding the folder's lock."""
    from ..data import load_dataset
    from ..models import create_model
    from ..seeding import derive_seed, seeded
    from .tasks import ReconstructionTask

    with exclusive(out_dir, "train"):
        train = load_dataset(dataset, "train", root=data_root)
        val = load_dataset(dataset, "val", root=data_root)
        test = load_dataset(dataset, "test", root=data_root)
        _, c, h, _ = train.images.shape
        torch.manual_seed(config.seed)
        model = create_model(model_name, **{"in_channels": c, "input_size": h, **(model_kwargs or {})})
        task = ReconstructionTask(model, corrupt, loss=loss)
        trainer = Trainer(
            task, train.tensors(), val.tensors(), config, out_dir=out_dir, lock=False, progress=progress, log=log,
            meta={**(meta or {}), "dataset": dataset, "n_train": len(train), "n_val": len(val),
                  "training_key": training_key(dataset, model_name, model_kwargs, config, corrupt, loss=loss)},
        )
        trainer.fit(resume=resume)
        model.eval()
        err = task.validate(test.tensors(), seeded(derive_seed(config.seed, "test corruption")))
        path = trainer.checkpoint_path
        assert path is not None
        meta = read_metadata(path)
        meta.update(test_mse=err["mse"], test_input_mse=err["input_mse"], n_test=len(test))
        save_checkpoint(model, path, meta, run=trainer.run_info())
        return model, read_sidecar(path)


def denoiser_training_key(dataset: str, model_name: str, model_kwargs: dict[str, Any] | None, config: TrainConfig, *,
                          classifier: str, sigma: float, objective: str, init: str | None = None) -> dict[str, Any]:
    """The :func:`training_key` of a :func:`train_denoiser_on_dataset` run (``classifier``, ``init``: weights
    hashes of the frozen classifier and of the denoiser training starts from)."""
    return training_key(dataset, model_name, model_kwargs, config, init=init,
                        task={"denoiser": {"classifier": classifier, "sigma": float(sigma), "objective": objective}})


def train_denoiser_on_dataset(
    dataset: str,
    model_name: str,
    classifier_from: str | Path,
    config: TrainConfig,
    *,
    out_dir: str | Path,
    sigma: float,
    objective: str = "stability",
    model_kwargs: dict[str, Any] | None = None,
    init_from: str | Path | None = None,
    data_root: str | Path | None = None,
    resume: bool = True,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the denoiser ``model_name`` in front of the frozen classifier of the checkpoint ``classifier_from``
    on Gaussian noise ``sigma`` (:class:`~maskdefense.training.tasks.DenoiserTask`, ``objective`` "stability" or
    "mse": Denoised Smoothing), starting from the denoiser component of ``init_from`` when given (Salman et al.'s
    ``--pretrained-denoiser``: an MSE-trained denoiser fine-tuned with the stability objective), validating on the
    fixed val split; then measure the test split (``test_accuracy``: the classifier on denoised noisy images,
    ``test_noisy_accuracy``: on the noisy images alone) and write both networks, the components ``"denoiser"``
    and ``"classifier"``, to ``out_dir/model.safetensors``, holding the folder's lock. Returns
    ``(denoiser, metadata)``."""
    from ..checkpoint import load_into, load_model
    from ..data import load_dataset
    from ..models import create_model
    from ..seeding import derive_seed, seeded
    from .tasks import DenoiserTask

    with exclusive(out_dir, "train"):
        train = load_dataset(dataset, "train", root=data_root)
        val = load_dataset(dataset, "val", root=data_root)
        test = load_dataset(dataset, "test", root=data_root)
        _, c, h, _ = train.images.shape
        classifier, cmeta = load_model(classifier_from)
        torch.manual_seed(config.seed)
        denoiser = create_model(model_name, **{"in_channels": c, "input_size": h, **(model_kwargs or {})})
        init = None
        if init_from is not None:
            init = components_of(load_into(denoiser, init_from, component="denoiser"))["denoiser"]["weights_sha256"]
        task = DenoiserTask(denoiser, classifier, sigma, objective=objective)
        key = denoiser_training_key(dataset, model_name, model_kwargs, config, sigma=sigma, objective=objective,
                                    classifier=components_of(cmeta)["model"]["weights_sha256"], init=init)
        trainer = Trainer(task, train.tensors(), val.tensors(), config, out_dir=out_dir, lock=False, progress=progress,
                          log=log, meta={**(meta or {}), "dataset": dataset, "n_train": len(train), "n_val": len(val),
                                         "training_key": key})
        trainer.fit(resume=resume)
        res = task.validate(test.tensors(), seeded(derive_seed(config.seed, "test noise")))
        path = trainer.checkpoint_path
        assert path is not None
        meta = read_metadata(path)
        meta.update({f"test_{k}": v for k, v in res.items()}, n_test=len(test))
        save_components(task.networks, path, meta, run=trainer.run_info())
        return denoiser, read_sidecar(path)


def sfm_training_key(dataset: str, classifier_name: str, classifier_kwargs: dict[str, Any] | None,
                     config: TrainConfig, *, masker_name: str, masker_kwargs: dict[str, Any] | None,
                     weights: Sequence[float], preprocess: nn.Module | None, classifier_input: str,
                     limit: int | None = None, init: str | None = None, norm_group: int = 1) -> dict[str, Any]:
    """The :func:`training_key` of a :func:`train_sfm_on_dataset` run."""
    return training_key(dataset, classifier_name, classifier_kwargs, config, preprocess, limit, init,
                        task={"masker": masker_name, "masker_kwargs": dict(masker_kwargs or {}),
                              "weights": [float(w) for w in weights], "classifier_input": classifier_input,
                              "norm_group": int(norm_group)})


def train_sfm_on_dataset(
    dataset: str,
    classifier_name: str,
    config: TrainConfig,
    *,
    out_dir: str | Path,
    weights: Sequence[float],
    classifier_kwargs: dict[str, Any] | None = None,
    masker_name: str = "attention_unet",
    masker_kwargs: dict[str, Any] | None = None,
    preprocess: nn.Module | None = None,
    classifier_input: str = "preprocessed",
    norm_group: int = 1,
    init_from: str | Path | None = None,
    data_root: str | Path | None = None,
    limit: int | None = None,
    resume: bool = True,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """Train the masker ``masker_name`` with the classifier ``classifier_name`` on ``dataset`` in alternation
    (:class:`~maskdefense.training.tasks.SparseMaskTask`: loss ``weights`` ``(w1, w2, w3)`` with its norms over
    ``norm_group`` images, the preprocessing ``preprocess``, ``classifier_input``), validating on the fixed val
    split; the classifier starts from the single-network checkpoint ``init_from`` when given (pre-training of the
    target model; its weights hash joins the training key). Then measure the test-time pipeline on the test split
    (``test_accuracy``, ``test_mask_mean``, ``test_kept``) and write both networks, the components ``"classifier"``
    and ``"masker"``, to ``out_dir/model.safetensors``, holding the folder's lock. Returns ``(networks, metadata)``."""
    from ..checkpoint import load_into
    from ..data import load_dataset
    from ..models import create_model
    from .tasks import SparseMaskTask

    with exclusive(out_dir, "train"):
        train = load_dataset(dataset, "train", root=data_root, limit=limit)
        val = load_dataset(dataset, "val", root=data_root)
        test = load_dataset(dataset, "test", root=data_root)
        _, c, h, _ = train.images.shape
        torch.manual_seed(config.seed)
        classifier = create_model(classifier_name, **{"in_channels": c, "input_size": h,
                                                      "num_classes": len(train.classes), **(classifier_kwargs or {})})
        masker = create_model(masker_name, **{"in_channels": c, "input_size": h, **(masker_kwargs or {})})
        init = None
        if init_from is not None:
            init = components_of(load_into(classifier, init_from))["model"]["weights_sha256"]
        task = SparseMaskTask(classifier, masker, weights=weights, preprocess=preprocess,
                              classifier_input=classifier_input, norm_group=norm_group)
        key = sfm_training_key(dataset, classifier_name, classifier_kwargs, config, masker_name=masker_name,
                               masker_kwargs=masker_kwargs, weights=weights, preprocess=preprocess,
                               classifier_input=classifier_input, limit=limit, init=init, norm_group=norm_group)
        trainer = Trainer(task, train.tensors(), val.tensors(), config, out_dir=out_dir, lock=False, progress=progress,
                          log=log, meta={**(meta or {}), "dataset": dataset, "n_train": len(train), "n_val": len(val),
                                         "training_key": key})
        trainer.fit(resume=resume)
        res = task.validate(test.tensors(), torch.Generator().manual_seed(config.seed))
        path = trainer.checkpoint_path
        assert path is not None
        meta = read_metadata(path)
        meta.update({f"test_{k}": v for k, v in res.items()}, n_test=len(test))
        save_components(task.networks, path, meta, run=trainer.run_info())
        return task.networks, read_sidecar(path)


#: What :func:`train_on_part_data` trains: a part extractor (per-pixel part labels) or an image classifier.
PART_TASKS = ("segment", "classify")


def part_training_key(task: str, data: Mapping[str, Any], model_name: str, model_kwargs: dict[str, Any] | None,
                      config: TrainConfig, area_threshold: float = 0.01) -> dict[str, Any]:
    """The :func:`training_key` of a :func:`train_on_part_data` run (``area_threshold`` only for ``"segment"``:
    its part-set metric, recorded with the extractor)."""
    if task not in PART_TASKS:
        raise ValueError(f"task must be one of {PART_TASKS}, got {task!r}")
    kind = {"kind": task, **({"area_threshold": float(area_threshold)} if task == "segment" else {})}
    return training_key(dict(data), model_name, model_kwargs, config, task=kind)


def train_on_part_data(
    task: str,
    data: Mapping[str, Any],
    model_name: str,
    config: TrainConfig,
    *,
    out_dir: str | Path,
    model_kwargs: dict[str, Any] | None = None,
    area_threshold: float = 0.01,
    data_root: str | Path | None = None,
    resume: bool = True,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train on the part-annotated data ``data`` (a description for :func:`maskdefense.data.part_dataset`),
    validating on its val split, and write the checkpoint to ``out_dir/model.safetensors``, holding the folder's
    lock. ``task="segment"``: the part extractor ``model_name`` (built with ``num_parts``) learns the part maps
    (:class:`~maskdefense.training.tasks.SegmentationTask`); test metrics ``test_pixel_accuracy``,
    ``test_mean_iou``, ``test_part_set_accuracy``. ``task="classify"``: the classifier ``model_name`` (built with
    ``num_classes``) learns the class labels; ``test_accuracy``. The record holds the data description
    (``part_data``), the part vocabulary (``part_names``), the classes and, when the description has them, which
    parts each class has (``class_parts``): what a part-based defense needs besides the weights."""
    from ..data import part_dataset
    from ..models import create_model
    from .tasks.segment import segmentation_metrics

    key = part_training_key(task, data, model_name, model_kwargs, config, area_threshold)
    with exclusive(out_dir, "train"):
        train, val, test = (part_dataset(data, s, root=data_root) for s in ("train", "val", "test"))
        _, c, h, _ = train.images.shape
        size = {"num_parts": len(train.part_names)} if task == "segment" else {"num_classes": len(train.classes)}
        torch.manual_seed(config.seed)
        model = create_model(model_name, **{"in_channels": c, "input_size": h, **size, **(model_kwargs or {})})
        targets = (lambda d: (d.images, d.part_map)) if task == "segment" else (lambda d: (d.images, d.labels))
        work: Task = SegmentationTask(model, area_threshold=area_threshold) if task == "segment" \
            else ClassificationTask(model)
        record = {"part_data": json.loads(json.dumps(dict(data))), "part_names": list(train.part_names),
                  "classes": list(train.classes),
                  **({"class_parts": {k: list(v) for k, v in data["class_parts"].items()}}
                     if "class_parts" in data else {})}
        trainer = Trainer(work, targets(train), targets(val), config, out_dir=out_dir, lock=False, progress=progress,
                          log=log, meta={**(meta or {}), **record, "n_train": len(train), "n_val": len(val),
                                         "training_key": key})
        trainer.fit(resume=resume)
        model.eval()
        if task == "segment":
            res = {f"test_{k}": v for k, v in segmentation_metrics(
                model, test.images, test.part_map, area_threshold=area_threshold,
                batch_size=config.eval_batch_size).items()}
        else:
            res = {"test_accuracy": accuracy(model, test.images, test.labels, batch_size=config.eval_batch_size)}
        path = trainer.checkpoint_path
        assert path is not None
        meta = read_metadata(path)
        meta.update(res, n_test=len(test))
        save_checkpoint(model, path, meta, run=trainer.run_info())
        return model, read_sidecar(path)
