"""``maskdefense certify``: certified accuracy of a checkpoint under a patch certifier, per patch size.

Example (derandomized column smoothing, the 5x5 setting among others, with the empirical check)::

    maskdefense certify --checkpoint runs/ds-column-cifar10-cpu-<hash>/model.safetensors \\
        --certifier ds:mode=column,band=4 --patch 2 3 4 5 6 7 8 --n 500 --attack-patch 5 --attack-n 50 \\
        --out results/certify-ds

Rerunning the same command resumes; another configuration in the same ``--out`` is refused (``--fresh``
starts over). Writes records.jsonl (one record per image, and per attacked image), run.json,
summary.json and summary.md.
"""

from __future__ import annotations

import argparse

from ._common import add_data_args, add_progress_arg, add_seed_arg, default_out, echo, positive_int, progress_enabled


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..data import SPLITS

    p = sub.add_parser(
        "certify", help="certified accuracy against patch attacks (derandomized smoothing, PatchCleanser, grid masks)",
        description="Certify the first N images of a split with a patch certifier: the decision and, per patch "
        "size, whether no patch of that size anywhere can change it; optionally attack the certified and "
        "uncertified images with an adaptive patch attack (a certified decision must never change). Resumable.")
    p.add_argument("--checkpoint", default=None, help="safetensors checkpoint of the base classifier")
    add_data_args(p, default_dataset=None)
    p.add_argument("--split", default="test", choices=SPLITS, help="dataset split (default test)")
    p.add_argument("--certifier", default=None,
                   help="ds:mode=column,band=4[,threshold=0.2] | pc:patch=5,k=6 | grid:cell=8,rate=0.875 (see --list)")
    p.add_argument("--patch", type=positive_int, nargs="+", default=[2, 3, 4, 5, 6, 7, 8],
                   help="patch sides (default 2 to 8)")
    p.add_argument("--n", type=positive_int, default=500, help="number of images (the first N; default 500)")
    p.add_argument("--batch-size", type=positive_int, default=50, help="images per certify call (part of the config)")
    p.add_argument("--attack-patch", type=positive_int, nargs="*", default=[],
                   help="patch sides to attack empirically (PGD on the patch at the weakest locations)")
    p.add_argument("--attack-n", type=positive_int, default=50, help="images attacked (the first ones; default 50)")
    p.add_argument("--attack-certified-only", action="store_true",
                   help="attack the first --attack-n images certified at each attacked size (the soundness check "
                        "only) instead of the first --attack-n images")
    p.add_argument("--attack-locations", type=positive_int, default=8, help="locations attacked per image (default 8)")
    p.add_argument("--attack-steps", type=positive_int, default=20, help="PGD steps per location (default 20)")
    p.add_argument("--out", default=None, help="output folder (default runs/certify-<dataset>-<certifier>)")
    p.add_argument("--fresh", action="store_true", help="delete the records in --out and start over")
    p.add_argument("--strict", action="store_true", help="exit with code 3 on a soundness violation")
    p.add_argument("--list", action="store_true", help="list the certifiers and exit")
    add_seed_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..certify import CERTIFIERS, build_certifier, parse_certifier_spec
    from ..checkpoint import load_model
    from ..data import load_dataset
    from ..eval.certify import certify_dataset
    from ._common import UserError

    if args.list:
        echo("\n".join(f"  {n:6s} {CERTIFIERS.entry(n).description}" for n in CERTIFIERS.list()))
        return 0
    if not args.checkpoint:
        raise UserError("--checkpoint is required")
    if not args.certifier:
        raise UserError("--certifier is required (e.g. ds:mode=column,band=4; --list shows all)")
    name, _ = parse_certifier_spec(args.certifier)
    model, meta = load_model(args.checkpoint)
    certifier = build_certifier(args.certifier, model.eval())
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise UserError("--dataset is required: the checkpoint does not record the dataset it was trained on")
    data = load_dataset(dataset, args.split, root=args.data_root, limit=args.n)
    out = args.out or default_out(f"certify-{dataset}-{name}")
    echo(f"certify: {meta.get('arch')} on {dataset}/{args.split} (n={len(data)}), certifier {args.certifier}, "
         f"patches {args.patch} -> {out}")
    try:
        summary = certify_dataset(
            certifier, data, args.patch, out_dir=out, batch_size=args.batch_size, seed=args.seed, resume=not args.fresh,
            attack_patches=args.attack_patch, attack_n=args.attack_n, attack_locations=args.attack_locations,
            attack_steps=args.attack_steps, attack_certified_only=args.attack_certified_only,
            progress=progress_enabled(args), checkpoint_meta=meta)
    except ValueError as e:
        if type(e) is ValueError:  # a bad patch size or mask set for these images: one line
            raise UserError(str(e)) from None
        raise
    echo(f"clean accuracy {100 * summary['clean_accuracy']:.2f}%; {summary['passes_per_image']:g} passes per image")
    for r in summary["rows"]:
        echo(f"  patch {r['patch']}x{r['patch']}: certified accuracy {100 * r['certified_accuracy']:.2f}%")
    for r in summary["attack"]:
        echo(f"  attack {r['patch']}x{r['patch']}: {r['certified_broken']} of {r['certified_attacked']} certified broken, "
             f"{r['uncertified_broken']} of {r['uncertified_attacked']} uncertified broken")
    for f in summary["flags"]:
        echo(f"  [{f['severity']}] {f['code']}: {f['message']}")
    echo(f"wrote {out}/summary.md, summary.json, records.jsonl, run.json")
    return 3 if args.strict and summary["flags"] else 0
