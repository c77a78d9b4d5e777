"""Benchmark (issue "harness"): PGD-Linf throughput of the library's attack path against references.

Same model (eval mode), same images, same labels, same attack (Linf PGD, ``--steps`` steps, default 40;
step size ``eps * 0.01 / 0.3`` = Foolbox's default relative step, i.e. 0.01 at eps 0.3; uniform random
start in the eps-ball; cross-entropy loss; projection to the eps-ball and [0, 1] after every step), same
batch size for every method:

(a) harness: :func:`harness_pgd` -- ``maskdefense.eval.attack_and_verify`` with a ``pgd-linf`` spec (the
    harness's batched, per-batch-seeded path: ``run_attack`` -> Foolbox
    ``LinfProjectedGradientDescentAttack``, then verification of every example and predictions on the
    adversarial examples), timed as a whole; its attack-only time is recorded too. Falls back to
    ``maskdefense.attacks.run_attack`` per batch if the eval harness is absent;
(b) plain: a hand-written PyTorch PGD loop (:func:`plain_pgd`) -- the reference;
(c) foolbox: ``foolbox.attacks.LinfPGD`` called directly (``PyTorchModel`` built once);
(d) art: ``art.attacks.evasion.ProjectedGradientDescent`` on an ART ``PyTorchClassifier`` (CPU),
    ``num_random_init=1``, ``batch_size`` = the same batch size.

Goal: harness / plain >= 0.95, and harness ahead of ART (harness / ART > 1). Reported: images/s of each
(median over alternated repeats after a warm-up), ratios vs plain, and, as a check that every method did
the same work, accuracy under each attack and the largest Linf distance.

Labels are the model's own clean predictions (clean accuracy 1 by construction), so the attacks have
work to do with random weights too. Models: lenet5 on MNIST test images (eps 0.3) and vgg16_narrow on
CIFAR-10 test images (eps 8/255), random weights (seeded) unless ``--checkpoint name=path`` is given;
synthetic images if the dataset is not found (flagged).

Run: ``.venv/bin/python bench/bench_pgd.py``; ``--quick`` (lenet5, few images, 10 steps).
"""

from __future__ import annotations

import statistics
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import _common as C  # noqa: E402
from maskdefense.models import create_model  # noqa: E402

NAME = "bench_pgd"
GOAL = 0.95
REL_STEP = 0.01 / 0.3  # Foolbox's default rel_stepsize for LinfPGD
#: model -> (dataset, eps, images full, batch full, images quick, batch quick)
MODELS = {
    "lenet5": ("mnist", 0.3, 1000, 250, 16, 16),
    "vgg16_narrow": ("cifar10", 8 / 255, 128, 128, 8, 8),
}


# ------------------------------------------------------------------------------------------------
# the four methods; each attacks (x, y) in batches of ``batch`` and returns the adversarial images


def _harness_impl() -> tuple[str, Callable[..., Any]] | None:
    """The harness entry point: ``maskdefense.eval.attack_and_verify`` (batched, seeded per batch,
    every example verified, predictions on the adversarial examples) if present, else
    ``maskdefense.attacks.run_attack``; ``None`` if neither exists."""
    for mod in ("maskdefense.eval", "maskdefense.eval.harness"):
        try:
            m = __import__(mod, fromlist=["attack_and_verify"])
            return f"{mod}.attack_and_verify", m.attack_and_verify
        except (ImportError, AttributeError):
            pass
    try:
        from maskdefense.attacks import run_attack

        return "maskdefense.attacks.run_attack", run_attack
    except ImportError:
        return None


#: attack-only seconds of the last harness call (``attack_and_verify`` reports them), for the record.
HARNESS_ATTACK_SECONDS: list[float] = []


def harness_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, stepsize: float,
                batch: int, generator: torch.Generator) -> torch.Tensor:
    """(a) The library's harness path for PGD-Linf. Timed as a whole: attack, verification of every
    example and the predictions on the adversarial examples are what a harness user pays for."""
    from maskdefense.attacks import parse_attack_spec

    impl = _harness_impl()
    if impl is None:
        raise NotImplementedError("no harness: neither maskdefense.eval.attack_and_verify nor maskdefense.attacks.run_attack")
    name, fn = impl
    spec = parse_attack_spec(f"pgd-linf:eps={eps!r},steps={steps},abs_stepsize={stepsize!r},random_start=true")
    if name.endswith("attack_and_verify"):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        out = fn(spec, model, x, y, seed=seed, batch_size=batch)
        HARNESS_ATTACK_SECONDS.append(float(out.seconds))
        return out.x_adv
    return torch.cat([fn(spec, model, x[i : i + batch], y[i : i + batch], generator=generator)
                      for i in range(0, len(x), batch)])


def plain_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, stepsize: float,
              batch: int, generator: torch.Generator) -> torch.Tensor:
    """(b) The textbook PGD-Linf loop (reference)."""
    out = []
    for i in range(0, len(x), batch):
        x0, y0 = x[i : i + batch], y[i : i + batch]
        x_adv = (x0 + torch.empty_like(x0).uniform_(-eps, eps, generator=generator)).clamp(0.0, 1.0)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(model(x_adv), y0, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + stepsize * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x0 - eps), x0 + eps).clamp(0.0, 1.0)
        out.append(x_adv.detach())
    return torch.cat(out)


def make_foolbox(model: nn.Module) -> Callable[..., torch.Tensor]:
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0))

    def foolbox_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, stepsize: float,
                    batch: int, generator: torch.Generator) -> torch.Tensor:
        """(c) Foolbox LinfPGD called directly (uses torch's global RNG for the random start)."""
        attack = fb.attacks.LinfPGD(abs_stepsize=stepsize, steps=steps, random_start=True)
        out = []
        for i in range(0, len(x), batch):
            _, clipped, _ = attack(fmodel, x[i : i + batch], fb.criteria.Misclassification(y[i : i + batch]),
                                   epsilons=eps)
            out.append(clipped)
        return torch.cat(out)

    return foolbox_pgd


def make_art(model: nn.Module, shape: tuple[int, int, int], classes: int) -> Callable[..., torch.Tensor]:
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=classes,
                            clip_values=(0.0, 1.0), device_type="cpu")

    def art_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, stepsize: float,
                batch: int, generator: torch.Generator) -> torch.Tensor:
        """(d) ART ProjectedGradientDescent (PyTorch implementation, CPU), numpy in/out."""
        attack = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=stepsize, max_iter=steps,
                                          targeted=False, num_random_init=1, batch_size=batch, verbose=False)
        return torch.from_numpy(attack.generate(x.numpy(), y.numpy()))

    return art_pgd


# ------------------------------------------------------------------------------------------------


def load_images(dataset: str, n: int, model: nn.Module, data_root: str | None) -> tuple[torch.Tensor, str]:
    try:
        from maskdefense.data import load_dataset

        d = load_dataset(dataset, "test", root=_root(data_root), download=False, limit=n)
        return d.tensors()[0], f"{dataset} test, first {n}"
    except Exception as e:  # noqa: BLE001
        g = torch.Generator().manual_seed(0)
        s, c = model.input_size, model.in_channels
        return torch.rand(n, c, s, s, generator=g), f"SYNTHETIC uniform images ({dataset} not loadable: {type(e).__name__})"


def _root(explicit: str | None) -> str | None:
    import os

    if explicit:
        return explicit
    if os.environ.get("MASKDEFENSE_DATA", "").strip():
        return None
    shared = C.ROOT.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def bench_model(name: str, args: Any) -> dict[str, Any]:
    dataset, eps, n_full, b_full, n_quick, b_quick = MODELS[name]
    if args.eps is not None:
        eps = args.eps
    n = args.images or (n_quick if args.quick else n_full)
    batch = args.batch or (b_quick if args.quick else b_full)
    stepsize = REL_STEP * eps
    ckpt = args.checkpoint.get(name)
    if ckpt:
        from maskdefense.checkpoint import load_model

        model, meta = load_model(ckpt)
        weights = {"weights": "checkpoint", "path": ckpt, "sha256": meta.get("sha256")}
    else:
        torch.manual_seed(args.seed)
        model = create_model(name)
        weights = {"weights": f"random (torch.manual_seed({args.seed}))"}
    model.eval()
    x, source = load_images(dataset, n, model, args.data_root)
    with torch.no_grad():
        y = model(x).argmax(1)

    methods: dict[str, Callable[..., torch.Tensor]] = {}
    skipped: dict[str, str] = {}
    impl = _harness_impl()
    if impl is not None:
        methods["harness"] = harness_pgd
    else:
        skipped["harness"] = "no harness entry point (maskdefense.eval.attack_and_verify / maskdefense.attacks.run_attack)"
    methods["plain"] = plain_pgd
    methods["foolbox"] = make_foolbox(model)
    try:
        methods["art"] = make_art(model, tuple(x.shape[1:]), model.num_classes)
    except ImportError as e:
        skipped["art"] = f"adversarial-robustness-toolbox not importable: {e}"

    adv: dict[str, torch.Tensor] = {}
    HARNESS_ATTACK_SECONDS.clear()

    def timed(key: str) -> Callable[[], float]:
        fn = methods[key]

        def run() -> float:
            gen = torch.Generator().manual_seed(args.seed)
            torch.manual_seed(args.seed)  # for libraries drawing from the global RNG
            t0 = C.timer()
            adv[key] = fn(model, x, y, eps, args.steps, stepsize, batch, gen)
            return C.timer() - t0

        return run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = C.interleaved({k: timed(k) for k in methods}, args.repeats)
    s = C.summarize(times, n)
    checks = {}
    with torch.no_grad():
        for k, xa in adv.items():
            checks[k] = {
                "accuracy_under_attack": float((model(xa).argmax(1) == y).float().mean()),
                "max_linf": float((xa - x).abs().max()),
                "in_range": bool(xa.min() >= 0 and xa.max() <= 1),
            }
    ratios = {k: (C.ratio(s, k, "plain") if k in s else None) for k in ("harness", "foolbox", "art")}
    h = ratios["harness"]
    vs_art = C.ratio(s, "harness", "art") if "harness" in s and "art" in s else None
    harness_info = None
    if impl is not None:
        harness_info = {"entry_point": impl[0]}
        if HARNESS_ATTACK_SECONDS:
            # attack_and_verify calls: warm-up + repeats; keep the timed ones
            att = HARNESS_ATTACK_SECONDS[-args.repeats:]
            med = statistics.median(att)
            harness_info["attack_only_seconds"] = att
            harness_info["attack_only_images_per_s"] = n / med if med > 0 else None
            harness_info["attack_only_ratio_vs_plain"] = (
                harness_info["attack_only_images_per_s"] / s["plain"]["images_per_s"]
                if harness_info["attack_only_images_per_s"] else None)
    return {
        "model": name, "input": list(x.shape[1:]), "dataset": source, "harness": harness_info, "weights": weights, "images": n,
        "batch": batch, "eps": eps, "steps": args.steps, "stepsize": stepsize, "random_start": True,
        "methods": s, "skipped": skipped, "checks": checks,
        "ratio_vs_plain": {k: (v["ratio"] if v else None) for k, v in ratios.items()},
        "ratio_vs_plain_detail": ratios,
        "harness_vs_art": vs_art["ratio"] if vs_art else None,
        "goal": {"harness_vs_plain_min": GOAL, "harness_vs_art_min_exclusive": 1.0},
        "met": {
            "harness_vs_plain": C.met(h["ratio"] if h else None, GOAL),
            "ahead_of_art": None if vs_art is None else bool(vs_art["ratio"] > 1.0),
        },
    }


def render(record: dict[str, Any]) -> str:
    meta = record["metadata"]
    rows, checks = [], []
    labels = {"harness": "(a) harness", "plain": "(b) plain PyTorch loop",
              "foolbox": "(c) Foolbox LinfPGD direct", "art": "(d) ART ProjectedGradientDescent"}
    for r in record["results"]:
        for k in ("harness", "plain", "foolbox", "art"):
            if k in r["methods"]:
                rv = 1.0 if k == "plain" else r["ratio_vs_plain"][k]
                goal = f">= {GOAL}, > ART" if k == "harness" else ""
                metv = (r["met"]["harness_vs_plain"] and r["met"]["ahead_of_art"] is not False) if k == "harness" else ""
                rows.append([r["model"], labels[k], r["methods"][k]["images_per_s"], rv, goal, metv])
                c = r["checks"][k]
                checks.append([r["model"], k, c["accuracy_under_attack"], c["max_linf"], r["eps"], c["in_range"]])
            else:
                rows.append([r["model"], labels[k], None, None, f"skipped: {r['skipped'].get(k)}", ""])
    s = record["summary"]
    first = record["results"][0] if record["results"] else {}
    return "\n".join([
        C.md_header("PGD-Linf throughput: harness vs plain loop, Foolbox, ART (issue harness)", meta),
        f"Goal: harness images/s / plain-loop images/s >= {GOAL}, and harness ahead of ART. "
        f"**All met: {C.fmt(s['all_met'])}** (harness/plain: {', '.join(f'{m} {C.fmt(v)}' for m, v in s['harness_vs_plain'].items())}; "
        f"harness/ART: {', '.join(f'{m} {C.fmt(v)}' for m, v in s['harness_vs_art'].items())}).",
        "",
        C.md_table(["model", "method", "images/s", "ratio vs plain", "goal", "met"], rows),
        "",
        "Same work check (every method should land close: same attack, same budget):",
        "",
        C.md_table(["model", "method", "accuracy under attack", "max Linf", "eps", "in [0,1]"], checks),
        "",
        "## Setup",
        "",
        *[f"- {r['model']} ({'x'.join(map(str, r['input']))}): {r['images']} images of {r['dataset']}, "
          f"weights {r['weights']['weights']}, batch {r['batch']}, eps {r['eps']:.4g}, {r['steps']} steps of "
          f"{r['stepsize']:.4g}, random start; labels = the model's clean predictions." for r in record["results"]],
        *[f"- {r['model']}: harness entry point `{r['harness']['entry_point']}`"
          + (f"; its attack-only time (without verification and final predictions) gives "
             f"{C.fmt(r['harness'].get('attack_only_images_per_s'))} images/s, ratio vs plain "
             f"{C.fmt(r['harness'].get('attack_only_ratio_vs_plain'))} (informative; the goal uses the whole call)"
             if r['harness'].get('attack_only_images_per_s') else "") + "."
          for r in record["results"] if r.get("harness")],
        "- Methods alternated (order reversed every other round) after one warm-up run each; images/s = "
        "median over the repeats; ratio = ratio of the medians. Setup outside the timed region: the Foolbox "
        "PyTorchModel and the ART PyTorchClassifier are built once; the harness path builds what it builds per "
        "call (that is part of what is measured).",
        f"- Steps: {first.get('steps')} (the goal is stated for 40; --quick uses 10)." if first else "",
    ])


def _checkpoints(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in MODELS:
            raise SystemExit(f"--checkpoint takes MODEL=PATH with MODEL in {sorted(MODELS)}, got {item!r}")
        out[name] = path
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--models", default=None, help="comma-separated, from lenet5,vgg16_narrow (default both; quick lenet5)")
    p.add_argument("--steps", type=int, default=None, help="PGD steps (default 40, quick 10)")
    p.add_argument("--eps", type=float, default=None, help="override eps (default 0.3 lenet5, 8/255 vgg16_narrow)")
    p.add_argument("--images", type=int, default=None, help="images per model (default lenet5 1000, vgg16_narrow 128)")
    p.add_argument("--batch", type=int, default=None, help="batch size for every method (default 250 / 128)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH", help="weights for a model")
    p.add_argument("--data-root", default=None, help="data root (default $MASKDEFENSE_DATA, then ../shared/data)")
    args = p.parse_args(argv)
    C.setup_run(args)
    args.steps = args.steps or (10 if args.quick else 40)
    args.checkpoint = _checkpoints(args.checkpoint)
    names = [m.strip() for m in (args.models or ("lenet5" if args.quick else "lenet5,vgg16_narrow")).split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; known {sorted(MODELS)}")
    t0 = C.timer()
    results = []
    for name in names:
        print(f"[{NAME}] {name} ...", file=sys.stderr, flush=True)
        results.append(bench_model(name, args))
    hv = {r["model"]: r["ratio_vs_plain"]["harness"] for r in results}
    ha = {r["model"]: r["harness_vs_art"] for r in results}
    record: dict[str, Any] = {
        "benchmark": NAME,
        "issue": "harness",
        "goal": {"harness_vs_plain_min": GOAL, "harness_ahead_of_art": True,
                 "what": "PGD-Linf images/s, harness path vs plain PyTorch loop; also Foolbox direct and ART"},
        "config": {"models": names, "steps": args.steps, "rel_stepsize": REL_STEP, "random_start": True,
                   "checkpoints": args.checkpoint},
        "results": results,
        "summary": {
            "harness_vs_plain": hv,
            "harness_vs_art": ha,
            "all_met": bool(results) and all(r["met"]["harness_vs_plain"] and r["met"]["ahead_of_art"] for r in results),
        },
    }
    record["metadata"] = C.metadata(args, C.command(argv, "bench_pgd.py"), C.timer() - t0)
    md, js = C.write_results(args.out, NAME, record, render(record))
    print(f"[{NAME}] wrote {md} and {js}", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()
