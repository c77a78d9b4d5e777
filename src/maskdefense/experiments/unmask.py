"""UNMASK (Freitas, Chen, Wang and Chau 2020) with feature-denoising blocks (Xiong's master thesis, Leiden 2021,
``../shared/papers/003_*``) at CPU scale: Table 6, Table 7, and the adaptive attacker the thesis left out.

* ``unmask-table6``: Table 6 on CIFAR-10: ResNet-18 at width 1/2 without and with one denoising block after
  stage 3 (the thesis: ResNet-101), each trained plainly and adversarially; clean accuracy on the 10,000 test
  images, PGD-Linf (20 steps of 2.5 eps / 20, random start) at 8/255 and at the thesis' 10/255 and FGSM at 8/255
  on the first :data:`T6_N`. Adversarial training on this CPU is Wong et al.'s "fast" FGSM with a random start
  at eps 8/255 for 6 epochs (:data:`~maskdefense.papers.unmask.TABLE6_CPU_AT`): one attack step per batch
  (~2x a plain step; PGD-10 would be ~6x, out of reach for two CIFAR networks here), at the radius where it is
  known to train without catastrophic overfitting (the FGSM row checks: FGSM accuracy far above PGD's flags it).
* ``unmask-table7``: Table 7 on the four class sets of the generated part data: the part extractor K (a U-Net,
  every class, 44 parts) and per set two classifiers M, the baseline ResNet-18/2 and the ResNet-18/2 with four
  denoising blocks ("Ours"); PGD and MI-FGSM in Linf and L2 at the thesis' two strengths, 20 steps (the code's),
  made against M alone (the thesis' setting: UNMASK is unknown to the attacker), on the first :data:`T7_N` test
  images of each set; UNMASK evaluated on the stored examples (:func:`~maskdefense.eval.reuse.reevaluate`):
  detection (``d >= 0.7``, the code's cut) with its ROC, the code's defense (every image re-classified by its
  parts, the most similar class) and Algorithm 1 as printed (M's label unless detected, then the *least*
  similar class) and with the maximum. L2 budgets: the code's 300 and 600 (0-255 units, on its 150x150 inputs)
  become ``eps / 255 * 32 / 150`` on 32x32 images in [0, 1] (0.251 and 0.502): the same root-mean-square change
  per pixel (an L2 norm grows with the square root of the number of pixels); Linf budgets are kept (8/255,
  16/255). The budget check doubles the steps of the stronger row of each attack on :data:`T7_BUDGET_SET`.
* ``unmask-adaptive``: the attacker who knows UNMASK, on :data:`ADAPTIVE_SET` with "Ours" (:data:`ADAPTIVE_N`
  images): detection mode attacked with classifier and detector together (the harness's adaptive threat:
  the detector's Jaccard distance differentiated through the soft part sets by BPDA; again through a 10x
  smoother surrogate, :data:`SOFT_TEMPERATURE`) beside the same attacks made oblivious, with APGD-CE and PGD-CW
  (the margin loss) beside PGD: PGD returns its last iterate, which the detector may still catch, and its
  cross-entropy saturates where the detected class dominates; both return their best iterate, fooled and not
  rejected; every adaptive attack restarted with the detector weights :data:`~maskdefense.eval.DETECTOR_WEIGHTS`; the defense mode (parts
  decide) under PGD, APGD-CE and Square, adaptively and oblivious (the oblivious examples are those of M alone,
  stored once: :data:`OBLIVIOUS_FROM`); M alone under PGD, APGD-CE and Square (is the denoising network's own
  robustness in Table 7's no-defense column real?); whether the gradient of ``detect`` reaches the attacker, and
  whether the adaptive examples move K's parts to the parts of M's new class; budget check.

Every study resumes (models in ``runs_dir``, harness records in the results folder) and writes
``results/unmask-<study>/`` (README.md with the thesis' numbers beside ours, results.json/.csv, plots,
``checkpoints/*.json`` the training records of its models). ``quick=True``: seconds-long stand-ins (tiny
generated data, digits for Table 6) for the tests.

Compute on this machine (2 cores, one job at a time), estimated from the CPU recipe's measured speed
(ResNet-18/2 trains at ~310 images/s with bf16 and channels-last: 14 CIFAR-10 epochs in 34 minutes) and a few timed
steps of each network (one thread, scaled by the recipe's step measured alike): a training step (bf16) costs ~7%
more with one denoising block after stage 3 and ~4x with four; an attack's input gradient (fp32) ~7x with four
(~28 ms per image against ~4 ms; the stage-1 block attends over 32 x 32 = 1024 positions, its 1024 x 1024 softmax
per image dominates), a forward ~8 ms; the U-Net ~3 ms per gradient, ~1 ms per forward.

* ``unmask-table6`` ~1.8 h: the plain model is ``resnet18-cifar10-cpu`` (reused from ``runs/`` when trained, else
  +34 min), its twin with the block 14 epochs ~37 min, two fast adversarial trainings of 6 epochs ~29 min each;
  attacks on 500 images and the budget check ~12 min.
* ``unmask-table7`` ~2.2 h: K (10,000 images, 15 epochs) ~8 min; 8 classifiers (4,000 images, 8 epochs) ~7 min
  (baselines) + ~29 min (4 blocks); 8 attacks x 20 steps x 200 images per model ~2 min (baseline) + ~15 min (4
  blocks), ~70 min for the 4 sets; UNMASK on the stored examples ~4 min; budget check (one set) ~17 min.
* ``unmask-adaptive`` ~2-2.6 h (after Table 7, whose models it reuses; 100 images): M alone ~30-65 min (APGD-CE
  100 iterations and Square up to 1000 queries on the 4-block network, then twice that in the budget check; Square
  stops at an image's first success, hence the range), the detection mode ~1.3 h (gray-box and adaptive, M + K per
  gradient; APGD-CE's and PGD-CW's 100 iterations ~5 min each per run and threat, restarts over 3 detector
  weights on the examples not yet fooled, the sanity attack at Linf 0.5 and the budget check included), the
  defense mode ~8 min (K alone; its oblivious rows reuse M alone's examples).

Total for the issue ~6-6.7 h (+34 min when the plain ResNet-18/2 must be trained too).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file

from ..attacks import AttackSpec, parse_attack_spec
from ..data import PASCAL_PART_PARTS, PartData, load_dataset, part_dataset, resolve_data_root
from ..data._pascal_part import PASCAL_PART_DIR
from ..defenses.base import REJECT, NoDefense, contract_of
from ..defenses.unmask import UNMASK
from ..eval import DETECTOR_WEIGHTS, Report, default_sanity, evaluate
from ..eval.budget import BUDGET_FACTOR, budget_check, check_budget, compare_budgets, strongest_per_attack
from ..eval.checks import Flag, check_transfer_vs_adaptive
from ..eval.metrics.detection import roc
from ..eval.records import RecordStore
from ..eval.reuse import reevaluate
from ..ops.parts import jaccard_distance
from ..papers.unmask import (CLASS_SETS, INPUT_SIZE, OVERLAP, REFERENCE_THRESHOLD, TABLE6, TABLE6_PRESETS,
                             TABLE6_SETTINGS, TABLE7, TABLE7_CLAIMS, TABLE7_COLUMNS, TABLE7_CPU_MODELS, attributes,
                             preset_name)
from ..provenance import run_metadata
from ..results import markdown_table, pct, save_figure, write_results
from ..training.presets import PartPreset, Preset, create_preset
from ..training.tasks import segmentation_metrics
from .common import check_sections, ensure_model, harness_provenance, mean_defined

Log = Callable[[str], None]

#: Attack steps of the studies: the reference code's ``test_nb_iter``. PGD steps 2.5 eps / steps (Madry et al.);
#: the code's step of 2.0 on [0, 1] images is larger than every budget (each step lands on the ball's boundary).
ATTACK_STEPS = 20
T6_N = 500
T6_ATTACKS = {"PGD-Linf 8/255": "pgd-linf:eps=8/255,{pgd}", "PGD-Linf 10/255": "pgd-linf:eps=10/255,{pgd}",
              "FGSM 8/255": "fgsm-linf:eps=8/255"}
T7_N = 200
T7_BUDGET_SET = "CS5b"
ADAPTIVE_SET = "CS3a"
ADAPTIVE_N = 100
#: The class sets of the quick runs (tests).
QUICK_SETS = ("CS5b",)
MODEL_NAMES = {"baseline": "baseline (ResNet-18/2)", "ours": "Ours (ResNet-18/2 + 4 denoising blocks)"}
THESIS_MODELS = {"baseline": "DenseNet-121", "ours": "ResNet-101 + 4 denoising blocks"}
COLUMN_NAMES = {"pgd-linf": "PGD-Linf", "pgd-l2": "PGD-L2", "mia-linf": "MIA-Linf", "mia-l2": "MIA-L2"}
#: UNMASK's variants evaluated on the stored examples: name -> (mode, rule).
VARIANTS = {"detect": ("detect", "max"), "defend-max": ("defend", "max"), "defend-min": ("defend", "min")}


def _pgd_steps(steps: int) -> str:
    return f"steps={steps},rel_stepsize={2.5 / steps:g}"


def _labelled(text: str, label: str) -> AttackSpec:
    s = parse_attack_spec(text)
    return AttackSpec(s.name, s.params, s.given, s.settings, label=label)


def l2_eps(code_eps: float, side: int) -> float:
    """The code's L2 budget (0-255 units on ``INPUT_SIZE`` x ``INPUT_SIZE`` images) on ``side`` x ``side`` images in
    [0, 1], with the same root-mean-square change per pixel."""
    return code_eps / 255 * side / INPUT_SIZE


def table7_specs(side: int, steps: int = ATTACK_STEPS) -> list[AttackSpec]:
    """Table 7's eight attacks (:data:`~maskdefense.papers.unmask.TABLE7_COLUMNS`), labelled ``"PGD-L2 300"``...:
    PGD (Foolbox, random start, step 2.5 eps / steps) and MI-FGSM (Dong et al., mu 1, step eps / steps)."""
    out = []
    for column, code_eps in TABLE7_COLUMNS:
        family, norm = column.split("-")
        eps = f"{code_eps}/255" if norm == "linf" else f"{l2_eps(code_eps, side):.4g}"
        name = f"pgd-{norm}" if family == "pgd" else ("mi-fgsm" if norm == "linf" else "mi-fgsm-l2")
        out.append(_labelled(f"{name}:eps={eps}," + (_pgd_steps(steps) if family == "pgd" else f"steps={steps}"),
                             f"{COLUMN_NAMES[column]} {code_eps}"))
    return out


# ---- models ---------------------------------------------------------------------------------------------------

def _quick_data(data: dict[str, Any], n: int) -> dict[str, Any]:
    return {**data, "size": 16, "n": {"train": n, "val": n // 2, "test": 16}}


def unmask_presets(quick: bool = False) -> tuple[PartPreset, dict[tuple[str, str], PartPreset]]:
    """The part extractor's preset and the classifiers' (``(class set, "baseline" | "ours")`` -> preset);
    ``quick``: seconds-long stand-ins under their own names (16x16 images, tiny networks, one epoch)."""
    ext = create_preset("unmask-extractor-cpu")
    sets = QUICK_SETS if quick else tuple(CLASS_SETS)
    clf = {(s, k): create_preset(preset_name(s, m)) for s in sets for k, m in TABLE7_CPU_MODELS.items()}
    if not quick:
        return ext, clf
    ext = replace(ext, name="unmask-extractor-quick", data=_quick_data(ext.data, 96), epochs=1, batch_size=32,
                  model_kwargs={"channels": [8, 16], "strides": [2], "num_res_units": 1})
    clf = {k: replace(p, name=p.name.replace("-cpu", "-quick"), data=_quick_data(p.data, 128), epochs=4, batch_size=32,
                      model_kwargs={"width": 1 / 16}, precision="fp32", channels_last=False)
           for k, p in clf.items()}
    return ext, clf


def _t6_presets(quick: bool) -> dict[tuple[str, bool], Preset]:
    """Table 6's presets (row, adversarially trained); ``quick``: stand-ins on the 8x8 digits."""
    if not quick:
        return {k: create_preset(v) for k, v in TABLE6_PRESETS.items()}
    return {(row, adv): Preset(f"unmask-digits-{row.replace('_', '-')}{'-at' if adv else ''}-quick", "digits",
                               "resnet18_denoise1" if row.endswith("denoise1") else "resnet18",
                               model_kwargs={"width": 0.125, "mean": None, "std": None}, epochs=1, batch_size=64,
                               optimizer="sgd", lr=0.05, task={"name": "adversarial", "eps": 0.1, "mode": "fast"} if adv else None)
            for row, adv in TABLE6_PRESETS}


def _keep_records(out: Path, models: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Copy every model's training record (its checkpoint's JSON sidecar) to ``out/checkpoints/<name>.json``;
    returns what results.json keeps of them."""
    keep = ("arch", "arch_kwargs", "epochs", "sha256", "weights_sha256", "test_accuracy", "test_pixel_accuracy",
            "test_mean_iou", "test_part_set_accuracy", "n_train", "n_test", "training_key")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name, meta in models.items():
        shutil.copyfile(Path(meta["path"]).with_suffix(".json"), out / "checkpoints" / f"{name}.json")
    return {name: {k: meta.get(k) for k in keep if k in meta} for name, meta in models.items()}


def _data_note(data_root: Any) -> str:
    """What the README says about the data: PASCAL-Part is (not) here, the generated stand-in and how it differs."""
    root = resolve_data_root(data_root) / PASCAL_PART_DIR / "Annotations_Part"
    where = (f"PASCAL-Part was found in `{root.parent}`, but the CPU presets use the generated stand-in; the `-full` "
             "presets read PASCAL-Part." if root.is_dir() else
             f"**PASCAL-Part is not on this machine** (looked for `{root}`; it is never downloaded): every number "
             "here comes from the generated stand-in.")
    return (f"{where} The stand-in (`maskdefense.data.synthetic_parts`, 32x32 images) draws for each image a random "
            "subset of its class's parts (the reference code's class-to-parts sets over the 44 merged PASCAL-Part "
            "parts), each a flat-coloured primitive shape (shape and hue fixed per part name) at a jittered grid "
            "position over a textured background, with exact part masks. How it differs from PASCAL-Part: no objects, "
            "no articulation, no realistic appearance; a part is recognized by its shape and colour alone and looks "
            "the same in every class, so the class sets' feature overlap is exactly the overlap of their part sets; "
            "the extractor is a U-Net semantic segmenter, not a Mask R-CNN; classifiers see 32x32 images, not 150x150. "
            "Feature overlap (shared parts / all parts): "
            + ", ".join(f"{k} {v:.2f}" for k, v in OVERLAP.items()) + ".")


def _models_table(records: dict[str, dict[str, Any]]) -> str:
    rows = [{"name": k, "arch": v.get("arch"), "epochs": v.get("epochs"), "n_train": v.get("n_train"),
             "test": v.get("test_accuracy", v.get("test_part_set_accuracy")), "sha": str(v.get("sha256", ""))[:12]}
            for k, v in records.items()]
    return markdown_table(rows, ["name", "arch", "epochs", "n_train", "test", "sha"],
                          ["model", "network", "epochs", "training images", "test accuracy (extractor: part-set "
                           "accuracy)", "checkpoint sha256"], {"test": pct})


# ---- Table 6 --------------------------------------------------------------------------------------------------

def table6_study(out: str | Path, *, quick: bool = False, seed: int = 0, runs_dir: str | Path = "runs",
                 data_root: Any = None, limit: int | None = None, log: Log = print) -> dict[str, Any]:
    """Table 6 at CPU scale (see the module docstring)."""
    t_start = time.perf_counter()
    meta = run_metadata(seed)
    out = Path(out)
    ds = "digits" if quick else "cifar10"
    presets = _t6_presets(quick)
    n = limit or (20 if quick else T6_N)
    test = load_dataset(ds, "test", root=data_root, limit=n)
    specs = [_labelled(text.format(pgd=_pgd_steps(3 if quick else ATTACK_STEPS)), label)
             for label, text in T6_ATTACKS.items()]
    rows: list[dict[str, Any]] = []
    budget_rows: list[dict[str, Any]] = []
    flags: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    for (row, adv), p in presets.items():
        model, ck = ensure_model(p, runs_dir, seed=seed, data_root=data_root, log=log)
        models[p.name] = ck
        common = dict(seed=seed, batch_size=100, progress=False, command=meta["command"], checkpoint_meta=ck, sanity=None)
        log(f"[unmask-table6] {p.name}: {len(specs)} attacks on {n} {ds} test images")
        d = NoDefense(model.eval())
        rep = evaluate(d, test, specs, "gray-box", out_dir=out / p.name, **common)
        checked, bflags = budget_check(d, test, rep, strongest_per_attack(specs), out_dir=out / p.name, **common)
        budget_rows += [{**c, "defense": p.name} for c in checked]
        flags += [{**f.to_dict(), "run": p.name} for f in [*rep.flags, *bflags]]
        acc = {s.key: rep.row(s)["robust_acc"] for s in specs}
        rows.append({"row": row, "adversarial": adv, "preset": p.name, "clean": ck["test_accuracy"],
                     "n_clean": ck["n_test"], "clean_attacked": rep.clean["base_clean_acc"],
                     "pgd8": acc[specs[0].key], "pgd10": acc[specs[1].key], "fgsm8": acc[specs[2].key], "n": n})
    for r in rows:
        if r["adversarial"] and r["fgsm8"] is not None and r["pgd8"] is not None and r["fgsm8"] - r["pgd8"] > 0.25:
            flags.append({"code": "CATASTROPHIC_OVERFITTING", "severity": "warning", "run": r["preset"],
                          "message": f"FGSM accuracy {pct(r['fgsm8'])} is far above PGD's {pct(r['pgd8'])} at the same "
                                     "eps: the fast adversarial training overfitted to FGSM"})
    meta.update(study="unmask-table6", dataset=ds, n_images=n, attacks=[s.to_dict() for s in specs],
                adversarial_training=presets[("resnet101", True)].task,
                at_epochs=presets[("resnet101", True)].epochs, plain_epochs=presets[("resnet101", False)].epochs,
                thesis=TABLE6, thesis_settings=TABLE6_SETTINGS,
                models=_keep_records(out, models), budget_check=budget_rows, flags=flags,
                wall_time_s=round(time.perf_counter() - t_start, 2),
                **harness_provenance([out / p.name for p in presets.values()]
                                     + [out / p.name / f"budget-x{BUDGET_FACTOR}" for p in presets.values()]))
    _write_table6(out, rows, meta)
    return meta


def _write_table6(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    by = {(r["row"], r["adversarial"]): r for r in rows}
    table = []
    for row, label in (("resnet101", "ResNet-18/2 (thesis: ResNet-101)"),
                       ("resnet101_denoise1", "ResNet-18/2 + 1 block (thesis: modified ResNet-101)")):
        plain, at, th = by[(row, False)], by[(row, True)], TABLE6[row]
        table.append({"model": label, "bench": plain["clean"], "bench_t": th["benchmark"] / 100, "at_clean": at["clean"],
                      "at_clean_t": th["at_benign"] / 100, "at_pgd10": at["pgd10"], "at_adv_t": th["at_adv"] / 100,
                      "at_pgd8": at["pgd8"], "plain_pgd8": plain["pgd8"]})
    diff = {k: (table[1][k] - table[0][k]) if table[0][k] is not None and table[1][k] is not None else None
            for k in table[0] if k != "model"}
    table.append({"model": "effect of the block (points)", **diff})
    pts = {k: (lambda v: "-" if v is None else f"{100 * v:+.2f}") for k in diff}
    fm = {k: pct for k in diff}
    main = markdown_table(table[:2], ["model", "bench", "bench_t", "at_clean", "at_clean_t", "at_pgd10", "at_adv_t",
                                      "at_pgd8", "plain_pgd8"],
                          ["model", "plain: clean", "thesis: benchmark", "AT: clean", "thesis: AT benign",
                           "AT: PGD-20 10/255", "thesis: AT adv (PGD 10)", "AT: PGD-20 8/255", "plain: PGD-20 8/255"], fm)
    eff = markdown_table(table[2:], ["model", "bench", "bench_t", "at_clean", "at_clean_t", "at_pgd10", "at_adv_t"],
                         ["", "plain: clean", "thesis", "AT: clean", "thesis", "AT: PGD-20 10/255", "thesis"], pts)
    detail = markdown_table(rows, ["preset", "clean", "clean_attacked", "pgd8", "pgd10", "fgsm8"],
                            ["model", "clean (all test images)", f"clean (first {meta['n_images']})", "PGD-20 8/255",
                             "PGD-20 10/255", "FGSM 8/255"], {k: pct for k in ("clean", "clean_attacked", "pgd8", "pgd10",
                                                                               "fgsm8")})
    at = meta["adversarial_training"]
    intro = (
        f"Xiong's thesis, Table 6 ({meta['dataset']}): does one feature-denoising block (non-local, embedded Gaussian, "
        "after stage 3) make adversarial training more robust? Ours at CPU scale: ResNet-18 at width 1/2 (CIFAR stem) "
        f"instead of ResNet-101, trained plainly with the CPU recipe ({meta['plain_epochs']} epochs) and adversarially with "
        f"{'FGSM with a random start' if at.get('mode') == 'fast' else 'PGD'} at eps {at.get('eps', 0) * 255:.3g}/255 "
        f"for {meta['at_epochs']} epochs (the thesis: PGD-Linf eps 10, lr 0.005 decayed every 30 epochs, batch 60; "
        "see `maskdefense.papers.unmask.TABLE6_CPU_AT` for why). Clean accuracy on all test images; attacks "
        f"(Foolbox PGD-Linf, 20 steps of 2.5 eps / 20, random start; FGSM; white-box, made against each network "
        f"itself, as the thesis' adversarial test) on the first {meta['n_images']} test images, "
        "accuracy = right on the clean image and on its adversarial example. The thesis' attack budget is eps 10 "
        "(on 0-255): our 10/255 column; 8/255 is the usual CIFAR-10 budget and the training radius.")
    sections = ["## Table 6: ours beside the thesis", main, "The block's effect, with and without adversarial "
                "training (with block minus without, in points):", eff, "## Every model", detail,
                "## Models", _models_table(meta["models"]) + "\n\nTraining records: `checkpoints/`.",
                *check_sections(meta, "Each PGD row again with twice the steps on the same images (accuracy on the "
                                "images the model classifies correctly); enough = it moves by at most one standard "
                                "error.", defense_name=str)]
    write_results(out, title="UNMASK thesis, Table 6: a denoising block in adversarial training", intro=intro,
                  sections=sections, rows=rows, meta=meta)


# ---- Table 7 --------------------------------------------------------------------------------------------------

def _thesis_row(model: str, class_set: str) -> dict[str, float]:
    """Table 7's row of ``model`` ("ours", "baseline") on ``class_set``, keyed ``"no_defense"`` and
    ``"pgd-linf 8"`` ... (as our rows)."""
    row = TABLE7.get((model, class_set), {})
    return {k if isinstance(k, str) else f"{k[0]} {k[1]}": v for k, v in row.items()}


def _unmask(model: torch.nn.Module, extractor: torch.nn.Module, class_set: str, variant: str,
            area_threshold: float, **kw: Any) -> UNMASK:
    mode, rule = VARIANTS[variant]
    return UNMASK(model, extractor, attributes(class_set), mode=mode, rule=rule, threshold=REFERENCE_THRESHOLD,
                  area_threshold=area_threshold, classes=CLASS_SETS[class_set], parts=PASCAL_PART_PARTS, **kw).eval()


def _run_records(run_dir: Path) -> tuple[dict[int, dict[str, Any]], dict[tuple[str, str], dict[int, dict[str, Any]]]]:
    """The clean records (index -> record) and the attack records ((threat, attack key) -> index -> record) of a
    harness run."""
    clean: dict[int, dict[str, Any]] = {}
    adv: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for rec in RecordStore(run_dir / "records.jsonl"):
        if rec.get("kind") == "clean":
            clean[rec["idx"]] = rec
        elif rec.get("kind") == "attack":
            adv.setdefault((rec["threat"], rec["attack"]), {})[rec["idx"]] = rec
    return clean, adv


def _mean(values: list[bool] | np.ndarray) -> float | None:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()) if v.size else None


def _code_numbers(runs: dict[str, Path], specs: list[AttackSpec]) -> dict[str, Any]:
    """Table 7's numbers in the reference code's conventions, from the records of the UNMASK variants on the
    stored gray-box examples: accuracies over *all* images (the code divides by the number of images), the
    detection ROC over the examples that fool M and their clean images (the code's ``filter_data``)."""
    rec = {k: _run_records(d) for k, d in runs.items()}
    det_clean, det_adv = rec["detect"]
    labels = {i: r["label"] for i, r in det_clean.items()}
    out: dict[str, Any] = {"attacks": {}}
    all_clean, all_adv, rej_clean, rej_adv = [], [], [], []
    for s in specs:
        key = ("gray-box", s.key)
        idx = sorted(det_adv[key])
        lab = np.array([labels[i] for i in idx])
        pred = {v: np.array([rec[v][1][key][i]["pred_defense_adv"][0] for i in idx]) for v in VARIANTS}
        m_adv = np.array([det_adv[key][i]["pred_base_adv"] for i in idx])
        rejected = pred["detect"] == REJECT
        fooled = m_adv != lab
        c_sc = np.array([det_clean[i]["score"] for i in np.array(idx)[fooled]])
        a_sc = np.array([det_adv[key][i]["score_adv"] for i in np.array(idx)[fooled]])
        all_clean.append(c_sc)
        all_adv.append(a_sc)
        rej_clean.append(np.array([det_clean[i]["pred_defense"][0] == REJECT for i in np.array(idx)[fooled]]))
        rej_adv.append(rejected[fooled])
        curve = roc(c_sc, a_sc)
        out["attacks"][s.key] = {
            "label": s.display, "n": len(idx), "no_defense": _mean(m_adv == lab),
            "unmask": _mean(pred["defend-max"] == lab), "unmask_argmin": _mean(pred["defend-min"] == lab),
            "algorithm1": _mean(np.where(rejected, pred["defend-min"], pred["detect"]) == lab),
            "algorithm1_max": _mean(np.where(rejected, pred["defend-max"], pred["detect"]) == lab),
            "n_fooled": int(fooled.sum()), "tpr": _mean(rejected[fooled]), "auc": curve["auc"] if curve else None}
    cl = sorted(det_clean)
    cpred = {v: np.array([rec[v][0][i]["pred_defense"][0] for i in cl]) for v in VARIANTS}
    lab = np.array([labels[i] for i in cl])
    crej = cpred["detect"] == REJECT
    out["clean"] = {"n": len(cl), "classifier": _mean(np.array([det_clean[i]["pred_base"] for i in cl]) == lab),
                    "unmask": _mean(cpred["defend-max"] == lab), "unmask_argmin": _mean(cpred["defend-min"] == lab),
                    "algorithm1": _mean(np.where(crej, cpred["defend-min"], cpred["detect"]) == lab),
                    "algorithm1_max": _mean(np.where(crej, cpred["defend-max"], cpred["detect"]) == lab),
                    "fpr": _mean(crej)}
    pooled = roc(np.concatenate(all_clean), np.concatenate(all_adv)) if all_clean else None
    # the threshold's point on the pooled curve: rejections among the same clean images and examples
    out["roc_point"] = {"fpr": _mean(np.concatenate(rej_clean)) if rej_clean else None,
                        "tpr": _mean(np.concatenate(rej_adv)) if rej_adv else None}
    out["roc"] = pooled
    return out


def table7_study(out: str | Path, *, quick: bool = False, seed: int = 0, runs_dir: str | Path = "runs",
                 data_root: Any = None, limit: int | None = None, log: Log = print) -> dict[str, Any]:
    """Table 7 at CPU scale on the generated part data (see the module docstring)."""
    t_start = time.perf_counter()
    meta = run_metadata(seed)
    out = Path(out)
    ext_p, clf_p = unmask_presets(quick)
    get = lambda p: ensure_model(p, runs_dir, seed=seed, data_root=data_root, log=log)  # noqa: E731
    extractor, eck = get(ext_p)
    extractor.eval()
    models = {ext_p.name: eck}
    sets = list(dict.fromkeys(s for s, _ in clf_p))
    budget_set = sets[-1] if quick else T7_BUDGET_SET
    n = limit or (16 if quick else T7_N)
    rows: list[dict[str, Any]] = []
    budget_rows: list[dict[str, Any]] = []
    flags: list[dict[str, Any]] = []
    extractor_on_sets: dict[str, dict[str, float]] = {}
    run_dirs: list[Path] = []
    for cs in sets:
        test: PartData = part_dataset(clf_p[(cs, "baseline")].data, "test", root=data_root).subset(range(n))
        data = test.image_data()
        extractor_on_sets[cs] = segmentation_metrics(extractor, test.images, test.part_map,
                                                     area_threshold=ext_p.area_threshold)
        specs = table7_specs(test.images.shape[-1], steps=2 if quick else ATTACK_STEPS)
        for key in ("baseline", "ours"):
            p = clf_p[(cs, key)]
            model, ck = get(p)
            model.eval()
            models[p.name] = ck
            d = out / cs / key
            common = dict(seed=seed, batch_size=100, progress=False, command=meta["command"], checkpoint_meta=ck,
                          sanity=None, save_adversarial=True)
            log(f"[unmask-table7] {cs} {key}: {len(specs)} attacks against M on {n} test images, then UNMASK")
            src = evaluate(NoDefense(model), data, specs, "gray-box", out_dir=d / "attacks", **common)
            defenses = {v: _unmask(model, extractor, cs, v, ext_p.area_threshold) for v in VARIANTS}
            reps = {v: reevaluate(u, data, d / "attacks", out_dir=d / v, progress=False, command=meta["command"])
                    for v, u in defenses.items()}
            run_dirs += [d / "attacks", *(d / v for v in VARIANTS)]
            flags += [{**f.to_dict(), "run": f"{cs}/{key}/{name}"}
                      for name, rep in {"attacks": src, **reps}.items() for f in rep.flags]
            code = _code_numbers({v: d / v for v in VARIANTS}, specs)
            harness = {v: {s.key: reps[v].row(s) for s in specs} for v in VARIANTS}
            row: dict[str, Any] = {"class_set": cs, "model": key, "preset": p.name, "n": n,
                                   "clean_accuracy": ck["test_accuracy"], **{f"clean_{k}": v for k, v in code["clean"].items()},
                                   "auc": code["roc"]["auc"] if code["roc"] else None}
            for s, col in zip(specs, TABLE7_COLUMNS):
                a = code["attacks"][s.key]
                row[f"{col[0]} {col[1]}"] = a["unmask"]
                row[f"none {col[0]} {col[1]}"] = a["no_defense"]
            row["no_defense"] = mean_defined(a["no_defense"] for a in code["attacks"].values())
            row["defended"] = mean_defined(a["unmask"] for a in code["attacks"].values())
            for k in ("unmask_argmin", "algorithm1", "algorithm1_max", "tpr"):
                row[k] = mean_defined(a[k] for a in code["attacks"].values())
            row["code"] = code
            row["harness"] = {v: {k: {f: r.get(f) for f in ("defense_acc", "robust_acc", "attack_acc", "detection_rate",
                                                            "detection_auc", "defense_acc_rejected_failed", "n_correct")}
                                      for k, r in rows_.items()} for v, rows_ in harness.items()}
            rows.append(row)
            if cs == budget_set:
                chosen = strongest_per_attack(specs)
                scaled = {s.with_budget(BUDGET_FACTOR).key: s for s in chosen}
                bdir = d / f"budget-x{BUDGET_FACTOR}"
                brep = evaluate(NoDefense(model), data, [s.with_budget(BUDGET_FACTOR) for s in chosen], "gray-box",
                                out_dir=bdir, **common)
                run_dirs.append(bdir)
                budget_rows += [{**c, "defense": f"{key}: no defense"}
                                for c in compare_budgets(src.rows, brep.rows, scaled, factor=BUDGET_FACTOR)]
                for v in ("detect", "defend-max"):
                    r2 = reevaluate(defenses[v], data, bdir, out_dir=d / f"budget-x{BUDGET_FACTOR}-{v}", progress=False,
                                    command=meta["command"])
                    run_dirs.append(d / f"budget-x{BUDGET_FACTOR}-{v}")
                    budget_rows += [{**c, "defense": f"{key}: UNMASK {v}"}
                                    for c in compare_budgets(reps[v].rows, r2.rows, scaled, factor=BUDGET_FACTOR)]
    meta.update(study="unmask-table7", class_sets=sets, n_images=n, threshold=REFERENCE_THRESHOLD,
                area_threshold=ext_p.area_threshold, attacks=[s.to_dict() for s in specs],
                l2_budgets={str(e): l2_eps(e, test.images.shape[-1]) for _, e in TABLE7_COLUMNS if e > 100},
                extractor_on_class_sets=extractor_on_sets,
                thesis={f"{m}/{s}": _thesis_row(m, s) for m, s in TABLE7},
                thesis_claims=TABLE7_CLAIMS, budget_set=budget_set, models=_keep_records(out, models),
                budget_check=budget_rows, flags=flags + [f.to_dict() for f in check_budget(budget_rows)],
                data_note=_data_note(data_root), wall_time_s=round(time.perf_counter() - t_start, 2),
                **harness_provenance(run_dirs))
    _plot_roc(out, rows)
    _write_table7(out, rows, meta)
    return meta


def _plot_roc(out: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(r["class_set"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets), 3.6), squeeze=False)
    for ax, cs in zip(axes[0], sets):
        for r in (r for r in rows if r["class_set"] == cs):
            curve = r["code"]["roc"]
            if curve:
                ax.plot(curve["fpr"], curve["tpr"], label=f"{r['model']} (AUC {curve['auc']:.3f})")
            op = (r["code"]["roc_point"]["fpr"], r["code"]["roc_point"]["tpr"])
            if None not in op:
                ax.plot(*op, "k.", ms=8)
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set_title(f"{cs}: d = 1 - JS")
        ax.set_xlabel("false-positive rate (clean)")
        ax.set_ylabel("true-positive rate (adversarial)")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"UNMASK detection, pooled over the 8 attacks (dots: d >= {REFERENCE_THRESHOLD})", fontsize=9)
    save_figure(fig, out / "roc.png")
    plt.close(fig)


def _write_table7(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    cols = [f"{c} {e}" for c, e in TABLE7_COLUMNS]

    def both(v: float | None, t: float | None) -> str:
        return ("-" if v is None else f"{100 * v:.2f}") + (f" ({t:.2f})" if t is not None else "")

    table = []
    for r in rows:
        th = _thesis_row(r["model"], r["class_set"])
        table.append({"model": MODEL_NAMES[r["model"]], "set": r["class_set"],
                      "none": both(r["no_defense"], th.get("no_defense")), **{c: both(r[c], th.get(c)) for c in cols},
                      "mean": both(r["defended"], mean_defined(th.get(c) for c in cols) if th else None)})
    heads = ["model", "class set", "no defense (mean of 8)"] + [f"{COLUMN_NAMES[c]} {e}" for c, e in TABLE7_COLUMNS] \
        + ["UNMASK, mean of 8"]
    main = markdown_table(table, ["model", "set", "none", *cols, "mean"], heads)
    avg = {k: {m: mean_defined(r[k] for r in rows if r["model"] == m) for m in MODEL_NAMES}
           for k in ("no_defense", "defended", "mia-linf 16")}
    claims = meta["thesis_claims"]
    summary = (
        f"Averaged over the class sets (thesis in brackets): UNMASK with Ours {pct(avg['defended']['ours'])} "
        f"({claims['ours_defended']:.2f}%), with the baseline {pct(avg['defended']['baseline'])} "
        f"({claims['baseline_defended']:.2f}%); Ours undefended {pct(avg['no_defense']['ours'])} "
        f"({claims['ours_no_defense']:.2f}%); MIA-Linf 16: Ours {pct(avg['mia-linf 16']['ours'])} "
        f"({claims['ours_mia_linf16']:.2f}%), baseline {pct(avg['mia-linf 16']['baseline'])} "
        f"({claims['baseline_mia_linf16']:.2f}%).")
    det = markdown_table(
        [{**r, "model": MODEL_NAMES[r["model"]]} for r in rows],
        ["model", "class_set", "clean_accuracy", "clean_classifier", "clean_unmask", "clean_fpr", "tpr", "auc",
         "unmask_argmin", "algorithm1", "algorithm1_max"],
        ["model", "class set", "M clean (all test images)", f"M clean (first {meta['n_images']})", "UNMASK clean (parts)",
         f"clean rejected at d >= {meta['threshold']}", "detected (examples fooling M)", "ROC AUC",
         "UNMASK argmin, mean of 8", "Algorithm 1 as printed, mean of 8", "Algorithm 1 with max, mean of 8"],
        {**{k: pct for k in ("clean_accuracy", "clean_classifier", "clean_unmask", "clean_fpr", "tpr", "unmask_argmin",
                             "algorithm1", "algorithm1_max")}, "auc": lambda v: "-" if v is None else f"{v:.3f}"})
    # the harness's conventions (the core's detector defense, images M classifies correctly): a rejection counts as
    # defended, or as failed; means over the 8 attacks of the detector and of the two re-classifying defenses
    hm = lambda r, v, f: mean_defined(a.get(f) for a in r["harness"][v].values())  # noqa: E731
    harness = markdown_table(
        [{"model": MODEL_NAMES[r["model"]], "set": r["class_set"], "det": hm(r, "detect", "defense_acc"),
          "det_failed": hm(r, "detect", "defense_acc_rejected_failed"), "rate": hm(r, "detect", "detection_rate"),
          "auc": hm(r, "detect", "detection_auc"), "max": hm(r, "defend-max", "defense_acc"),
          "min": hm(r, "defend-min", "defense_acc")} for r in rows],
        ["model", "set", "det", "det_failed", "rate", "auc", "max", "min"],
        ["model", "class set", "detector: rejected = defended", "detector: rejected = failed", "detection rate",
         "ROC AUC", "defense, most similar parts", "defense, least similar (argmin)"],
        {**{k: pct for k in ("det", "det_failed", "rate", "max", "min")},
         "auc": lambda v: "-" if v is None else f"{v:.3f}"})
    ext = markdown_table([{"set": k, **v} for k, v in meta["extractor_on_class_sets"].items()],
                         ["set", "pixel_accuracy", "mean_iou", "part_set_accuracy"],
                         ["class set (test images)", "pixel accuracy", "mean IoU over parts", "part set exactly right"],
                         {"pixel_accuracy": pct, "mean_iou": pct, "part_set_accuracy": pct})
    l2 = ", ".join(f"{k} -> {v:.3f}" for k, v in meta["l2_budgets"].items())
    intro = (
        "Xiong's thesis, Table 7: UNMASK with the baseline classifier against UNMASK with a classifier carrying four "
        "feature-denoising blocks ('Ours'), on the four class sets, under PGD and MI-FGSM (MIA) in Linf and L2 at two "
        "strengths, made against the classifier M alone (the thesis' gray-box setting). At CPU scale: "
        f"{MODEL_NAMES['baseline']} (thesis: {THESIS_MODELS['baseline']}) and {MODEL_NAMES['ours']} (thesis: "
        f"{THESIS_MODELS['ours']}), a U-Net part extractor (thesis: Mask R-CNN; a part counts as found when it wins "
        f"at least {meta['area_threshold']:.0%} of the pixels, where the code counts any part instance Mask R-CNN "
        f"detects), the first {meta['n_images']} test "
        f"images of each set. Attacks: {ATTACK_STEPS} steps (the code's), PGD with a random start and step 2.5 eps / "
        f"{ATTACK_STEPS}, MI-FGSM with mu 1 and step eps / {ATTACK_STEPS}; Linf budgets 8/255 and 16/255 as the code; "
        f"L2 budgets converted from the code's 0-255 units on 150x150 images to 32x32 images in [0, 1] at equal "
        f"root-mean-square change per pixel ({l2}). Numbers in the reference code's conventions: accuracy over all "
        "attacked images (the code divides by the number of images); UNMASK's defense = every image re-classified by "
        "its parts, the most similar class (the code; ties to the first class, no similar class = wrong); detection "
        f"d = 1 - JS(K(x), V[M(x)]) >= {meta['threshold']} (the code's cut), its ROC over the examples that fool M and "
        "their clean images (the code's filter). The thesis' numbers in brackets.")
    sections = [
        "## Data", meta["data_note"],
        "## Table 7: UNMASK's accuracy under attack, ours (thesis)", main, summary,
        "## Detection, clean accuracy and the two readings of Algorithm 1",
        "Algorithm 1 prints the defense as M's label unless detected, then the class of *least* similar parts "
        "(argmin); the code keeps the most similar. `UNMASK argmin` re-classifies every image by the argmin; the "
        "Algorithm 1 columns only the detected ones. ROC curves: ![ROC](roc.png)", det,
        "## The same in the harness's conventions",
        "The library's detector defense (`maskdefense.eval`): adversarial examples of the images M classifies "
        "correctly, accuracy with a rejection counted as defended and, stricter, as failed; the detection rate and "
        "ROC AUC over those examples; UNMASK's two re-classifying defenses beside it. Means over the 8 attacks.",
        harness,
        "## The part extractor on each class set", ext,
        "## Models", _models_table(meta["models"]) + "\n\nTraining records: `checkpoints/`.",
        *check_sections(meta, f"On {meta['budget_set']}: the stronger row of each attack again with twice the steps, "
                        "M and UNMASK evaluated on the new examples (the harness's protocol: images M classifies "
                        "correctly); enough = the accuracy moves by at most one standard error.", defense_name=str)]
    flat = [{k: v for k, v in r.items() if k not in ("code", "harness")} for r in rows]
    write_results(out, title="UNMASK thesis, Table 7: UNMASK with and without denoising blocks", intro=intro,
                  sections=sections, rows=flat, meta={**meta, "rows_detail": rows})


# ---- the adaptive attacker --------------------------------------------------------------------------------------

def adaptive_specs(side: int, quick: bool) -> dict[str, list[AttackSpec]]:
    """The attacks of each run of the adaptive study (see the module docstring), labelled."""
    steps = 2 if quick else ATTACK_STEPS
    queries = 10 if quick else 1000
    linf8 = _labelled(f"pgd-linf:eps=8/255,{_pgd_steps(steps)}", "PGD-Linf 8/255")
    strong = [_labelled(f"apgd-ce:eps=8/255,norm=Linf{',n_iter=3' if quick else ''}", "APGD-CE 8/255"),
              _labelled(f"square:eps=8/255,norm=Linf,n_queries={queries}", f"Square 8/255 ({queries} queries)")]
    l2 = l2_eps(600, side)
    linf16 = _labelled(f"pgd-linf:eps=16/255,{_pgd_steps(steps)}", "PGD-Linf 16/255")
    # against the detector, attacks that return their best iterate (fooled and not rejected): PGD's last may stay
    # detected; PGD-CW's margin loss does not saturate where the detected class dominates (cross-entropy does)
    best = [strong[0], _labelled(f"pgd-cw-linf:eps=8/255{',steps=3' if quick else ''}", "PGD-CW-Linf 8/255")]
    return {"alone-ours": [linf8, *strong], "alone-baseline": [linf8, *strong],
            "detect": [linf8, *best, linf16, _labelled(f"pgd-l2:eps={l2:.4g},{_pgd_steps(steps)}", f"PGD-L2 600 ({l2:.3f})"),
                       _labelled(f"mi-fgsm:eps=16/255,steps={steps}", "MIA-Linf 16/255")],
            "detect-soft": [linf8, *best, linf16], "defend": [linf8, *strong]}


#: The softer BPDA surrogate of the detector (temperature of the soft part sets, x10 the defense's default): a
#: steep sigmoid gives no gradient for parts far from the area threshold, so the adaptive attack is run again
#: through a smoother one (the decision, from the hard sets, is the same).
SOFT_TEMPERATURE = 0.025


def detect_gradient(unmask: UNMASK, x: torch.Tensor) -> dict[str, float]:
    """Does the gradient of ``detect`` (the Jaccard distance, soft part sets through BPDA) reach the input? The
    fraction of images whose gradient is non-zero and the mean L1 norm of the gradients."""
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(unmask.detect(xg).sum(), xg)
    norms = grad.flatten(1).abs().sum(1)
    return {"nonzero_fraction": float((norms > 0).float().mean()), "mean_l1": float(norms.mean()), "n": len(x)}


@torch.no_grad()
def part_shift(unmask: UNMASK, x: torch.Tensor, run_dir: Path, threat: str) -> dict[str, dict[str, Any]]:
    """Per attack of the stored run ``run_dir`` under ``threat``, over the valid examples that changed M's label:
    the Jaccard distance of the clean image's parts and of the adversarial example's parts to the parts of M's
    new class, and the fraction that passes the test (not rejected)."""
    _, adv = _run_records(run_dir)
    out: dict[str, dict[str, Any]] = {}
    for (t, key), recs in adv.items():
        if t != threat:
            continue
        chosen = [r for r in recs.values() if r["valid"] and r["pred_base_adv"] != r["label"]]
        if not chosen:
            out[key] = {"n_fooled": 0}
            continue
        files: dict[str, dict[str, torch.Tensor]] = {}
        xa = []
        for r in chosen:
            if r["adv_file"] not in files:
                files[r["adv_file"]] = load_file(str(run_dir / r["adv_file"]))
            f = files[r["adv_file"]]
            xa.append(f["x_adv"][(f["idx"] == r["idx"]).nonzero()[0, 0]])
        idx = torch.tensor([r["idx"] for r in chosen])
        new = torch.tensor([r["pred_base_adv"] for r in chosen])
        v = unmask.attributes[new]
        d_clean = jaccard_distance(unmask.part_sets(x[idx]), v).diagonal().float()
        d_adv = jaccard_distance(unmask.part_sets(torch.stack(xa)), v).diagonal().float()
        passed = [r["pred_defense_adv"][0] != REJECT for r in chosen]
        out[key] = {"n_fooled": len(chosen), "d_clean_to_new_class": float(d_clean.mean()),
                    "d_adv_to_new_class": float(d_adv.mean()), "passes": _mean(passed),
                    "clean_parts_would_pass": float((d_clean < unmask.threshold).float().mean())}
    return out


#: Systems whose oblivious (gray-box) rows come from another system's stored examples: the defense mode's gray-box
#: attacker attacks M alone, with the attacks and seeds of "alone-ours", so its examples are exactly those (made once,
#: not twice: ~0.5-1 h of PGD, APGD, Square and their budget check on the 4-block network).
OBLIVIOUS_FROM = {"defend": "alone-ours"}


def _reuse_oblivious(defense: UNMASK, data: Any, out: Path, name: str, specs: list[AttackSpec],
                     command: str) -> tuple[Report, list[dict[str, Any]], list[Flag]]:
    """System ``name``'s gray-box rows: ``defense`` on the stored examples of :data:`OBLIVIOUS_FROM` ``[name]``
    (``out/<name>-oblivious``) and of its budget check (``out/<name>-oblivious-budget-x2``); returns that report,
    the budget comparisons and the flags (not ``GRAY_BOX_ONLY``: the system is attacked adaptively in its own run)."""
    src, b = out / OBLIVIOUS_FROM[name], f"budget-x{BUDGET_FACTOR}"
    ob = reevaluate(defense, data, src, out_dir=out / f"{name}-oblivious", progress=False, command=command)
    ob2 = reevaluate(defense, data, src / b, out_dir=out / f"{name}-oblivious-{b}", progress=False, command=command)
    checked = compare_budgets(ob.rows, ob2.rows, {s.with_budget(BUDGET_FACTOR).key: s for s in strongest_per_attack(specs)},
                              factor=BUDGET_FACTOR)
    return ob, checked, [f for f in [*ob.flags, *ob2.flags] if f.code != "GRAY_BOX_ONLY"] + check_budget(checked)


def adaptive_study(out: str | Path, *, quick: bool = False, seed: int = 0, runs_dir: str | Path = "runs",
                   data_root: Any = None, limit: int | None = None, log: Log = print) -> dict[str, Any]:
    """The adaptive attacker on UNMASK with "Ours" (see the module docstring)."""
    t_start = time.perf_counter()
    meta = run_metadata(seed)
    out = Path(out)
    ext_p, clf_p = unmask_presets(quick)
    cs = QUICK_SETS[0] if quick else ADAPTIVE_SET
    get = lambda p: ensure_model(p, runs_dir, seed=seed, data_root=data_root, log=log)  # noqa: E731
    extractor, eck = get(ext_p)
    (ours, ock), (base, bck) = get(clf_p[(cs, "ours")]), get(clf_p[(cs, "baseline")])
    for m in (extractor, ours, base):
        m.eval()
    n = limit or (8 if quick else ADAPTIVE_N)
    test: PartData = part_dataset(clf_p[(cs, "ours")].data, "test", root=data_root).subset(range(n))
    data = test.image_data()
    specs = adaptive_specs(test.images.shape[-1], quick)
    systems: dict[str, tuple[torch.nn.Module, str, dict[str, Any]]] = {
        "alone-ours": (NoDefense(ours), "gray-box", ock), "alone-baseline": (NoDefense(base), "gray-box", bck),
        "detect": (_unmask(ours, extractor, cs, "detect", ext_p.area_threshold), "gray-box,adaptive", ock),
        "detect-soft": (_unmask(ours, extractor, cs, "detect", ext_p.area_threshold, temperature=SOFT_TEMPERATURE),
                        "adaptive", ock),
        "defend": (_unmask(ours, extractor, cs, "defend-max", ext_p.area_threshold), "adaptive", ock)}
    rows: list[dict[str, Any]] = []
    budget_rows: list[dict[str, Any]] = []
    flags: list[dict[str, Any]] = []
    clean: dict[str, dict[str, Any]] = {}
    run_dirs = [out / k for k in systems] + [out / k / f"budget-x{BUDGET_FACTOR}{e}" for k in systems for e in ("", "-eot")]
    for name, (defense, threats, ck) in systems.items():
        common = dict(seed=seed, batch_size=50, progress=False, command=meta["command"], checkpoint_meta=ck,
                      save_adversarial=name in ("detect", *OBLIVIOUS_FROM.values()),
                      **({"sanity": default_sanity(defense) + ",steps=5"} if quick else {}),
                      **({"detector_weight": DETECTOR_WEIGHTS} if contract_of(defense).rejects else {}))
        log(f"[unmask-adaptive] {name}: {len(specs[name])} attacks ({threats}) on {n} images")
        rep = evaluate(defense, data, specs[name], threats, out_dir=out / name, **common)
        checked, bflags = budget_check(defense, data, rep, strongest_per_attack(specs[name]), out_dir=out / name,
                                       **common)
        found = [*rep.flags, *bflags]
        reports = [rep]
        if name in OBLIVIOUS_FROM:
            log(f"[unmask-adaptive] {name}: gray-box rows on the stored examples of {OBLIVIOUS_FROM[name]}")
            ob, ob_checked, ob_flags = _reuse_oblivious(defense, data, out, name, specs[name], meta["command"])
            checked, reports = checked + ob_checked, [ob, rep]
            found += ob_flags + check_transfer_vs_adaptive([*ob.rows, *rep.rows])
            run_dirs += [out / f"{name}-oblivious", out / f"{name}-oblivious-budget-x{BUDGET_FACTOR}"]
        budget_rows += [{**c, "defense": name} for c in checked]
        flags += [{**f.to_dict(), "run": name} for f in found]
        clean[name] = {"accuracy": rep.clean["defense_clean_acc"], "rejected": rep.clean.get("false_positive_rate")}
        rows += [{"system": name, "attack": r["label"], "threat": r["threat"], "sanity": r["sanity"],
                  "defense_acc": r["defense_acc"], "robust_acc": r["robust_acc"], "attack_acc": r["attack_acc"],
                  "detection_rate": r.get("detection_rate"), "detection_auc": r.get("detection_auc"),
                  "defense_acc_rejected_failed": r.get("defense_acc_rejected_failed"), "n_correct": r["n_correct"],
                  "samples_per_gradient": r["samples_per_gradient"]} for report in reports for r in report.rows]
    detector = systems["detect"][0]
    assert isinstance(detector, UNMASK)
    labels = {s.key: s.display for s in specs["detect"]}
    shift = {t: {labels.get(k, f"sanity ({k.split(':')[0]})"): v
                 for k, v in part_shift(detector, data.images, out / "detect", t).items()} for t in ("gray-box", "adaptive")}
    gradient = {}
    for name in ("detect", "detect-soft"):
        u = systems[name][0]
        assert isinstance(u, UNMASK)
        gradient[name] = g = detect_gradient(u, data.images)
        if g["nonzero_fraction"] == 0:
            flags.append({"code": "DETECTOR_GRADIENT_ZERO", "severity": "error", "run": name,
                          "message": "the gradient of detect() is zero on every test image: the adaptive attacker "
                                     "gets no signal from the detector"})
    meta.update(study="unmask-adaptive", class_set=cs, n_images=n, threshold=REFERENCE_THRESHOLD,
                area_threshold=ext_p.area_threshold,
                temperatures={"detect": detector.temperature, "detect-soft": SOFT_TEMPERATURE},
                attacks={k: [s.to_dict() for s in v] for k, v in specs.items()},
                clean=clean, part_shift=shift,
                detect_gradient=gradient, thesis={k: _thesis_row(k, cs) for k in ("ours", "baseline")},
                models=_keep_records(out, {ext_p.name: eck, clf_p[(cs, "ours")].name: ock,
                                           clf_p[(cs, "baseline")].name: bck}),
                budget_check=budget_rows, flags=flags, data_note=_data_note(data_root),
                wall_time_s=round(time.perf_counter() - t_start, 2), **harness_provenance(run_dirs))
    _write_adaptive(out, rows, meta)
    return meta


def _write_adaptive(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    fm: dict[str, Any] = {k: pct for k in ("oblivious", "adaptive", "det_ob", "det_ad", "fail_ad")}
    fm["survives"] = lambda v: "-" if v is None else f"{100 * v:.0f}%"
    by = {(r["system"], r["attack"], r["threat"]): r for r in rows if not r["sanity"]}
    surv = []
    for (system, attack, threat), a in by.items():
        if threat != "adaptive":
            continue
        r = by.get((system.replace("-soft", ""), attack, "gray-box"), {})
        ob, ad = r.get("defense_acc"), a["defense_acc"]
        surv.append({"system": system, "attack": attack, "oblivious": ob, "adaptive": ad,
                     "survives": ad / ob if ob and ad is not None else None, "det_ob": r.get("detection_rate"),
                     "det_ad": a.get("detection_rate"), "fail_ad": a.get("defense_acc_rejected_failed")})
    table = markdown_table(surv, ["system", "attack", "oblivious", "adaptive", "survives", "det_ob", "det_ad", "fail_ad"],
                           ["UNMASK mode", "attack", "accuracy, oblivious", "accuracy, adaptive", "adaptive / oblivious",
                            "detected, oblivious", "detected, adaptive", "adaptive, a rejection counted as failed"], fm)
    alone = [{"attack": a, **{m: by.get((f"alone-{m}", a, "gray-box"), {}).get("defense_acc") for m in ("ours", "baseline")}}
             for a in dict.fromkeys(r["attack"] for r in rows if r["system"].startswith("alone") and not r["sanity"])]
    atable = markdown_table(alone, ["attack", "ours", "baseline"], ["attack on M alone", MODEL_NAMES["ours"],
                                                                   MODEL_NAMES["baseline"]],
                            {"ours": pct, "baseline": pct})
    shift_rows = [{"threat": t, "attack": k, **v} for t, per in meta["part_shift"].items() for k, v in per.items()]
    stable = markdown_table(shift_rows, ["threat", "attack", "n_fooled", "d_clean_to_new_class", "d_adv_to_new_class",
                                         "clean_parts_would_pass", "passes"],
                            ["examples", "attack", "examples fooling M", "d(clean parts, new class)",
                             "d(adversarial parts, new class)", "clean parts would pass", "pass the test"],
                            {"d_clean_to_new_class": lambda v: "-" if v is None else f"{v:.3f}",
                             "d_adv_to_new_class": lambda v: "-" if v is None else f"{v:.3f}",
                             "clean_parts_would_pass": pct, "passes": pct})
    th = meta["thesis"]
    g = meta["detect_gradient"]["detect"]
    gs = meta["detect_gradient"]["detect-soft"]
    temps = meta["temperatures"]
    ctable = markdown_table([{"system": k, **v} for k, v in meta["clean"].items()], ["system", "accuracy", "rejected"],
                            ["system", "clean accuracy", "clean rejected"], {"accuracy": pct, "rejected": pct})
    intro = (
        f"What the thesis left out ({meta['class_set']}, first {meta['n_images']} test images of the generated part "
        f"data, UNMASK with {MODEL_NAMES['ours']}, threshold d >= {meta['threshold']}): the attacker who knows UNMASK. "
        "*Oblivious* = made against M alone (the thesis' setting, Table 7); *adaptive* = against the whole system: in "
        "detection mode classifier and detector together (Carlini and Wagner's construction in the harness: once M is "
        "fooled, the Jaccard distance to the parts of M's new class is pushed under the threshold; its gradient flows "
        "through K's soft part sets by BPDA; `detect-soft`: the same through a 10x smoother surrogate, the same "
        "decisions; APGD-CE and PGD-CW (the margin loss) beside PGD because they return their best iterate, fooled "
        "and not rejected, where PGD returns its last, which the detector may still catch, and PGD-CW's loss does not "
        "saturate where the detected class dominates; every adaptive attack on the detector restarted with detector "
        f"weights {', '.join(f'{w:g}' for w in DETECTOR_WEIGHTS)} on the examples the previous weight left), in "
        "defense mode through the parts' similarities (soft sets by BPDA). "
        "Accuracy: the harness's protocol (images M classifies correctly; a rejection counts as defended, and as "
        "failed in its own column); *detected* = the share of those images' adversarial examples that are rejected, "
        "whether or not they fool M (Table 7's detection counts only the examples that fool M). The thesis reports "
        "for this set UNMASK accuracy "
        f"{th['ours']['pgd-linf 8']:.2f}% (Ours) / {th['baseline']['pgd-linf 8']:.2f}% (baseline) under PGD-Linf 8 "
        f"and {th['ours']['no_defense']:.2f}% / {th['baseline']['no_defense']:.2f}% undefended (mean of its 8 attacks).")
    sections = [
        "## Data", meta["data_note"],
        "## How much of UNMASK's robustness survives an attacker who knows it", table,
        "## Is the denoising network itself robust? M alone under PGD, APGD-CE and Square (gradient-free)", atable,
        "## Does the attacker move K's parts? (detection mode, stored examples)",
        (f"The gradient of `detect` (soft part sets through BPDA, temperature {temps['detect']:g}) is non-zero on "
         f"{pct(g['nonzero_fraction'])} of the test images (mean L1 norm {g['mean_l1']:.3g}; through the softer "
         f"surrogate of `detect-soft`, temperature {temps['detect-soft']:g}: {pct(gs['nonzero_fraction'])}, "
         f"{gs['mean_l1']:.3g}). Over the examples that change M's label: the Jaccard "
         "distance of K's parts to the parts of M's new class, for the clean image and for the adversarial example, "
         "and the share that passes the test."), stable,
        "## Clean accuracy", ctable,
        "## Models", _models_table(meta["models"]) + "\n\nTraining records: `checkpoints/`.",
        *check_sections(meta, "Each attack's strongest row again with twice its iterations or queries on the same "
                        "images; enough = the accuracy moves by at most one standard error.", defense_name=str)]
    write_results(out, title="UNMASK against an adaptive attacker", intro=intro, sections=sections, rows=rows, meta=meta)


STUDIES: dict[str, Callable[..., dict[str, Any]]] = {"unmask-table6": table6_study, "unmask-table7": table7_study,
                                                     "unmask-adaptive": adaptive_study}
#: The datasets each study runs on (``None``: its own generated data, no ``--dataset``).
DATASETS: dict[str, tuple[str, ...] | None] = {"unmask-table6": ("cifar10",), "unmask-table7": None,
                                               "unmask-adaptive": None}
