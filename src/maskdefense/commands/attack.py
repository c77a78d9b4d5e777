"""``maskdefense attack``: attack a checkpoint's model on N test images and save the adversarial examples.

Same machinery as ``maskdefense evaluate`` (the harness verifies every example and writes one record
per (image, attack)), with the adversarial examples stored under ``<out>/adversarial/<threat>/<attack>/``
as safetensors files (``x_adv``, ``valid``, ``idx``, ``labels``). Defaults: the undefended model,
gray-box, all test images unless ``--n``; no sanity attack unless ``--sanity``.
"""

from __future__ import annotations

import argparse

from .evaluate import add_common_args, run_command


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attack", help="attack a checkpoint's model on test images; save adversarial examples and records",
        description="Run attacks (Foolbox, AutoAttack, MI-FGSM/DI) against a checkpoint's model on the first N "
        "test images. Every adversarial example is verified (budget, [0, 1]) and saved with its record; "
        "rerunning the same command resumes.",
    )
    add_common_args(p, attack_command=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_command(args, command="attack", save_adversarial=True)
