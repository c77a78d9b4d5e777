"""``maskdefense predict``: clean accuracy of a checkpoint, plain and as a MAD vote classifier."""

from __future__ import annotations

import argparse

from ._common import add_data_args, add_seed_arg, echo, generator


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="clean test accuracy of a checkpoint, unmasked and with MAD's majority vote",
        description="Loads a checkpoint and reports its test accuracy on unmasked images and, with "
        "--mask-cell, the accuracy of MAD's vote over --votes masked copies (and the adaptive vote).",
    )
    p.add_argument("--checkpoint", required=True, help="a maskdefense .safetensors checkpoint")
    add_data_args(p, default_dataset=None)
    p.add_argument("--split", default="test", choices=["test", "val"], help="which split (default test)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--mask-cell", type=int, default=None, help="test-time cell size (default: the training one)")
    p.add_argument("--mask-rate", type=float, default=None, help="test-time mask rate (default: the training one)")
    p.add_argument("--votes", type=int, nargs="+", default=[5], help="numbers of votes (default 5)")
    p.add_argument("--adaptive", action="store_true", help="also run the adaptive vote up to max(--votes)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    add_seed_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from ..data import load_dataset
    from ..defenses.mad import MADClassifier
    from ..provenance import atomic_write_json, run_metadata
    from ..training.loop import accuracy
    from ._common import UserError

    import time

    t0 = time.perf_counter()
    model, meta = load_model(args.checkpoint)
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise UserError("the checkpoint does not record its dataset: pass --dataset")
    data = load_dataset(dataset, args.split, root=args.data_root, limit=args.limit)
    x, y = data.tensors()
    model.check_input(x)  # type: ignore[operator]
    result: dict[str, object] = {**run_metadata(args.seed), "checkpoint": meta["path"], "sha256": meta["sha256"],
                                 "dataset": dataset, "split": args.split, "n": len(y)}
    result["unmasked_accuracy"] = accuracy(model, x, y)
    echo(f"{meta.get('arch')} on {len(y)} {dataset} {args.split} images: unmasked accuracy {result['unmasked_accuracy']:.4f}")
    trained = meta.get("transform") or {}
    cell = args.mask_cell or (trained.get("cell") if isinstance(trained, dict) else None)
    rate = args.mask_rate if args.mask_rate is not None else (trained.get("rate") if isinstance(trained, dict) else None)
    if cell is not None and rate is not None:
        mad = MADClassifier(model, int(cell), float(rate)).eval()
        votes = {}
        for n in args.votes:
            acc = float((mad.predict(x, n, generator=generator(args.seed)) == y).float().mean())
            votes[str(n)] = acc
            echo(f"  MAD vote, cell {cell}, rate {rate}, {n} votes: accuracy {acc:.4f}")
        result.update(cell=cell, rate=rate, vote_accuracy=votes)
        if args.adaptive:
            n_max = max(args.votes)
            res = mad.predict_adaptive(x, n_max, generator=generator(args.seed))
            full = mad.predict(x, n_max, generator=generator(args.seed))
            result["adaptive"] = {"n_max": n_max, "mean_passes": float(res.passes.float().mean()),
                                  "changed_decisions": int((res.predictions != full).sum())}
            echo(f"  adaptive vote (exact stop) up to {n_max}: {result['adaptive']['mean_passes']:.2f} passes per "
                 f"image on average, {result['adaptive']['changed_decisions']} decisions changed")
    elif args.mask_cell or args.mask_rate is not None:
        raise UserError("give both --mask-cell and --mask-rate (the checkpoint was trained without masking)")
    result["wall_time_s"] = round(time.perf_counter() - t0, 2)
    if args.json:
        atomic_write_json(args.json, result)
    return 0
