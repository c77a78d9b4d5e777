"""MAD's attack tables (issue "Reproduce the MAD papers' experiments"): Table 5 (LeNet/MNIST,
ResNet18/SVHN) and Table 4 (VGG16/CIFAR-10) with the paper's numbers beside ours, plus what the paper
left out: the adaptive white-box column (EOT through the masks) and black-box transfer from an
independently trained surrogate; and Figure 3 (accuracy when part of each perturbation is removed).

Each study trains the models it needs (resumable, into ``runs_dir``) and runs the evaluation harness
(:func:`maskdefense.eval.evaluate`, resumable, into ``<out>/eval``); the README beside it puts our
numbers next to the paper's.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ...attacks import get_suite
from ...data import DataError, load_dataset
from ...defenses.mad import MADClassifier
from ...eval import evaluate
from ...eval.budget import BUDGET_FACTOR, budget_check, strongest_per_attack
from ...eval.harness import attack_and_verify
from ...papers.mad import FIG3_ATTACKS, FIG3_KEPT, TABLE_NAME, TABLE_SUITE, TRANSFER_SURROGATE
from ...training.presets import create_preset
from ...provenance import run_metadata
from ...results import markdown_table, pct, save_figure, write_results
from ...training.loop import predict_labels
from ...seeding import seeded
from ..common import budget_markdown, ensure_model, harness_provenance, mean_defined

Log = Callable[[str], None]

# Images evaluated: enough that >= 1000 (MNIST) are correctly classified; CIFAR-10/SVHN: what a 2-core CPU
# affords for VGG16/ResNet18 at CPU widths (width 1/4: about 15 CPU-minutes for the 23 attacks x 2 threats).
N_IMAGES = {"mnist": 1100, "cifar10": 300, "svhn": 300}
# Images for the adaptive threat (EOT: n_grad forward/backward passes per gradient step).
ADAPTIVE_N = {"mnist": 300, "cifar10": 50, "svhn": 50}
# AutoAttack "rand" (APGD-CE + APGD-DLR, 20 EOT samples per gradient, library defaults) against the whole
# defense: (images, Linf epsilons). The first epsilon is the table's largest PGD-Linf one; MNIST adds 0.1, where
# the epsilon sweep shows the vote breaking. Beside it, the harness's PGD-Linf with EOT on the same images.
AUTOATTACK = {"mnist": (100, (0.02, 0.1)), "cifar10": (50, (0.015,)), "svhn": (50, (0.015,))}
QUICK_AUTOATTACK = (8, (0.1,), "n_iter=5,eot_iter=2")
# What the CPU cannot afford of the library defaults (recorded in the results as overrides).
CPU_OVERRIDES = "cw-l2:steps=100,binary_search_steps=5"
QUICK_OVERRIDES = "cw-l2:steps=20,binary_search_steps=2;deepfool-l2:steps=10;deepfool-linf:steps=10"


def _fmt_pts(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:+.2f}"


def table_study(out: str | Path, *, dataset: str = "mnist", quick: bool = False, seed: int = 0,
                runs_dir: str | Path = "runs", data_root: Any = None, limit: int | None = None,
                threats: str = "gray-box,black-box,adaptive", adaptive_n: int | None = None,
                preset_overrides: dict[str, Any] | None = None, every: int | None = None,
                attack_overrides: str | None = None, autoattack: tuple[int, tuple[float, ...], str] | None = None,
                autoattack_n: int | None = None, budget: bool = True, log: Log = print) -> dict[str, Any]:
    """The paper's table with our gray-box, black-box transfer and adaptive columns.

    The gray-box and transfer threats run on ``limit`` images (default ``N_IMAGES``). The adaptive threat
    costs ``n_grad`` masked copies per gradient, so it runs on the first ``adaptive_n`` of them (default
    ``ADAPTIVE_N``; all in quick mode), together with the other threats on the same images, so that the
    integrity checks (transfer stronger than adaptive ...) compare like with like.

    ``preset_overrides`` (e.g. ``{"epochs": 1}``), ``every`` (use every k-th attack row),
    ``attack_overrides`` and ``autoattack`` (images, epsilons, extra AutoAttack parameters) shrink a run for tests (the SVHN stand-in); results made with them say so.
    ``budget``: with the adaptive threat, check the attack budgets (:func:`maskdefense.eval.budget.budget_check`:
    the largest-epsilon row of each attack again with twice the steps and EOT samples, on the adaptive images).
    When the dataset is missing, the results README says so (and the error is raised).
    """
    t_start = time.perf_counter()
    meta = run_metadata(seed)
    ds = "digits" if quick else dataset
    suite = get_suite(TABLE_SUITE["mnist" if quick else dataset])
    po = {"epochs": 3, **(preset_overrides or {})} if quick else dict(preset_overrides or {})
    mad_p = create_preset("mad-digits" if quick else f"mad-{dataset}-cpu", **po)
    sur_p = create_preset("plain-digits" if quick else TRANSFER_SURROGATE[dataset], **po)
    try:
        load_dataset(ds, "test", root=data_root, limit=1)
    except DataError as e:
        meta.update(study=f"mad-table-{ds}", dataset=ds, status="data missing", error=str(e),
                    wall_time_s=round(time.perf_counter() - t_start, 2))
        write_results(out, title=f"MAD {TABLE_NAME.get(ds, '')} reproduction: {mad_p.model} + {ds}: data missing",
                      intro=(f"The {ds} data was not found, so nothing was trained or evaluated. The command and its "
                             "code path are tested on a small stand-in in the test suite. Error:\n\n```\n"
                             f"{e}\n```"), sections=[], rows=[], meta=meta)
        raise
    model, ck = ensure_model(mad_p, runs_dir, seed=seed, data_root=data_root, log=log)
    surrogate, sck = ensure_model(sur_p, runs_dir, seed=seed, data_root=data_root, log=log)
    n = limit or (20 if quick else N_IMAGES[dataset])
    n_adapt = min(n, adaptive_n or (n if quick else ADAPTIVE_N[dataset]))
    # quick mode: every fourth row of the MNIST suite (6 attacks) at its epsilons, on 8x8 digits
    specs = suite.specs()[::every or (4 if quick else 1)]
    test = load_dataset(ds, "test", root=data_root, limit=n)
    assert mad_p.test_cell is not None
    defense = MADClassifier(model, mad_p.test_cell, mad_p.test_rate, n=mad_p.votes)
    wanted = [t.strip() for t in threats.split(",") if t.strip()]
    overrides = attack_overrides or (QUICK_OVERRIDES if quick else CPU_OVERRIDES)
    common = dict(surrogate=surrogate, seed=seed, batch_size=100, progress=False, attack_overrides=overrides,
                  checkpoint_meta=ck, surrogate_meta=sck, paper_benign=suite.paper_benign, command=meta["command"])
    main_threats = [t for t in wanted if t != "adaptive"] or ["gray-box"]
    report = evaluate(defense, test, specs, ",".join(main_threats), out_dir=Path(out) / "eval", sanity=None,
                      **common)
    areport = None
    if "adaptive" in wanted:
        areport = evaluate(defense, test.subset(range(n_adapt)), specs, ",".join(wanted),
                           out_dir=Path(out) / "eval-adaptive", **common)
    aa_rows: list[dict[str, Any]] = []
    aa_rep = None
    aa_n, aa_eps, aa_extra = 0, (), ""
    if "adaptive" in wanted:
        aa_n, aa_eps, aa_extra = autoattack or (QUICK_AUTOATTACK if quick else (*AUTOATTACK[dataset], ""))
        aa_n = aa_n if autoattack_n is None else autoattack_n  # 0: skip AutoAttack
        aa_specs = [f"autoattack-rand:eps={e!r},norm=Linf" + (f",{aa_extra}" if aa_extra else "") for e in aa_eps]
        aa_specs += [f"pgd-linf:eps={e!r}" for e in aa_eps]
        if aa_n > 0:
            aa_rep = evaluate(defense, test.subset(range(min(n, aa_n))), ";".join(aa_specs), "adaptive",
                              out_dir=Path(out) / "eval-autoattack", sanity=None, **common)
            aa_rows = list(aa_rep.rows)
    budget_rows: list[dict[str, Any]] = []
    budget_flags: list[Any] = []
    if areport is not None and budget:
        checked = strongest_per_attack(specs)[::3 if quick else 1]  # quick: the code path, on every third attack
        budget_rows, budget_flags = budget_check(defense, test.subset(range(n_adapt)), areport, checked,
                                                 out_dir=out, **common)
    found = {(r["label"], r["threat"]): r for r in report.rows}
    if areport is not None:
        found.update({(r["label"], f"{r['threat']}@{n_adapt}"): r for r in areport.rows})
    columns = [(t, t.replace("-", "_")) for t in main_threats]
    if areport is not None:
        columns += [(f"{t}@{n_adapt}", f"{t.replace('-', '_')}_sub") for t in wanted if t != "adaptive"]
        columns.append((f"adaptive@{n_adapt}", "adaptive"))
    rows = []
    for spec in specs:
        paper = spec.paper or {}
        row: dict[str, Any] = {"attack": spec.label, "eps": spec.params.get("eps"),
                               "paper_attack": paper.get("attack"), "paper_defense": paper.get("defense")}
        for threat, key in columns:
            r = found.get((spec.label, threat))
            if r is None:
                continue
            if threat == "gray-box":
                row["attack_acc"] = r["attack_acc"]
            row[f"{key}_defense"] = r["defense_acc"]
            row[f"{key}_std"] = r["defense_std"]
            row[f"{key}_robust"] = r["robust_acc"]
        row["gap_defense"] = (row["gray_box_defense"] - row["paper_defense"]
                              if row.get("gray_box_defense") is not None and row["paper_defense"] is not None else None)
        rows.append(row)
    flags = [{"code": f.code, "severity": f.severity, "message": f.message, "run": run}
             for run, rep in (("eval", report), ("eval-adaptive", areport), ("eval-autoattack", aa_rep))
             if rep is not None for f in rep.flags]
    flags += [{"code": f.code, "severity": f.severity, "message": f.message, "run": f"budget-x{BUDGET_FACTOR}"}
              for f in budget_flags]
    meta.update(study=f"mad-table-{ds}", dataset=ds, suite=suite.name, preset_overrides=po or None,
                attack_rows_every=every, autoattack_setting=[aa_n, list(aa_eps), aa_extra] if aa_rows else None,
                mad_preset=mad_p.to_dict(),
                surrogate_preset=sur_p.to_dict(), n_images=n, adaptive_n=n_adapt if areport else None,
                clean=report.clean, clean_adaptive_subset=areport.clean if areport else None, flags=flags,
                attack_overrides=overrides, checkpoints={"mad": ck["sha256"], "surrogate": sck["sha256"]},
                eval_config_hash=report.config_hash,
                eval_adaptive_config_hash=areport.config_hash if areport else None,
                samples_per_gradient=next((r["samples_per_gradient"] for r in (areport.rows if areport else [])
                                           if r["threat"] == "adaptive"), None),
                budget_check=budget_rows or None,
                autoattack=[{k: r[k] for k in ("label", "name", "attack", "n", "n_correct", "defense_acc",
                                               "defense_std", "robust_acc", "samples_per_gradient")} for r in aa_rows],
                wall_time_s=round(time.perf_counter() - t_start, 2),
                **harness_provenance(Path(out) / d for d in (
                    "eval", "eval-adaptive", "eval-autoattack", f"budget-x{BUDGET_FACTOR}", f"budget-x{BUDGET_FACTOR}-eot")))
    _write_table(out, rows, meta, report.clean, suite, mad_p, ds, [k for _, k in columns])
    return meta


def _autoattack_section(meta: dict[str, Any]) -> str:
    rows = meta.get("autoattack") or []
    if not rows:
        return "(not run)"
    n = rows[0]["n"]
    text = (f"Adaptive white-box on the first {n} test images ({rows[0]['n_correct']} correctly classified by the base "
            "network): AutoAttack `rand` (APGD-CE and APGD-DLR with EOT, pyautoattack defaults) and the harness's "
            "PGD-Linf, both through the defense's differentiable forward (the log of the mean softmax over its masked "
            f"copies). Defense = the {meta['mad_preset']['votes']}-vote accuracy on those examples (mean of 3 votes), "
            "among the correctly "
            "classified images; robust = over all images.\n\n")
    return text + markdown_table(rows, ["label", "samples_per_gradient", "defense_acc", "robust_acc"],
                                 ["attack", "forward passes per gradient", "Defense (adaptive)", "robust accuracy"],
                                 {"defense_acc": pct, "robust_acc": pct})


def _budget_section(meta: dict[str, Any]) -> str:
    rows = meta.get("budget_check") or []
    if not rows:
        return "(not run)"
    return (f"Each attack's largest-epsilon row again on the same first {meta['adaptive_n']} images with every "
            f"budget parameter x{rows[0]['factor']} (iterations, binary-search steps) and, under the adaptive threat, "
            f"x{rows[0]['factor']} EOT samples per gradient. The budget is enough when the Defense accuracy moves by "
            "at most its noise (one binomial standard error on the correctly classified images). "
            + budget_markdown(rows))


def _write_table(out: Any, rows: list[dict[str, Any]], meta: dict[str, Any], clean: dict[str, Any], suite: Any,
                 p: Any, ds: str, keys: list[str]) -> None:
    n, na = meta["n_images"], meta["adaptive_n"]
    names = {"gray_box": f"ours Defense (gray-box, n={n})", "black_box": f"black-box transfer (n={n})",
             "gray_box_sub": f"gray-box (first {na})", "black_box_sub": f"black-box (first {na})",
             "adaptive": f"**adaptive EOT** (first {na})"}
    cols = ["attack", "paper_attack", "attack_acc", "paper_defense", "gray_box_defense", "gap_defense"]
    heads = ["Attack method", "paper Attack", f"ours Attack (n={n})", "paper Defense", names["gray_box"],
             "ours - paper (Defense, pts)"]
    for k in keys:
        if k != "gray_box":
            cols.append(f"{k}_defense")
            heads.append(names[k])
    fm: dict[str, Any] = {c: pct for c in cols if c not in ("attack", "gap_defense")}
    fm["gap_defense"] = _fmt_pts
    benign = {"attack": "Benign", "paper_defense": suite.paper_benign, "gray_box_defense": clean.get("defense_clean_acc")}
    benign["gap_defense"] = (benign["gray_box_defense"] - suite.paper_benign
                             if suite.paper_benign is not None and benign["gray_box_defense"] is not None else None)
    table = markdown_table([benign] + rows, cols, heads, fm)
    rcols = ["attack"] + [f"{k}_robust" for k in keys]
    rtable = markdown_table(rows, rcols, ["Attack method"] + [names[k] for k in keys], {c: pct for c in rcols[1:]})
    flag_lines = "\n".join(f"- **{f['code']}** ({f['severity']}, {f['run']}): {f['message']}" for f in meta["flags"]) \
        or "- none"
    gaps = [r["gap_defense"] for r in rows if r.get("gap_defense") is not None]
    def mean(key: str) -> float | None:
        return mean_defined(r.get(key) for r in rows)

    verdict = ""
    ceiling = clean.get("defense_clean_acc_on_correct")
    ceiling_sub = (meta.get("clean_adaptive_subset") or {}).get("defense_clean_acc_on_correct")
    if na and mean("adaptive_defense") is not None:
        verdict = (f"On the same first {na} images, mean Defense accuracy over the {len(rows)} attack rows: gray-box "
                   f"{pct(mean('gray_box_sub_defense'))}, black-box transfer {pct(mean('black_box_sub_defense'))}, "
                   f"adaptive white-box {pct(mean('adaptive_defense'))}. The adaptive attacker attacks the defense "
                   f"itself: gradients of the log of the mean softmax over {meta['samples_per_gradient']} masked "
                   "copies (EOT through the masks); the gray-box attacker attacks the unmasked base network only.")
        if ceiling_sub is not None:
            verdict += (f" Without any attack, the vote is right on {pct(ceiling_sub)} of the correctly classified "
                        "ones among these images (the ceiling of these Defense numbers).")
    intro = (
        f"MAD journal paper, {TABLE_NAME.get(ds, 'quick check')}: {p.model} on {ds}, trained with {p.train_cell}x"
        f"{p.train_cell} cells at rate {p.train_rate} ({p.name}, {p.epochs} epochs), defended by the majority vote of "
        f"{p.votes} copies masked with {p.test_cell}x{p.test_cell} cells at rate {p.test_rate}. "
        f"{n} test images, of which {clean.get('n_correct')} are classified correctly by the base model; "
        "adversarial examples are made only from those (the paper's protocol). "
        "**Attack** = the MAD-trained model without masking on adversarial examples made against it; "
        "**Defense** = the vote on the same examples, mean over 3 evaluations with fresh masks. "
        "Threat models: *gray-box* = examples made against the base network without the masking (the paper's "
        "setting); *black-box transfer* = made against an independently trained plain model "
        f"({meta['surrogate_preset']['name']}, {meta['surrogate_preset']['model']}); *adaptive* = made against the whole defense end to end. "
        f"Attacks are Foolbox's with library defaults except epsilon, and except `{meta['attack_overrides']}` "
        "(Carlini-Wagner's 9 x 10,000 steps are out of reach on this CPU)."
    )
    if meta.get("preset_overrides") or meta.get("attack_rows_every"):
        intro += (f" **Shrunk run** (not a reproduction): preset overrides {meta.get('preset_overrides')}, every "
                  f"{meta.get('attack_rows_every') or 1}-th attack row.")
    sections = [
        "## Side by side with the paper", table,
        (f"Mean (ours - paper) on the gray-box Defense column: {_fmt_pts(sum(gaps) / len(gaps))} points."
         if gaps else ""),
        (f"The ceiling of every Defense number: on the {clean.get('n_correct')} images the base network classifies "
         f"correctly (the only ones attacked), the vote's clean accuracy is {pct(ceiling)}."
         if ceiling is not None else ""),
        "## Does the robustness survive an attacker who knows the defense?", verdict or "(adaptive threat not run)",
        "### AutoAttack rand against the whole defense", _autoattack_section(meta),
        "## Is the attack budget enough?", _budget_section(meta),
        "## Robust accuracy over all evaluated images (RobustBench style)",
        "An image counts when the defense is right on it both clean and attacked.", rtable,
        "## Integrity flags", flag_lines,
        ("A `GRAY_BOX_ONLY` warning on `eval` is expected here: the adaptive threat for these images is run "
         "in `eval-adaptive` (on the first images only, for CPU time)." if na else ""),
        "Full harness reports (every attack parameter, per-threat targets, diagnostics): "
        "[eval/summary.md](eval/summary.md) and [eval-adaptive/summary.md](eval-adaptive/summary.md); "
        "per-example records in `records.jsonl` beside them.",
        f"Wall time of the harness runs, over all resumptions: {meta['eval_wall_time_s_total']} s "
        f"(this summary: {meta['wall_time_s']} s).",
    ]
    write_results(out, title=f"MAD {TABLE_NAME.get(ds, 'quick check')} reproduction: {p.model} + {ds}", intro=intro,
                  sections=sections, rows=rows, meta=meta)


def fig3_study(out: str | Path, *, dataset: str = "mnist", quick: bool = False, seed: int = 0,
               runs_dir: str | Path = "runs", data_root: Any = None, limit: int | None = None,
               log: Log = print) -> dict[str, Any]:
    """Figure 3: a plainly trained model's accuracy when only a random fraction of each adversarial
    perturbation's pixels (20% .. 100%) is kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_start = time.perf_counter()
    meta = run_metadata(seed)
    ds = "digits" if quick else dataset
    p = create_preset("plain-digits", epochs=3) if quick else create_preset(f"plain-{dataset}-cpu")
    model, ck = ensure_model(p, runs_dir, seed=seed, data_root=data_root, log=log)
    n = limit or (60 if quick else 500)
    x, y = load_dataset(ds, "test", root=data_root, limit=n).tensors()
    ok = predict_labels(model, x) == y
    x, y = x[ok], y[ok]
    suite = get_suite(TABLE_SUITE["mnist" if quick else dataset])
    specs = []
    for s in suite.specs():  # the first row of each family of the figure (the paper's smaller epsilon)
        fam = next((w for w in FIG3_ATTACKS if s.label.startswith(w)), None)
        if fam and all(not t.label.startswith(fam) for t in specs):
            specs.append(s.with_params(steps=20, binary_search_steps=2) if fam == "CW L2" and quick else
                         s.with_params(steps=100, binary_search_steps=5) if fam == "CW L2" else s)
    fractions = (0.0, *FIG3_KEPT)  # 0: the clean images
    rows = []
    for spec in specs:
        res = attack_and_verify(spec, model, x, y, seed=seed)
        delta = res.x_adv - x
        for f in fractions:
            g = seeded(seed)
            keep = (torch.rand(x.shape, generator=g) < f).to(x.dtype)
            acc = float((predict_labels(model, (x + keep * delta).clamp(0, 1)) == y).float().mean())
            rows.append({"attack": spec.label, "kept": f, "accuracy": acc})
        log(f"  {spec.label}: " + " ".join(f"{r['kept']:.1f}->{r['accuracy']:.3f}" for r in rows[-len(fractions):]))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for spec in specs:
        pts = [r for r in rows if r["attack"] == spec.label]
        ax.plot([100 * r["kept"] for r in pts], [100 * r["accuracy"] for r in pts], "o-", label=spec.label)
    ax.set_xlabel("perturbation kept (% of pixels)")
    ax.set_ylabel("accuracy of the plain model (%)")
    ax.set_title(f"Removing part of the perturbation ({ds}, {p.model})")
    ax.legend(fontsize=7)
    Path(out).mkdir(parents=True, exist_ok=True)
    save_figure(fig, Path(out) / "fig3.png")
    plt.close(fig)
    meta.update(study=f"mad-fig3-{ds}", dataset=ds, preset=p.to_dict(), checkpoint_sha256=ck["sha256"],
                n_images=int(len(y)), attacks=[s.to_dict() for s in specs],
                wall_time_s=round(time.perf_counter() - t_start, 2))
    wide = []
    for spec in specs:
        r = {"attack": spec.label}
        r.update({f"{int(100 * f)}%": next(q["accuracy"] for q in rows if q["attack"] == spec.label and q["kept"] == f)
                  for f in fractions})
        wide.append(r)
    write_results(
        out, title=f"MAD Figure 3: removing part of the perturbation ({ds})",
        intro=(f"A plainly trained {p.model} ({p.name}) on {len(y)} correctly classified {ds} test images. For each "
               "attack (made against this model, gray-box), a random fraction of the perturbation's pixels is kept "
               "(the rest set back to the clean value) and the model's accuracy measured; 100% is the full "
               "attack, 0% the clean image. The paper shows this for VGG16/CIFAR-10 as a plot only."),
        sections=[markdown_table(wide, formatters={k: pct for k in wide[0] if k != "attack"}) if wide else "",
                  "![fig3](fig3.png)"],
        rows=rows, meta=meta)
    return meta


STUDIES: dict[str, Callable[..., dict[str, Any]]] = {
    "mad-table": table_study,
    "mad-fig3": fig3_study,
}
#: The datasets each study runs on (its default first); --quick runs on the embedded digits instead.
DATASETS: dict[str, tuple[str, ...] | None] = {"mad-table": tuple(TABLE_SUITE), "mad-fig3": tuple(TABLE_SUITE)}
