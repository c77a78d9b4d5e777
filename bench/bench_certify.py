"""Benchmark (issue "Certified robustness for masking"): certification cost per image against its floor.

A certifier's ``certify`` must run a fixed number of masked copies through the base classifier per image
(derandomized smoothing: one per ablation; PatchCleanser: ``M (M + 1) / 2`` two-mask copies; the grid
certificate: ``C(G, r)``). Methods, on the same random images and untrained weights of the CPU presets'
sizes (speed does not depend on the weights):

* ``floor``: the base classifier alone on that many images (``passes x images``, pre-masked, in batches of
  the certifier's chunk size) -- what any implementation must compute;
* ``certify``: the certifier's ``certify`` (masks built, copies filled and batched, votes counted, the
  certificate computed).

Reported (one run, methods alternated, ``_common.interleaved``): ``floor / certify`` throughput ratio per
certifier -- goal >= 0.9 (masking, vote counting and the certificate add at most ~10% to the forward passes).
Run on a quiet machine: ``.venv/bin/python bench/bench_certify.py`` (a few minutes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402
from maskdefense.certify import build_certifier  # noqa: E402
from maskdefense.models import create_model  # noqa: E402

NAME = "bench_certify"
GOAL = 0.9
#: dataset -> (model, image shape, certifier specs, patch sizes)
SETTINGS = {
    "mnist": ("lenet5", (1, 28, 28), ("ds:mode=column,band=2", "pc:patch=5,k=6", "grid:cell=7,rate=0.875"), (2, 5)),
    "cifar10": ("vgg16_half", (3, 32, 32), ("ds:mode=column,band=4", "pc:patch=5,k=6", "grid:cell=8,rate=0.875"),
                (2, 5)),
}
QUICK = {"mnist": ("lenet5", (1, 28, 28), ("ds:mode=column,band=2", "pc:patch=5,k=2", "grid:cell=7,rate=0.875"), (5,))}


def make_methods(model_name: str, shape: tuple[int, ...], spec: str, patches: tuple[int, ...], images: int,
                 seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    torch.manual_seed(seed)
    model = create_model(model_name, in_channels=shape[0], input_size=shape[1]).eval()
    cert = build_certifier(spec, model).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(images, *shape, generator=g)
    passes = cert.passes(shape[1], shape[2])
    copies = torch.rand(min(passes * images, cert.chunk_size), *shape, generator=g)  # the floor's input, reused
    total = passes * images

    def floor() -> None:
        for s in range(0, total, cert.chunk_size):
            model(copies[: min(cert.chunk_size, total - s)]).argmax(1)

    methods = {"floor": C.timed_no_grad(floor), "certify": C.timed_no_grad(lambda: cert.certify(x, patches))}
    return methods, {"model": model_name, "certifier": cert.config(), "passes_per_image": passes,
                     "patches": list(patches), "shape": list(shape), "chunk_size": cert.chunk_size}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=None, help="images per timed round (default 20, quick 2)")
    args = p.parse_args(argv)
    C.setup_run(args)
    images = args.images or (2 if args.quick else 20)
    t0 = C.timer()
    rows, raw, config = [], {}, {}
    for ds, (model_name, shape, specs, patches) in (QUICK if args.quick else SETTINGS).items():
        for spec in specs:
            methods, cfg = make_methods(model_name, shape, spec, patches, images, args.seed)
            key = f"{ds}|{spec}"
            config[key] = cfg
            s = C.summarize(C.interleaved(methods, args.repeats), float(images))
            raw[key] = s
            r = C.ratio(s, "certify", "floor")["ratio"]
            rows.append({"dataset": ds, "certifier": spec, "passes_per_image": cfg["passes_per_image"],
                         "floor_img_s": s["floor"]["images_per_s"], "certify_img_s": s["certify"]["images_per_s"],
                         "certify_vs_floor": r, "met": C.met(r, GOAL)})
    wall = C.timer() - t0
    meta = C.metadata(args, C.command(argv, "bench_certify.py"), wall, images=images)
    record = {"benchmark": NAME, "issue": "Certified robustness for masking",
              "goal": f"certify / floor throughput >= {GOAL}", "config": config, "summary": rows, "raw": raw,
              "metadata": meta}
    md = C.md_header("Certification cost against its floor (issue Certified robustness for masking)", meta) + "\n".join([
        f"`certify` per image against the floor: the base classifier alone on the same number of copies (passes per "
        f"image x {images} images per round, batched like the certifier), untrained networks of the CPU presets' "
        f"sizes. Ratio = certify images/s / floor images/s (goal >= {GOAL}).",
        "",
        C.md_table(["dataset", "certifier", "passes / image", "floor img/s", "certify img/s", "ratio", "goal", "met"],
                   [[r["dataset"], r["certifier"], r["passes_per_image"], r["floor_img_s"], r["certify_img_s"],
                     r["certify_vs_floor"], f">= {GOAL}", r["met"]] for r in rows]),
    ])
    C.write_results(args.out, NAME, record, md)
    return record


if __name__ == "__main__":
    main()
