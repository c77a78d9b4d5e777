"""Benchmark (issue "A CPU training recipe"): which speed options of the training step win on this CPU.

The library's training step (``ClassificationTask.step`` with the recipe's optimizer, schedule, label
smoothing and weight-decay groups) on random CIFAR-sized batches, in these variants of
:class:`~maskdefense.training.config.TrainConfig`:

* ``fp32``: the reference (contiguous NCHW, float32);
* ``channels_last``: networks and batches in the channels-last memory format;
* ``bf16``: forward and loss under CPU autocast to bfloat16 (weights, gradients, optimizer in fp32);
* ``bf16+channels_last``: both (what the recipe presets use);
* ``bf16+channels_last+compile``: the same with the network wrapped in ``torch.compile`` (inductor;
  compilation happens in the untimed warm-up round);
* ``bf16+channels_last+batch256``: a larger batch (images per second, same images per round).

Ratio = images/s of the variant / images/s of its reference on the same model, measured in one run with the
methods alternated (``_common.interleaved``): the reference of compile and batch 256 is
``bf16+channels_last`` (what they would be added to), of the others ``fp32``. Goal: the recipe keeps an option
when its ratio is >= 1.05. The ratio against fp32 is reported for every variant.
Run on a quiet machine: ``.venv/bin/python bench/bench_train_speed.py`` (a few minutes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402
from maskdefense.models import create_model  # noqa: E402
from maskdefense.training.config import TrainConfig  # noqa: E402
from maskdefense.training.presets import CPU_RECIPE  # noqa: E402
from maskdefense.training.tasks import ClassificationTask  # noqa: E402

NAME = "bench_train_speed"
GOAL = 1.05
MODELS = ("vgg16_half", "resnet18_half", "vgg16_narrow")
#: variant -> (precision, channels_last, compile, batch size)
VARIANTS: dict[str, tuple[str, bool, bool, int]] = {
    "fp32": ("fp32", False, False, 128),
    "channels_last": ("fp32", True, False, 128),
    "bf16": ("bf16", False, False, 128),
    "bf16+channels_last": ("bf16", True, False, 128),
    "bf16+channels_last+compile": ("bf16", True, True, 128),
    "bf16+channels_last+batch256": ("bf16", True, False, 256),
}
#: The variant each one is an addition to (the reference of its goal).
REFERENCE = {"bf16+channels_last+compile": "bf16+channels_last", "bf16+channels_last+batch256": "bf16+channels_last"}
RECIPE_OPTIONS = {k: v for k, v in CPU_RECIPE.items() if k not in ("precision", "channels_last", "batch_size",
                                                                   "crop_padding", "hflip")}


def make_method(model_name: str, variant: str, images: int, seed: int) -> Callable[[], float]:
    precision, channels_last, compile_, batch = VARIANTS[variant]
    torch.manual_seed(seed)
    model = create_model(model_name)
    cfg = TrainConfig(**RECIPE_OPTIONS, precision=precision, channels_last=channels_last, batch_size=batch, epochs=1000)
    task = ClassificationTask(torch.compile(model) if compile_ else model)
    task.setup(cfg, steps_per_epoch=max(1, -(-images // batch)))
    task.begin_phase("train")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(images, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (images,), generator=g)

    def run() -> float:
        t0 = C.timer()
        for i in range(0, images, batch):
            task.step("train", x[i : i + batch], y[i : i + batch], g)
        return C.timer() - t0

    return run


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--images", type=int, default=None, help="images per timed round (default 1024, quick 256)")
    p.add_argument("--variants", default=None, help="comma-separated variants (fp32 always runs; default: all, "
                   "quick: all but compile)")
    args = p.parse_args(argv)
    C.setup_run(args)
    images = args.images or (256 if args.quick else 1024)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    asked = args.variants or ",".join(v for v in VARIANTS if not (args.quick and VARIANTS[v][2]))
    variants = ["fp32"] + [v.strip() for v in asked.split(",") if v.strip() and v.strip() != "fp32"]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    t0 = C.timer()
    rows, summary = [], {}
    for m in models:
        methods = {v: make_method(m, v, images, args.seed) for v in variants}
        s = C.summarize(C.interleaved(methods, args.repeats), float(images))
        summary[m] = s
        for v in variants:
            ref = REFERENCE.get(v, "fp32")
            if ref not in s:  # its reference variant was not asked for
                ref = "fp32"
            r = C.ratio(s, v, ref)
            rows.append({"model": m, "variant": v, "images_per_s": s[v]["images_per_s"], "reference": ref, **r,
                         "ratio_vs_fp32": C.ratio(s, v, "fp32")["ratio"],
                         "met": C.met(r["ratio"], GOAL) if v != "fp32" else None})
    wall = C.timer() - t0
    meta = C.metadata(args, C.command(argv, "bench_train_speed.py"), wall, images=images)
    record = {"benchmark": NAME, "issue": "A CPU training recipe", "goal": f"variant / fp32 >= {GOAL}",
              "config": {"models": models, "variants": {v: VARIANTS[v] for v in variants}, "images": images,
                         "recipe_options": RECIPE_OPTIONS},
              "summary": rows, "raw": summary, "metadata": meta}
    md = C.md_header("Training-step speed options (issue A CPU training recipe)", meta) + "\n".join([
        f"Library training step (`ClassificationTask.step`, the recipe's SGD/one-cycle/label smoothing) on {images} "
        "random 3x32x32 images per round. Ratio = images/s of the variant / images/s of its reference (same model, "
        "same run): compile and batch 256 are measured as additions to bf16+channels_last, the rest against fp32. "
        f"Goal: the recipe keeps an option when its ratio is >= {GOAL}.",
        "",
        C.md_table(["model", "variant", "img/s", "reference", "ratio", "goal", "met", "ratio vs fp32"],
                   [[r["model"], r["variant"], r["images_per_s"], r["reference"] if r["variant"] != "fp32" else "-",
                     r["ratio"], f">= {GOAL}" if r["variant"] != "fp32" else "-", r["met"], r["ratio_vs_fp32"]]
                    for r in rows]),
    ])
    C.write_results(args.out, NAME, record, md)
    return record


if __name__ == "__main__":
    main()
