"""REMIX poster, Figure 2 (and MagNet beside it): accuracy on Carlini-Wagner L2 and EAD adversarial examples
as a function of the confidence kappa, in the poster's oblivious setting (examples made against the
classifier alone), for no defense, MagNet's reformer, MagNet's reformer + detectors, REMIX mask-inpaint and
REMIX with its reformer.

The examples are made once per (attack, kappa) against the undefended classifier
(:func:`maskdefense.eval.evaluate`, gray-box threat, examples stored) and every defense is evaluated on the
same examples (:func:`maskdefense.eval.reuse.reevaluate`): the oblivious attacker does not depend on the
defense. Accuracy = the defense's decision equals the true label on the adversarial examples of the
correctly classified test images; a MagNet rejection counts as defended (the poster's and MagNet's
convention), REMIX is randomized (mean over 3 evaluations with fresh partitions). The attack budget is
checked by doubling it (steps and binary-search steps) at the smallest and largest kappa on the same images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..attacks import AttackSpec, parse_attack_spec
from ..data import load_dataset
from ..defenses.base import NoDefense
from ..defenses.magnet import JensenShannon, MagNet, ReconstructionError
from ..defenses.remix import REMIX
from ..eval import evaluate
from ..eval.budget import BUDGET_FACTOR, check_budget, compare_budgets
from ..eval.reuse import reevaluate
from ..papers.remix import (CLASSIFIER_ACCURACY, EAD_BETA, FIG2_CLAIMS, K_ROUNDS, KAPPAS, MAGNET_DETECTORS,
                            MAGNET_FPR, MAGNET_REFORMER, N_EXAMPLES, N_MASKS)
from ..provenance import run_metadata
from ..results import markdown_table, pct, save_figure, write_results
from ..training.presets import AutoencoderPreset, create_preset
from .common import ensure_model, harness_wall_time

Log = Callable[[str], None]

#: Attacked test images on CIFAR-10 (VGG16/2 and the 2-core CPU; the poster: 1000).
N_CPU = {"mnist": 1000, "cifar10": 300}
#: The classifier of each dataset (the undefended model, near the poster's 99% / 86%).
CLASSIFIER = {"mnist": "plain-mnist-cpu", "cifar10": "plain-cifar10-cpu", "digits": "plain-digits"}
#: Carlini-Wagner / EAD budgets on this CPU (library defaults: 9 binary-search steps x 10,000 steps).
ATTACK_BUDGET = {"mnist": "steps=200,binary_search_steps=5", "cifar10": "steps=100,binary_search_steps=5",
                 "digits": "steps=20,binary_search_steps=2"}
DEFENSES = ("none", "magnet-reformer", "magnet", "remix", "remix+reformer")
DEFENSE_NAMES = {"none": "no defense", "magnet-reformer": "MagNet reformer", "magnet": "MagNet reformer + detectors",
                 "remix": "REMIX mask-inpaint", "remix+reformer": "REMIX with reformer"}


def attack_specs(dataset: str, kappas: tuple[float, ...]) -> list[AttackSpec]:
    """CW L2 and EAD (elastic-net rule, beta 0.1), unbounded (eps=inf), at each confidence, labelled
    ``"CW L2 kappa=20"`` / ``"EAD kappa=20"``."""
    b = ATTACK_BUDGET[dataset]
    out = []
    for label, text in (("CW L2", "cw-l2:eps=inf,{b}"), ("EAD", f"ead:eps=inf,regularization={EAD_BETA},"
                                                                 "decision_rule=EN,{b}")):
        for k in kappas:
            s = parse_attack_spec(text.format(b=b) + f",confidence={k}")
            out.append(AttackSpec(s.name, s.params, s.given, s.settings, label=f"{label} kappa={k:g}"))
    return out


def _quick_presets() -> dict[str, AutoencoderPreset]:
    """Seconds-long stand-ins on the 8x8 digits (tests)."""
    noise = {"transform": "gaussian_noise", "sigma": 0.1}
    small = dict(epochs=2, batch_size=64, lr=1e-2)
    return {
        "magnet-I": AutoencoderPreset("magnet-aeI-digits", "digits", "conv_ae", noise,
                                      model_kwargs={"layers": [3, "pool", 3, 3, "up", 3]}, **small),
        "magnet-II": AutoencoderPreset("magnet-aeII-digits", "digits", "conv_ae", noise,
                                       model_kwargs={"layers": [3, 3]}, **small),
        "reformer": AutoencoderPreset("remix-reformer-digits", "digits", "rednet", noise,
                                      model_kwargs={"width": 8, "depth": 2}, **small),
        "inpainter": AutoencoderPreset("remix-inpainter-digits", "digits", "rednet",
                                       {"transform": "partition_mask", "n": 2}, model_kwargs={"width": 8, "depth": 2},
                                       **small),
    }


def build_defenses(dataset: str, *, quick: bool = False, runs_dir: str | Path = "runs", seed: int = 0,
                   data_root: Any = None, log: Log = print) -> tuple[dict[str, Any], dict[str, Any]]:
    """The classifier and the five defenses of Figure 2 (training what is missing; MagNet's thresholds set on
    the clean validation split). Returns ``(defenses, record)``: name -> defense, and what was used."""
    ds = "digits" if quick else dataset
    get = lambda p: ensure_model(p, runs_dir, seed=seed, data_root=data_root, log=log)  # noqa: E731
    base, bck = get(create_preset(CLASSIFIER[ds], **({"epochs": 3} if quick else {})))
    if quick:
        qp = _quick_presets()
        aes = {"I": get(qp["magnet-I"]), "II": get(qp["magnet-II"])}
        reformer, inpainter = get(qp["reformer"]), get(qp["inpainter"])
        spec_ds = "mnist"
    else:
        roles = {role for role, _, _ in MAGNET_DETECTORS[dataset].values()} | {MAGNET_REFORMER[dataset]}
        aes = {r: get(f"magnet-ae{r}-{dataset}-cpu") for r in sorted(roles)}
        reformer, inpainter = get(f"remix-reformer-{dataset}-cpu"), get(f"remix-inpainter-{dataset}-cpu")
        spec_ds = dataset
    base.eval()
    for m, _ in (*aes.values(), reformer, inpainter):
        m.eval()
    detectors = {}
    for name, (role, kind, param) in MAGNET_DETECTORS[spec_ds].items():
        ae = aes[role][0]
        detectors[name] = ReconstructionError(ae, int(param)) if kind == "reconstruction" \
            else JensenShannon(ae, base, float(param))
    magnet = MagNet(base, reformer=aes[MAGNET_REFORMER[spec_ds]][0], detectors=detectors).eval()
    val = load_dataset(ds, "val", root=data_root)
    thresholds = magnet.calibrate(val.images, MAGNET_FPR[spec_ds])
    n = N_MASKS[spec_ds]
    defenses = {
        "none": NoDefense(base).eval(),
        "magnet-reformer": MagNet(base, reformer=aes[MAGNET_REFORMER[spec_ds]][0]).eval(),
        "magnet": magnet,
        "remix": REMIX(base, inpainter[0], n=n, k=K_ROUNDS).eval(),
        "remix+reformer": REMIX(base, inpainter[0], n=n, k=K_ROUNDS, reformer=reformer[0]).eval(),
    }
    record = {"classifier": bck, "magnet_autoencoders": {r: m for r, (_, m) in aes.items()},
              "remix_reformer": reformer[1], "remix_inpainter": inpainter[1], "magnet_thresholds": thresholds,
              "magnet_fpr": MAGNET_FPR[spec_ds], "n_val": len(val), "n_masks": n, "k": K_ROUNDS}
    return defenses, record


def _checkpoint_record(meta: dict[str, Any]) -> dict[str, Any]:
    keep = ("arch", "arch_kwargs", "dataset", "epochs", "sha256", "weights_sha256", "test_accuracy", "test_mse",
            "test_input_mse", "preset", "training_key")
    return {k: meta.get(k) for k in keep if k in meta}


def fig2_study(out: str | Path, *, dataset: str = "mnist", quick: bool = False, seed: int = 0,
               runs_dir: str | Path = "runs", data_root: Any = None, limit: int | None = None,
               log: Log = print) -> dict[str, Any]:
    """Figure 2 of the REMIX poster for ``dataset`` (see the module docstring)."""
    t_start = time.perf_counter()
    meta = run_metadata(seed)
    ds = "digits" if quick else dataset
    defenses, record = build_defenses(dataset, quick=quick, runs_dir=runs_dir, seed=seed, data_root=data_root,
                                      log=log)
    kappas = (0, 20) if quick else KAPPAS[dataset]
    n = limit or (24 if quick else N_CPU[dataset])
    test = load_dataset(ds, "test", root=data_root, limit=n)
    specs = attack_specs(ds, kappas)
    out = Path(out)
    common = dict(seed=seed, batch_size=100, progress=False, sanity=None, command=meta["command"],
                  checkpoint_meta=record["classifier"])
    log(f"[remix-fig2] CW and EAD at kappa {list(kappas)} against the classifier on {n} {ds} test images")
    source = evaluate(defenses["none"], test, specs, "gray-box", out_dir=out / "attacks", save_adversarial=True,
                      **common)
    reports = {"none": source}
    for name, d in defenses.items():
        if name != "none":
            log(f"[remix-fig2] {name} on the stored examples")
            reports[name] = reevaluate(d, test, out / "attacks", out_dir=out / f"defense-{name}", progress=False,
                                       command=meta["command"])
    # the budget check: the smallest and largest kappa of both attacks again with twice the steps and
    # binary-search steps, every defense on those examples
    parsed = specs
    chosen = [s for s in parsed if s.params["confidence"] in (min(kappas), max(kappas))]
    scaled = {s.with_budget(BUDGET_FACTOR).key: s for s in chosen}
    log(f"[remix-fig2] budget check: {len(chosen)} attacks with x{BUDGET_FACTOR} budget")
    evaluate(defenses["none"], test, [s.with_budget(BUDGET_FACTOR) for s in chosen], "gray-box",
             out_dir=out / f"budget-x{BUDGET_FACTOR}", save_adversarial=True, **common)
    budget_rows: list[dict[str, Any]] = []
    for name, d in defenses.items():
        rep = reevaluate(d, test, out / f"budget-x{BUDGET_FACTOR}", out_dir=out / f"budget-x{BUDGET_FACTOR}-{name}",
                         progress=False, command=meta["command"])
        budget_rows += [{**c, "defense": name} for c in compare_budgets(reports[name].rows, rep.rows, scaled,
                                                                         factor=BUDGET_FACTOR)]
    rows = []
    for s in parsed:
        row: dict[str, Any] = {"attack": "CW L2" if s.name == "cw-l2" else f"EAD (EN, beta {EAD_BETA})",
                               "kappa": int(s.params["confidence"]) if float(s.params["confidence"]).is_integer()
                               else s.params["confidence"]}
        for name, rep in reports.items():
            r = rep.row(s, "gray-box")
            row[name] = r["defense_acc"]
            row[f"{name}_std"] = r["defense_std"]
            if name == "none":
                row["n_correct"], row["mean_l2"] = r["n_correct"], r["mean_norm"]
        rows.append(row)
    clean = {name: rep.clean for name, rep in reports.items()}
    meta.update(study=f"remix-fig2-{ds}", dataset=ds, n_images=n, kappas=list(kappas),
                attacks=[s.to_dict() for s in specs],
                models={k: _checkpoint_record(v) if isinstance(v, dict) and "sha256" in v else v
                        for k, v in record.items() if k != "magnet_autoencoders"},
                magnet_autoencoders={r: _checkpoint_record(m) for r, m in record["magnet_autoencoders"].items()},
                clean={k: {"accuracy": v["defense_clean_acc"], "std": v["defense_clean_std"],
                           "base": v["base_clean_acc"], "rejected": v.get("false_positive_rate")}
                       for k, v in clean.items()},
                budget_check=budget_rows, flags=[f.to_dict() for f in check_budget(budget_rows)]
                + [{**f.to_dict(), "run": name} for name, rep in reports.items() for f in rep.flags],
                poster_claims=list(FIG2_CLAIMS), poster_classifier_accuracy=CLASSIFIER_ACCURACY.get(ds),
                wall_time_s=round(time.perf_counter() - t_start, 2),
                eval_wall_time_s_total=harness_wall_time(
                    [out / "attacks", out / f"budget-x{BUDGET_FACTOR}"]
                    + [out / f"defense-{k}" for k in reports if k != "none"]
                    + [out / f"budget-x{BUDGET_FACTOR}-{k}" for k in reports]))
    _write_fig2(out, rows, meta, clean)
    return meta


def _plot(out: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    fig, axes = plt.subplots(1, len(attacks), figsize=(5 * len(attacks), 3.6), squeeze=False)
    for ax, a in zip(axes[0], attacks):
        rs = [r for r in rows if r["attack"] == a]
        for name in DEFENSES:
            ys = [100 * r[name] if r.get(name) is not None else float("nan") for r in rs]
            ax.plot([r["kappa"] for r in rs], ys, "o-", label=DEFENSE_NAMES[name])
        ax.set_title(a)
        ax.set_xlabel("confidence kappa")
        ax.set_ylabel("accuracy on adversarial examples (%)")
        ax.set_ylim(-2, 102)
    axes[0][0].legend(fontsize=8)
    save_figure(fig, out / "fig2.png")
    plt.close(fig)


def _write_fig2(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any], clean: dict[str, Any]) -> None:
    ds = meta["dataset"]
    _plot(out, rows)
    cols = ["attack", "kappa", "mean_l2"] + list(DEFENSES)
    heads = ["attack", "kappa", "mean L2 of the examples"] + [DEFENSE_NAMES[d] for d in DEFENSES]
    fm: dict[str, Any] = {d: pct for d in DEFENSES}
    fm["mean_l2"] = lambda v: "-" if v is None else f"{v:.3f}"
    table = markdown_table(rows, cols, heads, fm)
    ctable = markdown_table([{"defense": DEFENSE_NAMES[k], "acc": v["defense_clean_acc"],
                              "rej": v.get("false_positive_rate")} for k, v in clean.items()],
                            ["defense", "acc", "rej"], ["defense", "clean accuracy", "clean images rejected"],
                            {"acc": pct, "rej": lambda v: "-" if v is None else pct(v)})
    brows = meta["budget_check"]
    bad = [b for b in brows if not b["enough"]]
    btable = markdown_table(
        [{**b, "defense": DEFENSE_NAMES[b["defense"]]} for b in brows],
        ["defense", "label", "base", "scaled", "delta", "noise", "enough"],
        ["defense", "attack", "accuracy", "accuracy (x2 budget)", "change", "noise (1 s.e.)", "enough?"],
        {"base": pct, "scaled": pct, "delta": lambda v: f"{100 * v:+.2f}", "noise": lambda v: f"{100 * v:.2f}",
         "enough": lambda v: "yes" if v else "**no**"})
    m = meta["models"]
    intro = (
        f"REMIX poster, Figure 2 ({ds}): accuracy of each defense on Carlini-Wagner L2 and EAD (elastic-net rule, "
        f"beta {EAD_BETA}) adversarial examples made against the classifier alone (the poster's oblivious setting), "
        f"at confidence kappa {meta['kappas']}, on the first {meta['n_images']} test images (examples only from the "
        f"correctly classified ones; the poster: 1000). Classifier: {m['classifier'].get('arch')} at "
        f"{pct(m['classifier'].get('test_accuracy'))} test accuracy (the poster: "
        f"{pct(meta['poster_classifier_accuracy'])}). REMIX: n = {m['n_masks']} masks, k = {m['k']} round; MagNet: "
        f"detectors at {pct(m['magnet_fpr'])} false positives each on {m['n_val']} clean validation images "
        "(thresholds in results.json); a rejected adversarial example counts as defended. Attacks: Foolbox's, "
        f"unbounded (eps=inf), with `{ATTACK_BUDGET[ds]}` (the library's 9 x 10,000 steps are out of reach on this "
        "CPU; the budget check below doubles it). REMIX numbers are means over 3 evaluations with fresh partitions."
    )
    sections = [
        "## The poster's Figure 2", "The poster's text carries no values of Figure 2, only these claims (each "
        "checked against our curves below, by the reader):\n\n" + "\n".join(f"- {c}" for c in meta["poster_claims"]),
        "## Ours", "![Figure 2](fig2.png)", table,
        "## Clean accuracy", ctable,
        "## Is the attack budget enough?",
        (f"The smallest and largest kappa of each attack again with x{BUDGET_FACTOR} steps and binary-search "
         "steps, every defense evaluated on the new examples; enough = the accuracy moves by at most one standard "
         "error. " + (f"**{len(bad)} of {len(brows)} rows moved more than that.**" if bad else
                      f"All {len(brows)} rows moved less.")),
        btable,
        "## Integrity flags", "\n".join(f"- **{f['code']}** ({f['severity']}{', ' + f['run'] if f.get('run') else ''}): "
                                        f"{f['message']}" for f in meta["flags"]) or "- none",
        f"Wall time of the harness runs over all resumptions: {meta['eval_wall_time_s_total']} s.",
    ]
    write_results(out, title=f"REMIX Figure 2 reproduction: {ds}", intro=intro, sections=sections, rows=rows,
                  meta=meta)


STUDIES = {"remix-fig2": fig2_study}
DATASETS = {"remix-fig2": ("mnist", "cifar10")}
