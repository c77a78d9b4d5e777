"""``maskdefense predict``: clean accuracy of a checkpoint, plain and as a MAD vote classifier."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import UserError, add_data_args, add_seed_arg, echo, generator, positive_int, unit_interval


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="clean test accuracy of a checkpoint, unmasked and with MAD's majority vote",
        description="Loads a checkpoint and reports its test accuracy on unmasked images and the accuracy of "
        "MAD's vote over --votes masked copies (and the adaptive vote). The vote masks with the test cell and "
        "rate of the checkpoint's preset when it records one, else with its training cell and rate (it says "
        "which); --mask-cell and --mask-rate choose others.",
    )
    p.add_argument("--checkpoint", required=True, help="a maskdefense .safetensors checkpoint")
    add_data_args(p, default_dataset=None)
    p.add_argument("--split", default="test", choices=["test", "val"], help="which split (default test)")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N images")
    p.add_argument("--mask-cell", type=positive_int, default=None,
                   help="test-time cell size (default: the preset's test cell, else the training cell)")
    p.add_argument("--mask-rate", type=unit_interval, default=None,
                   help="test-time mask rate (default: the preset's test rate, else the training rate)")
    p.add_argument("--votes", type=positive_int, nargs="+", default=[5], help="numbers of votes (default 5)")
    p.add_argument("--adaptive", action="store_true", help="also run the adaptive vote up to max(--votes)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    add_seed_arg(p)
    p.set_defaults(func=run)


def vote_setting(meta: dict[str, Any], cell: int | None, rate: float | None) -> tuple[int | None, float | None, str]:
    """The vote's ``(cell, rate, where they come from)`` for a checkpoint with metadata ``meta``.

    Given values win. Otherwise the test cell and rate of the preset the checkpoint records (``meta["preset"]``:
    the preset's record, or the name of a registered preset), else the training transform's cell and rate."""
    from ..registry import UnknownNameError
    from ..training.presets import create_preset

    preset = meta.get("preset")
    if isinstance(preset, str):
        try:
            preset = create_preset(preset).to_dict()
        except UnknownNameError:
            preset = None
    if isinstance(preset, dict) and "test_cell" in preset:
        d_cell, d_rate = preset.get("test_cell"), preset.get("test_rate")
        source = f"the test setting of preset {preset.get('name')}"
    else:
        trained = meta.get("transform") if isinstance(meta.get("transform"), dict) else {}
        d_cell, d_rate = trained.get("cell"), trained.get("rate")
        source = "the training setting: the checkpoint records no known preset"
    if d_cell is None:  # no masking recorded: a rate alone means nothing
        d_rate = None
    if cell is not None or rate is not None:
        source = "given" if cell is not None and rate is not None else f"given, the rest from {source}"
    return (cell if cell is not None else d_cell), (rate if rate is not None else d_rate), source


def _check_json_path(path: str) -> None:
    from ..rundir import check_output_dir

    if Path(path).is_dir():
        raise UserError(f"--json {path} is a folder; give a file name")
    check_output_dir(Path(path).parent)


def run(args: argparse.Namespace) -> int:
    import time

    from ..checkpoint import load_model
    from ..data import load_dataset
    from ..defenses.mad import MADClassifier
    from ..ops.masking import grid_shape
    from ..provenance import atomic_write_json, run_metadata
    from ..training.loop import accuracy
    from ..validation import check_images

    t0 = time.perf_counter()
    if args.json:
        _check_json_path(args.json)
    model, meta = load_model(args.checkpoint)
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise UserError("the checkpoint does not record its dataset: pass --dataset")
    cell, rate, source = vote_setting(meta, args.mask_cell, args.mask_rate)
    if (cell is None) != (rate is None):
        raise UserError("give both --mask-cell and --mask-rate (the checkpoint has no masking setting to "
                        "complete them)")
    data = load_dataset(dataset, args.split, root=args.data_root, limit=args.limit)
    x, y = data.tensors()
    getattr(model, "check_input", check_images)(x)
    mad = None
    if cell is not None and rate is not None:
        try:
            grid_shape((x.shape[2], x.shape[3]), int(cell))
        except ValueError as e:
            raise UserError(f"--mask-cell: {e}") from None
        mad = MADClassifier(model, int(cell), float(rate)).eval()
    result: dict[str, object] = {**run_metadata(args.seed), "checkpoint": meta["path"], "sha256": meta["sha256"],
                                 "dataset": dataset, "split": args.split, "n": len(y)}
    result["unmasked_accuracy"] = accuracy(model, x, y)
    echo(f"{meta.get('arch')} on {len(y)} {dataset} {args.split} images: unmasked accuracy {result['unmasked_accuracy']:.4f}")
    if mad is not None:
        echo(f"  vote masks: cell {cell}, rate {rate} ({source})")
        votes = {}
        for n in args.votes:
            acc = float((mad.predict(x, n, generator=generator(args.seed)) == y).float().mean())
            votes[str(n)] = acc
            echo(f"  MAD vote, cell {cell}, rate {rate}, {n} votes: accuracy {acc:.4f}")
        result.update(cell=cell, rate=rate, vote_setting_from=source, vote_accuracy=votes)
        if args.adaptive:
            n_max = max(args.votes)
            res = mad.predict_adaptive(x, n_max, generator=generator(args.seed))
            full = mad.predict(x, n_max, generator=generator(args.seed))
            result["adaptive"] = {"n_max": n_max, "mean_passes": float(res.passes.float().mean()),
                                  "changed_decisions": int((res.predictions != full).sum())}
            echo(f"  adaptive vote (exact stop) up to {n_max}: {result['adaptive']['mean_passes']:.2f} passes per "
                 f"image on average, {result['adaptive']['changed_decisions']} decisions changed")
    else:
        echo(f"  no vote: no masking recorded for this checkpoint ({source}); --mask-cell and --mask-rate "
             "choose one")
    result["wall_time_s"] = round(time.perf_counter() - t0, 2)
    if args.json:
        atomic_write_json(args.json, result)
    return 0
