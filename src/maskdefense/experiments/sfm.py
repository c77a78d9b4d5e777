"""SFM-Defense (Yu, Wang et al. 2022) experiments: Tables 1, 2, 7, 8 and Figures 3-5 of the paper on CIFAR-10
(SVHN and Tiny-ImageNet with ``--dataset svhn`` / ``--dataset tiny-imagenet`` where their data exists: Tables 3-6
and Table 7's other rows; the classifier is the dataset's of :data:`~maskdefense.papers.sfm.CLASSIFIER`, its CPU
presets those of :mod:`maskdefense.papers.sfm`), beside the paper's numbers.

Studies (``maskdefense reproduce <name> --dataset cifar10``; each trains what it needs into ``runs/`` and resumes
from its harness records; results in ``results/<name>-<dataset>/``):

* ``sfm-models``: the models behind every number: the undefended ResNet-18/2 (preset ``resnet18-cifar10-cpu``,
  also the pre-trained target model of Section 5.1), the transfer surrogate (the same preset with seed + 1),
  and masker + classifier trained by Algorithm 1 with each preprocessing (bit depth, median, non-local means).
* ``sfm-tables``: Tables 1 (black box) and 2 (gray box). Black box: PGD, MIM and Diverse (M-DI2-FGSM) at Linf
  8/255 and 16/255 made once on the surrogate and every defense evaluated on the stored examples. Gray box
  (Section 6.1 (2): the attacker knows the target model -- and the masker of SFM-Defense -- but not the
  preprocessing): FGSM, PGD and CW made against the undefended classifier (Vanilla; FS and TVM evaluated on the
  same stored examples: their attacker knows the classifier, not the squeezing), and against masker +
  classifier for each SFM-Defense variant (each has its own masker and classifier: its own attack).
* ``sfm-whitebox``: Table 7 and beyond: the adaptive attacker (BPDA through the preprocessing, EOT over TVM's
  randomness) on SFM-Defense (main preprocessing), FS and TVM (the paper's attacks on all three), with
  APGD-CE and the gradient-free Square on SFM-Defense and FS.
* ``sfm-cost``: Table 8 as ratios to the undefended model: training seconds from the training records,
  defending time from timed passes.
* ``sfm-w1``: Figure 3, the sweep of w1 (short training per point); ``sfm-ablation``: Figure 5, the loss
  without its semantic or reconstruction term; ``sfm-samples``: Figure 4, defended samples.

Accuracy in the tables is the *robust accuracy* over all n test images (the defense is right on the clean
image and on its adversarial example; mean and std over 3 evaluations of a randomized defense): the paper's
"accuracy of the adversarial examples on the target model" up to the rare images wrong clean and right
attacked. The harness's accuracy on the correctly classified images is in results.json beside it.

Sizes and compute on this 2-core CPU (estimated from ResNet-18/2 forward+backward at ~0.44 s per 128 images,
the masker at ~1.5x that, the preset training times; the main preprocessing, median, gets every row):

==============  =====================================================================================  ========
sfm-models      surrogate (~34 min), SFM bits and median (8 epochs, ~50 min each), nlm (4, ~52 min)    ~3 h 05
sfm-tables      black box n=500: 6 attacks on the surrogate (~5 min), 7 reevaluations (~2 min);        ~45 min
                gray box n=300: on Vanilla (~3 min, FS/TVM reevaluated), on each SFM's masker +
                classifier (~7 min each); budget check on the first 100 (PGD, MIM, Diverse at 16/255 on
                the surrogate ~2 min; PGD-16 and CW on Vanilla ~3.5 min and on SFM main ~8.5 min)
sfm-whitebox    SFM main n=100: suite + APGD-CE (50 iterations) + Square (500 queries) ~6 min, budget    ~2 h 10
                check of each attack ~12-22 min (CW x2 and APGD x2 are 4x: steps and restarts or binary
                search); FS main n=100 ~40% of that; TVM n=50, the suite (8 draws per gradient) ~16 min,
                its budget check ~1 h 30 (CW x2 is 8x: binary search, steps and EOT draws)
sfm-cost        timed passes over 2000 test images x 8 defenses x 3 rounds                              ~3 min
sfm-w1          4 points x 1 epoch of Algorithm 1 (~6.5 min) + gray-box PGD-8 n=200 (~1 min) per         ~32 min
                point, black box on the stored examples; budget check at w1 = 2.5e-3 (~2 min)
sfm-ablation    2 more points of 1 epoch (w2 = 0, w3 = 0; "complete" is the w1 = 2.5e-3 point)            ~14 min
sfm-samples     one figure                                                                             < 1 min
==============  =====================================================================================  ========

About 6 h 50 with ``bench/bench_sfm.py`` (~2 min). The bit-depth and non-local means variants cost ~2 h of it
(their training, ~1 h 45, and gray-box rows): without them (``VARIANTS``) the issue takes ~4 h 55; without the
non-local means one alone (4 epochs, the weakest trained) ~5 h 50.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..attacks import AttackSpec, parse_attack_spec, parse_attacks
from ..checkpoint import read_sidecar
from ..data import load_dataset
from ..defenses.base import Defense, contract_of
from ..defenses.registry import build_defense
from ..eval import evaluate
from ..eval.budget import BUDGET_FACTOR, budget_check, check_budget, compare_budgets, strongest_per_attack
from ..eval.harness import Report
from ..eval.reuse import reevaluate
from ..models.masker import apply_masker
from ..ops.squeeze import TVM
from ..papers.sfm import (ABLATION, CLASSIFIER, DEFENSE_SPECS, FIG3_CLAIMS, FIG4_CLAIMS, FIG5_CLAIMS, LOSS_WEIGHTS,
                          MAIN_PREPROCESS, NOT_RUN, PREPROCESS, SWEEP_W1, TABLES, TIME_COST, WHITE_BOX)
from ..provenance import run_metadata
from ..results import markdown_table, save_figure, write_results
from ..training.presets import create_preset
from .common import (MissingRunError, check_sections, checkpoint_record, ensure_model, ensure_sfm, flag_lines,
                     harness_provenance, keep_training_records)

Log = Callable[[str], None]

#: The preprocessings of the SFM-Defense rows (each a trained masker + classifier) and the main one (every row).
VARIANTS = tuple(PREPROCESS)
MAIN = MAIN_PREPROCESS
#: Test images per use (the first n of the test split; quick: the embedded digits).
SIZES = {"black": 500, "gray": 300, "budget": 100, "white": 100, "white_tvm": 50, "sweep_gray": 200,
         "cost": 2000, "samples": 8, "stats": 1000}
QUICK_SIZES = {"black": 16, "gray": 12, "budget": 6, "white": 6, "white_tvm": 4, "sweep_gray": 6, "cost": 64,
               "samples": 4, "stats": 64}
#: Quick mode: a few steps of every attack.
QUICK_OVERRIDES = ("pgd-linf:steps=3;mi-fgsm:steps=3;di-mi-fgsm:steps=3;cw-l2:steps=4,binary_search_steps=2;"
                   "apgd-ce:n_iter=3;square:n_queries=10")
#: The white-box study's attacks beyond the paper's (Linf 8/255): APGD-CE (50 iterations) and Square (500 queries).
WHITE_EXTRA = {"APGD-CE-8": "apgd-ce:eps=8/255,norm=Linf,n_iter=50",
               "Square-8": "square:eps=8/255,norm=Linf,n_queries=500"}
#: Rounds of the timed passes of the cost study (the median is reported).
COST_ROUNDS = 3
#: A masked image keeping less than this fraction of its L1 mass counts as "almost all 0s" (Figure 5).
NEAR_ZERO = 0.05
#: A masker keeping at least this fraction of the test images' L1 mass is (nearly) the identity: its rows are FS's.
NEAR_IDENTITY = 0.98


def _masker_verdict(kept: float | None) -> str:
    """What a trained masker does, from the L1 mass it keeps on the test split (the degenerate ends of Section 4.3:
    all-ones masks, the masker does nothing; all-zero masks, the collapse)."""
    if kept is None:
        return "-"
    if kept >= NEAR_IDENTITY:
        return f"identity (keeps >= {NEAR_IDENTITY:.0%}): the SFM rows are FS's"
    return "collapsed (all-zero masks)" if kept < NEAR_ZERO else "sparse"

#: The defenses of the tables, their display names and the paper's row each one stands beside.
NAMES = ("vanilla", *(f"fs-{t}" for t in VARIANTS), "tvm", *(f"sfm-{t}" for t in VARIANTS))
_P, _TVM = PREPROCESS, TVM().config()
_SQUEEZER_NAMES = {"bits": "bit depth {bits}".format(**_P["bits"]),
                   "median": "median {size}x{size}".format(**_P["median"]),
                   "nlm": "non-local means {search}-{patch}-{h}".format(**_P["nlm"])}
DISPLAY = {"vanilla": "no defense", "tvm": f"TVM (keep {_TVM['keep']:g}, TV weight {_TVM['weight']:g})",
           **{f"fs-{t}": f"FS: {v}" for t, v in _SQUEEZER_NAMES.items()},
           **{f"sfm-{t}": f"SFM-Defense + {v}" + (" (main)" if t == MAIN else "") for t, v in _SQUEEZER_NAMES.items()}}
PAPER_ROW = {n: "Vanilla" if n == "vanilla" else "TVM" if n == "tvm" else "FS" if n.startswith("fs-") else "Ours"
             for n in NAMES}
PAPER_ORDER = ("Vanilla", "FS", "TVM", "Quilt", "PixelDefend", "Sensitivity", "Ours")


class _Lab:
    """The models and defenses of one study run on ``dataset`` (the embedded digits in quick mode), trained into
    ``runs_dir`` when missing, each loaded once. A missing dataset fails here, with the data loader's error,
    before anything is trained."""

    def __init__(self, dataset: str, quick: bool, runs_dir: str | Path, seed: int, data_root: Any, log: Log) -> None:
        self.quick, self.ds = quick, "digits" if quick else dataset
        self.runs_dir, self.seed, self.data_root, self.log = runs_dir, seed, data_root, log
        load_dataset(self.ds, "test", root=data_root, limit=1)
        self.sizes = QUICK_SIZES if quick else SIZES
        self.overrides = QUICK_OVERRIDES if quick else None
        self.tvm_spec = "tvm:n_grad=2" if quick else "tvm"
        self._models: dict[str, tuple[Any, dict[str, Any]]] = {}

    def preset(self, role: str, weights: tuple[float, float, float] | None = None) -> Any:
        """The preset of ``role``: ``classifier``, ``surrogate``, ``sfm-<t>``, or ``sweep`` (with ``weights``).
        Quick: the digits CNN (``plain-digits``, 3 epochs; the surrogate with seed + 1) and the digits masker
        (``sfm-digits`` with each preprocessing, 2 epochs, its classifier from scratch: seconds in all)."""
        if self.quick:
            if role in ("classifier", "surrogate"):
                return create_preset("plain-digits", epochs=3, seed_offset=int(role == "surrogate"))
            t = MAIN if role == "sweep" else role.removeprefix("sfm-")
            return create_preset("sfm-digits", preprocess=PREPROCESS[t], epochs=2, init=None,
                                 **({"weights": weights} if weights else {}))
        net = CLASSIFIER[self.ds]
        names = {"classifier": f"{net}-{self.ds}-cpu", "surrogate": f"{net}-{self.ds}-surrogate-cpu",
                 "sweep": f"sfm-{self.ds}-{MAIN}-sweep-cpu"}
        return create_preset(names.get(role, f"sfm-{self.ds}-{role.removeprefix('sfm-')}-cpu"),
                             **({"weights": weights} if weights else {}))

    def _get(self, key: str, make: Callable[[], tuple[Any, dict[str, Any]]]) -> tuple[Any, dict[str, Any]]:
        if key not in self._models:
            self._models[key] = make()
        return self._models[key]

    def model(self, role: str) -> tuple[nn.Module, dict[str, Any]]:
        """``classifier`` or ``surrogate``: the network and its metadata."""
        return self._get(role, lambda: ensure_model(self.preset(role), self.runs_dir, seed=self.seed,
                                                    data_root=self.data_root, log=self.log))

    def sfm(self, role: str, weights: tuple[float, float, float] | None = None) -> tuple[dict[str, nn.Module], dict]:
        """``sfm-<t>`` (or ``sweep`` with ``weights``): ``({"classifier", "masker"}, metadata)``."""
        key = role if weights is None else f"{role}-{weights}"
        return self._get(key, lambda: ensure_sfm(self.preset(role, weights), self.runs_dir, seed=self.seed,
                                                 data_root=self.data_root, log=self.log))

    def spec(self, name: str, meta: dict[str, Any] | None = None) -> str:
        """The defense spec of ``name`` (``maskdefense evaluate --defense``); an SFM-Defense names its masker's
        checkpoint (``meta``: of a sweep point)."""
        if name == "vanilla":
            return "none"
        if name == "tvm":
            return self.tvm_spec
        kind, t = name.split("-", 1)
        if kind == "fs":
            return f"squeeze:{DEFENSE_SPECS[t]}"
        return f"sfm:masker={(meta or self.sfm(name)[1])['path']},{DEFENSE_SPECS[t]}"

    def defense(self, name: str, point: tuple[dict[str, nn.Module], dict[str, Any]] | None = None) -> Defense:
        """The defense ``name`` of :data:`NAMES` (``point``: the SFM networks of a sweep point), eval mode."""
        if name.startswith("sfm-"):
            nets, meta = point or self.sfm(name)
            return build_defense(self.spec(name, meta), nets["classifier"]).eval()
        return build_defense(self.spec(name), self.model("classifier")[0]).eval()

    def checkpoint(self, name: str) -> dict[str, Any]:
        """The metadata of the model a defense's numbers stand on (its classifier, or its SFM networks)."""
        return self.sfm(name)[1] if name.startswith("sfm-") else self.model("classifier")[1]

    def test(self, n: int) -> Any:
        return load_dataset(self.ds, "test", root=self.data_root, limit=n)

    def size(self, key: str, limit: int | None = None) -> int:
        return min(self.sizes[key], limit) if limit else self.sizes[key]

    def specs(self, items: str | Iterable[str | AttackSpec]) -> list[AttackSpec]:
        """Attack specs (quick: a few steps each)."""
        return parse_attacks(items, overrides=self.overrides)

    def common(self, meta: dict[str, Any], surrogate: bool = False) -> dict[str, Any]:
        """Keyword arguments of every harness run: seed, batches of 100, the command (and the surrogate)."""
        out: dict[str, Any] = dict(seed=self.seed, batch_size=100, progress=False, command=meta["command"])
        if surrogate:
            out["surrogate"], out["surrogate_meta"] = self.model("surrogate")
        return out

    def records(self) -> dict[str, dict[str, Any]]:
        """What a results file keeps of every model loaded: role -> its checkpoint record."""
        return {k: checkpoint_record(m) for k, (_, m) in self._models.items()}

    def finish(self, out: Path, meta: dict[str, Any], t_start: float) -> None:
        """The run's common metadata: models (and their training records in ``out/checkpoints``), wall time."""
        meta.update(dataset=self.ds, quick=self.quick, models=self.records(),
                    training_records=keep_training_records(out, [m for _, m in self._models.values()]),
                    wall_time_s=round(time.perf_counter() - t_start, 2))


def _labelled(specs: dict[str, str]) -> list[AttackSpec]:
    return [replace(parse_attack_spec(text), label=label) for label, text in specs.items()]


def _acc(v: float | None, std: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f}%" + (f" ± {100 * std:.1f}" if std else "")


def _row(rep: Report, labels: Iterable[str], threat: str) -> dict[str, Any]:
    """The robust accuracy (and std, and the accuracy on the correctly classified images) of each attack label
    of a harness run, with its clean accuracy and n."""
    row: dict[str, Any] = {"n": rep.clean["n"], "Clean": rep.clean["defense_clean_acc"],
                           "Clean_std": rep.clean["defense_clean_std"]}
    found = {r["label"]: r for r in rep.rows if r["threat"] == threat}
    for lab in labels:
        r = found.get(lab)
        if r is not None:
            row.update({lab: r["robust_acc"], f"{lab}_std": r["robust_std"], f"{lab}_defense_acc": r["defense_acc"],
                        f"{lab}_samples_per_gradient": r["samples_per_gradient"], f"{lab}_mean_norm": r["mean_norm"]})
    return row


def _flags(reports: dict[str, Report]) -> list[dict[str, Any]]:
    return [{**f.to_dict(), "run": run} for run, rep in reports.items() for f in rep.flags]


def _reused_budget(out: Path, defenses: dict[str, Defense], data: Any, specs: list[AttackSpec], threat: str,
                   common: dict[str, Any], checkpoint_meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The budget check of attacks made against the first defense's target (gray box) or the surrogate (black
    box) and reused by the others: the attacks with a budget on ``data`` as they are (``out/base``) and with
    x2 budget (``out/x2``), each defense on both, compared (:func:`~maskdefense.eval.budget.compare_budgets`)."""
    specs = [s for s in specs if s.budget]
    first, *rest = defenses
    reports: dict[str, dict[str, Report]] = {}
    for tag, group in (("base", specs), (f"x{BUDGET_FACTOR}", [s.with_budget(BUDGET_FACTOR) for s in specs])):
        src = out / tag / first
        reports[tag] = {first: evaluate(defenses[first], data, group, threat, out_dir=src, save_adversarial=bool(rest),
                                        sanity=None, checkpoint_meta=checkpoint_meta, **common)}
        for name in rest:
            reports[tag][name] = reevaluate(defenses[name], data, src, out_dir=out / tag / name, progress=False,
                                            command=common["command"])
    pairs = {s.with_budget(BUDGET_FACTOR).key: s for s in specs}
    return [{**c, "defense": name} for name in defenses
            for c in compare_budgets(reports["base"][name].rows, reports[f"x{BUDGET_FACTOR}"][name].rows, pairs,
                                     factor=BUDGET_FACTOR)]


def _flag_section(flags: list[dict[str, Any]]) -> str:
    """The integrity flags; ``GRAY_BOX_ONLY`` (every oblivious or transfer run gets it) in one line."""
    only = [f for f in flags if f["code"] == "GRAY_BOX_ONLY"]
    text = flag_lines([f for f in flags if f["code"] != "GRAY_BOX_ONLY"])
    if only:
        text += (f"\n- **GRAY_BOX_ONLY** (warning) on {len(only)} runs: by design, these threats are not white-box "
                 "robustness; the adaptive attacker is the study sfm-whitebox")
    return text


def _budget_flags(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**f.to_dict(), "run": "budget check"} for f in check_budget(rows)]


def _history_seconds(meta: dict[str, Any]) -> list[float]:
    """The training seconds of every epoch of a model (its checkpoint's sidecar: the run's history)."""
    return [float(h["seconds"]) for h in read_sidecar(meta["path"]).get("history", [])]


def _models_study_intro(lab: _Lab) -> str:
    p = lab.preset(f"sfm-{MAIN}")
    return (f"Models on {lab.ds}: the undefended classifier ({lab.preset('classifier').name}), the black-box "
            f"surrogate ({lab.preset('surrogate').name}: the same architecture and recipe, seed + 1), and "
            f"SFM-Defense's masker + classifier trained by Algorithm 1 with each preprocessing (e.g. {p.name}: the "
            f"classifier starts from {p.init or 'scratch (quick run)'}; loss weights (w1, w2, w3) = "
            f"{tuple(p.weights)}, the L1 and L2 norms of the loss over groups of {p.norm_group} images: "
            "`maskdefense.training.tasks.sfm`).")


# ---- sfm-models

def models_study(out: str | Path, *, dataset: str = "cifar10", quick: bool = False, seed: int = 0,
                 runs_dir: str | Path = "runs", data_root: Any = None, log: Log = print) -> dict[str, Any]:
    """Train (or find) every model of the SFM-Defense studies; a table of their training records."""
    t_start, meta, out = time.perf_counter(), run_metadata(seed), Path(out)
    lab = _Lab(dataset, quick, runs_dir, seed, data_root, log)
    rows = []
    for role in ("classifier", "surrogate", *(f"sfm-{t}" for t in VARIANTS)):
        log(f"[sfm-models] {role}")
        m = lab.sfm(role)[1] if role.startswith("sfm-") else lab.model(role)[1]
        p = lab.preset(role)
        seconds = _history_seconds(m)
        rows.append({"role": role, "preset": p.name, "run": Path(m["path"]).parent.name, "epochs": m.get("epochs"),
                     "seed": m.get("seed"), "test_accuracy": m.get("test_accuracy"),
                     "mask_mean": m.get("test_mask_mean"), "kept": m.get("test_kept"),
                     "train_minutes": sum(seconds) / 60 if seconds else None,
                     "masker": _masker_verdict(m.get("test_kept")) if role.startswith("sfm-") else "-",
                     "differs": "; ".join(getattr(p, "differs", ()))})
    (vanilla, _), (surrogate, _) = lab.model("classifier"), lab.model("surrogate")
    x, y = lab.test(lab.size("stats")).tensors()
    with torch.no_grad():
        pv, ps = vanilla(x).argmax(1), surrogate(x).argmax(1)
    agreement = {"n": len(y), "same_prediction": float((pv == ps).float().mean()),
                 "both_right": float(((pv == y) & (ps == y)).float().mean())}
    meta.update(study=f"sfm-models-{lab.ds}", surrogate_agreement=agreement)
    lab.finish(out, meta, t_start)
    table = markdown_table(rows, ["role", "preset", "epochs", "seed", "test_accuracy", "mask_mean", "kept", "masker",
                                  "train_minutes", "differs"],
                           ["model", "preset", "epochs", "seed", "test accuracy (SFM: the whole pipeline)",
                            "mean mask", "L1 mass kept", "masker", "training minutes", "differs from the paper"],
                           {"test_accuracy": _acc, "mask_mean": lambda v: "-" if v is None else f"{v:.3f}",
                            "kept": _acc, "train_minutes": lambda v: "-" if v is None else f"{v:.1f}"})
    sections = ["## Models", table,
                f"Surrogate and classifier agree on {_acc(agreement['same_prediction'])} of the first {agreement['n']} "
                f"test images (both right on {_acc(agreement['both_right'])}): independently trained, not identical.",
                "Training records (per-epoch history and seconds): `checkpoints/`."]
    write_results(out, title=f"SFM-Defense: the models ({lab.ds})", intro=_models_study_intro(lab),
                  sections=sections, rows=rows, meta=meta)
    return meta


# ---- sfm-tables: Tables 1 and 2

def tables_study(out: str | Path, *, dataset: str = "cifar10", quick: bool = False, seed: int = 0,
                 runs_dir: str | Path = "runs", data_root: Any = None, limit: int | None = None,
                 log: Log = print) -> dict[str, Any]:
    """Tables 1 (black box) and 2 (gray box) for no defense, FS with each squeezer, TVM and SFM-Defense with each
    preprocessing, beside the paper's rows (see the module docstring)."""
    t_start, meta, out = time.perf_counter(), run_metadata(seed), Path(out)
    lab = _Lab(dataset, quick, runs_dir, seed, data_root, log)
    n_black, n_gray, n_budget = lab.size("black", limit), lab.size("gray", limit), lab.size("budget", limit)
    test = lab.test(n_black)
    gray_data, budget_data = test.subset(range(n_gray)), test.subset(range(n_budget))
    black_specs, gray_specs = lab.specs("suite:sfm-transfer"), lab.specs("suite:sfm-graybox")
    defenses = {n: lab.defense(n) for n in NAMES}
    common = lab.common(meta, surrogate=True)
    reports: dict[str, Report] = {}
    log(f"[sfm-tables] black box: {len(black_specs)} attacks on the surrogate, {n_black} {lab.ds} test images")
    src = out / "black-box" / "attacks"
    reports["black-box/vanilla"] = evaluate(defenses["vanilla"], test, black_specs, "black-box", out_dir=src,
                                            save_adversarial=True, sanity=None,
                                            checkpoint_meta=lab.checkpoint("vanilla"), **common)
    for n in NAMES[1:]:
        log(f"[sfm-tables] black box: {n} on the stored examples")
        reports[f"black-box/{n}"] = reevaluate(defenses[n], test, src, out_dir=out / "black-box" / n, progress=False,
                                               command=meta["command"])
    log(f"[sfm-tables] gray box: {len(gray_specs)} attacks on the classifier, {n_gray} images")
    src = out / "gray-box" / "vanilla"
    reports["gray-box/vanilla"] = evaluate(defenses["vanilla"], gray_data, gray_specs, "gray-box", out_dir=src,
                                           save_adversarial=True, sanity=None,
                                           checkpoint_meta=lab.checkpoint("vanilla"), **common)
    for n in NAMES:
        if n.startswith(("fs-", "tvm")):
            reports[f"gray-box/{n}"] = reevaluate(defenses[n], gray_data, src, out_dir=out / "gray-box" / n,
                                                  progress=False, command=meta["command"])
        elif n.startswith("sfm-"):
            log(f"[sfm-tables] gray box: {len(gray_specs)} attacks on {n}'s masker + classifier")
            reports[f"gray-box/{n}"] = evaluate(defenses[n], gray_data, gray_specs, "gray-box",
                                                out_dir=out / "gray-box" / n, sanity=None,
                                                checkpoint_meta=lab.checkpoint(n), **common)
    log(f"[sfm-tables] budget check (x{BUDGET_FACTOR}) on the first {n_budget} images")
    checked = [n for n in NAMES if not quick or n in ("vanilla", f"fs-{MAIN}", f"sfm-{MAIN}")]  # quick: fewer runs
    plain = {n: defenses[n] for n in checked if not n.startswith("sfm-")}
    budget_rows = _reused_budget(out / "budget" / "black-box", {n: defenses[n] for n in checked}, budget_data,
                                 strongest_per_attack(black_specs), "black-box", common, lab.checkpoint("vanilla"))
    budget_rows += _reused_budget(out / "budget" / "gray-box", plain, budget_data, strongest_per_attack(gray_specs),
                                  "gray-box", common, lab.checkpoint("vanilla"))
    budget_rows += _reused_budget(out / "budget" / "gray-box", {f"sfm-{MAIN}": defenses[f"sfm-{MAIN}"]}, budget_data,
                                  strongest_per_attack(gray_specs), "gray-box", common, lab.checkpoint(f"sfm-{MAIN}"))
    rows = []
    for threat, specs in (("black-box", black_specs), ("gray-box", gray_specs)):
        for n in NAMES:
            rep = reports[f"{threat}/{n}"]
            rows.append({"threat": threat, "defense": n, "method": DISPLAY[n], "paper_row": PAPER_ROW[n],
                         "target": rep.summary.get("targets", {}).get(threat, {}).get("target"), "spec": lab.spec(n),
                         **_row(rep, [s.display for s in specs], threat)})
    meta.update(study=f"sfm-tables-{lab.ds}", main=MAIN, variants=list(VARIANTS),
                n_images={"black-box": n_black, "gray-box": n_gray, "budget": n_budget}, budget_defenses=checked,
                attacks={"black-box": [s.to_dict() for s in black_specs],
                         "gray-box": [s.to_dict() for s in gray_specs]},
                attack_overrides=lab.overrides, budget_check=budget_rows,
                flags=_flags(reports) + _budget_flags(budget_rows),
                paper={f"table{TABLES[k][0]}": TABLES[k][1] for k in TABLES if k[0] == dataset},
                **harness_provenance(p.parent for p in out.glob("**/run.json")))
    lab.finish(out, meta, t_start)
    _write_tables(out, rows, meta, dataset)
    return meta


def _paper_table(dataset: str, threat: str) -> tuple[int | None, dict[str, dict[str, float]]]:
    number, rows = TABLES.get((dataset, threat), (None, {}))
    return number, rows


def _tables_section(rows: list[dict[str, Any]], threat: str, dataset: str, labels: list[str]) -> str:
    number, paper = _paper_table(dataset, threat)
    shown = []
    for method in PAPER_ORDER:
        if method in paper:
            source = f"paper Table {number}" + (" (not run)" if method in NOT_RUN else "")
            shown.append({"method": method, "source": source, **{c: _acc(v) for c, v in paper[method].items()}})
        for r in rows:
            if r["threat"] == threat and r["paper_row"] == method:
                shown.append({"method": r["method"], "source": f"ours (n={r['n']})",
                              **{c: _acc(r.get(c), r.get(f"{c}_std")) for c in ["Clean", *labels]}})
    cols = ["method", "source", "Clean", *labels]
    return markdown_table(shown, cols, cols, {c: str for c in cols}) + "\n" + "\n".join(
        f"- {m}, not run here: {why}." for m, why in NOT_RUN.items() if m in paper)


def _plot_tables(out: Path, rows: list[dict[str, Any]], dataset: str, labels: dict[str, list[str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for ax, threat in zip(axes, ("black-box", "gray-box")):
        cols = ["Clean", *labels[threat]]
        for r in (r for r in rows if r["threat"] == threat):
            ax.plot(cols, [100 * r[c] if r.get(c) is not None else float("nan") for c in cols], "o-",
                    lw=2.5 if r["defense"] == f"sfm-{MAIN}" else 1, label=r["method"])
        number, paper = _paper_table(dataset, threat)
        for method, style in (("Vanilla", "k--"), ("Ours", "r--")):
            if method in paper:
                ax.plot(cols, [100 * paper[method][c] for c in cols], style, label=f"paper: {method}")
        ax.set_title(f"{threat}" + (f" (paper Table {number})" if number else ""))
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.tick_params(axis="x", labelrotation=30)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_figure(fig, out / "tables.png")
    plt.close(fig)


def _write_tables(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any], dataset: str) -> None:
    labels = {t: [a["label"] for a in meta["attacks"][t]] for t in ("black-box", "gray-box")}
    _plot_tables(out, rows, dataset, labels)
    nb, ng, nbud = (meta["n_images"][k] for k in ("black-box", "gray-box", "budget"))
    # the paper's tables of this dataset: 1 and 2 on CIFAR-10, 3 and 4 on SVHN, 5 and 6 on Tiny-ImageNet
    tb, tg = (_paper_table(dataset, t)[0] or n for t, n in (("black-box", 1), ("gray-box", 2)))
    intro = (
        f"SFM-Defense, Tables {tb} and {tg} of the paper ({meta['dataset']}): robust accuracy (the defense right on "
        "the clean image and on its adversarial example, over all n test images; mean ± std over 3 evaluations for "
        "TVM, which is randomized) beside the paper's accuracy on the adversarial test images. All attacks are "
        "Linf (the number after the name: eps x 255); PGD and MIM: 30 steps of 1/255 (Section 6.1 (3)); Diverse: "
        "M-DI2-FGSM (momentum + diverse inputs, p 0.5; the paper gives no parameters); CW: L2, unbounded, 5 binary "
        f"search steps x 20 iterations, initial constant 0.1 (its mean L2 norm is in results.json). The main "
        f"preprocessing is {MAIN} (the paper does not say which one its 'Ours' row uses). Quilt, PixelDefend and "
        "Sensitivity appear as the paper's numbers only.")
    if meta.get("attack_overrides"):
        intro += f" **Quick run** on {meta['dataset']}: attacks shortened (`{meta['attack_overrides']}`)."
    sections = [
        f"## Table {tb}: black box", (
            f"Transfer (Section 6.1 (2)): the adversarial examples of the first {nb} test images are made once on the "
            "surrogate, an independently trained model of the classifier's architecture and recipe (seed + 1; "
            "`sfm-models`), and every defense classifies the same stored examples."),
        _tables_section(rows, "black-box", dataset, labels["black-box"]),
        f"## Table {tg}: gray box", (
            f"First {ng} test images. The attacker knows the target model (Section 6.1 (2)) but not the "
            "preprocessing: against no defense, FS and TVM the examples are made on the undefended classifier "
            "itself (FS and TVM then classify the stored examples: their attacker does not know the squeezing); "
            "against SFM-Defense the attacker also knows the masker and attacks masker + classifier without the "
            "preprocessing, separately for each variant (each has its own masker and classifier)."),
        _tables_section(rows, "gray-box", dataset, labels["gray-box"]),
        f"![Tables {tb} and {tg}](tables.png)",
        *check_sections(meta, (
            f"The strongest row of each attack with a budget (the 16/255 rows and CW) again with x{BUDGET_FACTOR} "
            f"budget (iterations, binary-search steps) on the first {nbud} test images, the defenses that reuse the "
            "examples evaluated on both; enough = the accuracy on the correctly classified images moves by at most one "
            "standard error. FGSM has no budget. Black box: every defense; gray box: no defense, FS and TVM (on the "
            "classifier's examples) and SFM-Defense with the main preprocessing (quick runs: fewer)."),
            defense_name=DISPLAY.get, flags=_flag_section(meta["flags"])),
        "The models and their training records: `checkpoints/` (and `sfm-models`).",
    ]
    write_results(out, title=f"SFM-Defense Tables {tb} and {tg}: {meta['dataset']}", intro=intro, sections=sections,
                  rows=rows, meta=meta)


# ---- sfm-whitebox: Table 7

def whitebox_study(out: str | Path, *, dataset: str = "cifar10", quick: bool = False, seed: int = 0,
                   runs_dir: str | Path = "runs", data_root: Any = None, limit: int | None = None,
                   log: Log = print) -> dict[str, Any]:
    """The adaptive (white-box) attacker against SFM-Defense (main preprocessing), FS (the same squeezer) and TVM:
    the gray-box suite end to end through BPDA (and EOT over TVM's draws), APGD-CE and Square; the budget check
    of every attack (its strongest row)."""
    t_start, meta, out = time.perf_counter(), run_metadata(seed), Path(out)
    lab = _Lab(dataset, quick, runs_dir, seed, data_root, log)
    gray = lab.specs("suite:sfm-graybox")
    full = lab.specs([*gray, *_labelled(WHITE_EXTRA)])
    plan = {f"sfm-{MAIN}": (full, lab.size("white", limit)), f"fs-{MAIN}": (full, lab.size("white", limit)),
            "tvm": (gray, lab.size("white_tvm", limit))}
    test = lab.test(max(n for _, n in plan.values()))
    common = lab.common(meta)
    sanity = "pgd-linf:eps=0.5,steps=3" if quick else "pgd-linf:eps=0.5"
    reports: dict[str, Report] = {}
    rows, budget_rows, bflags = [], [], []
    for name, (specs, n) in plan.items():
        d, data = lab.defense(name), test.subset(range(n))
        log(f"[sfm-whitebox] {name}: {len(specs)} attacks, adaptive, {n} images")
        reports[name] = rep = evaluate(d, data, specs, "adaptive", out_dir=out / name, sanity=sanity,
                                       checkpoint_meta=lab.checkpoint(name), **common)
        checked, flags = budget_check(d, data, rep, strongest_per_attack(specs), out_dir=out / name, **common)
        budget_rows += [{**c, "defense": name} for c in checked]
        bflags += [{**f.to_dict(), "run": f"{name} budget"} for f in flags]
        rows.append({"defense": name, "method": DISPLAY[name], "spec": lab.spec(name),
                     "target": rep.summary["targets"]["adaptive"]["target"],
                     "bpda": rep.summary["targets"]["adaptive"]["bpda"],
                     **_row(rep, [s.display for s in specs], "adaptive")})
    meta.update(study=f"sfm-whitebox-{lab.ds}", main=MAIN,
                tvm_draws=contract_of(lab.defense("tvm")).samples_per_forward,
                attacks={k: [s.to_dict() for s in v] for k, (v, _) in plan.items()},
                n_images={k: n for k, (_, n) in plan.items()}, attack_overrides=lab.overrides, sanity=sanity,
                budget_check=budget_rows, flags=_flags(reports) + bflags,
                paper={"table7": WHITE_BOX.get(dataset),
                       "table2_ours": _paper_table(dataset, "gray-box")[1].get("Ours")},
                **harness_provenance(p.parent for p in out.glob("**/run.json")))
    lab.finish(out, meta, t_start)
    _write_whitebox(out, rows, meta, [s.display for s in full], dataset)
    return meta


def _write_whitebox(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any], labels: list[str],
                    dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paper7, paper2 = meta["paper"]["table7"] or {}, meta["paper"]["table2_ours"] or {}
    gray = _paper_table(dataset, "gray-box")[0] or 2  # the gray-box table of this dataset (2, 4 or 6)
    cols = ["Clean", *labels]
    shown = [{"method": "paper Table 7: Ours (white box, adaptive)", **{c: _acc(paper7.get(c)) for c in cols}},
             {"method": f"paper Table {gray}: Ours (gray box, for reference)",
              **{c: _acc(paper2.get(c)) for c in cols}}]
    shown += [{"method": f"ours: {r['method']} (n={r['n']})", **{c: _acc(r.get(c), r.get(f"{c}_std")) for c in cols}}
              for r in rows]
    table = markdown_table(shown, ["method", *cols], ["method", *cols], {c: str for c in ["method", *cols]})
    spg = markdown_table(rows, ["method", "bpda", "target", *(f"{c}_samples_per_gradient" for c in labels)],
                         ["defense", "BPDA through", "attacked", *(f"{c}: samples per gradient" for c in labels)])
    fig, ax = plt.subplots(figsize=(9, 4))
    for r in rows:
        ax.plot(cols, [100 * r[c] if r.get(c) is not None else float("nan") for c in cols], "o-", label=r["method"])
    if paper7:
        ax.plot([c for c in cols if c in paper7], [100 * paper7[c] for c in cols if c in paper7], "r--",
                label="paper Table 7: Ours")
    ax.set_ylabel("robust accuracy (%), adaptive")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=8)
    save_figure(fig, out / "whitebox.png")
    plt.close(fig)
    n = meta["n_images"]
    intro = (
        f"SFM-Defense against the adaptive (white-box) attacker ({meta['dataset']}), Table 7 of the paper, and the "
        "same attacks on FS (the same squeezer) and TVM. The attacker knows everything: the gradient goes through "
        "masker and classifier, and through the non-differentiable preprocessing by BPDA (its forward pass exact, "
        "its backward pass the identity; Athalye et al. 2018); TVM is randomized: the log of the mean softmax over "
        f"{meta['tvm_draws']} draws per forward (EOT). Attacks as in Tables {gray - 1}-{gray} (Linf eps x 255 after "
        "the name; CW L2 unbounded), and beyond the paper APGD-CE (AutoAttack's step-size-free PGD, 50 iterations) "
        "and Square (gradient-free, 500 queries): a gradient-free attack beating the gradient ones would mean the "
        "BPDA gradient is poor (flagged). "
        f"First {n[f'sfm-{MAIN}']} test images for SFM-Defense and FS, {n['tvm']} for TVM with the paper's attacks "
        f"only, without APGD-CE and Square (every gradient costs {meta['tvm_draws']} draws of TVM; x2 budget and EOT "
        "in the check). Robust accuracy over all n images.")
    if meta.get("attack_overrides"):
        intro += f" **Quick run**: attacks shortened (`{meta['attack_overrides']}`)."
    sections = ["## Table 7 and beyond", table, "![white box](whitebox.png)", "## The adaptive target", spg,
                *check_sections(meta, f"Every attack's strongest row again with x{BUDGET_FACTOR} budget (iterations, "
                                "restarts, queries, binary-search steps; EOT samples too against TVM) on the same "
                                "images.", defense_name=DISPLAY.get)]
    write_results(out, title=f"SFM-Defense against adaptive attacks (Table 7): {meta['dataset']}", intro=intro,
                  sections=sections, rows=rows, meta=meta)


# ---- sfm-cost: Table 8

def cost_study(out: str | Path, *, dataset: str = "cifar10", quick: bool = False, seed: int = 0,
               runs_dir: str | Path = "runs", data_root: Any = None, log: Log = print) -> dict[str, Any]:
    """Table 8 as ratios to the undefended model: training (the median per-epoch seconds of the training
    records: the classifier's pre-training, Algorithm 1) and defending (timed passes over test images, scaled to
    10,000)."""
    t_start, meta, out = time.perf_counter(), run_metadata(seed), Path(out)
    lab = _Lab(dataset, quick, runs_dir, seed, data_root, log)
    defenses = {n: lab.defense(n) for n in NAMES}
    clf = _history_seconds(lab.checkpoint("vanilla"))
    clf_epoch = statistics.median(clf)  # robust to an epoch slowed by other work on the machine
    paper_train = TIME_COST["Ours"]["training_min"] / TIME_COST["None"]["training_min"]
    training = [{"method": DISPLAY["vanilla"], "epochs": len(clf), "minutes": sum(clf) / 60,
                 "epoch_minutes": clf_epoch / 60, "ratio_equal_epochs": 1.0, "paper_ratio": 1.0}]
    for t in VARIANTS:
        s = _history_seconds(lab.checkpoint(f"sfm-{t}"))
        training.append({"method": DISPLAY[f"sfm-{t}"], "epochs": len(s), "minutes": (sum(clf) + sum(s)) / 60,
                         "epoch_minutes": statistics.median(s) / 60,
                         "ratio_equal_epochs": (clf_epoch + statistics.median(s)) / clf_epoch,
                         "paper_ratio": paper_train})
    x, bs = lab.test(lab.size("cost")).images, 500
    n = len(x)  # the images timed: fewer than asked for on a small test split (a stand-in)
    log(f"[sfm-cost] timed passes over {n} images, {COST_ROUNDS} rounds, {torch.get_num_threads()} threads")
    times: dict[str, list[float]] = {k: [] for k in defenses}
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for d in defenses.values():
            d.predict(x[:bs], generator=g)  # warm-up
        for r in range(COST_ROUNDS):
            for name in (list(defenses) if r % 2 == 0 else list(defenses)[::-1]):
                t0 = time.perf_counter()
                for i in range(0, n, bs):
                    defenses[name].predict(x[i : i + bs], generator=g)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["vanilla"])
    paper = {"vanilla": "None", "fs-bits": "FS(Baseline)", "fs-median": "FS(Baseline)", "fs-nlm": "FS(Baseline)",
             **{f"sfm-{t}": "Ours" for t in VARIANTS}}
    defending = [{"method": DISPLAY[k], "minutes_per_10000": statistics.median(v) * 10000 / n / 60,
                  "ratio": statistics.median(v) / base,
                  "paper_ratio": TIME_COST[paper[k]]["defending_min"] / TIME_COST["None"]["defending_min"]
                  if k in paper else None, "seconds": v} for k, v in times.items()]
    meta.update(study=f"sfm-cost-{lab.ds}", n_images=n, batch_size=bs, rounds=COST_ROUNDS,
                threads=torch.get_num_threads(), paper=TIME_COST, training=training)
    lab.finish(out, meta, t_start)
    f2 = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    ttable = markdown_table(training, ["method", "epochs", "minutes", "epoch_minutes", "ratio_equal_epochs",
                                       "paper_ratio"],
                            ["method", "epochs (classifier; SFM: of Algorithm 1)", "minutes as trained (SFM: with the "
                             "pre-training)", "minutes per epoch", "cost vs the classifier at equal epochs",
                             f"paper ({TIME_COST['Ours']['training_min']} / {TIME_COST['None']['training_min']} min)"],
                            {k: f2 for k in ("minutes", "epoch_minutes", "ratio_equal_epochs", "paper_ratio")})
    dtable = markdown_table(defending, ["method", "minutes_per_10000", "ratio", "paper_ratio"],
                            ["method", "minutes per 10,000 images", "cost vs no defense", "paper (Table 8)"],
                            {"minutes_per_10000": lambda v: f"{v:.3f}", "ratio": f2, "paper_ratio": f2})
    intro = (
        f"Table 8 of the paper ({lab.ds}" + ("" if lab.ds == "cifar10" else "; the paper times CIFAR-10 only: "
                                              "its ratios are CIFAR-10's") +
        ") as ratios to the undefended model, since the paper's minutes are a GPU's. "
        "Training: the paper counts the target model's training and the defense's (50 epochs each: "
        f"{TIME_COST['None']['training_min']} minutes undefended, {TIME_COST['Ours']['training_min']} with "
        f"SFM-Defense, {paper_train:.2f}x); ours from the per-epoch seconds of the training records "
        "(`checkpoints/`; the time of the machine as it was while training), the ratio at equal epochs = "
        "(classifier epoch + Algorithm 1 epoch) / classifier epoch, each the median epoch of its run (an epoch "
        "slowed by other work on the machine moves the mean, not the median). Defending: each defense's decision "
        f"(`predict`, fp32, batches of {bs}) on the first {n} test images, median of {COST_ROUNDS} timed passes "
        f"(alternated, after a warm-up), scaled to 10,000 images; {torch.get_num_threads()} torch threads. The split "
        "between masker, squeezer and classifier: `bench/bench_sfm.py`.")
    sections = ["## Training", ttable, "## Defending", dtable,
                "## Is the attack budget enough?", "No attack in this study."]
    write_results(out, title=f"SFM-Defense time cost (Table 8): {lab.ds}", intro=intro, sections=sections,
                  rows=defending, meta=meta)
    return meta


# ---- sfm-w1 (Figure 3), sfm-ablation (Figure 5)

def _sweep_point(lab: _Lab, weights: tuple[float, float, float]) -> tuple[Defense, dict[str, Any]]:
    point = lab.sfm("sweep", weights)
    return lab.defense(f"sfm-{MAIN}", point), point[1]


def w1_study(out: str | Path, *, dataset: str = "cifar10", quick: bool = False, seed: int = 0,
             runs_dir: str | Path = "runs", data_root: Any = None, limit: int | None = None,
             log: Log = print) -> dict[str, Any]:
    """Figure 3: clean, black-box and gray-box PGD-8 accuracy of SFM-Defense (main preprocessing) for each w1 of
    :data:`~maskdefense.papers.sfm.SWEEP_W1` (the dataset's w2, w3), one short training per point. The black-box
    numbers reuse the stored examples of ``sfm-tables`` in the sibling folder named as ``out`` is (``sfm-w1-<suffix>``
    -> ``sfm-tables-<suffix>``: ``reproduce`` names a quick run's folder ``<study>-quick``; another name:
    ``sfm-tables-<dataset>``); run it first."""
    t_start, meta, out = time.perf_counter(), run_metadata(seed), Path(out)
    lab = _Lab(dataset, quick, runs_dir, seed, data_root, log)
    tables = "sfm-tables" + out.name[len("sfm-w1"):] if out.name.startswith("sfm-w1-") else f"sfm-tables-{lab.ds}"
    source = out.parent / tables / "black-box" / "attacks"
    if not (source / "run.json").exists():
        how = " --quick" if quick else f" --dataset {dataset}"
        raise MissingRunError(f"{source} holds no black-box run: run `maskdefense reproduce sfm-tables{how}` into "
                                f"{source.parent.parent} first")
    test = lab.test(json.loads((source / "run.json").read_text())["config"]["n"])
    n_gray = lab.size("sweep_gray", limit)
    pgd = [s for s in lab.specs("suite:sfm-graybox") if s.display == "PGD-8"]
    common = lab.common(meta)
    w1_paper, w2, w3 = LOSS_WEIGHTS.get(dataset, LOSS_WEIGHTS["cifar10"])
    sweep = SWEEP_W1.get(dataset, SWEEP_W1["cifar10"])
    rows, reports, budget_rows, bflags = [], {}, [], []
    for w1 in sweep:
        d, ck = _sweep_point(lab, (w1, w2, w3))
        tag = f"w1-{w1:g}"
        log(f"[sfm-w1] {tag}: black box on the stored examples, gray-box PGD-8 on {n_gray} images")
        reports[f"{tag}/black-box"] = bb = reevaluate(d, test, source, out_dir=out / tag / "black-box",
                                                      progress=False, command=meta["command"])
        data = test.subset(range(n_gray))
        reports[f"{tag}/gray-box"] = gb = evaluate(d, data, pgd, "gray-box", out_dir=out / tag / "gray-box",
                                                   sanity=None, checkpoint_meta=ck, **common)
        if w1 == w1_paper:  # the paper's value: the budget check of its gray-box PGD
            checked, flags = budget_check(d, data, gb, pgd, out_dir=out / tag / "gray-box", **common)
            budget_rows += [{**c, "defense": tag} for c in checked]
            bflags += [{**f.to_dict(), "run": f"{tag} budget"} for f in flags]
        rows.append({"w1": w1, "clean": bb.clean["defense_clean_acc"], "n_clean": bb.clean["n"],
                     "black_pgd8": bb.row("PGD-8", "black-box")["robust_acc"],
                     "gray_pgd8": gb.row("PGD-8", "gray-box")["robust_acc"], "n_gray": n_gray,
                     **{f"black_{r['label']}": r["robust_acc"] for r in bb.rows},
                     "mask_mean": ck.get("test_mask_mean"), "kept": ck.get("test_kept"),
                     "test_accuracy": ck.get("test_accuracy")})
    meta.update(study=f"sfm-w1-{lab.ds}", source=str(source), w1=list(sweep), w1_paper=w1_paper, w2=w2, w3=w3,
                epochs=lab.preset("sweep").epochs, main_epochs=lab.preset(f"sfm-{MAIN}").epochs,
                budget_check=budget_rows, flags=_flags(reports) + bflags, paper_claims=list(FIG3_CLAIMS),
                **harness_provenance(p.parent for p in out.glob("**/run.json")))
    lab.finish(out, meta, t_start)
    _write_w1(out, rows, meta)
    return meta


def _write_w1(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, lab in (("clean", "clean"), ("black_pgd8", "black box PGD-8"), ("gray_pgd8", "gray box PGD-8")):
        ax.plot([r["w1"] for r in rows], [100 * r[key] if r[key] is not None else float("nan") for r in rows], "o-",
                label=lab)
    ax.set_xscale("log")
    ax.set_xlabel("w1 (sparsity weight)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.legend()
    save_figure(fig, out / "fig3.png")
    plt.close(fig)
    r0 = rows[0]
    table = markdown_table(rows, ["w1", "clean", "black_pgd8", "gray_pgd8", "mask_mean", "kept"],
                           ["w1", f"clean (n={r0['n_clean']})", f"black box PGD-8 (n={r0['n_clean']})",
                            f"gray box PGD-8 (n={r0['n_gray']})", "mean mask (test split)", "L1 mass kept"],
                           {"w1": lambda v: f"{v:g}", "clean": _acc, "black_pgd8": _acc, "gray_pgd8": _acc,
                            "mask_mean": lambda v: "-" if v is None else f"{v:.3f}", "kept": _acc})
    intro = (
        f"Figure 3 of the paper ({meta['dataset']}): SFM-Defense with the {MAIN} preprocessing trained with w1 in "
        f"{meta['w1']} (w2 = {meta['w2']:g}, w3 = {meta['w3']:g}), each point trained for {meta['epochs']} epoch "
        f"of Algorithm 1 from the pre-trained classifier (the tables' models: {meta['main_epochs']} epochs; so these "
        "are shorter-trained points, comparable among themselves). Robust accuracy over all n images under PGD Linf "
        "8/255 (30 steps of 1/255): black box on the stored transfer examples of sfm-tables (the surrogate's, the "
        "same for every point), gray box against each point's masker + classifier. The paper's text gives no values "
        "of the figure, only these claims:\n\n" + "\n".join(f"- {c}" for c in meta["paper_claims"]))
    sections = ["## Ours", "![Figure 3](fig3.png)", table,
                *check_sections(meta, f"The gray-box PGD-8 of the w1 = {meta['w1_paper']:g} point again with x2 steps "
                                "on the same images (the black-box examples' budget is checked in sfm-tables).",
                                flags=_flag_section(meta["flags"]))]
    write_results(out, title=f"SFM-Defense: the sparsity weight w1 (Figure 3): {meta['dataset']}", intro=intro,
                  sections=sections, rows=rows, meta=meta)


@torch.no_grad()
def _mask_stats(masker: nn.Module, x: torch.Tensor, bs: int = 500) -> dict[str, Any]:
    """Per image: the mean of the mask and the fraction of the image's L1 mass the masked image keeps."""
    means, kept = [], []
    for i in range(0, len(x), bs):
        xb = x[i : i + bs]
        xm, m = apply_masker(masker, xb)
        means.append(m.flatten(1).mean(1))
        kept.append(xm.flatten(1).abs().sum(1) / xb.flatten(1).abs().sum(1).clamp_min(1e-12))
    k = torch.cat(kept)
    return {"mask_mean": float(torch.cat(means).mean()), "kept": float(k.mean()),
            "near_zero": float((k < NEAR_ZERO).float().mean()),
            "kept_quartiles": [float(q) for q in torch.quantile(k, torch.tensor([0.25, 0.5, 0.75]))]}


def ablation_study(out: str | Path, *, dataset: str = "cifar10", quick: bool = False, seed: int = 0,
                   runs_dir: str | Path = "runs", data_root: Any = None, log: Log = print) -> dict[str, Any]:
    """Figure 5: the loss without its semantic term (w2 = 0) or its reconstruction term (w3 = 0) against the
    complete loss (the dataset's weights), same short training as the w1 sweep: do the masks collapse to all 0s
    (Section 4.3)? Clean accuracy of the defense, mean mask, kept L1 mass, share of almost-all-0 masked images, and
    samples."""
    t_start, meta, out = time.perf_counter(), run_metadata(seed), Path(out)
    lab = _Lab(dataset, quick, runs_dir, seed, data_root, log)
    w1, w2, w3 = LOSS_WEIGHTS.get(dataset, LOSS_WEIGHTS["cifar10"])
    data = lab.test(lab.size("stats"))
    x, y = data.tensors()
    rows, shown = [], {}
    n_classes = len(data.classes)
    for setting, (k2, k3) in ABLATION.items():
        log(f"[sfm-ablation] {setting}")
        weights = (w1, w2 * k2, w3 * k3)
        d, ck = _sweep_point(lab, weights)
        with torch.no_grad():
            pred = torch.cat([d.predict(x[i : i + 500], generator=torch.Generator().manual_seed(seed))
                              for i in range(0, len(x), 500)])
        rows.append({"setting": setting, "weights": list(weights), "clean": float((pred == y).float().mean()),
                     "chance": 1 / n_classes, **_mask_stats(d.masker, x), "run": Path(ck["path"]).parent.name})
        shown[setting] = d
    meta.update(study=f"sfm-ablation-{lab.ds}", n_images=len(y), near_zero_threshold=NEAR_ZERO,
                epochs=lab.preset("sweep").epochs, paper_claims=list(FIG5_CLAIMS))
    lab.finish(out, meta, t_start)
    _samples_figure(out / "fig5.png", x[: lab.size("samples")], shown)
    table = markdown_table(rows, ["setting", "clean", "chance", "mask_mean", "kept", "near_zero"],
                           ["loss", f"clean accuracy (n={len(y)})", "chance", "mean mask", "L1 mass kept",
                            f"masked images keeping < {NEAR_ZERO:.0%} of their L1 mass"],
                           {"clean": _acc, "chance": _acc, "mask_mean": lambda v: f"{v:.3f}", "kept": _acc,
                            "near_zero": _acc})
    intro = (
        f"Figure 5 of the paper ({lab.ds}): SFM-Defense ({MAIN}) trained with the complete loss, without its semantic "
        f"loss (w2 = 0) and without its reconstruction loss (w3 = 0), (w1, w2, w3) = ({w1:g}, {w2:g}, {w3:g}) "
        f"otherwise, each for {meta['epochs']} epoch of Algorithm 1 (the w1 sweep's training; 'complete' is its w1 "
        "point). Measured on the first "
        f"{len(y)} test images. The paper's claims:\n\n" + "\n".join(f"- {c}" for c in meta["paper_claims"]))
    sections = ["## Ours", table, "Rows of the figure: each setting's masked images (x * m) and masks, then the "
                "preprocessed image the classifier sees.", "![Figure 5](fig5.png)",
                "## Is the attack budget enough?", "No attack in this study."]
    write_results(out, title=f"SFM-Defense loss ablation (Figure 5): {lab.ds}", intro=intro, sections=sections,
                  rows=rows, meta=meta)
    return meta


# ---- sfm-samples: Figure 4

@torch.no_grad()
def _samples_figure(path: Path, x: torch.Tensor, defenses: dict[str, Defense]) -> None:
    """One column per image: the original, then per defense its mask, masked image and preprocessed image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("original", x)]
    for name, d in defenses.items():
        xm, m = apply_masker(d.masker, x)
        rows += [(f"{name}: mask", m), (f"{name}: x * mask", xm), (f"{name}: preprocessed", d.squeeze(xm))]
    fig, axes = plt.subplots(len(rows), len(x), figsize=(1.25 * len(x) + 2, 1.25 * len(rows)), squeeze=False)
    for (title, imgs), line in zip(rows, axes):
        for img, ax in zip(imgs, line):
            a = img.permute(1, 2, 0).clamp(0, 1).numpy()
            ax.imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        line[0].set_ylabel(title, fontsize=7, rotation=0, ha="right", va="center")
    save_figure(fig, path)
    plt.close(fig)


def samples_study(out: str | Path, *, dataset: str = "cifar10", quick: bool = False, seed: int = 0,
                  runs_dir: str | Path = "runs", data_root: Any = None, log: Log = print) -> dict[str, Any]:
    """Figure 4: defended samples (original, mask, masked, preprocessed) of the first test images for each
    preprocessing, and the masks' statistics on more test images."""
    t_start, meta, out = time.perf_counter(), run_metadata(seed), Path(out)
    lab = _Lab(dataset, quick, runs_dir, seed, data_root, log)
    defenses = {t: lab.defense(f"sfm-{t}") for t in VARIANTS}
    x = lab.test(lab.size("stats")).images
    _samples_figure(out / "fig4.png", x[: lab.size("samples")], defenses)
    rows = [{"preprocessing": t, "method": DISPLAY[f"sfm-{t}"], **_mask_stats(d.masker, x)}
            for t, d in defenses.items()]
    meta.update(study=f"sfm-samples-{lab.ds}", n_images=len(x), n_shown=min(lab.size("samples"), len(x)),
                near_zero_threshold=NEAR_ZERO, paper_claims=list(FIG4_CLAIMS))
    lab.finish(out, meta, t_start)
    table = markdown_table(rows, ["method", "mask_mean", "kept", "near_zero"],
                           ["defense", "mean mask", "L1 mass kept", f"images keeping < {NEAR_ZERO:.0%}"],
                           {"mask_mean": lambda v: f"{v:.3f}", "kept": _acc, "near_zero": _acc})
    intro = (f"Figure 4 of the paper ({lab.ds}): the first {meta['n_shown']} test images through SFM-Defense with each "
             "preprocessing: the masker's mask m, the masked image x * m, and the preprocessed image the classifier "
             f"sees; mask statistics on the first {len(x)} test images. The paper's claims (judge them on the "
             "figure):\n\n" + "\n".join(f"- {c}" for c in meta["paper_claims"]))
    sections = ["## Ours", "![Figure 4](fig4.png)", table,
                "## Is the attack budget enough?", "No attack in this study."]
    write_results(out, title=f"SFM-Defense: defended samples (Figure 4): {lab.ds}", intro=intro, sections=sections,
                  rows=rows, meta=meta)
    return meta


STUDIES = {"sfm-models": models_study, "sfm-tables": tables_study, "sfm-whitebox": whitebox_study,
           "sfm-cost": cost_study, "sfm-w1": w1_study, "sfm-ablation": ablation_study, "sfm-samples": samples_study}
DATASETS = {name: ("cifar10", "svhn", "tiny-imagenet") for name in STUDIES}
