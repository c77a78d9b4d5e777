"""Benchmark (issue "REMIX and MagNet"): REMIX inference cost against the undefended classifier and its floor.

REMIX's decision on a batch costs one reformer pass, ``n`` inpainter passes (the ``n`` masked copies run as
one batched pass) and one classifier pass. Methods, on the same random images and untrained weights of the
CPU presets' sizes (speed does not depend on the weights):

* ``classifier``: the undefended classifier;
* ``floor``: the networks alone, back to back -- reformer on N images, inpainter on n*N, classifier on N
  (what any implementation must compute);
* ``remix``: :meth:`REMIX.predict` with the reformer (partitions drawn, copies masked, inpaintings
  recombined).

Reported (one run, methods alternated, ``_common.interleaved``): cost of REMIX relative to the classifier
(time ratio, the price of the defense) and the overhead over the floor, ``floor / remix`` throughput ratio --
goal >= 0.9 (the masking and recombination add at most ~10%). Run on a quiet machine:
``.venv/bin/python bench/bench_remix.py`` (about a minute).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402
from maskdefense.defenses.remix import REMIX  # noqa: E402
from maskdefense.models import create_model  # noqa: E402
from maskdefense.papers.remix import N_MASKS  # noqa: E402
from maskdefense.training.presets import create_preset  # noqa: E402

NAME = "bench_remix"
GOAL = 0.9
SETTINGS = {  # dataset -> (classifier model, image shape)
    "mnist": ("lenet5", (1, 28, 28)),
    "cifar10": ("vgg16_half", (3, 32, 32)),
}


def make_methods(dataset: str, images: int, seed: int, quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    clf_name, shape = SETTINGS[dataset]
    torch.manual_seed(seed)
    clf = create_model(clf_name).eval()
    ae = create_preset(f"remix-inpainter-{dataset}-cpu")
    kw = {"in_channels": shape[0], "input_size": shape[1], **ae.model_kwargs}
    if quick:
        kw.update(width=4, depth=2)
    reformer, inpainter = create_model(ae.model, **kw).eval(), create_model(ae.model, **kw).eval()
    n = N_MASKS[dataset]
    remix = REMIX(clf, inpainter, n=n, reformer=reformer, chunk_size=images).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(images, *shape, generator=g)
    xn = torch.rand(images * n, *shape, generator=g)

    methods = {
        "classifier": C.timed_no_grad(lambda: clf(x).argmax(1)),
        "floor": C.timed_no_grad(lambda: (reformer(x), inpainter(xn), clf(x).argmax(1))),
        "remix": C.timed_no_grad(lambda: remix.predict(x, generator=g)),
    }
    return methods, {"classifier": clf_name, "autoencoder": {"model": ae.model, **kw}, "n": n, "shape": list(shape)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=None, help="images per timed round (default 256, quick 16)")
    p.add_argument("--datasets", default="mnist,cifar10")
    args = p.parse_args(argv)
    C.setup_run(args)
    images = args.images or (16 if args.quick else 256)
    t0 = C.timer()
    rows, raw, config = [], {}, {}
    for ds in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        methods, config[ds] = make_methods(ds, images, args.seed, args.quick)
        s = C.summarize(C.interleaved(methods, args.repeats), float(images))
        raw[ds] = s
        over = C.ratio(s, "remix", "floor")["ratio"]
        rows.append({"dataset": ds, "n": config[ds]["n"], "classifier_img_s": s["classifier"]["images_per_s"],
                     "floor_img_s": s["floor"]["images_per_s"], "remix_img_s": s["remix"]["images_per_s"],
                     "cost_vs_classifier": 1.0 / C.ratio(s, "remix", "classifier")["ratio"],
                     "floor_cost_vs_classifier": 1.0 / C.ratio(s, "floor", "classifier")["ratio"],
                     "remix_vs_floor": over, "met": C.met(over, GOAL)})
    wall = C.timer() - t0
    meta = C.metadata(args, C.command(argv, "bench_remix.py"), wall, images=images)
    record = {"benchmark": NAME, "issue": "REMIX and MagNet", "goal": f"remix / floor throughput >= {GOAL}",
              "config": config, "summary": rows, "raw": raw, "metadata": meta}
    md = C.md_header("REMIX inference cost (issue REMIX and MagNet)", meta) + "\n".join([
        f"REMIX's decision (reformer + n inpaintings in one batched pass + classifier) on {images} random images "
        "per round, untrained networks of the CPU presets' sizes. *cost vs classifier*: how many undefended "
        "classifications one REMIX decision costs; *floor*: the networks alone back to back; *remix / floor*: "
        f"throughput ratio (goal >= {GOAL}: masking and recombination add little).",
        "",
        C.md_table(["dataset", "n", "classifier img/s", "REMIX img/s", "cost vs classifier", "floor cost vs classifier",
                    "remix / floor", "goal", "met"],
                   [[r["dataset"], r["n"], r["classifier_img_s"], r["remix_img_s"], r["cost_vs_classifier"],
                     r["floor_cost_vs_classifier"], r["remix_vs_floor"], f">= {GOAL}", r["met"]] for r in rows]),
    ])
    C.write_results(args.out, NAME, record, md)
    return record


if __name__ == "__main__":
    main()
