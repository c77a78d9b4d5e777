"""MAD's hyperparameter tables on VGG16/CIFAR-10 (journal paper, Section 4): Table 1 (mask rate 0, 1/3,
1/2, 3/4, 4/5; 8x8 cells at training, 4x4 at test), Table 2 (the four-way ablation: masking at training
and/or test time, against four attacks) and Table 3 (training/test cell sizes at rate 3/4).

All three come from one set of gray-box evaluations (the paper's threat model: examples made against the
base network without masking), one per trained model, on the same test images:

* every model is attacked once with the 23 attacks of Table 4 (:func:`maskdefense.eval.evaluate`, the
  adversarial examples stored), and its MAD vote evaluated with the model's own test masking;
* other test cell sizes of the same model (Table 3) re-use those examples
  (:func:`maskdefense.eval.reuse.reevaluate`): gray-box examples do not depend on the test masking.

Reading of the tables in terms of the harness's numbers (all on the correctly classified images):
Table 1 column 0 and Table 2 rows "no test masking" are the *Attack* numbers (the model alone on the
examples made against it); every masked-test cell is a *Defense* number (mean of 3 votes with fresh masks).
The paper's numbers are in :mod:`maskdefense.papers.mad` (``TABLE1``, ``TABLE2``, ``TABLE3``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ...attacks import get_suite
from ...data import load_dataset
from ...defenses.mad import MADClassifier
from ...eval import evaluate
from ...eval.reuse import reevaluate
from ...training.presets import Preset, create_preset
from ...papers.mad import TABLE1, TABLE2, TABLE2_ATTACKS, TABLE3, TABLE3_CELLS, TABLE_SUITE
from ...provenance import run_metadata
from ...results import markdown_table, pct, save_figure, write_results
from ..common import ensure_model, harness_provenance, mean_defined, training_summary
from .tables import CPU_OVERRIDES, QUICK_OVERRIDES

Log = Callable[[str], None]

N_IMAGES = 100  # first N CIFAR-10 test images (CPU budget: 6 models x 23 attacks, about 3 minutes each)


@dataclass(frozen=True)
class SweepPlan:
    dataset: str
    suite: str
    n: int
    plain: Preset
    main: Preset  # the paper's choice: rate 3/4, 8x8 cells at training, 4x4 at test
    rates: tuple[tuple[str, Preset], ...]  # Table 1 columns after 0 (main among them)
    cells: tuple[tuple[int, int, Preset], ...]  # Table 3 columns: (train cell, test cell, model)
    overrides: str
    every: int = 1  # use every k-th attack row (quick mode)


def _plan(quick: bool, limit: int | None) -> SweepPlan:
    if not quick:
        main = create_preset("mad-cifar10-cpu")
        rates = (("1/3", create_preset("mad-cifar10-rate1_3-cpu")), ("1/2", create_preset("mad-cifar10-rate1_2-cpu")),
                 ("3/4", main), ("4/5", create_preset("mad-cifar10-rate4_5-cpu")))
        t4 = create_preset("mad-cifar10-train4-cpu")
        cells = tuple((tc, sc, t4 if tc == 4 else main) for tc, sc in TABLE3_CELLS)
        return SweepPlan("cifar10", TABLE_SUITE["cifar10"], limit or N_IMAGES, create_preset("plain-cifar10-cpu"), main,
                         rates, cells, CPU_OVERRIDES)
    # seconds-long check on the embedded 8x8 digits: 2x2 / 4x4 cells instead of 8x8 / 4x4 / 2x2
    def digits(name: str, **kw: Any) -> Preset:  # under its own name, so its checkpoint is its own
        return replace(create_preset("mad-digits", epochs=3, **kw), name=name)

    main = digits("mad-digits-sweep-main", train_cell=4, test_cell=2, train_rate=0.75, test_rate=0.75)
    half = digits("mad-digits-sweep-rate1_2", train_cell=4, test_cell=2)
    t2 = digits("mad-digits-sweep-train2", train_cell=2, test_cell=2, train_rate=0.75, test_rate=0.75)
    return SweepPlan("digits", TABLE_SUITE["cifar10"], limit or 24, create_preset("plain-digits", epochs=3), main,
                     (("1/2", half), ("3/4", main)), ((2, 2, t2), (4, 2, main), (4, 4, main)), QUICK_OVERRIDES, every=6)


def sweep_study(out: str | Path, *, quick: bool = False, seed: int = 0, runs_dir: str | Path = "runs",
                data_root: Any = None, limit: int | None = None, log: Log = print) -> dict[str, Any]:
    """Tables 1-3 of the MAD journal paper (see the module docstring)."""
    t_start = time.perf_counter()
    meta = run_metadata(seed)
    plan = _plan(quick, limit)
    specs = get_suite(plan.suite).specs()[::plan.every]
    labels = [s.label for s in specs]
    test = load_dataset(plan.dataset, "test", root=data_root, limit=plan.n)
    runs_out = Path(out) / "runs"
    models: dict[str, tuple[Any, dict[str, Any]]] = {}
    summaries: dict[tuple[str, int], dict[str, Any]] = {}  # (preset name, test cell) -> {clean, rows}

    def model(p: Preset) -> tuple[Any, dict[str, Any]]:
        if p.name not in models:
            models[p.name] = ensure_model(p, runs_dir, seed=seed, data_root=data_root, log=log)
        return models[p.name]

    def run(p: Preset, test_cell: int, rate: float) -> dict[str, Any]:
        key = (p.name, test_cell)
        if key in summaries:
            return summaries[key]
        m, ck = model(p)
        defense = MADClassifier(m, test_cell, rate, n=plan.main.votes)
        own = (p.name, p.test_cell or plan.main.test_cell)
        if key == own:
            log(f"[mad-sweeps] gray-box attacks on {p.name} (vote: {test_cell}x{test_cell} cells, rate {rate:.3g})")
            rep = evaluate(defense, test, specs, "gray-box", out_dir=runs_out / p.name, seed=seed, batch_size=100,
                           progress=False, sanity=None, save_adversarial=True, attack_overrides=plan.overrides,
                           checkpoint_meta=ck, command=meta["command"])
        else:
            run(p, own[1], rate)
            log(f"[mad-sweeps] {p.name}: re-voting its stored examples with {test_cell}x{test_cell} cells")
            rep = reevaluate(defense, test, runs_out / p.name, out_dir=runs_out / f"{p.name}-test{test_cell}",
                             progress=False, command=meta["command"])
        summaries[key] = {"clean": rep.clean, "rows": {r["label"]: r for r in rep.rows},
                          "config_hash": rep.config_hash, "sha256": ck["sha256"]}
        return summaries[key]

    main_rate = plan.main.test_rate
    plain = run(plan.plain, plan.main.test_cell or 4, main_rate)  # the plain model under MAD's vote (Table 2)
    # Table 1
    t1: list[dict[str, Any]] = [{"attack": "Benign", "0": plain["clean"]["base_clean_acc"]}]
    t1 += [{"attack": lab, "0": plain["rows"][lab]["attack_acc"]} for lab in labels]
    for lab, p in plan.rates:
        s = run(p, p.test_cell or 4, p.test_rate)
        t1[0][lab] = s["clean"]["defense_clean_acc"]
        for row in t1[1:]:
            row[lab] = s["rows"][row["attack"]]["defense_acc"]
    # Table 3
    t3: list[dict[str, Any]] = [{"attack": "Benign"}] + [{"attack": lab} for lab in labels]
    for tc, sc, p in plan.cells:
        s = run(p, sc, p.test_rate)
        col = _cell_column(tc, sc)
        t3[0][col] = s["clean"]["defense_clean_acc"]
        for row in t3[1:]:
            row[col] = s["rows"][row["attack"]]["defense_acc"]
    # Table 2
    main = run(plan.main, plan.main.test_cell or 4, main_rate)
    t2_attacks = [a for a in TABLE2_ATTACKS if a in labels]
    t2 = []
    for train_mask, s in ((False, plain), (True, main)):
        for test_mask in (False, True):
            row: dict[str, Any] = {"train": train_mask, "test": test_mask,
                                   "Benign": s["clean"]["defense_clean_acc" if test_mask else "base_clean_acc"]}
            row.update({a: s["rows"][a]["defense_acc" if test_mask else "attack_acc"] for a in t2_attacks})
            if not quick:
                row.update({f"paper {k}": v for k, v in TABLE2[(train_mask, test_mask)].items()})
            t2.append(row)
    if not quick:  # the paper's numbers sit beside the full CIFAR-10 rows only
        _add_paper(t1, TABLE1)
        _add_paper(t3, {lab: {_cell_column(*c): v for c, v in cols.items()} for lab, cols in TABLE3.items()})
    counts = {f"{k[0]}@test{k[1]}": v["clean"]["n_correct"] for k, v in summaries.items()}
    meta.update(study="mad-sweeps", dataset=plan.dataset, suite=plan.suite, n_images=plan.n, threat="gray-box",
                attack_overrides=plan.overrides, n_correct=counts,
                checkpoints={k: v[1]["sha256"] for k, v in models.items()},
                presets={p.name: p.to_dict() for p in [plan.plain] + [p for _, p in plan.rates] +
                         [p for _, _, p in plan.cells]},
                eval_config_hashes={f"{k[0]}@test{k[1]}": v["config_hash"] for k, v in summaries.items()},
                wall_time_s=round(time.perf_counter() - t_start, 2),
                **harness_provenance(runs_out.glob("*")))
    _write(out, plan, t1, t2, t3, t2_attacks, meta)
    return meta


def _cell_column(train_cell: int, test_cell: int) -> str:
    return f"{train_cell}x{train_cell}/{test_cell}x{test_cell}"


def _add_paper(table: list[dict[str, Any]], paper: dict[str, dict[str, float]]) -> None:
    """The paper's value of each (row, column) as ``paper <col>``, matched by the row's attack label."""
    for row in table:
        row.update({f"paper {c}": v for c, v in paper.get(row["attack"], {}).items()})


def _side_by_side(table: list[dict[str, Any]], cols: list[str]) -> str:
    heads = ["Attack method"]
    keys = ["attack"]
    for c in cols:
        keys += [c, f"paper {c}"]
        heads += [f"ours {c}", f"paper {c}"]
    return markdown_table(table, keys, heads, {k: pct for k in keys[1:]})


def _write(out: Any, plan: SweepPlan, t1: list[dict[str, Any]], t2: list[dict[str, Any]], t3: list[dict[str, Any]],
           t2_attacks: list[str], meta: dict[str, Any]) -> None:
    rate_cols = ["0"] + [lab for lab, _ in plan.rates]
    cell_cols = [_cell_column(a, b) for a, b, _ in plan.cells]
    yes = lambda v: "yes" if v else "no"  # noqa: E731
    t2_keys = ["train", "test"] + [k for a in ("Benign", *t2_attacks) for k in (a, f"paper {a}")]
    t2_heads = ["masked at training", "masked at test"] + [h for a in ("Benign", *t2_attacks)
                                                          for h in (f"ours {a}", f"paper {a}")]
    t2_md = markdown_table(t2, t2_keys, t2_heads, {**{k: pct for k in t2_keys[2:]}, "train": yes, "test": yes})
    summary = [{"sweep": name, "column": c, "benign": table[0].get(c), "paper_benign": table[0].get(f"paper {c}"),
                "attacks": mean_defined([r.get(c) for r in table[1:]]),
                "paper_attacks": mean_defined([r.get(f"paper {c}") for r in table[1:]])}
               for name, table, cols in (("Table 1: mask rate", t1, rate_cols), ("Table 3: train/test cell", t3, cell_cols))
               for c in cols]
    summary_md = markdown_table(summary, ["sweep", "column", "benign", "paper_benign", "attacks", "paper_attacks"],
                                ["sweep", "column", "ours benign", "paper benign", "ours mean over attack rows",
                                 "paper mean over attack rows"], {k: pct for k in ("benign", "paper_benign", "attacks",
                                                                                  "paper_attacks")})
    _plot(Path(out) / "sweeps.png", t1, t3, rate_cols, cell_cols)
    p = plan.main
    counts = ", ".join(f"{k}: {v}" for k, v in meta["n_correct"].items())
    intro = (
        f"MAD journal paper, Tables 1-3: {p.model} on {plan.dataset}, every model trained like {p.name} "
        f"({training_summary(p)}) with the mask rate / training cell of its column, defended by the majority vote of "
        f"{p.votes} masked copies (the test rate equals the training rate). First {plan.n} test images; adversarial "
        f"examples only from the images each base model classifies correctly (per model: {counts}). "
        "**Threat model: gray-box** (the paper's): the attacker knows the trained network but not the masking, and "
        "attacks the unmasked network; no adaptive attacker is considered in these tables (see "
        "[the Table 4 reproduction](../mad-table-cifar10/README.md) for the adaptive column). Attacks: the 23 rows of "
        f"Table 4, Foolbox defaults except epsilon and `{meta['attack_overrides']}`. Each cell with test masking is "
        "the mean of 3 votes with fresh masks; cells without test masking are the network alone. The paper's "
        "Table 1 row 'PGD L1 eps=1' is taken as eps=15 (its 3/4 value equals Table 3's and Table 4's eps=15 row).")
    sections = [
        "## Summary: clean accuracy and the mean over the attack rows", "![sweeps](sweeps.png)",
        summary_md,
        f"## Table 1: mask rate (training {p.train_cell}x{p.train_cell} cells, test {p.test_cell}x{p.test_cell}; "
        "rate 0 = the plainly trained network, unmasked)",
        _side_by_side(t1, rate_cols),
        f"## Table 2: masking at training and/or test time (rate {p.test_rate:g})", t2_md,
        f"## Table 3: training / test cell sizes (rate {p.test_rate:g}; columns: training cell / test cell)",
        _side_by_side(t3, cell_cols),
        "Per-run harness reports (every attack parameter, flags, per-example records): `runs/<model>[-test<cell>]/"
        "summary.md`.",
        f"Wall time of the harness runs, over all resumptions: {meta['eval_wall_time_s_total']} s "
        f"(training not included; see each checkpoint's record).",
    ]
    rows = [{"table": "1", **r} for r in t1] + [{"table": "2", **r} for r in t2] + [{"table": "3", **r} for r in t3]
    write_results(out, title=f"MAD Tables 1-3 reproduction: {p.model} + {plan.dataset}", intro=intro,
                  sections=sections, rows=rows, meta=meta)


def _plot(path: Path, t1: list[dict[str, Any]], t3: list[dict[str, Any]], rate_cols: list[str],
          cell_cols: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, table, cols, title in ((axes[0], t1, rate_cols, "Table 1: mask rate"),
                                   (axes[1], t3, cell_cols, "Table 3: train/test cell")):
        xs = list(range(len(cols)))
        for who, pre, style in (("ours", "", "-"), ("paper", "paper ", "--")):
            benign = [table[0].get(f"{pre}{c}") for c in cols]
            attacks = [mean_defined([r.get(f"{pre}{c}") for r in table[1:]]) for c in cols]
            if all(v is None for v in benign):
                continue
            ax.plot(xs, [100 * v if v is not None else float("nan") for v in benign], "o" + style, color="tab:blue",
                    label=f"{who}: benign")
            ax.plot(xs, [100 * v if v is not None else float("nan") for v in attacks], "s" + style, color="tab:red",
                    label=f"{who}: mean over attacks (gray-box)")
        ax.set_xticks(xs, cols)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    plt.close(fig)


STUDIES: dict[str, Callable[..., dict[str, Any]]] = {"mad-sweeps": sweep_study}
#: The datasets each study runs on; --quick runs on the embedded digits instead.
DATASETS: dict[str, tuple[str, ...] | None] = {"mad-sweeps": ("cifar10",)}
