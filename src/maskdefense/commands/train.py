"""``maskdefense train``: train a model (optionally with MAD grid masking) and save a checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import (
    add_data_args, add_progress_arg, add_seed_arg, default_out, echo, nonnegative_float, nonnegative_int,
    positive_float, positive_int, progress_enabled, unit_interval,
)


def mask_fill(text: str) -> str | float:
    """argparse type: a named fill (black, mean, noise) or a grey level in [0, 1]."""
    from ..ops.masking import FILLS

    if text in FILLS:
        return text
    try:
        return unit_interval(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(FILLS)} or a number in [0, 1], got {text!r}") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model (plain or MAD-masked) and save a safetensors checkpoint",
        description="Train a registered model on a dataset. With --mask-cell/--mask-rate every training "
        "image is grid-masked (MAD). Checkpoints are written after every epoch; rerunning the same "
        "command resumes. A --preset fills in the paper's or the CPU-sized settings.",
    )
    p.add_argument("--preset", default=None, help="named settings (see `maskdefense info`), e.g. mad-mnist-cpu")
    add_data_args(p, default_dataset=None)
    p.add_argument("--model", default=None, help="registered model name (default: the dataset's usual model)")
    p.add_argument("--width", type=positive_float, default=None,
                   help="width multiplier for VGG/ResNet (channels of digits_cnn: an integer)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=None, help="adam (MAD's default) or sgd")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default 1e-3)")
    p.add_argument("--schedule", choices=["none", "cosine", "onecycle"], default=None,
                   help="learning-rate schedule over the run (onecycle: warm-up then cosine annealing)")
    p.add_argument("--warmup", type=unit_interval, default=None, help="onecycle: fraction of the steps warming up")
    p.add_argument("--weight-decay", type=nonnegative_float, default=None)
    p.add_argument("--no-decay-norm", action="store_true", default=None,
                   help="keep weight decay off batch-norm parameters and biases")
    p.add_argument("--label-smoothing", type=unit_interval, default=None)
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="bf16: forward pass under CPU bfloat16 autocast (faster on CPUs with AVX512-BF16)")
    p.add_argument("--channels-last", action="store_true", default=None, help="channels-last memory format")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from this checkpoint's weights (same architecture): fine-tuning")
    p.add_argument("--from-scratch", action="store_true",
                   help="train from scratch a preset that fine-tunes another preset's model")
    p.add_argument("--mask-cell", type=positive_int, default=None,
                   help="MAD grid cell side in pixels, dividing the image side (e.g. 7 for MNIST, 8 for CIFAR)")
    p.add_argument("--mask-rate", type=unit_interval, default=None, help="probability that a cell is masked (paper: 0.75)")
    p.add_argument("--mask-fill", type=mask_fill, default="black",
                   help="fill for masked pixels: black (paper), mean, noise, or a grey level in [0, 1]")
    p.add_argument("--no-mask", action="store_true", help="train without masking even if the preset masks")
    p.add_argument("--crop-padding", type=nonnegative_int, default=None,
                   help="data augmentation: random crop after zero padding by this many pixels (default 0: off)")
    p.add_argument("--hflip", action="store_true", default=None,
                   help="data augmentation: random horizontal flips (not for digits)")
    p.add_argument("--limit", type=positive_int, default=None, help="use only the first N training images (quick runs)")
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<model>[-mad])")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a run")
    p.add_argument("--results", default=None,
                   help="also write a results folder (README table, CSV, JSON, learning-curve plot) here")
    add_seed_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def _check_model(model: str, kwargs: dict) -> None:
    """Build the model once, so that a bad name or option fails before any work."""
    from ..models import create_model
    from ..registry import UnknownNameError
    from ._common import UserError

    try:
        create_model(model, **kwargs)
    except UnknownNameError:
        raise
    except (TypeError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        options = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k not in ("in_channels", "input_size", "num_classes"))
        raise UserError(f"cannot build model {model}" + (f" with {options}" if options else "") + f": {first}") from None


def run(args: argparse.Namespace) -> int:
    from ..data import dataset_info
    from ..ops.masking import grid_shape
    from ..rundir import check_output_dir
    from ..training.loop import train_on_dataset
    from ..training.presets import (DEFAULT_MODEL, AutoencoderPreset, DenoiserPreset, PartPreset, Preset, SFMPreset,
                                    create_preset)
    from ._common import UserError

    preset = create_preset(args.preset) if args.preset else None
    if isinstance(preset, DenoiserPreset):
        raise UserError(f"preset {preset.name} trains a denoiser through the frozen model of preset {preset.classifier}: "
                        "the experiment that uses it trains both into runs/ (maskdefense reproduce mad-table6), or "
                        "from Python: maskdefense.experiments.common.ensure_model")
    if isinstance(preset, AutoencoderPreset):
        return _train_autoencoder(args, preset)
    if isinstance(preset, SFMPreset):
        return _train_sfm(args, preset)
    if isinstance(preset, PartPreset):
        return _train_parts(args, preset)
    dataset = args.dataset or (preset.dataset if preset else "digits")
    if preset and args.dataset and args.dataset != preset.dataset:
        raise UserError(f"preset {preset.name} is for {preset.dataset}, not {args.dataset}")
    info = dataset_info(dataset)
    base = preset or Preset("cli", dataset, DEFAULT_MODEL.get(dataset, "digits_cnn"))
    model = args.model or base.model
    model_kwargs = dict(base.model_kwargs)
    if args.width is not None:
        model_kwargs["width"] = int(args.width) if float(args.width).is_integer() else args.width
    _check_model(model, {"in_channels": info.channels, "input_size": info.size, "num_classes": info.num_classes,
                         **model_kwargs})

    config = _train_config(args, base)
    init_from = _init_from(args, base)
    cell = None if args.no_mask else (args.mask_cell if args.mask_cell is not None else base.train_cell)
    rate = args.mask_rate if args.mask_rate is not None else base.train_rate
    transform = None
    if base.ablation is not None and cell is None and args.mask_rate is None and not args.no_mask:
        transform = base.transform()  # the preset's ablation (a certifier's training input)
    elif cell is not None:
        from ..ops.masking import GridMask

        try:
            grid_shape(info.size, cell)
        except ValueError as e:
            raise UserError(f"--mask-cell {cell}: {e} ({dataset} images are {info.size}x{info.size})") from None
        transform = GridMask(cell, rate, fill=args.mask_fill)
    elif args.mask_rate is not None:
        raise UserError("--mask-rate needs --mask-cell (or a preset that masks)")
    out = args.out or default_out(f"{dataset}-{model}" + (f"-mad{cell}" if cell else ""))
    check_output_dir(out)
    if args.results:
        check_output_dir(args.results)
    echo(f"training {model} on {dataset} -> {out}" + (f" with grid masking cell={cell} rate={rate}" if cell else "")
         + (f" with task {base.task}" if base.task else ""))
    _, meta = train_on_dataset(
        dataset, model, config, out_dir=out, model_kwargs=model_kwargs, transform=transform,
        data_root=args.data_root, limit=args.limit, resume=not args.no_resume, progress=progress_enabled(args),
        init_from=init_from, task=base.task,
        # the preset's record (its test-time masking is predict's default) when its masking was kept as it is
        meta={"preset": preset.to_dict()} if preset and args.mask_cell is None and args.mask_rate is None
        and not args.no_mask else None,
    )
    echo(f"test accuracy {meta['test_accuracy']:.4f} on {meta['n_test']} images; checkpoint {out}/model.safetensors")
    if args.results:
        write_training_results(args.results, meta, f"{out}/model.safetensors")
        echo(f"wrote {args.results}/README.md")
    return 0


def _train_config(args: argparse.Namespace, preset: Any) -> Any:
    """The preset's training configuration (as ensure_model trains it), each flag given on the command line
    on top."""
    from dataclasses import fields, replace

    from ..training.config import TrainConfig
    from ._common import UserError

    args.weight_decay_norm = False if args.no_decay_norm else None
    try:
        return replace(preset.train_config(seed=args.seed), **{
            f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None})
    except ValueError as e:
        raise UserError(str(e)) from None


def _init_from(args: argparse.Namespace, preset: Any) -> str | None:
    """The checkpoint training starts from: ``--init-from``; required when the preset fine-tunes (``init``)
    unless ``--from-scratch``."""
    from ._common import UserError

    if args.init_from is not None and args.from_scratch:
        raise UserError("--init-from and --from-scratch contradict each other: give one")
    if args.init_from is None and preset.init is not None and not args.from_scratch:
        raise UserError(f"preset {preset.name} fine-tunes the model of preset {preset.init}: pass its checkpoint with "
                        f"--init-from (train it with `maskdefense train --preset {preset.init}`), or --from-scratch")
    return args.init_from


def _refuse(args: argparse.Namespace, preset: Any, what: str, flags: dict[str, Any]) -> None:
    """One error naming the options given that a preset training ``what`` does not use, and a dataset that
    is not the preset's."""
    from ._common import UserError

    given = [k for k, v in flags.items() if v is not None and v is not False]
    if given:
        raise UserError(f"preset {preset.name} trains {what}: {', '.join(given)} do not apply")
    if args.dataset and args.dataset != preset.dataset:
        raise UserError(f"preset {preset.name} is for {preset.dataset}, not {args.dataset}")


def _train_sfm(args: argparse.Namespace, preset: Any) -> int:
    """``train --preset`` of a mask generator trained in alternation with its classifier."""
    from ..rundir import check_output_dir
    from ..training.loop import train_sfm_on_dataset

    _refuse(args, preset, "a masker with its classifier", {
        "--model": args.model, "--width": args.width, "--mask-cell": args.mask_cell, "--mask-rate": args.mask_rate,
        "--no-mask": args.no_mask, "--results": args.results})
    config = _train_config(args, preset)
    init_from = _init_from(args, preset)
    out = args.out or default_out(f"{preset.dataset}-{preset.name}")
    check_output_dir(out)
    echo(f"training {preset.masker} with {preset.classifier} ({preset.name}: preprocessing {preset.preprocess}) "
         f"-> {out}")
    _, meta = train_sfm_on_dataset(
        preset.dataset, preset.classifier, config, out_dir=out, weights=preset.weights,
        classifier_kwargs=preset.classifier_kwargs, masker_name=preset.masker, masker_kwargs=preset.masker_kwargs,
        preprocess=preset.preprocessor(), classifier_input=preset.classifier_input, norm_group=preset.norm_group,
        init_from=init_from, data_root=args.data_root, limit=args.limit, resume=not args.no_resume,
        progress=progress_enabled(args), meta={"preset": preset.to_dict()})
    echo(f"test accuracy of the masked pipeline {meta['test_accuracy']:.4f} (mean mask {meta['test_mask_mean']:.3f}, "
         f"L1 mass kept {meta['test_kept']:.3f}) on {meta['n_test']} images; checkpoint {out}/model.safetensors")
    return 0


def _train_autoencoder(args: argparse.Namespace, preset: Any) -> int:
    """``train --preset`` of an image-to-image network (reformer, denoiser, inpainter)."""
    from ..rundir import check_output_dir
    from ..training.loop import train_autoencoder_on_dataset

    _refuse(args, preset, "an autoencoder", {
        "--model": args.model, "--width": args.width, "--init-from": args.init_from, "--mask-cell": args.mask_cell,
        "--mask-rate": args.mask_rate, "--limit": args.limit, "--results": args.results,
        "--label-smoothing": args.label_smoothing, "--crop-padding": args.crop_padding, "--hflip": args.hflip,
        "--no-mask": args.no_mask, "--from-scratch": args.from_scratch})
    config = _train_config(args, preset)
    out = args.out or default_out(f"{preset.dataset}-{preset.name}")
    check_output_dir(out)
    echo(f"training {preset.model} ({preset.name}: restore images from {preset.corrupt}) -> {out}")
    _, meta = train_autoencoder_on_dataset(
        preset.dataset, preset.model, preset.corruption(), config, out_dir=out, loss=preset.loss,
        model_kwargs=preset.model_kwargs, data_root=args.data_root, resume=not args.no_resume,
        progress=progress_enabled(args), meta={"preset": preset.to_dict()})
    echo(f"test reconstruction error (MSE) {meta['test_mse']:.5f} (corrupted input: {meta['test_input_mse']:.5f}) "
         f"on {meta['n_test']} images; checkpoint {out}/model.safetensors")
    return 0


def _train_parts(args: argparse.Namespace, preset: Any) -> int:
    """``train --preset`` of a part extractor or a classifier on part-annotated data."""
    from ..rundir import check_output_dir
    from ..training.loop import train_on_part_data
    from ._common import UserError

    if args.dataset:
        raise UserError(f"preset {preset.name} trains on its own data ({preset.data['source']}): drop --dataset")
    _refuse(args, preset, "on part-annotated data", {
        "--model": args.model, "--width": args.width, "--init-from": args.init_from, "--mask-cell": args.mask_cell,
        "--mask-rate": args.mask_rate, "--limit": args.limit, "--results": args.results, "--no-mask": args.no_mask,
        "--from-scratch": args.from_scratch})
    config = _train_config(args, preset)
    out = args.out or default_out(preset.name)
    check_output_dir(out)
    echo(f"training {preset.model} ({preset.name}: {preset.task} on {preset.data['source']}) -> {out}")
    _, meta = train_on_part_data(
        preset.task, preset.data, preset.model, config, out_dir=out, model_kwargs=preset.model_kwargs,
        area_threshold=preset.area_threshold, data_root=args.data_root, resume=not args.no_resume,
        progress=progress_enabled(args), meta={"preset": preset.to_dict()})
    if preset.task == "segment":
        echo(f"test pixel accuracy {meta['test_pixel_accuracy']:.4f}, mean IoU {meta['test_mean_iou']:.4f}, part-set "
             f"accuracy {meta['test_part_set_accuracy']:.4f} on {meta['n_test']} images; checkpoint {out}/model.safetensors")
    else:
        echo(f"test accuracy {meta['test_accuracy']:.4f} on {meta['n_test']} images; checkpoint {out}/model.safetensors")
    return 0


def write_training_results(out: str, meta: dict, checkpoint: str) -> None:
    """A results folder for one training run: per-epoch table, learning curves, the full record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoint import file_sha256
    from ..results import markdown_table, pct, save_figure, write_results

    hist = meta.get("history", [])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["epoch"] for h in hist], [100 * h["train_accuracy"] for h in hist], "o-", label="train (as trained)")
    ax.plot([h["epoch"] for h in hist], [100 * (h["val_accuracy"] or 0) for h in hist], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.legend()
    save_figure(fig, f"{out}/curves.png")
    plt.close(fig)
    from ..provenance import command_line

    meta = {**meta, "checkpoint_sha256": file_sha256(checkpoint), "command": command_line(),
            "training_command": meta.get("command")}
    cfg = meta.get("train_config", {})
    intro = (f"{meta.get('arch')} {meta.get('arch_kwargs')} trained on {meta.get('dataset')} "
             f"({meta.get('n_train')} training images, {meta.get('n_val')} held out for validation) for "
             f"{meta.get('epochs')} epochs with {cfg.get('optimizer')} lr {cfg.get('lr')}, batch {cfg.get('batch_size')}; "
             f"input transform: {meta.get('transform') or 'none'}.\n\n"
             f"**Test accuracy: {pct(meta.get('test_accuracy'))}** on the {meta.get('n_test')} official test images.")
    table = markdown_table(hist, ["epoch", "train_loss", "train_accuracy", "val_accuracy", "seconds"],
                           formatters={"train_accuracy": pct, "val_accuracy": pct,
                                       "seconds": lambda v: f"{v:.1f}",
                                       "train_loss": lambda v: "" if v is None else f"{v:.4f}"})
    write_results(out, title=f"Training {meta.get('arch')} on {meta.get('dataset')}", intro=intro,
                  sections=["## Per epoch", table, "![curves](curves.png)"], rows=hist, meta=meta)
