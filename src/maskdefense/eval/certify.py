"""Certify a data set, resumably, with per-image records -- and check the certificates empirically.

:func:`certify_dataset` runs a certifier's ``certify`` on fixed batches ``[k*B, (k+1)*B)`` of the data and
appends each batch's records as one atomic group (:class:`~maskdefense.eval.records.RecordStore`): per
image the label, the decision, whether it is certified at each patch size, the masked forward passes and the
seconds. Optionally the adaptive patch attack (:func:`maskdefense.attacks.patch.patch_attack`, seeded per
batch) runs on the first ``attack_n`` images at each of ``attack_patches`` (``attack_certified_only``: on the
first ``attack_n`` images certified at that size, so that an expensive attack spends itself on the images whose
certificate it tests): per image whether it was certified at that size and whether the attack changed the
decision. A certified image whose decision the attack changes is a soundness violation (flag
``SOUNDNESS_VIOLATION``, an error; ``maskdefense certify --strict`` exits with code 3 on it, and the study
:func:`maskdefense.experiments.certify.certify_study` raises :class:`SoundnessError` once its outputs are
written).

The output folder is locked while running (:func:`maskdefense.rundir.exclusive`); a rerun resumes, and
records of another configuration (certifier, weights, data, patch sizes, attack, batch size, seed, library
versions) are refused. Writes ``records.jsonl``, ``run.json`` (provenance) and ``summary.json``/``.md``:
clean accuracy, certified accuracy (certified and correct) per patch size, passes and seconds per image,
and the attack's counts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..attacks.patch import patch_attack
from ..certify.base import Certifier, check_patch_sizes
from ..provenance import atomic_write_json, atomic_write_text, run_metadata
from ..results import markdown_table, pct
from ..rundir import exclusive
from ..seeding import derive_seed, seeded
from ..validation import check_images, check_labels, positive_int
from .harness import (_progress, _unpack, config_digest, config_versions, open_run, resumption, state_hash,
                      tensor_hash)
from .records import RecordStore

__all__ = ["certify_dataset", "summarize_certify", "SoundnessError", "FORMAT"]

FORMAT = "maskdefense-certify-v1"


class SoundnessError(RuntimeError):
    """The empirical patch attack changed a certified decision: the certificate, or its implementation, is
    unsound. Raised after the records and tables are written, so that the broken images can be inspected."""


def certify_dataset(
    certifier: Certifier,
    data: Any,
    patch_sizes: int | Sequence[int],
    *,
    out_dir: str | Path,
    batch_size: int = 50,
    seed: int = 0,
    resume: bool = True,
    attack_patches: Sequence[int] = (),
    attack_n: int = 0,
    attack_locations: int = 8,
    attack_steps: int = 20,
    attack_step_size: float = 0.1,
    attack_certified_only: bool = False,
    progress: bool = False,
    checkpoint_meta: Mapping[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Certify ``data`` (an ImageData or ``(images, labels)``) at ``patch_sizes`` into ``out_dir`` (see the
    module docstring); returns the summary."""
    t_start = time.perf_counter()
    x, y, data_meta = _unpack(data)
    check_images(x)
    y = check_labels(y, x.shape[0])
    sizes = check_patch_sizes(patch_sizes, x.shape[2], x.shape[3])
    attacked = check_patch_sizes(tuple(attack_patches), x.shape[2], x.shape[3]) if attack_patches else ()
    batch_size = positive_int(batch_size, "batch_size")
    n, n_attack = int(x.shape[0]), min(int(attack_n), int(x.shape[0])) if attacked else 0
    certifier.eval()
    attack_cfg = {"patches": list(attacked), "n": n_attack, "locations": attack_locations, "steps": attack_steps,
                  "step_size": attack_step_size} if attacked else None
    if attack_cfg and attack_certified_only:
        attack_cfg["certified_only"] = True
    config = {"format": FORMAT, "certifier": certifier.config(), "model_sha256": state_hash(certifier),
              "data_sha256": tensor_hash(x, y), "n": n, "image_shape": list(x.shape[1:]), "patch_sizes": list(sizes),
              "batch_size": batch_size, "seed": int(seed), "attack": attack_cfg, "versions": config_versions()}
    config_hash = config_digest(config)
    certifier.certify(x[:1], sizes)  # a configuration that fails at run time fails here, before any write
    with exclusive(out_dir, "certify") as out:
        store = RecordStore(out / "records.jsonl")
        run_path = out / "run.json"
        previous = open_run(out, store, config, config_hash, resume=resume,
                            holds="a certification of another configuration", outputs=("summary.json", "summary.md"))
        store.open()
        meta = run_metadata(seed, command=command, config=config, config_hash=config_hash,
                            checkpoint=dict(checkpoint_meta) if checkpoint_meta else None, data=data_meta,
                            status="running", **resumption(previous, store))
        atomic_write_json(run_path, meta)
        tasks = [s for s in range(0, n, batch_size) if f"cert|{s}" not in store.done_groups]
        bar = _progress(len(tasks), progress, "certify")
        try:
            for s in tasks:
                e = min(s + batch_size, n)
                store.append_group(f"cert|{s}", _certify_batch(certifier, x[s:e], y[s:e], s, sizes))
                bar.update(1)
        finally:
            bar.close()
        # the attacked images: the first n_attack, or (certified_only) the first n_attack certified at that size,
        # read from the certification records just completed; group "attack|<patch>|<start in that list>"
        certs = _cert_records(store) if attack_certified_only and attacked else None
        chosen = {p: _attacked(certs, p, n_attack) for p in attacked}
        jobs = [(p, j) for p in attacked for j in range(0, len(chosen[p]), batch_size)
                if f"attack|{p}|{j}" not in store.done_groups]
        bar = _progress(len(jobs), progress, "patch attack")
        try:
            for p, j in jobs:
                idx = chosen[p][j:j + batch_size]
                store.append_group(f"attack|{p}|{j}", _attack_batch(
                    certifier, x[idx], y[idx], idx, j, int(p), seed=seed, locations=attack_locations,
                    steps=attack_steps, step_size=attack_step_size))
                bar.update(1)
        finally:
            bar.close()
        summary = summarize_certify(store, config, config_hash)
        summary.update(model=_model_line(checkpoint_meta), data=data_meta,
                       floor_passes=certifier.passes(x.shape[2], x.shape[3]))
        atomic_write_json(out / "summary.json", summary)
        atomic_write_text(out / "summary.md", render_certify_markdown(summary))
        wall = round(time.perf_counter() - t_start, 3)
        meta.update(status="complete", wall_time_s=wall, flags=summary["flags"], records=store.n_records,
                    wall_time_s_total=round(float(meta["wall_time_s_previous"]) + wall, 3))
        atomic_write_json(run_path, meta)
    return summary


def _certify_batch(certifier: Certifier, x: torch.Tensor, y: torch.Tensor, s: int,
                   sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    cert = certifier.certify(x, sizes)
    per = (time.perf_counter() - t0) / x.shape[0]
    return [{"key": f"cert|{s + i}", "kind": "cert", "idx": s + i, "label": int(y[i]), **rec,
             "time_s": round(per, 6)} for i, rec in enumerate(cert.records())]


def _attacked(certs: list[dict[str, Any]] | None, patch: int, n_attack: int) -> list[int]:
    """The indices the patch attack runs on: the first ``n_attack`` images (``certs`` None), or the first
    ``n_attack`` of those certified at ``patch`` by the run's certification records ``certs``."""
    if certs is None:
        return list(range(n_attack))
    return [r["idx"] for r in certs if r["certified"][str(patch)]][:n_attack]


def _cert_records(store: RecordStore) -> list[dict[str, Any]]:
    """The run's certification records (one per image), in image order."""
    return sorted((r for r in store if r["kind"] == "cert"), key=lambda r: r["idx"])


def _attack_batch(certifier: Certifier, x: torch.Tensor, y: torch.Tensor, idx: list[int], s: int, patch: int, *,
                  seed: int, locations: int, steps: int, step_size: float) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    certified = certifier.certify(x, (patch,)).at(patch)
    res = patch_attack(certifier, x, patch, locations=locations, steps=steps, step_size=step_size,
                       generator=seeded(derive_seed(seed, "patch-attack", patch, s)))
    per = (time.perf_counter() - t0) / x.shape[0]
    return [{"key": f"attack|{patch}|{idx[i]}", "kind": "attack", "patch": patch, "idx": idx[i], "label": int(y[i]),
             "decision": int(res.decision[i]), "certified": bool(certified[i]), "broken": bool(res.broken[i]),
             "decision_adv": int(res.decision_adv[i]), "location": [int(v) for v in res.location[i]],
             "locations_tried": res.locations_tried, "time_s": round(per, 6)} for i in range(x.shape[0])]


def summarize_certify(store: RecordStore, config: Mapping[str, Any], config_hash: str) -> dict[str, Any]:
    """The summary of a certification run from its records only (see the module docstring)."""
    certs = _cert_records(store)
    attacks = [r for r in store if r["kind"] == "attack"]
    n = len(certs)
    correct = [r["decision"] == r["label"] for r in certs]
    rows = []
    for p in config["patch_sizes"]:
        cert = [r["certified"][str(p)] for r in certs]
        rows.append({"patch": p, "n": n, "clean_accuracy": sum(correct) / n if n else None,
                     "certified_accuracy": sum(c and k for c, k in zip(cert, correct)) / n if n else None,
                     "certified_rate": sum(cert) / n if n else None})
    attack_rows, flags = [], []
    for p in sorted({r["patch"] for r in attacks}):
        rs = [r for r in attacks if r["patch"] == p]
        row = {"patch": p, "n": len(rs),
               "certified_attacked": sum(r["certified"] for r in rs),
               "certified_broken": sum(r["certified"] and r["broken"] for r in rs),
               "uncertified_attacked": sum(not r["certified"] for r in rs),
               "uncertified_broken": sum((not r["certified"]) and r["broken"] for r in rs),
               "accuracy_under_attack": sum((r["decision_adv"] == r["label"]) for r in rs) / len(rs)}
        attack_rows.append(row)
        if row["certified_broken"]:
            flags.append({"code": "SOUNDNESS_VIOLATION", "severity": "error",
                          "message": f"the patch attack changed {row['certified_broken']} certified decisions at "
                                     f"patch size {p}: the certificate is unsound"})
    return {"format": FORMAT, "config_hash": config_hash, "config": dict(config), "n": n,
            "clean_accuracy": sum(correct) / n if n else None, "rows": rows, "attack": attack_rows,
            "passes_per_image": sum(r["passes"] for r in certs) / n if n else None,
            "seconds_per_image": sum(r["time_s"] for r in certs) / n if n else None, "flags": flags}


def render_certify_markdown(summary: Mapping[str, Any]) -> str:
    """``summary.md``: certified accuracy per patch size, cost, and the attack's counts."""
    cfg = summary["config"]
    lines = [f"# Certification: {json.dumps(cfg['certifier'])}", "",
             f"Model: {summary.get('model') or '-'}; data: {summary.get('data') or '-'}; {summary['n']} images; "
             f"clean accuracy {pct(summary['clean_accuracy'])}; {summary['passes_per_image']} masked forward passes "
             f"per image; {summary['seconds_per_image']:.4f} s per image." if summary["n"] else "No images.", "",
             markdown_table(summary["rows"], ["patch", "clean_accuracy", "certified_accuracy", "certified_rate"],
                            ["patch side", "clean accuracy", "certified accuracy", "certified (any label)"],
                            {k: pct for k in ("clean_accuracy", "certified_accuracy", "certified_rate")})]
    if summary["attack"]:
        lines += ["## Empirical check: adaptive patch attack", "",
                  "A certified image whose decision the attack changes would make the certificate unsound. "
                  + ("Attacked: the first images certified at each attacked size."
                     if cfg["attack"].get("certified_only") else "Attacked: the first images of the run."), "",
                  markdown_table(summary["attack"], ["patch", "n", "certified_attacked", "certified_broken",
                                                     "uncertified_attacked", "uncertified_broken",
                                                     "accuracy_under_attack"],
                                 ["patch side", "images", "certified attacked", "certified broken",
                                  "uncertified attacked", "uncertified broken", "accuracy under attack"],
                                 {"accuracy_under_attack": pct})]
    for f in summary["flags"]:
        lines.append(f"- **{f['code']}** ({f['severity']}): {f['message']}")
    return "\n".join(lines) + "\n"


def _model_line(meta: Mapping[str, Any] | None) -> str | None:
    if not meta:
        return None
    return ", ".join(str(v) for v in (meta.get("arch"), meta.get("path"),
                                      f"sha256 {str(meta.get('sha256'))[:16]}" if meta.get("sha256") else None) if v)
