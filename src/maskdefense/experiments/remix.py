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

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..attacks import AttackSpec, parse_attack_spec, parse_attacks
from ..data import load_dataset
from ..defenses.base import NoDefense, contract_of
from ..defenses.magnet import JensenShannon, MagNet, ReconstructionError
from ..defenses.remix import REMIX, REMIXDetector
from ..eval import DETECTOR_SANITY, DETECTOR_WEIGHTS, default_sanity, evaluate
from ..eval.budget import (BUDGET_FACTOR, budget_check, check_budget, compare_budgets, strongest_per_attack,
                           worst_per_norm)
from ..eval.reuse import reevaluate
from ..papers.remix import CLASSIFIER as REMIX_CLASSIFIER
from ..papers.remix import (CLASSIFIER_ACCURACY, EAD_BETA, FIG2_CLAIMS, K_ROUNDS, KAPPAS, MAGNET_DETECTORS,
                            MAGNET_FPR, MAGNET_REFORMER, N_MASKS, SWEEP_K, SWEEP_N, magnet_preset)
from ..provenance import run_metadata
from ..results import markdown_table, pct, save_figure, write_results
from ..training.presets import AutoencoderPreset, create_preset
from .common import (MissingRunError, check_sections, checkpoint_record, ensure_model, harness_provenance,
                     keep_training_records)

Log = Callable[[str], None]

#: Attacked test images on CIFAR-10 (VGG16/2 and the 2-core CPU; the poster: 1000).
N_CPU = {"mnist": 1000, "cifar10": 300}
#: The classifier of each dataset (the undefended model, near the poster's 99% / 86%; trained without label
#: smoothing: kappa is a logit margin, see :data:`maskdefense.papers.remix.CLASSIFIER`).
CLASSIFIER = {**REMIX_CLASSIFIER, "digits": "plain-digits"}
#: Carlini-Wagner / EAD budgets on this CPU (library defaults: 9 binary-search steps x 10,000 steps).
ATTACK_BUDGET = {"mnist": "steps=200,binary_search_steps=5", "cifar10": "steps=100,binary_search_steps=5",
                 "digits": "steps=20,binary_search_steps=2"}
#: Step size and first constant of the search, the same on every dataset (Foolbox's defaults: 0.01 and 1e-3, for
#: 10,000 steps). With 200 steps of 0.01, CW found no example at kappa 40 on 100 MNIST test images (0/100; 400
#: steps and 10 binary-search steps: 54/100); with 0.1 and a first constant of 0.1 it found 96/100, and at
#: kappa 0 all 100 with a smaller mean L2 (1.21 against 1.86). EAD (its step size decays from the initial one):
#: 0/100 and 94/100 at kappa 40.
ATTACK_STEP = {"cw-l2": "stepsize=0.1,initial_const=0.1", "ead": "initial_stepsize=0.1,initial_const=0.1"}
DEFENSES = ("none", "magnet-reformer", "magnet", "remix", "remix+reformer")
DEFENSE_NAMES = {"none": "no defense", "magnet-reformer": "MagNet reformer", "magnet": "MagNet reformer + detectors",
                 "remix": "REMIX mask-inpaint", "remix+reformer": "REMIX with reformer",
                 "remix-detector": "REMIX detector"}


def attack_specs(dataset: str, kappas: tuple[float, ...]) -> list[AttackSpec]:
    """CW L2 and EAD (elastic-net rule, beta 0.1), unbounded (eps=inf), at each confidence, labelled
    ``"CW L2 kappa=20"`` / ``"EAD kappa=20"``."""
    b = ATTACK_BUDGET[dataset]
    out = []
    for label, text in (("CW L2", f"cw-l2:eps=inf,{ATTACK_STEP['cw-l2']},{{b}}"),
                        ("EAD", f"ead:eps=inf,regularization={EAD_BETA},decision_rule=EN,{ATTACK_STEP['ead']},{{b}}")):
        for k in kappas:
            s = parse_attack_spec(text.format(b=b) + f",confidence={k}")
            out.append(AttackSpec(s.name, s.params, s.given, s.settings, label=f"{label} kappa={k:g}"))
    return out


def _quick_presets() -> dict[str, AutoencoderPreset]:
    """Seconds-long stand-ins on the 8x8 digits (tests)."""
    noise = {"transform": "gaussian_noise", "sigma": 0.1}
    small = dict(epochs=2, batch_size=64, lr=1e-2)
    return {
        "magnet-I": AutoencoderPreset("magnet-ae1-digits", "digits", "conv_ae", noise,
                                      model_kwargs={"layers": [3, "pool", 3, 3, "up", 3]}, **small),
        "magnet-II": AutoencoderPreset("magnet-ae2-digits", "digits", "conv_ae", noise,
                                       model_kwargs={"layers": [3, 3]}, **small),
        "reformer": AutoencoderPreset("remix-reformer-digits", "digits", "rednet", noise,
                                      model_kwargs={"width": 8, "depth": 2}, **small),
        "inpainter": AutoencoderPreset("remix-inpainter-digits", "digits", "rednet",
                                       {"transform": "partition_mask", "n": 2}, model_kwargs={"width": 8, "depth": 2},
                                       **small),
    }


def build_magnet(dataset: str, base: Any, *, quick: bool = False, runs_dir: str | Path = "runs", seed: int = 0,
                 data_root: Any = None, log: Log = print) -> tuple[MagNet, dict[str, Any], Any]:
    """MagNet around the classifier ``base`` for ``dataset`` (the digits stand-in when ``quick``): its
    autoencoders (trained if missing), detectors and reformer as in :mod:`maskdefense.papers.remix`, the
    thresholds set on the clean validation split. Returns ``(magnet, record, val)``: the defense, what was used,
    and the validation split."""
    ds = "digits" if quick else dataset
    get = lambda p: ensure_model(p, runs_dir, seed=seed, data_root=data_root, log=log)  # noqa: E731
    if quick:
        qp = _quick_presets()
        aes = {"I": get(qp["magnet-I"]), "II": get(qp["magnet-II"])}
        spec_ds = "mnist"
    else:
        roles = {role for role, _, _ in MAGNET_DETECTORS[dataset].values()} | {MAGNET_REFORMER[dataset]}
        aes = {r: get(magnet_preset(r, dataset)) for r in sorted(roles)}
        spec_ds = dataset
    for m, _ in aes.values():
        m.eval()
    detectors = {}
    for name, (role, kind, param) in MAGNET_DETECTORS[spec_ds].items():
        ae = aes[role][0]
        detectors[name] = ReconstructionError(ae, int(param)) if kind == "reconstruction" \
            else JensenShannon(ae, base, float(param))
    magnet = MagNet(base, reformer=aes[MAGNET_REFORMER[spec_ds]][0], detectors=detectors).eval()
    val = load_dataset(ds, "val", root=data_root)
    thresholds = magnet.calibrate(val.images, MAGNET_FPR[spec_ds])
    record = {"magnet_autoencoders": {r: m for r, (_, m) in aes.items()}, "magnet_thresholds": thresholds,
              "magnet_fpr": MAGNET_FPR[spec_ds], "n_val": len(val)}
    return magnet, record, val


def build_defenses(dataset: str, *, quick: bool = False, runs_dir: str | Path = "runs", seed: int = 0,
                   data_root: Any = None, log: Log = print,
                   n_grad: int = 8) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The classifier and the five defenses of Figure 2 (training what is missing; MagNet's thresholds set on
    the clean validation split). Returns ``(defenses, record, val)``: name -> defense, what was used, and the
    validation split the thresholds were set on."""
    ds = "digits" if quick else dataset
    get = lambda p: ensure_model(p, runs_dir, seed=seed, data_root=data_root, log=log)  # noqa: E731
    base, bck = get(create_preset(CLASSIFIER[ds], **({"epochs": 3} if quick else {})))
    base.eval()
    magnet, mrecord, val = build_magnet(dataset, base, quick=quick, runs_dir=runs_dir, seed=seed, data_root=data_root,
                                        log=log)
    if quick:
        qp = _quick_presets()
        reformer, inpainter = get(qp["reformer"]), get(qp["inpainter"])
    else:
        reformer, inpainter = get(f"remix-reformer-{dataset}-cpu"), get(f"remix-inpainter-{dataset}-cpu")
    for m, _ in (reformer, inpainter):
        m.eval()
    n = N_MASKS["mnist" if quick else dataset]
    defenses = {
        "none": NoDefense(base).eval(),
        "magnet-reformer": MagNet(base, reformer=magnet.reformer).eval(),
        "magnet": magnet,
        "remix": REMIX(base, inpainter[0], n=n, k=K_ROUNDS, n_grad=n_grad).eval(),
        "remix+reformer": REMIX(base, inpainter[0], n=n, k=K_ROUNDS, reformer=reformer[0], n_grad=n_grad).eval(),
    }
    record = {"classifier": bck, **mrecord, "remix_reformer": reformer[1], "remix_inpainter": inpainter[1],
              "n_masks": n, "k": K_ROUNDS}
    return defenses, record, val


def _models_record(record: dict[str, Any]) -> dict[str, Any]:
    """What a results file keeps of :func:`build_defenses`' record: the training records of the models and the
    MagNet settings."""
    return {"models": {k: checkpoint_record(v) if isinstance(v, dict) and "sha256" in v else v
                       for k, v in record.items() if k != "magnet_autoencoders"},
            "magnet_autoencoders": {r: checkpoint_record(m) for r, m in record["magnet_autoencoders"].items()}}


TRAINING_RECORDS_NOTE = "Training records of the models (per-epoch history and seconds, no weights): `checkpoints/`."


def _keep_records(out: Path, record: dict[str, Any], *more: dict[str, Any]) -> list[str]:
    """The training records of every model in :func:`build_defenses`' ``record`` (and ``more``) into
    ``out/checkpoints/`` (per-epoch history and seconds; no weights)."""
    metas = [v for v in record.values() if isinstance(v, dict) and "path" in v]
    return keep_training_records(out, [*metas, *record["magnet_autoencoders"].values(), *more])


def fig2_study(out: str | Path, *, dataset: str = "mnist", quick: bool = False, seed: int = 0,
               runs_dir: str | Path = "runs", data_root: Any = None, limit: int | None = None,
               log: Log = print) -> dict[str, Any]:
    """Figure 2 of the REMIX poster for ``dataset`` (see the module docstring)."""
    t_start = time.perf_counter()
    meta = run_metadata(seed)
    ds = "digits" if quick else dataset
    defenses, record, _ = build_defenses(dataset, quick=quick, runs_dir=runs_dir, seed=seed, data_root=data_root,
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
    chosen = [s for s in specs if s.params["confidence"] in (min(kappas), max(kappas))]
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
    for s in specs:
        row: dict[str, Any] = {"attack": "CW L2" if s.name == "cw-l2" else f"EAD (EN, beta {EAD_BETA})",
                               "kappa": int(s.params["confidence"]) if float(s.params["confidence"]).is_integer()
                               else s.params["confidence"]}
        for name, rep in reports.items():
            r = rep.row(s, "gray-box")
            row[name] = r["defense_acc"]
            row[f"{name}_std"] = r["defense_std"]
            if name == "none":
                row["n_correct"], row["mean_norm_fooled"] = r["n_correct"], r["mean_norm_fooled"]
        rows.append(row)
    clean = {name: rep.clean for name, rep in reports.items()}
    meta.update(training_records=_keep_records(out, record))
    meta.update(study=f"remix-fig2-{ds}", dataset=ds, n_images=n, kappas=list(kappas),
                attacks=[s.to_dict() for s in specs],
                **_models_record(record),
                clean={k: {"accuracy": v["defense_clean_acc"], "std": v["defense_clean_std"],
                           "base": v["base_clean_acc"], "rejected": v.get("false_positive_rate")}
                       for k, v in clean.items()},
                budget_check=budget_rows,
                flags=[{**f.to_dict(), "run": name} for name in defenses
                       for f in check_budget([c for c in budget_rows if c["defense"] == name])]
                + [{**f.to_dict(), "run": name} for name, rep in reports.items() for f in rep.flags],
                poster_claims=list(FIG2_CLAIMS), poster_classifier_accuracy=CLASSIFIER_ACCURACY.get(ds),
                wall_time_s=round(time.perf_counter() - t_start, 2),
                **harness_provenance(
                    [out / "attacks", out / f"budget-x{BUDGET_FACTOR}"]
                    + [out / f"defense-{k}" for k in reports if k != "none"]
                    + [out / f"budget-x{BUDGET_FACTOR}-{k}" for k in reports]))
    _write_fig2(out, rows, meta, clean)
    return meta


def _clean_table(clean: dict[str, tuple[float | None, float | None]]) -> str:
    """Clean accuracy and clean images rejected, per defense (name -> (accuracy, rejected or None))."""
    return markdown_table([{"defense": DEFENSE_NAMES[k], "acc": acc, "rej": rej} for k, (acc, rej) in clean.items()],
                          ["defense", "acc", "rej"], ["defense", "clean accuracy", "clean images rejected"],
                          {"acc": pct, "rej": lambda v: "-" if v is None else pct(v)})


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
    cols = ["attack", "kappa", "mean_norm_fooled"] + list(DEFENSES)
    # each attack's own norm: CW minimises L2, EAD the elastic net (reported in L1, its decision rule)
    heads = (["attack", "kappa", "mean distortion of the examples found (CW: L2, EAD: L1)"]
             + [DEFENSE_NAMES[d] for d in DEFENSES])
    fm: dict[str, Any] = {d: pct for d in DEFENSES}
    fm["mean_norm_fooled"] = lambda v: "-" if v is None else f"{v:.3f}"
    table = markdown_table(rows, cols, heads, fm)
    ctable = _clean_table({k: (v["defense_clean_acc"], v.get("false_positive_rate")) for k, v in clean.items()})
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
        f"unbounded (eps=inf), with `{ATTACK_BUDGET[ds]}` and `{ATTACK_STEP['cw-l2']}` (EAD: "
        f"`{ATTACK_STEP['ead']}`): the library's 9 x 10,000 steps of 0.01 are out of reach on this CPU, and 200 steps "
        "of 0.01 found no high-confidence example (the budget check below doubles the steps). Where the search "
        "finds no example at a kappa, the clean image stands (the 'no defense' column is then the share of failed "
        "searches). REMIX numbers are means over 3 evaluations with fresh partitions."
    )
    sections = [
        "## The poster's Figure 2", "The poster's text carries no values of Figure 2, only these claims (each "
        "checked against our curves below, by the reader):\n\n" + "\n".join(f"- {c}" for c in meta["poster_claims"]),
        "## Ours", "![Figure 2](fig2.png)", table,
        "## Clean accuracy", ctable, TRAINING_RECORDS_NOTE,
        *check_sections(meta, f"The smallest and largest kappa of each attack again with x{BUDGET_FACTOR} steps and "
                        "binary-search steps, every defense evaluated on the new examples; enough = the accuracy "
                        "moves by at most one standard error.", defense_name=DEFENSE_NAMES.get),
    ]
    write_results(out, title=f"REMIX Figure 2 reproduction: {ds}", intro=intro, sections=sections, rows=rows,
                  meta=meta)


# ---- what the poster left out: the attacker who knows the defense

#: Images, and the norm-bounded attacks of the adaptive study (the usual budgets of each dataset). The same
#: attacks run oblivious (against the classifier alone: the gray-box threat) and adaptive (end to end: through
#: reformer, partitions and inpainter with EOT; through MagNet's reformer and detectors together).
ADAPTIVE_N = {"mnist": 200, "cifar10": 100, "digits": 12}
ADAPTIVE_EPS = {"mnist": ("0.3", "2.0"), "cifar10": ("8/255", "0.5"), "digits": ("0.3", "2.0")}
#: The REMIX detector's false-positive rate on clean validation images (our choice; the poster has no detector).
REMIX_DETECTOR_FPR = 0.01
#: The subfolder of a defense's :func:`l2_extra_specs` run.
L2_EXTRA = "l2-extra"
#: The defenses of the adaptive study. On CIFAR-10 REMIX without its reformer is left out: every attack on a
#: REMIX variant averages 8 partitions per gradient (~1.5 h per variant on 2 cores with its budget check), and
#: the poster's best configuration (with the reformer) and the REMIX detector carry the verdict.
ADAPTIVE_DEFENSES = {"mnist": ("magnet", "remix", "remix+reformer", "remix-detector"),
                     "cifar10": ("magnet", "remix+reformer", "remix-detector"),
                     "digits": ("magnet", "remix", "remix+reformer", "remix-detector")}


def adaptive_specs(ds: str, *, rejects: bool) -> list[str]:
    """PGD Linf and L2, CW L2 (bounded) and APGD-CE Linf for every defense; for the defenses that reject, PGD-CW
    Linf (the margin loss, best iterate: the detector-aware attack); for the others Square (gradient-free;
    pyautoattack's Square attacks parts of a batch, which a detector-aware target cannot follow)."""
    linf, l2 = ADAPTIVE_EPS[ds]
    quick = ds == "digits"  # seconds-long: a few steps only
    steps = ",steps=5" if quick else ""
    specs = [f"pgd-linf:eps={linf}{steps}", f"pgd-l2:eps={l2}{steps}", f"cw-l2:eps={l2},{ATTACK_STEP['cw-l2']},{ATTACK_BUDGET[ds]}",
             f"apgd-ce:eps={linf},norm=Linf" + (",n_iter=5" if quick else "")]
    specs.append(f"pgd-cw-linf:eps={linf}{steps}" if rejects else
                 f"square:eps={linf},norm=Linf,n_queries={20 if quick else 1000}")
    return specs


def l2_extra_specs(ds: str, *, rejects: bool) -> list[str]:
    """The L2 attacks that still converge where the main ones stop short: APGD-CE L2 (its step size adapts,
    starting at 2 eps; Foolbox's L2 PGD takes 50 steps of eps / 40 and travels 1.25 eps in all, less under EOT
    noise) for every defense; for the defenses that reject, PGD-CW L2 as well (margin loss, best iterate)."""
    l2 = ADAPTIVE_EPS[ds][1]
    quick = ds == "digits"
    specs = [f"apgd-ce:eps={l2},norm=L2" + (",n_iter=5" if quick else "")]
    if rejects:
        specs.append(f"pgd-cw-l2:eps={l2}" + (",steps=5" if quick else ""))
    return specs


def l2_unsettled(rows: list[dict[str, Any]], checked: list[dict[str, Any]]) -> bool:
    """Whether a defense's reported L2 robustness (its worst adaptive L2 row) failed the budget check: the
    doubled budget moved it by more than its noise. Those defenses get the :func:`l2_extra_specs`."""
    worst = worst_per_norm(rows)
    keys = {r["attack"] for r in rows if r["attack"] in worst and r["norm"] == "l2"}
    return any(c["threat"] == "adaptive" and c["attack"] in keys and not c["enough"] for c in checked)


def cw_sets_l2(rows: list[dict[str, Any]]) -> bool:
    """Whether CW sets a defense's worst adaptive L2 number. Against a randomized defense the budget check
    doubles CW's binary-search steps, its steps and the EOT samples: 8x the study's most expensive attack
    (~9 h on the MNIST REMIX detector). There the converging :func:`l2_extra_specs` run first, and the check goes
    to whichever L2 attack is then the worst (CW's only if it still is)."""
    worst = worst_per_norm(rows)
    return any(r["attack"] in worst and r["norm"] == "l2" and r["name"] == "cw-l2" for r in rows)


def adaptive_study(out: str | Path, *, dataset: str = "mnist", quick: bool = False, seed: int = 0,
                   runs_dir: str | Path = "runs", data_root: Any = None, limit: int | None = None,
                   log: Log = print) -> dict[str, Any]:
    """Oblivious against adaptive attacks on MagNet, REMIX (with and without reformer) and the REMIX
    detector, with the budget check; how much robustness survives when the attacker knows the defense."""
    t_start = time.perf_counter()
    meta = run_metadata(seed)
    ds = "digits" if quick else dataset
    defenses, record, val = build_defenses(dataset, quick=quick, runs_dir=runs_dir, seed=seed, data_root=data_root,
                                      log=log, n_grad=2 if quick else 8)
    base = defenses["none"].base
    remix = defenses["remix+reformer"]
    detector = REMIXDetector(base, remix.inpainter, n=remix.n, k=remix.k, reformer=remix.reformer,
                             n_grad=remix.n_grad, threshold=0.0).eval()
    detector.calibrate(val.images, REMIX_DETECTOR_FPR, generator=torch.Generator().manual_seed(seed))
    defenses = {**{k: defenses[k] for k in ADAPTIVE_DEFENSES[ds] if k in defenses}, "remix-detector": detector}
    n = limit or ADAPTIVE_N[ds]
    test = load_dataset(ds, "test", root=data_root, limit=n)
    out = Path(out)
    common = dict(seed=seed, batch_size=50, progress=False, command=meta["command"],
                  checkpoint_meta=record["classifier"])
    rows: list[dict[str, Any]] = []
    budget_rows: list[dict[str, Any]] = []
    flags: list[dict[str, Any]] = []

    def attack(d: torch.nn.Module, specs: list[str], where: Path, sanity: str | None,
               weights: dict[str, Any]) -> Any:
        return evaluate(d, test, specs, "gray-box,adaptive", out_dir=where, sanity=sanity, **weights, **common)

    def check(d: torch.nn.Module, runs: list[tuple[Any, list[AttackSpec], Path]],
              weights: dict[str, Any]) -> tuple[list[dict[str, Any]], list]:
        """The budget check of each run (report, attacks to check, folder): every attack oblivious; against a
        randomized defense adaptively only the attacks that set each norm's worst case over all the runs (x2
        steps and x2 EOT samples is 4x an attack's cost). Returns the comparisons and the runs' and checks' flags."""
        worst = worst_per_norm([r for rep, _, _ in runs for r in rep.rows]) if contract_of(d).randomized else None
        checked: list[dict[str, Any]] = []
        flags: list = []
        for rep, chosen, where in runs:
            c, f = budget_check(d, test, rep, chosen, out_dir=where, adaptive_keys=worst, **weights, **common)
            checked += c
            flags += [*rep.flags, *f]
        return checked, flags

    for name, d in defenses.items():
        rejects = contract_of(d).rejects
        specs = adaptive_specs(ds, rejects=rejects)
        xspecs = l2_extra_specs(ds, rejects=rejects)
        sanity = default_sanity(d) + (",steps=5" if quick else "")
        weights = {"detector_weight": DETECTOR_WEIGHTS} if rejects else {}
        log(f"[remix-adaptive] {name}: {len(specs)} attacks, oblivious and adaptive, on {n} images")
        chosen = strongest_per_attack(parse_attacks(specs))[::3 if quick else 1]  # quick: every third attack
        rep = attack(d, specs, out / name, sanity, weights)
        runs = [(rep, chosen, out / name)]
        xrun = lambda: (attack(d, xspecs, out / name / L2_EXTRA, None, weights), parse_attacks(xspecs),  # noqa: E731
                        out / name / L2_EXTRA)
        first = contract_of(d).randomized and cw_sets_l2(rep.rows)
        if first:
            log(f"[remix-adaptive] {name}: CW sets the worst L2 number, {len(xspecs)} more L2 attacks first")
            runs.append(xrun())
        checked, rflags = check(d, runs, weights)
        if not first and l2_unsettled(rep.rows, checked):  # its L2 number moved with the budget
            log(f"[remix-adaptive] {name}: L2 not settled by the budget check, {len(xspecs)} more L2 attacks")
            runs.append(xrun())
            xchecked, xflags = check(d, runs[-1:], weights)
            checked, rflags = [*checked, *xchecked], [*rflags, *xflags]
        reps = [r for r, _, _ in runs]
        budget_rows += [{**c, "defense": name} for c in checked]
        flags += [{**f.to_dict(), "run": name} for f in rflags]
        for r in (r for x in reps for r in x.rows):
            if r["sanity"]:
                continue
            rows.append({"defense": name, "attack": r["label"], "threat": r["threat"], "defense_acc": r["defense_acc"],
                         "defense_std": r["defense_std"], "robust_acc": r["robust_acc"],
                         "detection_rate": r.get("detection_rate"), "detection_auc": r.get("detection_auc"),
                         "defense_acc_rejected_failed": r.get("defense_acc_rejected_failed"),
                         "samples_per_gradient": r["samples_per_gradient"], "clean": rep.clean["defense_clean_acc"],
                         "fpr": rep.clean.get("false_positive_rate")})
    meta.update(training_records=_keep_records(out, record))
    meta.update(study=f"remix-adaptive-{ds}", dataset=ds, n_images=n, remix_detector_fpr=REMIX_DETECTOR_FPR,
                n_grad=remix.n_grad,
                remix_detector_threshold=detector.threshold,
                **_models_record(record),
                budget_check=budget_rows, flags=flags,
                wall_time_s=round(time.perf_counter() - t_start, 2),
                **harness_provenance(
                    [out / k / x for k in defenses for x in ("", L2_EXTRA)]
                    + [out / k / x / f"budget-x{BUDGET_FACTOR}{e}" for k in defenses for x in ("", L2_EXTRA)
                       for e in ("", "-eot", "-adaptive")]))
    _write_adaptive(out, rows, meta)
    return meta


def _write_adaptive(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    table_rows = []
    by = {(r["defense"], r["attack"], r["threat"]): r for r in rows}
    for (name, attack, threat), r in by.items():
        if threat != "gray-box":
            continue
        a = by.get((name, attack, "adaptive"), {})
        ob, ad = r["defense_acc"], a.get("defense_acc")
        table_rows.append({"defense": DEFENSE_NAMES[name], "attack": attack, "oblivious": ob,
                           "adaptive": ad, "survives": (ad / ob if ob and ad is not None else None),
                           "spg": a.get("samples_per_gradient"), "det_ob": r.get("detection_rate"),
                           "det_ad": a.get("detection_rate"), "auc_ad": a.get("detection_auc")})
    fm: dict[str, Any] = {k: pct for k in ("oblivious", "adaptive", "det_ob", "det_ad")}
    fm["survives"] = lambda v: "-" if v is None else f"{100 * v:.0f}%"
    fm["auc_ad"] = lambda v: "-" if v is None else f"{v:.3f}"
    table = markdown_table(table_rows, ["defense", "attack", "oblivious", "adaptive", "survives", "spg", "det_ob",
                                        "det_ad", "auc_ad"],
                           ["defense", "attack", "accuracy, oblivious", "accuracy, adaptive", "adaptive / oblivious",
                            "samples per gradient", "detected, oblivious", "detected, adaptive", "ROC AUC, adaptive"], fm)
    clean = {}
    for r in rows:
        clean.setdefault(r["defense"], (r["clean"], r["fpr"]))
    ctable = _clean_table(clean)
    linf, l2 = ADAPTIVE_EPS[meta["dataset"]]
    intro = (
        f"What the REMIX poster left out ({meta['dataset']}, first {meta['n_images']} test images): the same "
        f"norm-bounded attacks (Linf eps {linf}, L2 eps {l2}) made *oblivious* (against the classifier alone, "
        "the poster's setting) and *adaptive* (against the whole defense: REMIX end to end with EOT over its "
        f"random partitions, the log of the mean softmax over {meta['n_grad']} partitions per forward; MagNet's "
        "reformer and "
        "detectors together, Carlini and Wagner's construction; the REMIX detector likewise, its threshold at "
        f"{pct(meta['remix_detector_fpr'])} false positives on clean validation images). Accuracy = the decision "
        "is the true label on the adversarial examples of the correctly classified images; a rejection counts "
        "as defended (the detection rate and ROC AUC beside it score the detectors as detectors). Against the "
        "detectors, every adaptive attack is restarted with detector weights "
        f"{', '.join(f'{w:g}' for w in DETECTOR_WEIGHTS)} on the examples the previous weight left (the weight of "
        "the detector's score against the logits in Carlini and Wagner's construction), and PGD-CW Linf (PGD on "
        "their margin loss from the clean image, returning its best iterate) is added and is their sanity attack "
        f"({DETECTOR_SANITY}): cross-entropy saturates once the detected class dominates, and PGD's last iterate "
        "may be caught where an earlier one was not. Square runs only against the defenses that do not reject "
        "(pyautoattack's Square attacks parts of a batch, which the detector-aware target cannot follow). "
        "'adaptive / oblivious' is how much of the oblivious robustness survives. Where the budget check moved a "
        "defense's reported L2 robustness (its lowest adaptive L2 accuracy) by more than its noise, the L2 attacks "
        "that adapt their step (APGD-CE L2; against a detector also PGD-CW L2) run as well, with their own budget "
        f"check (folder `<defense>/{L2_EXTRA}`): Foolbox's L2 PGD travels 1.25 eps in its 50 steps, less under the "
        "noise of EOT. Where CW sets a randomized defense's lowest adaptive L2 accuracy, they run before the "
        "budget check, which then goes to whichever L2 attack is lowest (CW's check there doubles binary-search "
        "steps, steps and EOT samples: 8x the study's most expensive attack)."
    )
    sections = ["## How much robustness survives an attacker who knows the defense", table,
                "## Clean accuracy", ctable, TRAINING_RECORDS_NOTE,
                *check_sections(meta, "Each attack again with x2 steps on the same images, oblivious and (against "
                                "MagNet) adaptive; against the randomized defenses (REMIX, its detector) adaptively "
                                "only the attack that sets each norm's worst case, with x2 steps and x2 EOT samples "
                                "(4x its cost; the other attacks' adaptive numbers are higher, not the reported "
                                "robustness). Enough = the accuracy moves by at most one standard error.",
                                defense_name=DEFENSE_NAMES.get)]
    write_results(out, title=f"REMIX and MagNet against adaptive attacks: {meta['dataset']}", intro=intro,
                  sections=sections, rows=rows, meta=meta)


# ---- the number of masks n and of mask-inpaint rounds k

def sweep_study(out: str | Path, *, dataset: str = "mnist", quick: bool = False, seed: int = 0,
                runs_dir: str | Path = "runs", data_root: Any = None, log: Log = print) -> dict[str, Any]:
    """Clean accuracy and accuracy on the Figure 2 examples of REMIX (with and without its reformer) for
    every n of :data:`~maskdefense.papers.remix.SWEEP_N` (an inpainter trained for each) and k of
    ``SWEEP_K``. Re-uses the stored examples of ``remix-fig2`` in the sibling folder
    ``results/remix-fig2-<dataset>`` (run it first): the oblivious examples do not depend on the defense."""
    t_start = time.perf_counter()
    meta = run_metadata(seed)
    ds = "digits" if quick else dataset
    out = Path(out)
    source = out.parent / f"remix-fig2-{ds}" / "attacks"
    if not (source / "run.json").exists():
        raise MissingRunError(f"{source} holds no Figure 2 run: run `maskdefense reproduce remix-fig2"
                                f"{' --quick' if quick else ' --dataset ' + dataset}` first (into {source.parent})")
    defenses, record, _ = build_defenses(dataset, quick=quick, runs_dir=runs_dir, seed=seed, data_root=data_root,
                                      log=log)
    base, reformer = defenses["none"].base, defenses["remix+reformer"].reformer
    n_images = json.loads((source / "run.json").read_text())["config"]["n"]
    test = load_dataset(ds, "test", root=data_root, limit=n_images)
    ns = (2,) if quick else SWEEP_N[dataset]
    ks = (1, 2) if quick else SWEEP_K
    inpainters = {}
    for n in ns:
        if n == (N_MASKS["mnist"] if quick else N_MASKS[dataset]):
            inpainters[n] = (defenses["remix"].inpainter, record["remix_inpainter"])
        else:
            m, ck = ensure_model(f"remix-inpainter-n{n}-{dataset}-cpu", runs_dir, seed=seed, data_root=data_root,
                                 log=log)
            inpainters[n] = (m.eval(), ck)
    rows = []
    for n in ns:
        for k in ks:
            for with_reformer in (False, True):
                name = f"n{n}-k{k}" + ("-reformer" if with_reformer else "")
                d = REMIX(base, inpainters[n][0], n=n, k=k, reformer=reformer if with_reformer else None).eval()
                log(f"[remix-sweep] {name} on the Figure 2 examples")
                rep = reevaluate(d, test, source, out_dir=out / name, progress=False, command=meta["command"])
                row: dict[str, Any] = {"n": n, "k": k, "reformer": with_reformer,
                                       "clean": rep.clean["defense_clean_acc"]}
                for r in rep.rows:
                    row[r["label"]] = r["defense_acc"]
                accs = [r["defense_acc"] for r in rep.rows if r["defense_acc"] is not None]
                row["mean_adv"] = sum(accs) / len(accs) if accs else None
                rows.append(row)
    labels = [k for k in rows[0] if k not in ("n", "k", "reformer", "clean", "mean_adv")]
    meta.update(training_records=_keep_records(out, record, *(ck for n, (_, ck) in inpainters.items()
                                                              if ck is not record["remix_inpainter"])))
    meta.update(study=f"remix-sweep-{ds}", dataset=ds, source=str(source), n_images=n_images, ns=list(ns),
                ks=list(ks), inpainters={n: checkpoint_record(ck) for n, (_, ck) in inpainters.items()},
                reformer=checkpoint_record(record["remix_reformer"]),
                classifier=checkpoint_record(record["classifier"]), wall_time_s=round(time.perf_counter() - t_start, 2))
    fm: dict[str, Any] = {c: pct for c in ["clean", "mean_adv", *labels]}
    fm["reformer"] = lambda v: "yes" if v else "no"
    table = markdown_table(rows, ["n", "k", "reformer", "clean", "mean_adv", *labels],
                           ["n", "k", "reformer", "clean accuracy", "mean over the attacks", *labels], fm)
    intro = (f"REMIX with n masks and k mask-inpaint rounds ({ds}): clean accuracy on the first {n_images} test "
             f"images and accuracy on the stored oblivious Carlini-Wagner L2 and EAD examples of the Figure 2 run "
             f"({source}), mean over 3 evaluations with fresh partitions. The poster fixes n = "
             f"{N_MASKS.get(dataset)} and k = 1 and says more rounds give 'more chances to drive high-confidence "
             "adversarial examples to the correct class prediction, but may degrade the quality of images'.")
    write_results(out, title=f"REMIX: masks n and rounds k ({ds})", intro=intro,
                  sections=["## Sweep", table, TRAINING_RECORDS_NOTE],
                  rows=rows, meta=meta)
    return meta


STUDIES = {"remix-fig2": fig2_study, "remix-adaptive": adaptive_study, "remix-sweep": sweep_study}
DATASETS = {"remix-fig2": ("mnist", "cifar10"), "remix-adaptive": ("mnist", "cifar10"),
            "remix-sweep": ("mnist", "cifar10")}
