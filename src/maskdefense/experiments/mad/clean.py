"""MAD studies that need no attack (issue "MAD"):

* ``votes``: Figure 2 of the journal paper -- clean accuracy of the MAD model against the number of
  votes, with the time to classify the test set; plus the adaptive vote (how many forward passes it
  saves and how often it changes the full vote's decision);
* ``ablation``: the clean-accuracy column of Table 2 (masking at training only / test only / both /
  neither), and MNIST's clean vote accuracy at 5 and 20 votes beside the paper's 96.13%;
* ``masks``: Figures 4 and 5 -- the same images masked at rates 1/3, 1/2, 3/4 and at cell sizes 2, 4, 8.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from ...data import load_dataset
from ...defenses.mad import STOP_PREDICTIVE, STOP_TEST, MADClassifier
from ...papers.mad import CLEAN_ABLATION, FIG2_NOTE, FIG4_RATES, FIG5_CELLS, FIG5_RATE, TABLE_SUITE
from ...training.presets import create_preset
from ...provenance import run_metadata
from ...results import markdown_table, pct, save_figure, write_results
from ...training.loop import predict_labels
from ...seeding import seeded
from ..common import ensure_model, training_summary

VOTES = (1, 3, 5, 7, 9, 15, 20)

Log = Callable[[str], None]


def _datasets(quick: bool, dataset: str) -> tuple[str, str, str]:
    """(dataset, MAD preset, plain preset)."""
    if quick:
        return "digits", "mad-digits", "plain-digits"
    return dataset, f"mad-{dataset}-cpu", f"plain-{dataset}-cpu"


def _overrides(quick: bool) -> dict[str, Any]:
    return {"epochs": 3} if quick else {}


def _test_set(dataset: str, data_root: Any, limit: int | None) -> tuple[Tensor, Tensor]:
    d = load_dataset(dataset, "test", root=data_root, limit=limit)
    return d.tensors()


def votes_study(out: str | Path, *, dataset: str = "mnist", quick: bool = False, seed: int = 0,
                runs_dir: str | Path = "runs", data_root: Any = None, limit: int | None = None,
                votes: tuple[int, ...] = VOTES, adaptive_max: int = 20, log: Log = print) -> dict[str, Any]:
    meta = run_metadata(seed)
    t_start = time.perf_counter()
    ds, mad_name, _ = _datasets(quick, dataset)
    p = create_preset(mad_name, **_overrides(quick))
    model, ck = ensure_model(p, runs_dir, seed=seed, data_root=data_root, log=log)
    x, y = _test_set(ds, data_root, limit)
    assert p.test_cell is not None
    mad = MADClassifier(model, p.test_cell, p.test_rate).eval()
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    base_acc = float((predict_labels(model, x) == y).float().mean())
    rows.append({"votes": 0, "accuracy": base_acc, "seconds": time.perf_counter() - t0,
                 "note": "no masking (single unmasked pass)"})
    for n in votes:
        t0 = time.perf_counter()
        pred = mad.predict(x, n, generator=seeded(seed))
        sec = time.perf_counter() - t0
        rows.append({"votes": n, "accuracy": float((pred == y).float().mean()), "seconds": sec, "note": ""})
        log(f"  {n:>2} votes: accuracy {rows[-1]['accuracy']:.4f}  ({sec:.1f}s for {len(y)} images)")
    # adaptive vote against the full adaptive_max vote with the same masks
    full = mad.predict(x, adaptive_max, generator=seeded(seed))
    adaptive = []
    for stop in ("exact", "test", "predictive"):
        t0 = time.perf_counter()
        res = mad.predict_adaptive(x, adaptive_max, generator=seeded(seed), stop=stop, batch=4, alpha=1e-3,
                                   delta=1e-3)
        sec = time.perf_counter() - t0
        adaptive.append({
            "stop": stop, "n_max": adaptive_max, "mean_passes": float(res.passes.float().mean()),
            "passes_saved": 1.0 - float(res.passes.float().mean()) / adaptive_max,
            "changed_decisions": int((res.predictions != full).sum()),
            "changed_fraction": float((res.predictions != full).float().mean()),
            "stopped_by_test": int(((res.stopped == STOP_TEST) | (res.stopped == STOP_PREDICTIVE)).sum()),
            "accuracy": float((res.predictions == y).float().mean()),
            "full_vote_accuracy": float((full == y).float().mean()), "seconds": sec,
        })
    meta.update(study="mad-votes", dataset=ds, preset=p.to_dict(), checkpoint_sha256=ck["sha256"],
                n_test=len(y), wall_time_s=round(time.perf_counter() - t_start, 2), adaptive=adaptive)
    _votes_plot(rows, ds, Path(out) / "votes.png")
    table = markdown_table(rows, ["votes", "accuracy", "seconds", "note"],
                           ["votes", "test accuracy", f"seconds for {len(y)} images", "note"],
                           {"accuracy": pct, "seconds": lambda v: f"{v:.2f}"})
    atable = markdown_table(adaptive, ["stop", "n_max", "mean_passes", "passes_saved", "changed_decisions",
                                       "stopped_by_test", "accuracy", "full_vote_accuracy"],
                            formatters={"passes_saved": pct, "accuracy": pct, "full_vote_accuracy": pct,
                                        "mean_passes": lambda v: f"{v:.2f}"})
    write_results(
        out, title=f"MAD: accuracy against number of votes ({ds}, {p.model})",
        intro=(f"Clean test accuracy of the MAD-trained {p.model} ({p.name}: trained with {p.train_cell}x"
               f"{p.train_cell} cells at rate {p.train_rate}; tested with {p.test_cell}x{p.test_cell} cells at "
               f"rate {p.test_rate}) when the decision is the majority of n masked copies, and the wall time to "
               f"classify all {len(y)} test images on this CPU. Journal paper, Figure 2. {FIG2_NOTE}"),
        sections=["## Accuracy and time against votes", table, "![votes](votes.png)",
                  "## Adaptive vote count",
                  (f"Votes drawn 4 at a time, up to {adaptive_max}. `exact` stops an input once the leader "
                   "cannot be overtaken by the remaining votes (decision provably equal to the full vote with "
                   "the same masks); `test` also stops when a two-sided binomial test of leader vs runner-up "
                   "rejects at level 1e-3 / rounds; `predictive` instead stops when the posterior predictive "
                   "probability that the remaining votes overturn the leader is below 1e-3 (beta-binomial, "
                   "uniform prior, all non-leader votes counted for one challenger). `stopped_by_test` counts "
                   "inputs stopped by the statistical rule. `changed_decisions` counts test images whose adaptive "
                   f"decision differs from the full {adaptive_max}-vote with the same masks."),
                  atable],
        rows=rows, meta=meta,
    )
    return meta


def _votes_plot(rows: list[dict[str, Any]], ds: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vr = [r for r in rows if r["votes"] > 0]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([r["votes"] for r in vr], [100 * r["accuracy"] for r in vr], "o-", color="tab:red", label="vote accuracy")
    ax.axhline(100 * rows[0]["accuracy"], color="tab:red", ls=":", label="unmasked single pass")
    ax.set_xlabel("number of votes")
    ax.set_ylabel("test accuracy (%)", color="tab:red")
    ax2 = ax.twinx()
    ax2.plot([r["votes"] for r in vr], [r["seconds"] for r in vr], "s--", color="tab:green", label="time")
    ax2.set_ylabel("seconds for the test set", color="tab:green")
    ax.set_title(f"MAD on {ds}: accuracy and time against votes")
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    plt.close(fig)


def ablation_study(out: str | Path, *, dataset: str = "mnist", quick: bool = False, seed: int = 0,
                   runs_dir: str | Path = "runs", data_root: Any = None, limit: int | None = None,
                   votes: tuple[int, ...] = (5, 20), log: Log = print) -> dict[str, Any]:
    """Clean accuracy with masking at training and/or test time (Table 2's "Benign" column)."""
    meta = run_metadata(seed)
    t_start = time.perf_counter()
    ds, mad_name, plain_name = _datasets(quick, dataset)
    pm = create_preset(mad_name, **_overrides(quick))
    pp = create_preset(plain_name, **_overrides(quick))
    mad_model, mad_ck = ensure_model(pm, runs_dir, seed=seed, data_root=data_root, log=log)
    plain_model, plain_ck = ensure_model(pp, runs_dir, seed=seed, data_root=data_root, log=log)
    x, y = _test_set(ds, data_root, limit)
    assert pm.test_cell is not None
    paper = CLEAN_ABLATION.get(ds, {})
    rows: list[dict[str, Any]] = []
    for train_mask, model, ck in ((False, plain_model, plain_ck), (True, mad_model, mad_ck)):
        acc = float((predict_labels(model, x) == y).float().mean())
        rows.append({"train_mask": train_mask, "test_mask": False, "votes": "-", "accuracy": acc,
                     "paper": paper.get((train_mask, False)), "epochs": ck.get("epochs")})
        for n in votes:
            mad = MADClassifier(model, pm.test_cell, pm.test_rate).eval()
            acc = float((mad.predict(x, n, generator=seeded(seed)) == y).float().mean())
            rows.append({"train_mask": train_mask, "test_mask": True, "votes": n, "accuracy": acc,
                         "paper": paper.get((train_mask, True)) if n == 5 else None, "epochs": ck.get("epochs")})
    for r in rows:
        r["gap_to_paper"] = None if r["paper"] is None else r["accuracy"] - r["paper"]
    meta.update(study="mad-ablation-clean", dataset=ds, mad_preset=pm.to_dict(), plain_preset=pp.to_dict(),
                checkpoints={"mad": mad_ck["sha256"], "plain": plain_ck["sha256"]}, n_test=len(y),
                wall_time_s=round(time.perf_counter() - t_start, 2))
    yes = lambda v: "yes" if v else "no"  # noqa: E731
    table = markdown_table(rows, ["train_mask", "test_mask", "votes", "accuracy", "paper", "gap_to_paper"],
                           ["masked at training", "masked at test", "votes", "clean test accuracy", "paper",
                            "ours - paper"],
                           {"train_mask": yes, "test_mask": yes, "accuracy": pct, "paper": pct,
                            "gap_to_paper": lambda v: "-" if v is None else f"{100 * v:+.2f} pts"})
    intro = (f"Clean test accuracy on {len(y)} {ds} test images of a {pm.model} trained without masking "
             f"({pp.name}) and with MAD masking ({pm.name}: {pm.train_cell}x{pm.train_cell} cells, rate "
             f"{pm.train_rate}), each classified unmasked (one pass) or by the majority vote over masked copies "
             f"({pm.test_cell}x{pm.test_cell} cells, rate {pm.test_rate}). Training: {pp.name} "
             f"{training_summary(pp)}; {pm.name} {training_summary(pm)}. The paper's numbers: Table 2 for CIFAR-10 (5 votes); "
             f"{pct(CLEAN_ABLATION['mnist'][(True, True)])} benign accuracy of MAD with 5 votes in Table 5 for MNIST.")
    write_results(out, title=f"MAD ablation, clean accuracy ({ds}, {pm.model})", intro=intro,
                  sections=["## Masking at training / test time", table], rows=rows, meta=meta)
    return meta


def masks_figure(out: str | Path, *, dataset: str = "cifar10", quick: bool = False, seed: int = 0,
                 data_root: Any = None, n_images: int = 6, log: Log = print) -> dict[str, Any]:
    """Figures 4 and 5: the same images masked at several rates (cell 8) and cell sizes (rate 3/4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...ops.masking import GridMask

    meta = run_metadata(seed)
    t_start = time.perf_counter()
    ds = "digits" if quick else dataset
    x, y = _test_set(ds, data_root, n_images)
    side = x.shape[-1]
    # the paper's cells where they divide the side, else (28x28 MNIST) 1, 2 and 7
    cells = [c for c in FIG5_CELLS if side % c == 0] or [c for c in (1, 2, 7) if side % c == 0]
    big = max(c for c in (8, 7, 4, 2) if side % c == 0)
    rows_spec = [("original", None, None)]
    rows_spec += [(f"rate {name}, cell {big}", big, r) for name, r in FIG4_RATES]
    rows_spec += [(f"rate 3/4, cell {c}", c, FIG5_RATE) for c in cells]
    fig, axes = plt.subplots(len(rows_spec), n_images, figsize=(1.4 * n_images, 1.45 * len(rows_spec)))
    records = []
    for i, (label, cell, rate) in enumerate(rows_spec):
        imgs = x if cell is None else GridMask(cell, rate)(x, seeded(seed + i))
        records.append({"row": label, "cell": cell, "rate": rate})
        for j in range(n_images):
            ax = axes[i, j]
            img = imgs[j].permute(1, 2, 0).numpy()
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.suptitle(f"{ds}: grid masking at several rates and cell sizes (black fill)", fontsize=9)
    Path(out).mkdir(parents=True, exist_ok=True)
    save_figure(fig, Path(out) / "masks.png")
    plt.close(fig)
    meta.update(study="mad-masks", dataset=ds, wall_time_s=round(time.perf_counter() - t_start, 2))
    write_results(out, title=f"MAD masks: Figures 4 and 5 ({ds})",
                  intro=("The same test images masked at rates 1/3, 1/2, 3/4 (largest cell size) and with 3/4 of "
                         "the cells removed at several cell sizes. A masked cell is filled with black (0)."),
                  sections=["![masks](masks.png)",
                            markdown_table(records, formatters={"rate": lambda v: "-" if v is None else f"{v:.3f}"})],
                  rows=records, meta=meta)
    return meta


STUDIES: dict[str, Callable[..., dict[str, Any]]] = {
    "mad-votes": votes_study,
    "mad-ablation": ablation_study,
    "mad-masks": masks_figure,
}
#: The datasets each study runs on (None: any dataset); --quick runs on the embedded digits instead.
DATASETS: dict[str, tuple[str, ...] | None] = {"mad-votes": tuple(TABLE_SUITE), "mad-ablation": tuple(TABLE_SUITE),
                                               "mad-masks": None}
