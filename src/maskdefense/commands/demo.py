"""``maskdefense demo``: the main job on the embedded digits, end to end, in about a minute on a CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_progress_arg, add_seed_arg, echo, generator, positive_int, progress_enabled


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="train a MAD model on the embedded 8x8 digits, report clean accuracy with and without the vote, attack it",
        description="Trains the digits CNN with MAD grid masking (preset mad-digits) on scikit-learn's "
        "8x8 digits, then prints test accuracy of the model on unmasked images, on one masked copy, "
        "and with the majority vote over N masked copies; then attacks the vote classifier with PGD "
        "under the gray-box and the adaptive (EOT) threat models and prints both.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo; rerunning resumes)")
    p.add_argument("--epochs", type=positive_int, default=None, help="override the preset's epochs")
    p.add_argument("--no-attack", action="store_true", help="skip the attack evaluation at the end")
    add_seed_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..defenses.mad import MADClassifier
    from ..rundir import check_output_dir
    from ..training.presets import create_preset
    from ..training.loop import accuracy, train_on_dataset

    check_output_dir(args.out)
    preset = create_preset("mad-digits", **({"epochs": args.epochs} if args.epochs else {}))
    assert preset.train_cell is not None and preset.test_cell is not None
    echo(f"maskdefense demo: {preset.description}")
    model, meta = train_on_dataset(
        preset.dataset, preset.model, preset.train_config(args.seed), out_dir=Path(args.out),
        transform=preset.transform(), progress=progress_enabled(args),
    )
    test = load_dataset(preset.dataset, "test")
    x, y = test.tensors()
    mad = MADClassifier(model, preset.test_cell, preset.test_rate, n=preset.votes).eval()
    acc_plain = accuracy(model, x, y)
    acc_one = float((mad.predict(x, n=1, generator=generator(args.seed)) == y).float().mean())
    acc_vote = float((mad.predict(x, generator=generator(args.seed)) == y).float().mean())
    echo(f"test images: {len(y)} (8x8 digits); masking cell={preset.test_cell} rate={preset.test_rate}")
    for label, acc in (("MAD-trained model, unmasked input", acc_plain), ("one masked copy", acc_one),
                       (f"majority vote of {preset.votes} masked copies", acc_vote)):
        echo(f"  {label:<36}: {acc:.4f}")
    if not args.no_attack:
        from ..eval import evaluate

        attacks = "pgd-linf:eps=0.1;pgd-linf:eps=0.2"
        echo(f"attacking the vote classifier ({attacks}) on {len(y)} test images: gray-box (against the "
             "unmasked network, the MAD paper's setting) and adaptive (through the masks, EOT) ...")
        report = evaluate(mad, test, attacks, "gray-box,adaptive", out_dir=Path(args.out) / "eval", seed=args.seed,
                          progress=progress_enabled(args), sanity=None)
        echo(f"  {'threat':<10} {'attack':<20} {'defense acc. on adv.':>22} {'robust acc. (all n)':>21}")
        for r in report.rows:
            echo(f"  {r['threat']:<10} {r['label']:<20} {100 * r['defense_acc']:>21.2f}% {100 * r['robust_acc']:>20.2f}%")
        for f in report.flags:
            echo(f"  flag {f.code} ({f.severity}): {f.message}")
        echo(f"report: {args.out}/eval/summary.md")
    echo(f"checkpoint: {args.out}/model.safetensors")
    return 0
