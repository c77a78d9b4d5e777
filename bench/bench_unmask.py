"""Benchmark (issue "UNMASK with feature-denoising blocks"): what the denoising blocks and UNMASK's two networks cost.

Two measurements, each one run with the methods alternated (``_common.interleaved``), on random 3x32x32 images and
untrained weights of the CPU presets' sizes (speed does not depend on the weights):

* *denoising blocks*: ResNet-18 at width 1/2 without blocks (``plain``), with one embedded-Gaussian block after
  stage 3 (``denoise1``, Table 6) and with one after each stage (``denoise4``, Table 7's "Ours"): the library's
  training step (``ClassificationTask.step`` with the CPU recipe: SGD one-cycle, label smoothing, bf16 autocast,
  channels-last) and inference (fp32, no gradient) in images/s; reported as the throughput ratio to ``plain``
  (no goal: the price of the blocks, stated);
* *UNMASK*: the decision of UNMASK in detection mode (``UNMASK.predict``: the classifier M once, the part extractor
  K, part sets and the Jaccard test) against the classifier alone (its cost in classifications) and against the
  ``floor``, K and M back to back (what any implementation must compute); goal ``floor / UNMASK >= 0.9`` (the part
  sets and the Jaccard test add at most ~10%), for M the baseline and for M "Ours".

Run on a quiet machine: ``.venv/bin/python bench/bench_unmask.py`` (a few minutes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402
from maskdefense.defenses.unmask import UNMASK  # noqa: E402
from maskdefense.models import create_model  # noqa: E402
from maskdefense.papers.unmask import attributes  # noqa: E402
from maskdefense.training.config import TrainConfig  # noqa: E402
from maskdefense.training.presets import CPU_RECIPE, create_preset  # noqa: E402
from maskdefense.training.tasks import ClassificationTask  # noqa: E402

NAME = "bench_unmask"
GOAL = 0.9
#: The networks of the denoising comparison: name -> (model, kwargs).
NETWORKS = {"plain": ("resnet18_half", {}), "denoise1": ("resnet18_denoise1", {"width": 0.5}),
            "denoise4": ("resnet18_denoise4", {"width": 0.5})}
CLASS_SET = "CS5b"
RECIPE = {k: v for k, v in CPU_RECIPE.items() if k not in ("crop_padding", "hflip", "batch_size")}


def _network(name: str, quick: bool, seed: int, classes: int = 10) -> torch.nn.Module:
    model, kw = NETWORKS[name]
    torch.manual_seed(seed)
    return create_model(model, num_classes=classes, **{**kw, **({"width": 1 / 16} if quick else {})})


def block_methods(images: int, batch: int, seed: int, quick: bool) -> dict[str, Callable[[], float]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(images, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (images,), generator=g)
    methods: dict[str, Callable[[], float]] = {}
    for name in NETWORKS:
        task = ClassificationTask(_network(name, quick, seed))
        task.setup(TrainConfig(**RECIPE, batch_size=batch, epochs=1000), steps_per_epoch=max(1, -(-images // batch)))
        task.begin_phase("train")
        infer = _network(name, quick, seed).eval()

        def train(task: ClassificationTask = task) -> float:
            t0 = C.timer()
            for i in range(0, images, batch):
                task.step("train", x[i : i + batch], y[i : i + batch], g)
            return C.timer() - t0

        def inference(net: torch.nn.Module = infer) -> None:
            for i in range(0, images, batch):
                net(x[i : i + batch]).argmax(1)

        methods[f"train/{name}"], methods[f"infer/{name}"] = train, C.timed_no_grad(inference)
    return methods


def unmask_methods(images: int, seed: int, quick: bool) -> tuple[dict[str, Callable[[], float]], dict[str, Any]]:
    v = attributes(CLASS_SET)
    ext = create_preset("unmask-extractor-cpu")
    torch.manual_seed(seed)
    k = create_model(ext.model, num_parts=v.shape[1], **({"channels": [8, 16], "strides": [2], "num_res_units": 1}
                                                         if quick else ext.model_kwargs)).eval()
    x = torch.rand(images, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    methods: dict[str, Callable[[], float]] = {}
    for key, name in (("baseline", "plain"), ("ours", "denoise4")):
        m = _network(name, quick, seed, classes=v.shape[0]).eval()
        u = UNMASK(m, k, v).eval()
        methods[f"{key}/classifier"] = C.timed_no_grad(lambda m=m: m(x).argmax(1))
        methods[f"{key}/floor"] = C.timed_no_grad(lambda m=m: (k(x), m(x).argmax(1)))
        methods[f"{key}/unmask"] = C.timed_no_grad(lambda u=u: u.predict(x))
    return methods, {"extractor": {"model": ext.model, **ext.model_kwargs}, "class_set": CLASS_SET}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=None, help="images per timed round (default 512, quick 16)")
    args = p.parse_args(argv)
    C.setup_run(args)
    images = args.images or (16 if args.quick else 512)
    batch = min(128, images)
    t0 = C.timer()
    blocks = C.summarize(C.interleaved(block_methods(images, batch, args.seed, args.quick), args.repeats), float(images))
    block_rows = [{"network": n, "model": NETWORKS[n][0], **{
        f"{w}_img_s": blocks[f"{w}/{n}"]["images_per_s"] for w in ("train", "infer")},
        **{f"{w}_vs_plain": C.ratio(blocks, f"{w}/{n}", f"{w}/plain")["ratio"] for w in ("train", "infer")}}
        for n in NETWORKS]
    um, uconfig = unmask_methods(images, args.seed, args.quick)
    us = C.summarize(C.interleaved(um, args.repeats), float(images))
    unmask_rows = []
    for key in ("baseline", "ours"):
        over = C.ratio(us, f"{key}/unmask", f"{key}/floor")["ratio"]
        unmask_rows.append({"classifier": key, "classifier_img_s": us[f"{key}/classifier"]["images_per_s"],
                            "unmask_img_s": us[f"{key}/unmask"]["images_per_s"],
                            "cost_vs_classifier": 1.0 / C.ratio(us, f"{key}/unmask", f"{key}/classifier")["ratio"],
                            "floor_cost_vs_classifier": 1.0 / C.ratio(us, f"{key}/floor", f"{key}/classifier")["ratio"],
                            "unmask_vs_floor": over, "met": C.met(over, GOAL)})
    wall = C.timer() - t0
    meta = C.metadata(args, C.command(argv, "bench_unmask.py"), wall, images=images, batch=batch)
    record = {"benchmark": NAME, "issue": "UNMASK with feature-denoising blocks", "goal": f"unmask / floor >= {GOAL}",
              "config": {"networks": NETWORKS, "recipe": RECIPE, **uconfig}, "summary": unmask_rows,
              "blocks": block_rows, "raw": {"blocks": blocks, "unmask": us}, "metadata": meta}
    md = C.md_header("Denoising blocks and UNMASK: cost (issue UNMASK with feature-denoising blocks)", meta) + "\n".join([
        f"**Denoising blocks** on ResNet-18/2, {images} random 3x32x32 images per round, batches of {batch}: the "
        "library's training step with the CPU recipe (bf16 autocast, channels-last) and fp32 inference; ratio = "
        "images/s of the network / images/s of the plain ResNet-18/2 (no goal: the blocks' price).",
        "",
        C.md_table(["network", "train img/s", "train ratio vs plain", "inference img/s", "inference ratio vs plain"],
                   [[r["network"], r["train_img_s"], r["train_vs_plain"], r["infer_img_s"], r["infer_vs_plain"]]
                    for r in block_rows]),
        "",
        f"**UNMASK** (detection mode, class set {CLASS_SET}, the CPU extractor's U-Net): *cost vs classifier* = how "
        "many classifications one UNMASK decision costs; *floor* = K and M back to back; *unmask / floor* = "
        f"throughput ratio (goal >= {GOAL}: part sets and the Jaccard test add little).",
        "",
        C.md_table(["classifier M", "M img/s", "UNMASK img/s", "cost vs classifier", "floor cost vs classifier",
                    "unmask / floor", "goal", "met"],
                   [[r["classifier"], r["classifier_img_s"], r["unmask_img_s"], r["cost_vs_classifier"],
                     r["floor_cost_vs_classifier"], r["unmask_vs_floor"], f">= {GOAL}", r["met"]]
                    for r in unmask_rows]),
    ])
    C.write_results(args.out, NAME, record, md)
    return record


if __name__ == "__main__":
    main()
