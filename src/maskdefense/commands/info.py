"""``maskdefense info``: what datasets, models, presets, attacks and defenses this build has."""

from __future__ import annotations

import argparse
import json

from ._common import echo


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="list datasets, models, presets, attacks, defenses; or describe a checkpoint",
                       description="Without arguments: everything registered. With --checkpoint: its metadata record.")
    p.add_argument("what", nargs="?", default="all",
                   choices=["all", "datasets", "models", "presets", "attacks", "defenses"])
    p.add_argument("--checkpoint", default=None,
                   help="check every weight of this checkpoint against its recorded hash and print its metadata record")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _sections() -> dict[str, list[dict[str, object]]]:
    from ..data import dataset_info, list_datasets
    from ..models import MODELS
    from ..training.presets import PRESETS, create_preset

    out: dict[str, list[dict[str, object]]] = {
        "datasets": [
            {"name": n, "shape": [i.channels, i.size, i.size], "classes": i.num_classes,
             "train": i.train_size, "test": i.test_size, "description": i.description}
            for n in list_datasets() for i in [dataset_info(n)]
        ],
        "models": [{"name": n, "description": MODELS.entry(n).description, "defaults": MODELS.entry(n).defaults}
                   for n in MODELS.list()],
        "presets": [{"name": n, "description": PRESETS.entry(n).description, "differs": list(create_preset(n).differs)}
                    for n in PRESETS.list()],
    }
    try:
        from ..attacks import ATTACKS

        out["attacks"] = [{"name": n, "description": ATTACKS.entry(n).description} for n in ATTACKS.list()]
    except ImportError:
        pass
    try:
        from ..defenses.registry import DEFENSES

        out["defenses"] = [{"name": n, "description": DEFENSES.entry(n).description} for n in DEFENSES.list()]
    except ImportError:
        pass
    return out


def run(args: argparse.Namespace) -> int:
    if args.checkpoint:
        from ..checkpoint import file_sha256, read_sidecar, verify_checkpoint

        meta = verify_checkpoint(args.checkpoint)  # a truncated or modified file is an error
        run = {k: v for k, v in read_sidecar(args.checkpoint).items() if k not in meta and k != "sha256"}
        meta = {**meta, "sha256": file_sha256(args.checkpoint), **({"run": run} if run else {})}
        echo(json.dumps(meta, indent=2, default=str))
        return 0
    sections = _sections()
    if args.what != "all":
        sections = {args.what: sections.get(args.what, [])}
    if args.json:
        echo(json.dumps(sections, indent=2, default=str))
        return 0
    for title, rows in sections.items():
        echo(f"{title}:")
        for r in rows:
            extra = f"  (differs from paper: {'; '.join(r['differs'])})" if r.get("differs") else ""  # type: ignore[arg-type]
            echo(f"  {r['name']:<24} {r.get('description', '')}{extra}")
    return 0
