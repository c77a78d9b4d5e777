"""Benchmark (issue "MAD"): cost of MAD's majority vote, and forward passes saved by the adaptive vote.

Part 1 -- vote throughput. Images/s of ``MADClassifier.predict(x, n)`` (n masked copies per image,
majority vote) against n x the undefended model, i.e. the undefended model's images/s divided by n,
measured in the same run on the same images (``maskdefense.training.predict.predict_labels`` on the base model).
Both call the network with the same batch size (``--chunk``: MAD's ``chunk_size`` and the undefended
batch size). Models: lenet5 (28x28, cell 7) and vgg16_narrow (32x32, cell 4), rate 0.75; random
weights (seeded) unless ``--checkpoint`` (a MAD LeNet, used for lenet5) / ``--cifar-checkpoint`` (for
vgg16_narrow) is given; images uniform random in [0, 1] (throughput does not depend on content).
Goal: ratio = MAD images/s / (undefended images/s / n) >= 0.95.

Part 2 -- adaptive vote. On MNIST test images with the trained MAD LeNet of ``--checkpoint``:
``predict_adaptive(x, n_max, stop=...)`` against the full ``predict(x, n_max)`` with the same masks
(same generator seed). Reported per (n_max, stop rule): forward passes used / saved, decision agreement
with the full n_max vote, and wall-clock images/s of both. Goal: >= 60% fewer forward passes at
unchanged decisions (agreement 1.0). ``stop="exact"`` stops only when the outcome is settled, so its
decisions are identical by construction but it can save at most about half of the passes for n_max >= 3;
``stop="test"`` (sequential binomial test) can save more but may change a decision. Without
``--checkpoint`` part 2 runs on random weights and the goal is NOT evaluated (flagged in the output).

Run: ``.venv/bin/python bench/bench_vote.py --checkpoint runs/mad-mnist/model.safetensors``; ``--quick``.
"""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import _common as C  # noqa: E402
from maskdefense.defenses.mad import STOP_BUDGET, STOP_EXACT, STOP_TEST, MADClassifier  # noqa: E402
from maskdefense.models import create_model  # noqa: E402
from maskdefense.training.loop import predict_labels  # noqa: E402

NAME = "bench_vote"
GOAL_RATIO = 0.95
GOAL_SAVED = 0.60
RATE = 0.75
#: model -> (test-time cell, images full, images quick)
VOTE_MODELS = {"lenet5": (7, 2000, 32), "vgg16_narrow": (4, 500, 16)}


# ------------------------------------------------------------------------------------------------
# models and data


def load_base(name: str, checkpoint: str | None, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    if checkpoint:
        from maskdefense.checkpoint import load_model

        model, meta = load_model(checkpoint)
        if meta.get("arch") != name:
            raise SystemExit(f"{checkpoint} holds a {meta.get('arch')!r} model, expected {name!r}")
        info = {"weights": "checkpoint", "path": str(checkpoint), "sha256": meta.get("sha256"),
                "transform": meta.get("transform"), "test_accuracy": meta.get("test_accuracy")}
    else:
        torch.manual_seed(seed)
        model = create_model(name)
        info = {"weights": f"random (torch.manual_seed({seed}))"}
    return model.eval(), info


def _data_roots(explicit: str | None) -> list[Path]:
    roots = []
    if explicit:
        roots.append(Path(explicit))
    if os.environ.get("MASKDEFENSE_DATA", "").strip():
        roots.append(Path(os.environ["MASKDEFENSE_DATA"].strip()))
    roots.append(C.ROOT.parent / "shared" / "data")  # the project's offline copy (../shared/data)
    return roots


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist_test(limit: int, data_root: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """First ``limit`` MNIST test images: via ``maskdefense.data.load_dataset`` when it can find the
    files, else read directly from an idx copy; synthetic images (flagged) if there is none."""
    errors = []
    for root in _data_roots(data_root):
        try:
            from maskdefense.data import load_dataset

            d = load_dataset("mnist", "test", root=root, download=False, limit=limit)
            x, y = d.tensors()
            return x, y, f"MNIST test (maskdefense.data, root {root}), first {len(x)}"
        except Exception as e:  # noqa: BLE001 - try the next root / the direct reader
            errors.append(f"{root}: {type(e).__name__}")
        raw = root / "MNIST" / "raw"
        if (raw / "t10k-images-idx3-ubyte.gz").is_file():
            xi = _read_idx(raw / "t10k-images-idx3-ubyte.gz")[:limit]
            yi = _read_idx(raw / "t10k-labels-idx1-ubyte.gz")[:limit]
            x = torch.from_numpy(xi.astype(np.float32) / 255.0).unsqueeze(1)
            return x, torch.from_numpy(yi.astype(np.int64)), f"MNIST test (idx files in {raw}), first {len(x)}"
    g = torch.Generator().manual_seed(0)
    return (torch.rand(limit, 1, 28, 28, generator=g), torch.randint(0, 10, (limit,), generator=g),
            f"SYNTHETIC uniform images (no MNIST found: {'; '.join(errors)})")


# ------------------------------------------------------------------------------------------------
# part 1


def bench_vote_throughput(name: str, n: int, args: Any) -> dict[str, Any]:
    cell, n_full, n_quick = VOTE_MODELS[name]
    ckpt = args.checkpoint if name == "lenet5" else args.cifar_checkpoint
    base, info = load_base(name, ckpt, args.seed)
    n_img = args.images or (n_quick if args.quick else n_full)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.rand(n_img, base.in_channels, base.input_size, base.input_size, generator=g)
    mad = MADClassifier(base, cell, RATE, n=n, chunk_size=args.chunk).eval()

    def run_mad() -> float:
        gen = torch.Generator().manual_seed(args.seed)
        t0 = C.timer()
        mad.predict(x, n, generator=gen)
        return C.timer() - t0

    def run_base() -> float:
        t0 = C.timer()
        predict_labels(base, x, batch_size=args.chunk)
        return C.timer() - t0

    times = C.interleaved({"mad_vote": run_mad, "undefended": run_base}, args.repeats)
    s = C.summarize(times, n_img)
    r = C.ratio(s, "mad_vote", "undefended", den_scale=1.0 / n)
    return {
        "model": name, "input": [base.in_channels, base.input_size, base.input_size], "cell": cell, "rate": RATE,
        "votes": n, "images": n_img, "chunk": args.chunk, "weights": info, **s,
        "undefended_over_n_images_per_s": s["undefended"]["images_per_s"] / n,
        **r, "goal": GOAL_RATIO, "met": C.met(r["ratio"], GOAL_RATIO),
    }


# ------------------------------------------------------------------------------------------------
# part 2


def bench_adaptive(args: Any) -> dict[str, Any]:
    base, info = load_base("lenet5", args.checkpoint, args.seed)
    n_img = args.adaptive_images or (32 if args.quick else 1000)
    x, y, source = load_mnist_test(n_img, args.data_root)
    mad = MADClassifier(base, args.cell, RATE, chunk_size=args.chunk).eval()
    evaluated = bool(args.checkpoint) and not source.startswith("SYNTHETIC")
    rows = []
    for n_max in args.n_max:
        out: dict[str, Any] = {}

        def full() -> float:
            gen = torch.Generator().manual_seed(args.seed)
            t0 = C.timer()
            out["full"] = mad.predict(x, n_max, generator=gen)
            return C.timer() - t0

        def adaptive(stop: str):
            def run() -> float:
                gen = torch.Generator().manual_seed(args.seed)  # same masks as the full vote
                t0 = C.timer()
                out[stop] = mad.predict_adaptive(x, n_max, generator=gen, batch=args.adaptive_batch, stop=stop,
                                                 alpha=args.alpha, delta=args.delta)
                return C.timer() - t0
            return run

        methods = {"full": full, **{stop: adaptive(stop) for stop in args.stop}}
        times = C.interleaved(methods, args.repeats)
        s = C.summarize(times, len(x))
        full_pred = out["full"]
        for stop in args.stop:
            av = out[stop]
            used = int(av.passes.sum())
            saved = 1.0 - used / (len(x) * n_max)
            agree = float((av.predictions == full_pred).float().mean())
            rows.append({
                "n_max": n_max, "stop": stop, "batch": args.adaptive_batch, "alpha": args.alpha if stop == "test" else None,
                "delta": args.delta if stop == "predictive" else None,
                "images": len(x), "passes_full": len(x) * n_max, "passes_used": used,
                "passes_per_image": used / len(x), "passes_saved": saved,
                "agreement_with_full_vote": agree,
                "stopped": {"budget": int((av.stopped == STOP_BUDGET).sum()), "exact": int((av.stopped == STOP_EXACT).sum()),
                            "test": int((av.stopped == STOP_TEST).sum())},
                "accuracy_full_vote": float((full_pred == y).float().mean()),
                "accuracy_adaptive": float((av.predictions == y).float().mean()),
                "full_images_per_s": s["full"]["images_per_s"], "adaptive_images_per_s": s[stop]["images_per_s"],
                "wall_speedup": s[stop]["images_per_s"] / s["full"]["images_per_s"],
                "seconds": {"full": s["full"]["seconds"], "adaptive": s[stop]["seconds"]},
                "goal": {"passes_saved_min": GOAL_SAVED, "agreement": 1.0},
                "met": (bool(saved >= GOAL_SAVED and agree == 1.0) if evaluated else None),
            })
    return {"model": "lenet5", "cell": args.cell, "rate": RATE, "weights": info, "data": source,
            "goal_evaluated": evaluated,
            "why_not_evaluated": None if evaluated else "no trained MAD LeNet checkpoint (--checkpoint) and/or no MNIST",
            "rows": rows}


# ------------------------------------------------------------------------------------------------


def render(record: dict[str, Any]) -> str:
    meta = record["metadata"]
    s = record["summary"]
    rows1 = [[r["model"], "x".join(map(str, r["input"])), r["cell"], r["votes"], r["images"], r["weights"]["weights"],
              r["mad_vote"]["images_per_s"], r["undefended"]["images_per_s"], r["undefended_over_n_images_per_s"],
              r["ratio"], f">= {GOAL_RATIO}", r["met"]] for r in record["vote_throughput"]]
    a = record["adaptive"]
    rows2 = [[r["n_max"], r["stop"], r["batch"], r["passes_per_image"], r["passes_saved"],
              r["agreement_with_full_vote"], r["accuracy_full_vote"], r["wall_speedup"],
              f">= {GOAL_SAVED:.0%} saved, agreement 1", r["met"]] for r in a["rows"]]
    return "\n".join([
        C.md_header("MAD vote: throughput and adaptive vote (issue MAD)", meta),
        "## 1. Vote throughput: MADClassifier.predict vs n x the undefended model",
        "",
        f"Goal: MAD images/s / (undefended images/s / n) >= {GOAL_RATIO}. **All met: {C.fmt(s['vote_all_met'])}** "
        f"(lowest ratio {C.fmt(s['vote_min_ratio'])}).",
        "",
        C.md_table(["model", "input", "cell", "n", "images", "weights", "MAD img/s", "undefended img/s",
                    "undefended/n img/s", "ratio", "goal", "met"], rows1),
        "",
        f"Same images (uniform random), same batch size per network call ({record['config']['chunk']}: MAD's "
        "chunk_size and predict_labels' batch_size), rate 0.75, base model in eval mode. Methods alternated, "
        "warm-up first, median over repeats.",
        "",
        "## 2. Adaptive vote: predict_adaptive vs the full n_max vote (same masks)",
        "",
        f"Model: lenet5, weights: {a['weights']['weights']}"
        + (f" `{a['weights'].get('path')}` (sha256 {a['weights'].get('sha256')})" if a['weights'].get('path') else "")
        + f"; cell {a['cell']}, rate {a['rate']}; data: {a['data']}.",
        "",
        (f"Goal: >= {GOAL_SAVED:.0%} fewer forward passes with decisions unchanged (agreement 1.0). "
         f"**Met by: {', '.join(s['adaptive_met_by']) or 'none'}**."
         if a["goal_evaluated"] else
         f"**Goal NOT evaluated: {a['why_not_evaluated']}** -- the numbers below only exercise the code."),
        "",
        C.md_table(["n_max", "stop", "batch", "passes/image", "passes saved", "agreement", "accuracy (full vote)",
                    "wall speedup", "goal", "met"], rows2),
        "",
        "`stop=exact` stops an input once no class can overtake the leader: decisions equal the full vote "
        "by construction, but with a unanimous vote it still needs more than half of n_max votes, so it saves "
        "at most about 50%. `stop=test` adds the sequential binomial test (level alpha / rounds) and can "
        "change a decision (agreement < 1). `stop=predictive` stops when the posterior predictive "
        "probability that the remaining votes overturn the leader is below delta; it may also change a "
        "decision, and the agreement column measures how often. Wall speedup = adaptive images/s / full-vote images/s (informative, "
        "not a goal).",
    ])


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None, help="trained MAD LeNet (lenet5) checkpoint, MNIST")
    p.add_argument("--cifar-checkpoint", default=None, help="optional vgg16_narrow checkpoint for part 1")
    p.add_argument("--data-root", default=None, help="data root holding MNIST/raw (default: $MASKDEFENSE_DATA, "
                   "then ../shared/data)")
    p.add_argument("--votes", default="5", help="comma-separated n for part 1 (journal MAD: 5, conference: 20)")
    p.add_argument("--chunk", type=int, default=500, help="images per network call, MAD and undefended alike")
    p.add_argument("--images", type=int, default=None, help="images for part 1 (default lenet5 2000, "
                   "vgg16_narrow 500; quick 32/16)")
    p.add_argument("--models", default="lenet5,vgg16_narrow", help="models of part 1")
    p.add_argument("--cell", type=int, default=7, help="test-time cell of the MNIST MAD LeNet (part 2)")
    p.add_argument("--n-max", default=None, help="comma-separated n_max for part 2 (default 5,20,100; quick 5,20)")
    p.add_argument("--stop", default="exact,test,predictive", help="stop rules for part 2")
    p.add_argument("--adaptive-batch", type=int, default=1, help="votes drawn per round in predict_adaptive")
    p.add_argument("--alpha", type=float, default=0.001, help="level of the sequential test (stop=test)")
    p.add_argument("--delta", type=float, default=0.001,
                   help="largest accepted flip probability (stop=predictive)")
    p.add_argument("--adaptive-images", type=int, default=None, help="MNIST test images for part 2 (default 1000, quick 32)")
    args = p.parse_args(argv)
    C.setup_run(args)
    args.votes = _ints(args.votes)
    args.n_max = _ints(args.n_max or ("5,20" if args.quick else "5,20,100"))
    args.stop = [s.strip() for s in args.stop.split(",") if s.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in VOTE_MODELS]
    if unknown:
        raise SystemExit(f"part 1 knows {sorted(VOTE_MODELS)}, got {unknown}")
    t0 = C.timer()
    vote = []
    for name in models:
        for n in args.votes:
            print(f"[{NAME}] vote throughput {name} n={n} ...", file=sys.stderr, flush=True)
            vote.append(bench_vote_throughput(name, n, args))
    print(f"[{NAME}] adaptive vote ...", file=sys.stderr, flush=True)
    adaptive = bench_adaptive(args)
    record: dict[str, Any] = {
        "benchmark": NAME,
        "issue": "MAD",
        "goal": {"vote_ratio_min": GOAL_RATIO, "adaptive_passes_saved_min": GOAL_SAVED,
                 "what": "MAD predict images/s vs undefended images/s / n; adaptive vote passes saved at agreement 1.0"},
        "config": {"models": models, "votes": args.votes, "chunk": args.chunk, "rate": RATE, "n_max": args.n_max,
                   "stop": args.stop, "adaptive_batch": args.adaptive_batch, "alpha": args.alpha,
                   "checkpoint": args.checkpoint, "cifar_checkpoint": args.cifar_checkpoint},
        "vote_throughput": vote,
        "adaptive": adaptive,
        "summary": {
            "vote_all_met": all(r["met"] for r in vote),
            "vote_min_ratio": min((r["ratio"] for r in vote), default=None),
            "adaptive_goal_evaluated": adaptive["goal_evaluated"],
            "adaptive_met_by": [f"n_max={r['n_max']} stop={r['stop']}" for r in adaptive["rows"] if r["met"]],
            "adaptive_max_passes_saved_at_agreement_1": max(
                (r["passes_saved"] for r in adaptive["rows"] if r["agreement_with_full_vote"] == 1.0), default=None),
        },
    }
    record["metadata"] = C.metadata(args, C.command(argv, "bench_vote.py"), C.timer() - t0)
    md, js = C.write_results(args.out, NAME, record, render(record))
    print(f"[{NAME}] wrote {md} and {js}", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()
