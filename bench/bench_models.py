"""Benchmark (issue "Foundation"): training and inference throughput of every registered model,
library path against a plain hand-written PyTorch loop of the same model.

* library, training: ``maskdefense.training.loop.Trainer(...).train_epoch`` (Adam, lr 1e-3, no transform) on an
  in-memory tensor dataset;
* plain, training: the textbook loop -- randperm, index, forward, cross_entropy, zero_grad, backward,
  Adam step (lr 1e-3);
* library, inference: ``maskdefense.training.predict.predict_labels``;
* plain, inference: ``torch.no_grad()`` forward in batches + argmax.

Both paths use the same ``nn.Module`` object, the same images (uniform random in [0, 1], random labels:
throughput does not depend on content), the same batch size, the same permutation seed and the same
weights state (weights, BatchNorm buffers and a fresh Adam are restored before every timed epoch).
The Trainer is built outside the timed region (its constructor validates the whole dataset once).

Goal: library / plain >= 0.97 for both training and inference. Also reported: achieved GFLOP/s, with
FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls only, 2 FLOPs per
multiply-add; element-wise ops, BatchNorm, pooling and the optimizer are not counted). Inference
FLOPs/image = the counted forward pass; training FLOPs/image = the counted forward + backward pass
(about 3x forward; a bit less because no gradient w.r.t. the input images is computed).

Run: ``.venv/bin/python bench/bench_models.py`` (full), ``--quick`` (seconds), ``--models lenet5,vgg16``.
Full-width vgg16 and resnet18 are slow on CPU: they use a fixed small number of images (see
``FULL_WIDTH_IMAGES``), recorded in the results.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import _common as C  # noqa: E402
from maskdefense.models import create_model, list_models  # noqa: E402
from maskdefense.training.loop import TrainConfig, Trainer, predict_labels  # noqa: E402

NAME = "bench_models"
GOAL = 0.97
LR = 1e-3

#: (train images, inference images) per size class, full run / quick run.
SMALL_IMAGES = {"full": (8192, 10000), "quick": (128, 256)}
NARROW_IMAGES = {"full": (2048, 4000), "quick": (64, 128)}
FULL_WIDTH_IMAGES = {"full": (256, 500), "quick": (4, 8)}
FULL_WIDTH = ("vgg16", "resnet18")


def size_class(name: str) -> str:
    if name in FULL_WIDTH:
        return "full-width (fixed small number of images: slow on CPU)"
    if name.endswith("_narrow"):
        return "narrow"
    return "small"


def images_for(name: str, quick: bool) -> tuple[int, int]:
    table = FULL_WIDTH_IMAGES if name in FULL_WIDTH else NARROW_IMAGES if name.endswith("_narrow") else SMALL_IMAGES
    return table["quick" if quick else "full"]


# ------------------------------------------------------------------------------------------------
# FLOP counting


def count_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: bool) -> float:
    """FLOPs per image: forward (``train=False``, eval mode, no_grad) or forward + backward of the
    cross-entropy loss (``train=True``, train mode) -- counted on a copy of the model."""
    m = copy.deepcopy(model)
    m.train(train)
    with FlopCounterMode(display=False) as fc:
        if train:
            F.cross_entropy(m(x), y).backward()
        else:
            with torch.no_grad():
                m(x)
    return fc.get_total_flops() / len(x)


# ------------------------------------------------------------------------------------------------
# the two paths


def plain_train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                      batch_size: int, generator: torch.Generator) -> None:
    """The textbook training loop (reference)."""
    model.train()
    perm = torch.randperm(len(x), generator=generator)
    for i in range(0, len(x), batch_size):
        idx = perm[i : i + batch_size]
        xb, yb = x[idx], y[idx]
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def plain_predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The textbook inference loop (reference)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(model(x[i : i + batch_size]).argmax(1))
    return torch.cat(out)


def bench_model(name: str, args: Any) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = create_model(name)
    c, s = model.in_channels, model.input_size
    n_train, n_infer = images_for(name, args.quick)
    if args.train_images:
        n_train = args.train_images
    if args.infer_images:
        n_infer = args.infer_images
    g = torch.Generator().manual_seed(args.seed)
    x_train = torch.rand(n_train, c, s, s, generator=g)
    y_train = torch.randint(0, model.num_classes, (n_train,), generator=g)
    x_infer = torch.rand(n_infer, c, s, s, generator=g)
    init_state = copy.deepcopy(model.state_dict())
    bt, bi = args.train_batch, args.infer_batch
    final: dict[str, dict[str, torch.Tensor]] = {}
    preds: dict[str, torch.Tensor] = {}

    def lib_train() -> float:
        model.load_state_dict(init_state)
        trainer = Trainer(model, (x_train, y_train), None,
                          TrainConfig(epochs=1, batch_size=bt, lr=LR, seed=args.seed),
                          progress=False, log=lambda s: None)
        t0 = C.timer()
        trainer.train_epoch(1)
        dt = C.timer() - t0
        final["library"] = {k: v.clone() for k, v in model.state_dict().items()}
        return dt

    def plain_train() -> float:
        model.load_state_dict(init_state)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LR)
        gen = torch.Generator().manual_seed(args.seed)  # same permutation as the Trainer's generator
        t0 = C.timer()
        plain_train_epoch(model, opt, x_train, y_train, bt, gen)
        dt = C.timer() - t0
        final["plain"] = {k: v.clone() for k, v in model.state_dict().items()}
        return dt

    def lib_infer() -> float:
        t0 = C.timer()
        preds["library"] = predict_labels(model, x_infer, batch_size=bi)
        return C.timer() - t0

    def plain_infer() -> float:
        t0 = C.timer()
        preds["plain"] = plain_predict(model, x_infer, bi)
        return C.timer() - t0

    train_t = C.interleaved({"library": lib_train, "plain": plain_train}, args.repeats)
    train = C.summarize(train_t, n_train)
    train.update(C.ratio(train, "library", "plain"))
    diff = max(float((final["library"][k].float() - final["plain"][k].float()).abs().max()) for k in init_state)
    train["max_abs_weight_difference_after_epoch"] = diff

    model.load_state_dict(init_state)
    model.eval()
    infer_t = C.interleaved({"library": lib_infer, "plain": plain_infer}, args.repeats)
    infer = C.summarize(infer_t, n_infer)
    infer.update(C.ratio(infer, "library", "plain"))
    infer["predictions_equal"] = bool(torch.equal(preds["library"], preds["plain"]))

    fx = torch.rand(4, c, s, s, generator=g)
    fy = torch.randint(0, model.num_classes, (4,), generator=g)
    fwd = count_flops(model, fx, fy, train=False)
    fwd_bwd = count_flops(model, fx, fy, train=True)
    for part, flops in ((train, fwd_bwd), (infer, fwd)):
        part["flops_per_image"] = flops
        part["gflops_per_s"] = {k: flops * part[k]["images_per_s"] / 1e9 for k in ("library", "plain")}
        part["goal"] = GOAL
        part["met"] = C.met(part["ratio"], GOAL)
    return {
        "model": name,
        "input": [c, s, s],
        "parameters": sum(p.numel() for p in model.parameters()),
        "size_class": size_class(name),
        "train_images": n_train,
        "infer_images": n_infer,
        "train_batch_size": bt,
        "infer_batch_size": bi,
        "forward_flops_per_image": fwd,
        "train_flops_per_image": fwd_bwd,
        "train_to_forward_flops": fwd_bwd / fwd if fwd else None,
        "train": train,
        "inference": infer,
    }


def render(record: dict[str, Any]) -> str:
    meta = record["metadata"]
    rows_t, rows_i = [], []
    for r in record["results"]:
        t, i = r["train"], r["inference"]
        rows_t.append([
            r["model"], "x".join(map(str, r["input"])), r["train_images"], t["library"]["images_per_s"],
            t["plain"]["images_per_s"], t["ratio"], f">= {GOAL}", t["met"], r["train_flops_per_image"] / 1e6,
            t["gflops_per_s"]["library"], t["gflops_per_s"]["plain"], t["max_abs_weight_difference_after_epoch"],
        ])
        rows_i.append([
            r["model"], "x".join(map(str, r["input"])), r["infer_images"], i["library"]["images_per_s"],
            i["plain"]["images_per_s"], i["ratio"], f">= {GOAL}", i["met"], r["forward_flops_per_image"] / 1e6,
            i["gflops_per_s"]["library"], i["gflops_per_s"]["plain"], i["predictions_equal"],
        ])
    s = record["summary"]
    return "\n".join([
        C.md_header("Model throughput: library vs plain PyTorch loop (issue Foundation)", meta),
        f"Goal: library / plain >= {GOAL} for training and for inference, every registered model. "
        f"**All met: {C.fmt(s['all_met'])}** (training: {C.fmt(s['train_all_met'])}, inference: "
        f"{C.fmt(s['inference_all_met'])}; lowest ratio {C.fmt(s['min_ratio'])}).",
        "",
        f"## Training (Trainer.train_epoch vs textbook Adam loop; batch {record['config']['train_batch']})",
        "",
        C.md_table(["model", "input", "images", "library img/s", "plain img/s", "ratio", "goal", "met",
                    "fwd+bwd MFLOP/img", "library GFLOP/s", "plain GFLOP/s", "max weight diff"], rows_t),
        "",
        f"## Inference (predict_labels vs no_grad loop + argmax; batch {record['config']['infer_batch']})",
        "",
        C.md_table(["model", "input", "images", "library img/s", "plain img/s", "ratio", "goal", "met",
                    "fwd MFLOP/img", "library GFLOP/s", "plain GFLOP/s", "same predictions"], rows_i),
        "",
        "## How this is measured",
        "",
        "- Same `nn.Module`, same synthetic images (uniform in [0, 1], random labels), same batch size, same "
        "permutation seed; weights, BatchNorm buffers and a fresh Adam (lr 1e-3) restored before every timed "
        "epoch. `max weight diff` compares the weights after the library epoch and after the plain epoch "
        "(0 = the two paths did the same arithmetic).",
        "- Every method is warmed up once, then library and plain are alternated (order reversed every other "
        "round); throughput = median over the repeats; ratio = ratio of the medians.",
        "- FLOPs: `torch.utils.flop_counter.FlopCounterMode`, convolutions and matmuls only (2 FLOPs per "
        "multiply-add). Inference = counted forward pass; training = counted forward + backward of the "
        "cross-entropy loss (about 3x forward, slightly less as no gradient w.r.t. the input is computed); "
        "element-wise ops, BatchNorm, pooling and the optimizer step are not counted.",
        f"- Images per model: small models {SMALL_IMAGES['full']}, narrow {NARROW_IMAGES['full']}, full-width "
        f"vgg16/resnet18 a fixed small number {FULL_WIDTH_IMAGES['full']} (train, inference) because they are "
        "slow on CPU; --quick uses tiny sizes.",
    ])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--models", default="all", help="comma-separated model names, or 'all' (every registered model)")
    p.add_argument("--train-batch", type=int, default=None, help="training batch size (default 128, quick 32)")
    p.add_argument("--infer-batch", type=int, default=None, help="inference batch size (default 500, quick 64)")
    p.add_argument("--train-images", type=int, default=None, help="override the training images of every model")
    p.add_argument("--infer-images", type=int, default=None, help="override the inference images of every model")
    args = p.parse_args(argv)
    C.setup_run(args)
    args.train_batch = args.train_batch or (32 if args.quick else 128)
    args.infer_batch = args.infer_batch or (64 if args.quick else 500)
    names = list_models() if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    t0 = C.timer()
    results = []
    for name in names:
        print(f"[{NAME}] {name} ...", file=sys.stderr, flush=True)
        results.append(bench_model(name, args))
    ratios = [r[k]["ratio"] for r in results for k in ("train", "inference")]
    record: dict[str, Any] = {
        "benchmark": NAME,
        "issue": "Foundation",
        "goal": {"ratio_min": GOAL, "what": "library images/s / plain loop images/s, training and inference"},
        "config": {
            "models": names, "train_batch": args.train_batch, "infer_batch": args.infer_batch, "lr": LR,
            "optimizer": "adam", "data": "synthetic uniform [0,1] images, random labels",
            "flops": "FlopCounterMode; conv+matmul; inference=forward, training=forward+backward",
        },
        "results": results,
        "summary": {
            "train_all_met": all(r["train"]["met"] for r in results),
            "inference_all_met": all(r["inference"]["met"] for r in results),
            "all_met": all(r["train"]["met"] and r["inference"]["met"] for r in results),
            "min_ratio": min(ratios) if ratios else None,
        },
    }
    record["metadata"] = C.metadata(args, C.command(argv, "bench_models.py"), C.timer() - t0)
    md, js = C.write_results(args.out, NAME, record, render(record))
    print(f"[{NAME}] wrote {md} and {js}", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()
