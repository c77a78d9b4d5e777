"""Summaries computed only from records, and their renderings (markdown, CSV, JSON, plot).

Because every number in the tables is a function of the record file alone, a run that was killed and
resumed produces byte-identical ``summary.md``, ``summary.csv`` and ``summary.json`` (timings, which
naturally differ, go to ``run.json`` only).

Protocol (the defense papers' tables): adversarial examples count only for the test images the *base* model
classifies correctly (``n_correct``). ``attack_acc`` is the base model's accuracy on those adversarial
examples, ``defense_acc`` the defense's (mean and std over ``repeats`` evaluations with fresh
randomness), ``improvement = defense_acc - attack_acc``. ``robust_acc`` is RobustBench style over all
``n`` images: an image counts when the defense is right on it clean *and* adversarial (per repeat).
An abstention (prediction -1) counts as wrong.

A defense that may reject inputs (its contract says ``rejects``) is also scored as a detector
(:mod:`maskdefense.eval.metrics.detection`): its ``defense_acc`` and ``robust_acc`` count a rejected
adversarial example as defended (an attack succeeds only when the example is misclassified and not
rejected); the ``*_rejected_failed`` columns count it as failed; a rejected clean image is wrong in both.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..defenses.base import ABSTAIN, REJECT
from .metrics.detection import detection_metrics

__all__ = ["RowPlan", "summarize", "render_markdown", "render_csv", "plot_acc_vs_eps", "CSV_COLUMNS",
           "DETECTION_COLUMNS", "pct"]


@dataclass(frozen=True)
class RowPlan:
    """One (threat, attack) row to summarize."""

    threat: str
    spec_key: str
    name: str
    label: str
    family: str
    norm: str
    eps: float
    samples_per_gradient: int = 1
    sanity: bool = False
    paper: Mapping[str, Any] | None = field(default=None, compare=False)


def _mean_std(v: np.ndarray) -> tuple[float | None, float | None]:
    if v.size == 0:
        return None, None
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return _r(float(v.mean())), _r(std)


def _r(v: float | None) -> float | None:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return v
    return round(float(v), 6)


def summarize(records: Iterable[Mapping[str, Any]], plans: Sequence[RowPlan], *, n: int, repeats: int,
              rejects: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Clean summary, one row per plan, and the diagnostics -- from the records alone. ``rejects``: the
    defense may reject inputs (detector metrics from the records' ``score``/``score_adv``)."""
    labels = np.full(n, -1, dtype=np.int64)
    base_ok = np.zeros(n, dtype=bool)
    def_ok = np.zeros((n, repeats), dtype=bool)
    abstain = np.zeros((n, repeats), dtype=bool)
    have_clean = np.zeros(n, dtype=bool)
    clean_score = np.full(n, np.nan)
    wanted = {(p.threat, p.spec_key): i for i, p in enumerate(plans)}
    cols: list[list[tuple[Any, ...]]] = [[] for _ in plans]
    diagnostics: dict[str, dict[str, Any]] = {}
    for rec in records:
        kind = rec.get("kind")
        if kind == "clean":
            i = rec["idx"]
            if not 0 <= i < n:
                continue
            labels[i] = rec["label"]
            base_ok[i] = rec["pred_base"] == rec["label"]
            preds = np.asarray(rec["pred_defense"][:repeats])
            def_ok[i] = preds == rec["label"]
            abstain[i] = preds == ABSTAIN
            have_clean[i] = True
            clean_score[i] = rec.get("score", np.nan)
        elif kind == "attack":
            j = wanted.get((rec["threat"], rec["attack"]))
            if j is None:
                continue
            nrm = rec["norms"][plans[j].norm] if plans[j].norm in rec["norms"] else float("nan")
            cols[j].append((rec["idx"], rec["label"], rec["valid"], rec["eps_ok"], rec["range_ok"],
                            rec["pred_base_adv"], rec["pred_target_adv"], tuple(rec["pred_defense_adv"][:repeats]), nrm,
                            rec.get("score_adv", np.nan)))
        elif kind == "diag":
            diagnostics[rec["name"]] = {k: v for k, v in rec.items() if k not in ("key", "kind", "name", "group", "group_size")}
    n_clean = int(have_clean.sum())
    def_clean_acc = def_ok[have_clean].mean(0) if n_clean else np.zeros(0)
    clean = {
        "n": n, "n_clean_records": n_clean, "repeats": repeats,
        "base_clean_acc": _r(float(base_ok[have_clean].mean())) if n_clean else None,
        "n_correct": int(base_ok[have_clean].sum()),
        "defense_clean_acc": _mean_std(def_clean_acc)[0], "defense_clean_std": _mean_std(def_clean_acc)[1],
        "defense_clean_per_repeat": [_r(float(v)) for v in def_clean_acc],
        "defense_abstain_rate": _r(float(abstain[have_clean].mean())) if n_clean else None,
        # the ceiling of the protocol's Defense numbers: the defense's clean accuracy on the images the base
        # model classifies correctly (the only ones attacked)
        "defense_clean_acc_on_correct": _mean_std(def_ok[have_clean & base_ok].mean(0))[0]
        if (have_clean & base_ok).any() else None,
    }
    if rejects:
        clean["false_positive_rate"] = clean["defense_abstain_rate"]
    rows = []
    for p, col in zip(plans, cols):
        col.sort(key=lambda t: t[0])
        idx = np.array([t[0] for t in col], dtype=np.int64)
        lab = np.array([t[1] for t in col], dtype=np.int64)
        valid = np.array([t[2] for t in col], dtype=bool)
        eps_ok = np.array([t[3] for t in col], dtype=bool)
        range_ok = np.array([t[4] for t in col], dtype=bool)
        b_adv = np.array([t[5] for t in col], dtype=np.int64) == lab
        t_adv = np.array([t[6] for t in col], dtype=np.int64) == lab
        d_pred = np.array([t[7] for t in col], dtype=np.int64).reshape(len(col), repeats)
        d_adv = (d_pred == lab[:, None]) | (rejects & (d_pred == REJECT))  # a detector's rejection defends
        norms = np.array([t[8] for t in col], dtype=np.float64)
        correct = base_ok[idx] if col else np.zeros(0, dtype=bool)
        nc = int(correct.sum())
        attack_acc = _r(float(b_adv[correct].mean())) if nc else None
        dacc_mean, dacc_std = _mean_std(d_adv[correct].mean(0)) if nc else (None, None)
        robust = (def_ok[idx] & d_adv).mean(0) if col else np.zeros(0)
        rob_mean, rob_std = _mean_std(robust)
        vn = norms[valid & np.isfinite(norms)]
        # a minimum-norm attack's distortion: over the examples that fool the model attacked (a failed search
        # returns the clean image, norm 0, which `mean_norm` averages in)
        vf = norms[valid & np.isfinite(norms) & ~t_adv & correct] if col else norms[:0]
        rows.append({
            "threat": p.threat, "label": p.label, "attack": p.spec_key, "name": p.name, "family": p.family,
            "norm": p.norm, "eps": p.eps, "sanity": p.sanity, "samples_per_gradient": p.samples_per_gradient,
            "n": int(len(col)), "n_correct": nc,
            "attack_acc": attack_acc, "defense_acc": dacc_mean, "defense_std": dacc_std,
            "improvement": _r(dacc_mean - attack_acc) if dacc_mean is not None and attack_acc is not None else None,
            "robust_acc": rob_mean, "robust_std": rob_std,
            "base_robust_acc": _r(float((base_ok[idx] & b_adv).mean())) if col else None,
            "target_acc": _r(float(t_adv.mean())) if col else None,
            "n_invalid": int((~valid).sum()), "n_eps_violations": int((~eps_ok).sum()),
            "n_range_violations": int((~range_ok).sum()),
            "mean_norm": _r(float(vn.mean())) if vn.size else None,
            "mean_norm_fooled": _r(float(vf.mean())) if vf.size else None,
            "max_norm": _r(float(np.nanmax(norms))) if norms.size and np.isfinite(norms).any() else None,
            "paper_attack": (p.paper or {}).get("attack"), "paper_defense": (p.paper or {}).get("defense"),
        })
        if rejects:
            det = detection_metrics(lab, def_ok[idx], d_pred, correct, clean_score[have_clean],
                                    np.array([t[9] for t in col], dtype=np.float64))
            rows[-1].update(det)
    return clean, rows, diagnostics


# ----------------------------------------------------------------------------------------------
# rendering


def pct(v: float | None, std: float | None = None) -> str:
    if v is None:
        return "-"
    s = f"{100 * v:.2f}"
    if std is not None and std > 0:
        s += f" ± {100 * std:.2f}"
    return s + "%"


def _eps(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:g}"


def render_markdown(summary: Mapping[str, Any]) -> str:
    """``summary.md``: paper-protocol table with the threat models side by side, robust accuracy,
    flags, threat models and attack parameters."""
    clean, rows, flags = summary["clean"], summary["rows"], summary["flags"]
    threats: list[str] = summary["threats"]
    cfg = summary["config"]
    out = io.StringIO()
    w = out.write
    w("# Robustness evaluation\n\n")
    w(f"- defense: `{_fmt_cfg(cfg['defense'])}`\n")
    if summary.get("model"):
        w(f"- model: {summary['model']}\n")
    w(f"- data: {summary.get('data', {}).get('name', 'given tensors')}, n = {clean['n']} "
      f"(sha256 {cfg['data_sha256'][:12]})\n")
    w(f"- seed {cfg['seed']}, batch size {cfg['batch_size']}, defense evaluated {clean['repeats']} time(s) with "
      f"fresh randomness (mean ± std)\n")
    w(f"- threat models: {', '.join(threats)}\n")
    w(f"- config hash `{summary['config_hash'][:16]}`\n\n")
    w(f"Clean: base model {pct(clean['base_clean_acc'])}, defense "
      f"{pct(clean['defense_clean_acc'], clean['defense_clean_std'])}"
      + (f" (abstains {pct(clean['defense_abstain_rate'])})" if clean.get("defense_abstain_rate") else "")
      + f"; {clean['n_correct']} of {clean['n']} images correctly classified by the base model.\n\n")

    w("## Flags\n\n")
    if not flags:
        w("No integrity flags raised.\n\n")
    for f in flags:
        w(f"- **{f['severity'].upper()}** `{f['code']}`: {f['message']}"
          + (f" [{f['threat']}]" if f.get("threat") and not f.get("attack") else "") + "\n")
    if flags:
        w("\n")

    by = {(r["threat"], r["attack"]): r for r in rows}
    order: list[tuple[str, str, Mapping[str, Any]]] = []
    seen = set()
    for r in rows:
        if r["attack"] not in seen:
            seen.add(r["attack"])
            order.append((r["attack"], r["label"], r))
    has_paper = any(r.get("paper_defense") is not None for r in rows)

    w("## Protocol" + (f": {summary['suite']}" if summary.get("suite") else "") + "\n\n")
    w("Adversarial examples from the test images the base model classifies correctly. Attack = the base "
      "model (no defense) on the adversarial examples; Defense = the defense on the same examples; "
      "Improvement = Defense - Attack."
      + (" The defense may reject inputs: a rejected adversarial example counts as defended here, as failed in "
         "the Detection section." if clean.get("false_positive_rate") is not None else "") + "\n\n")
    head = ["Attack", "eps"] + (["paper Attack", "paper Defense"] if has_paper else [])
    for t in threats:
        head += [f"{t} Attack", f"{t} Defense", f"{t} Impr."]
    w("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    bench = ["Benign", ""] + (["", pct(summary.get("paper_benign"))] if has_paper else [])
    for _ in threats:
        bench += ["", pct(clean["defense_clean_acc"], clean["defense_clean_std"]), ""]
    w("| " + " | ".join(bench) + " |\n")
    for key, label, r0 in order:
        cells = [label + (" (sanity)" if r0["sanity"] else ""), _eps(r0["eps"])]
        if has_paper:
            cells += [pct(r0.get("paper_attack")), pct(r0.get("paper_defense"))]
        for t in threats:
            r = by.get((t, key))
            cells += ["", "", ""] if r is None else [pct(r["attack_acc"]), pct(r["defense_acc"], r["defense_std"]),
                                                     pct(r["improvement"])]
        w("| " + " | ".join(cells) + " |\n")

    w("\n## Robust accuracy over all n (RobustBench style)\n\n")
    w("An image counts as robust when the defense classifies it correctly both clean and adversarial. "
      "`invalid` = adversarial examples rejected by the harness (outside the budget or [0, 1]); they count "
      "as failed attacks.\n\n")
    head = ["Attack", "norm", "eps"] + [f"{t}" for t in threats] + ["invalid"]
    w("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    for key, label, r0 in order:
        cells = [label, r0["norm"], _eps(r0["eps"])]
        inval = 0
        for t in threats:
            r = by.get((t, key))
            cells.append("" if r is None else pct(r["robust_acc"], r["robust_std"]))
            inval += 0 if r is None else r["n_invalid"]
        cells.append(str(inval))
        w("| " + " | ".join(cells) + " |\n")

    if clean.get("false_positive_rate") is not None:
        _render_detection(w, summary, order, by)

    w("\n## Threat models\n\n")
    for t in threats:
        info = summary.get("targets", {}).get(t, {})
        w(f"- **{t}**: {summary.get('threat_descriptions', {}).get(t, '')}. Target: {info.get('target', '?')}"
          + (f"; {info.get('samples_per_gradient')} random sample(s) per gradient (EOT {info.get('eot_samples')} "
             f"x {info.get('defense_samples_per_forward', 1)} per forward)" if t == "adaptive" else "")
          + (f"; BPDA: {info.get('bpda')}" if info.get("bpda") else "") + "\n")

    w("\n## Attacks (every parameter)\n\n")
    w("| Attack | implementation | parameters |\n|---|---|---|\n")
    listed: set[str] = set()
    for a in summary["attacks"]:
        if a["key"] in listed:
            continue
        listed.add(a["key"])
        params = ", ".join(f"{k}={_val(v)}" for k, v in a["params"].items())
        w(f"| {a['label']} | {a['implementation']} | {params} |\n")
    return out.getvalue()


def _render_detection(w: Any, summary: Mapping[str, Any], order: Sequence[tuple[str, str, Mapping[str, Any]]],
                      by: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
    clean = summary["clean"]
    thr = (summary["config"].get("contract") or {}).get("reject_threshold")
    w("\n## Detection\n\n")
    w(f"The defense rejects inputs whose detector score exceeds its threshold ({thr}). False-positive rate on the "
      f"clean images: {pct(clean['false_positive_rate'])}. Detection rate = the share of the attacked images' "
      "adversarial examples it rejects (at its threshold); AUC = area under the ROC curve of the detector scores, "
      "adversarial vs clean (the curve is in summary.json). Accuracy under both conventions: a rejected "
      "adversarial example counted as defended (the tables above: an attack succeeds only when the example is "
      "misclassified and not rejected) or as failed; a rejected clean image is wrong in both.\n\n")
    head = ["Attack", "threat", "detection rate", "AUC", "Defense (rejected = defended)",
            "Defense (rejected = failed)", "robust (rejected = defended)", "robust (rejected = failed)"]
    w("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    for key, label, _ in order:
        for t in summary["threats"]:
            r = by.get((t, key))
            if r is None or "detection_rate" not in r:
                continue
            auc = r.get("detection_auc")
            w("| " + " | ".join([label, t, pct(r["detection_rate"]), "-" if auc is None else f"{auc:.3f}",
                                 pct(r["defense_acc"]), pct(r.get("defense_acc_rejected_failed")),
                                 pct(r["robust_acc"]), pct(r.get("robust_acc_rejected_failed"))]) + " |\n")


def _val(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _fmt_cfg(cfg: Mapping[str, Any]) -> str:
    name = cfg.get("defense", "?")
    rest = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "defense")
    return f"{name}" + (f" ({rest})" if rest else "")


CSV_COLUMNS = [
    "threat", "label", "name", "family", "norm", "eps", "n", "n_correct", "base_clean_acc", "defense_clean_acc",
    "defense_clean_std", "attack_acc", "defense_acc", "defense_std", "improvement", "robust_acc", "robust_std",
    "base_robust_acc", "target_acc", "n_invalid", "n_eps_violations", "n_range_violations", "mean_norm",
    "mean_norm_fooled", "max_norm", "samples_per_gradient", "sanity", "paper_attack", "paper_defense", "attack",
]
#: Extra CSV columns of a defense that rejects inputs (see the module docstring for the conventions).
DETECTION_COLUMNS = ["false_positive_rate", "detection_rate", "detection_auc", "defense_acc_rejected_failed",
                     "robust_acc_rejected_failed"]


def render_csv(summary: Mapping[str, Any]) -> str:
    out = io.StringIO()
    clean = summary["clean"]
    columns = CSV_COLUMNS + (DETECTION_COLUMNS if "false_positive_rate" in clean else [])
    wr = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    wr.writeheader()
    for r in summary["rows"]:
        row = {k: r.get(k, clean.get(k)) for k in columns}
        row["base_clean_acc"] = clean["base_clean_acc"]
        row["defense_clean_acc"] = clean["defense_clean_acc"]
        row["defense_clean_std"] = clean["defense_clean_std"]
        wr.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def plot_acc_vs_eps(summary: Mapping[str, Any], path: str | Path) -> Path | None:
    """One panel per attack family and norm: robust accuracy (solid) and the base model's accuracy on
    the same adversarial examples (dashed) against epsilon, one colour per threat model."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless

    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in summary["rows"]:
        if r["robust_acc"] is None or math.isinf(r["eps"]) or r["sanity"]:
            continue
        groups.setdefault(f"{r['family']} {r['norm'].upper() if r['norm'] != 'linf' else 'Linf'}", []).append(r)
    if not groups:
        return None
    k = len(groups)
    cols = min(4, k)
    nrows = math.ceil(k / cols)
    fig = Figure(figsize=(3.6 * cols, 3.0 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    colors = {"gray-box": "tab:blue", "black-box": "tab:green", "adaptive": "tab:red"}
    for ax, (name, rs) in zip(axes.flat, sorted(groups.items())):
        for t in summary["threats"]:
            pts = sorted((r["eps"], r["robust_acc"], r["base_robust_acc"]) for r in rs if r["threat"] == t)
            if not pts:
                continue
            e = [p[0] for p in pts]
            ax.plot(e, [p[1] for p in pts], "o-", color=colors.get(t), label=f"defense, {t}")
            ax.plot(e, [p[2] for p in pts], "x--", color=colors.get(t), alpha=0.5, label=f"base, {t}")
        ax.set_title(name)
        ax.set_xlabel("epsilon")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(handles)), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = Path(path)
    from ..provenance import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    return path
