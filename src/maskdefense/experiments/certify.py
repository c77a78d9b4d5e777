"""Certified accuracy against patch size for every certifier on the CPU-sized models (issue "Certified
robustness for masking"), beside the published numbers, and the empirical soundness check.

Per data set (CIFAR-10, MNIST; ``--quick``: the 8x8 digits in seconds), each certifier on the base classifier
trained for it (:mod:`maskdefense.papers.certify`'s presets, fine-tuned from the plain models; the grid
certificate also on MAD's own model):

* derandomized smoothing, column bands (CIFAR-10: band 4, the paper's 5x5 setting among the patch sizes) and
  blocks;
* PatchCleanser, one mask set per patch size (k = 6), every side from 2 to 8 (the issue's sweep);
* the grid certificate at MAD's rate 3/4 (MAD's model: it certifies nothing of 2+ pixels, as derived in
  :mod:`maskdefense.certify.grid`) and at 7/8 (a model trained at 7/8).

Each run is :func:`maskdefense.eval.certify.certify_dataset` (resumable, per-image records) into
``<out>/<run>/``, with the adaptive patch attack at the 5x5 patch (the largest size the run certifies on the
digits): on MNIST on every image of every run, so every certified image is attacked; on CIFAR-10 on the first
images certified at 5x5 of each run (the cost: see :func:`plan`). The study writes ``README.md`` (tables, the
published numbers, the grid certificate's feasibility), ``results.json``/``.csv``, ``certified_vs_patch.png``,
and refreshes the overview ``<out>/../certify/overview.md`` from every ``certify-<dataset>`` folder beside it
(``results/certify/README.md`` beside it is the hand-written verdict, which no run overwrites). A certified
image that the attack breaks fails the study loudly: it is logged when its run ends, and once everything is
written the study raises :class:`~maskdefense.eval.certify.SoundnessError` (a nonzero exit, so
``scripts/certify_run.sh`` stops and does not mark the step done).

Compute (2 CPU cores, quiet machine; VGG16/2 ~800 masked copies/s, LeNet-5 ~30,000/s, training VGG16/2
~1.5 min per epoch): CIFAR-10 training of 4 base classifiers x 12 epochs ~75 min; certification ~1.3 M masked
passes ~28 min (PatchCleanser 200 images x (6 x 666 + 325) for the sides 2-8, blocks 200 x 1024, grid 3/4
100 x 1820, the rest small); attacks ~50 min (at most ~2.4 M forward-equivalents: 20 PGD steps at 8 locations
per image, surrogates of at most 64 copies, a backward pass counted as two forwards). MNIST: ~15 min, plus ~25 min
for the patch attack on every image (1,500 images, ~1 s each).
Total about 3.2 hours.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ..certify import build_certifier, feasibility, largest_certifiable
from ..data import dataset_info, load_dataset
from ..eval.certify import SoundnessError, certify_dataset
from ..papers.certify import (DS_BAND, DS_BLOCK, DS_THRESHOLD, GRID_CELL, GRID_RATES, PC_CUTOUT, PC_K, published)
from ..provenance import atomic_write_text, run_metadata
from ..results import markdown_table, pct, save_figure, write_results
from ..training.presets import Preset, create_preset
from .common import ensure_model, harness_provenance, keep_training_records

Log = Callable[[str], None]

PATCHES = {"cifar10": (2, 3, 4, 5, 6, 7, 8), "mnist": (2, 3, 4, 5, 6, 7, 8), "digits": (1, 2)}
MAD_MODEL = {"cifar10": "mad-cifar10-cpu", "mnist": "mad-mnist-cpu", "digits": "mad-digits"}
#: The rates of the grid certificate's feasibility sweep over every cell size (arithmetic only, nothing runs).
FEASIBILITY_RATES = (0.5, 0.75, 0.875, 0.9375)


@dataclass(frozen=True)
class Run:
    """One certification run: its folder name, label, base classifier preset, certifier spec, patch sizes,
    images, and the attacked patch size and images (0: no attack; ``attack_certified``: the first ``attack_n``
    images certified at that size, else the first ``attack_n`` images)."""

    name: str
    label: str
    preset: str
    spec: str
    patches: tuple[int, ...]
    n: int
    attack_patch: int
    attack_n: int
    attack_certified: bool = False


def plan(dataset: str) -> list[Run]:
    """The runs of ``dataset`` (sized for the CPU: see the module docstring)."""
    quick = dataset == "digits"
    ps = PATCHES[dataset]
    big = 12 if quick else 500
    small = 8 if quick else 200
    ap = 2 if quick else 5

    def an(k: int, n: int) -> int:
        """The soundness attack's images: on MNIST every image of the run (LeNet-5: ~1 s per image); on
        CIFAR-10 the first k certified ones (VGG16/2: ~40 s per image; every image of every run would take
        ~10 h): the attack spends itself on the certificates it tests."""
        return 4 if quick else k if dataset == "cifar10" else n

    sample = dataset == "cifar10"

    cell = GRID_CELL[dataset]
    runs = [
        Run("ds-column", f"DS column, band {DS_BAND[dataset]}", f"ds-column-{dataset}-cpu",
            f"ds:mode=column,band={DS_BAND[dataset]},threshold={DS_THRESHOLD}", ps, big, ap, an(30, big), sample),
        Run("ds-block", f"DS block {DS_BLOCK[dataset]}x{DS_BLOCK[dataset]}", f"ds-block-{dataset}-cpu",
            f"ds:mode=block,band={DS_BLOCK[dataset]},threshold={DS_THRESHOLD},n_grad=64", ps, small, ap, an(10, small),
            sample),
        *[Run(f"pc-p{p}", f"PatchCleanser k={PC_K[dataset]}", f"pc-{dataset}-cpu", f"pc:patch={p},k={PC_K[dataset]}",
              (p,), small, p if p == ap else 0, an(20, small) if p == ap else 0, sample) for p in ps],
        Run("grid-mad", f"grid, MAD's model, rate {GRID_RATES[0]:g}", MAD_MODEL[dataset],
            f"grid:cell={cell},rate={GRID_RATES[0]}", ps, small if quick else 100, ap, an(10, small if quick else 100),
            sample),
        Run("grid-cert", f"grid, rate {GRID_RATES[1]:g}", f"grid-{dataset}-cpu", f"grid:cell={cell},rate={GRID_RATES[1]}",
            ps, big, ap, an(20, big), sample),
    ]
    return runs


def _quick_preset(name: str) -> Preset:
    """Seconds-long digits stand-ins of the presets (digits CNN, a few epochs from scratch)."""
    small = dict(epochs=2, batch_size=64, n_eval=100)
    if name == "mad-digits":
        return replace(create_preset("mad-digits"), **small)
    kinds = {"ds-column": {"transform": "band_ablation", "band": DS_BAND["digits"]},
             "ds-block": {"transform": "block_ablation", "block": DS_BLOCK["digits"]},
             "pc": {"transform": "cutout", "length": PC_CUTOUT["digits"], "holes": 2},
             "grid": {"transform": "grid_mask", "cell": GRID_CELL["digits"], "rate": GRID_RATES[1], "exact": True}}
    kind = name.removesuffix("-digits-cpu")
    return Preset(name, "digits", "digits_cnn", ablation=kinds[kind], **small)


def certify_study(out: str | Path, *, dataset: str = "cifar10", quick: bool = False, seed: int = 0,
                  runs_dir: str | Path = "runs", data_root: Any = None, limit: int | None = None,
                  log: Log = print) -> dict[str, Any]:
    """Certified and clean accuracy against patch size for every run of :func:`plan` (see the module
    docstring). ``limit`` caps the images of every run."""
    t_start = time.perf_counter()
    meta = run_metadata(seed)
    ds = "digits" if quick else dataset
    out = Path(out)
    rows, models, metas = [], {}, {}
    steps, locations = (2, 2) if quick else (20, 8)
    for r in plan(ds):
        n = min(r.n, limit) if limit else r.n
        preset = _quick_preset(r.preset) if quick else create_preset(r.preset)
        model, ck = ensure_model(preset, runs_dir, seed=seed, data_root=data_root, log=log)
        models[r.preset] = {k: ck.get(k) for k in ("arch", "arch_kwargs", "sha256", "test_accuracy", "training_key")}
        metas[r.preset] = ck
        test = load_dataset(ds, "test", root=data_root, limit=n)
        certifier = build_certifier(r.spec, model.eval())
        log(f"[certify] {r.name}: {r.spec} on {n} {ds} test images, patches {list(r.patches)}")
        summary = certify_dataset(
            certifier, test, r.patches, out_dir=out / r.name, batch_size=25 if not quick else 8, seed=seed,
            attack_patches=(r.attack_patch,) if r.attack_n else (), attack_n=min(r.attack_n, n),
            attack_steps=steps, attack_locations=locations, attack_certified_only=r.attack_certified,
            command=meta["command"],
            checkpoint_meta=ck)
        attack = summary["attack"][0] if summary["attack"] else {}
        if attack.get("certified_broken"):
            log(f"[certify] SOUNDNESS VIOLATION in {r.name}: the patch attack changed {attack['certified_broken']} "
                f"certified decisions at patch size {attack['patch']} (records: {out / r.name / 'records.jsonl'})")
        rows.append({"run": r.name, "certifier": r.label, "spec": r.spec, "model": ck.get("arch"),
                     "model_preset": r.preset, "n": summary["n"], "clean": summary["clean_accuracy"],
                     **{f"certified_{row['patch']}": row["certified_accuracy"] for row in summary["rows"]},
                     "passes": summary["passes_per_image"], "seconds": summary["seconds_per_image"],
                     "attack_patch": attack.get("patch"), "certified_attacked": attack.get("certified_attacked"),
                     "certified_broken": attack.get("certified_broken"),
                     "uncertified_attacked": attack.get("uncertified_attacked"),
                     "uncertified_broken": attack.get("uncertified_broken"), "flags": summary["flags"]})
    size = dataset_info(ds).size
    grid = [{"rate": rate, "patch": p, **feasibility(size, GRID_CELL[ds], rate, p)}
            for rate in GRID_RATES for p in PATCHES[ds]]
    cells = [{"cell": c, "rate": rate, **{k: feasibility(size, c, rate, 1)[k] for k in ("cells", "removed", "masks")},
              "largest": largest_certifiable(size, c, rate)}
             for c in range(1, size) if size % c == 0 and (size // c) ** 2 >= 4 for rate in FEASIBILITY_RATES]
    meta.update(study=f"certify-{ds}", dataset=ds, patches=list(PATCHES[ds]), runs=[r.__dict__ for r in plan(ds)],
                attack_steps=steps, attack_locations=locations,
                models=models, training_records=keep_training_records(out, metas.values()), grid_feasibility=grid,
                grid_cells=cells, published=[p.__dict__ for p in published(ds)],
                wall_time_s=round(time.perf_counter() - t_start, 2),
                **harness_provenance(out / r["run"] for r in rows))
    _write(out, rows, meta)
    write_overview(out.parent)
    broken = [f"{r['run']} ({r['certified_broken']} at {r['attack_patch']}x{r['attack_patch']})"
              for r in rows if r["certified_broken"]]
    if broken:
        raise SoundnessError(f"the patch attack changed certified decisions: {', '.join(broken)}; see {out}/README.md "
                             "and each run's records.jsonl (kind 'attack', certified and broken)")
    return meta


def _attacked_text(runs: list[dict[str, Any]]) -> str:
    """Which images the soundness attack ran on (the runs of :func:`plan`, as dictionaries)."""
    if all(r["attack_n"] in (0, r["n"]) for r in runs):
        return ("It ran on every image of every run: every certified image was attacked, and the uncertified images "
                "it broke show that it works.")
    if any(r.get("attack_certified") for r in runs):
        return ("It ran on the first images of each run certified at its patch size only (counts below; a run that "
                "certifies none there has none): on VGG16/2 it costs ~40 s per image, every image of every run "
                "~10 h on this CPU. The MNIST study attacks every image, certified or not, and shows there that "
                "the attack breaks uncertified decisions.")
    return ("It ran on the first images of each run only (counts below); the uncertified images it broke show that "
            "it works.")


def _patch_columns(patches: tuple[int, ...]) -> tuple[list[str], list[str]]:
    return [f"certified_{p}" for p in patches], [f"certified {p}x{p}" for p in patches]


def _write(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    ds, patches = meta["dataset"], tuple(meta["patches"])
    cols, heads = _patch_columns(patches)
    fm: dict[str, Any] = {c: pct for c in ["clean", *cols]}
    fm["passes"] = lambda v: f"{v:g}"
    fm["seconds"] = lambda v: f"{v:.4f}"
    table = markdown_table(rows, ["certifier", "model", "n", "clean", *cols, "passes", "seconds"],
                           ["certifier", "model", "images", "clean accuracy", *heads, "passes / image", "s / image"], fm)
    pub = markdown_table([{**p, "params": f"{p['parameters_m']:g}M", "clean": p["clean"], "certified": p["certified"]}
                          for p in meta["published"]],
                         ["method", "model", "params", "setting", "patch", "clean", "certified", "source"],
                         ["method", "model", "parameters", "setting", "patch", "clean", "certified", "source"],
                         {"clean": pct, "certified": pct}) if meta["published"] else "(none for this data set)\n"
    sound = markdown_table([r for r in rows if r["certified_attacked"] is not None],
                           ["certifier", "attack_patch", "certified_attacked", "certified_broken",
                            "uncertified_attacked", "uncertified_broken"],
                           ["certifier", "patch side", "certified images attacked", "certified broken",
                            "uncertified images attacked", "uncertified broken"])
    broken = sum(r["certified_broken"] or 0 for r in rows)
    tried = sum(r["certified_attacked"] or 0 for r in rows)
    grid = markdown_table(meta["grid_feasibility"], ["rate", "patch", "cells", "removed", "masks", "t_max",
                                                     "unaffected_fraction", "possible"],
                          ["rate", "patch side", "cells G", "removed r", "masks C(G, r)", "cells touched (max)",
                           "masks hiding them", "can certify?"],
                          {"rate": lambda v: f"{v:g}", "unaffected_fraction": lambda v: f"{v:.3f}",
                           "possible": lambda v: "yes" if v else "no"})
    cells = markdown_table(meta["grid_cells"], ["cell", "cells", "rate", "removed", "masks", "largest"],
                           ["cell side", "cells G", "rate", "removed r", "masks C(G, r)", "largest patch side"],
                           {"rate": lambda v: f"{v:g}", "masks": lambda v: f"{v:.3g}" if v >= 1e6 else str(v)})
    _plot(out, rows, patches)
    intro = (f"Certified accuracy (the decision is certified against every patch of that size and is the true "
             f"label) and clean accuracy of each certifier on the first test images of {ds}, CPU-sized models "
             f"(see the presets' `differs`). PatchCleanser builds one mask set per patch size (one row each). "
             f"Passes = masked copies through the base classifier per image (the floor of the cost).")
    sections = ["## Certified accuracy against patch size", "![certified accuracy](certified_vs_patch.png)", table,
                "## Published numbers", pub,
                "## Soundness, checked empirically",
                (f"The adaptive patch attack (PGD on the patch pixels, {meta['attack_steps']} steps, at the "
                 f"{meta['attack_locations']} locations each certificate finds weakest) changed **{broken} of "
                 f"{tried}** certified decisions (must be 0). "
                 + _attacked_text(meta["runs"])
                 + ("\n\n**SOUNDNESS VIOLATION: a certified decision was changed; the certificate or its "
                    "implementation is wrong, and the certified accuracies above are not to be trusted.**"
                    if broken else "")
                 + "\n\n" + sound),
                "## When can the grid certificate certify anything?",
                ("A certificate needs at least half of the masks to hide every cell the patch touches "
                 "(`maskdefense.certify.grid`):\n\n" + grid),
                ("Every cell size and rate: the largest patch side the certificate allows at all (0: not even one "
                 "pixel; with every cell removed the vote is a constant). Certifying also needs the mask set "
                 "enumerated, `C(G, r)` copies per image:\n\n" + cells),
                "Training records of the models (per-epoch history and seconds, no weights): `checkpoints/`.",
                f"Wall time of the certification runs over all resumptions: {meta['eval_wall_time_s_total']} s."]
    write_results(out, title=f"Certified robustness against patches: {ds}", intro=intro, sections=sections,
                  rows=rows, meta=meta)


def _plot(out: Path, rows: list[dict[str, Any]], patches: tuple[int, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        for p in patches:
            v = r.get(f"certified_{p}")
            if v is not None:
                lines.setdefault(r["certifier"], []).append((p, 100 * v))
    for label, pts in lines.items():
        ax.plot([p for p, _ in pts], [v for _, v in pts], "o-", label=label)
    ax.set_xlabel("patch side (pixels)")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=7)
    save_figure(fig, out / "certified_vs_patch.png")
    plt.close(fig)


def write_overview(results: str | Path) -> Path | None:
    """``<results>/certify/overview.md``: certified accuracy at every patch size from each
    ``<results>/certify-<dataset>/results.json``, beside the published certifiers (``None`` if none exist)."""
    results = Path(results)
    parts = []
    for path in sorted(results.glob("certify-*/results.json")):
        rec = json.loads(path.read_text())
        meta, rows = rec["meta"], rec["rows"]
        cols, heads = _patch_columns(tuple(meta["patches"]))
        parts += [f"## {meta['dataset']} ([details](../{path.parent.name}/README.md))",
                  markdown_table(rows, ["certifier", "model", "n", "clean", *cols],
                                 ["certifier", "model", "images", "clean", *heads],
                                 {c: pct for c in ["clean", *cols]})]
        if meta["published"]:
            parts += ["Published:", markdown_table(meta["published"], ["method", "model", "parameters_m", "patch",
                                                                       "clean", "certified", "source"],
                                                   ["method", "model", "parameters (M)", "patch", "clean",
                                                    "certified", "source"],
                                                   {"parameters_m": lambda v: f"{v:g}", "clean": pct,
                                                    "certified": pct})]
    if not parts:
        return None
    text = "\n\n".join(["# Certified robustness against patches: overview",
                        "Written by `maskdefense reproduce certify` from the folders beside this one; each folder "
                        "records its commands, seed, commit and versions.", *parts]) + "\n"
    return atomic_write_text(results / "certify" / "overview.md", text)


STUDIES = {"certify": certify_study}
DATASETS = {"certify": ("cifar10", "mnist")}
