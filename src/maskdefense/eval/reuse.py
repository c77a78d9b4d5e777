"""Evaluate another defense on the adversarial examples a previous :func:`~maskdefense.eval.evaluate` run
stored (``save_adversarial=True``), without attacking again.

This is sound only where the examples do not depend on the defense: the *gray-box* threat (examples
made against the base network) and the *black-box* threat (made against the surrogate). So the new
defense must wrap the same base network (same weights; checked by hash) and may differ only in what it
does at test time -- e.g. MAD's test cell size or vote count (MAD Table 3 evaluates one trained model
with 2x2, 4x4 and 8x8 test cells), or in networks around the base (a reformer, an inpainter, detectors)
when the source run attacked the base alone (the oblivious setting). Adaptive rows are skipped: their
examples were made against the old defense. Transfer examples depend on the surrogate alone: a source
holding only black-box rows serves any defense, whatever its base network (the base network's predictions
on the examples and its output diagnostics are then computed again). A defense whose gray-box attacker also
knows some of its learned parts (:meth:`~maskdefense.defenses.base.Defense.oblivious_target`: a learned
masker) has its own gray-box examples: the source's gray-box target must be the new defense's (the same
description; the weights check above then makes them the same network), else the reuse is refused.

The new run directory gets the same files as an :func:`evaluate` run (records, ``run.json`` with a
pointer to the source run, ``summary.*``), so a table built from it reads like any other.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..defenses.base import Contract, contract_of
from ..provenance import atomic_write_json, run_metadata
from ..rundir import exclusive
from ..validation import check_images, check_labels
from ..seeding import derive_seed
from .checks import output_stats, run_checks
from .harness import (FORMAT, ConfigMismatchError, Report, _argmax, _as_defense, _fork, _no_grad, _predict, _progress,
                      _scores, _unpack, clean_records, config_digest, config_versions, randomness_check, resumption,
                      state_hash, tensor_hash, write_summary)
from .records import RecordStore
from .report import RowPlan, summarize

__all__ = ["reevaluate", "REUSABLE_THREATS"]

REUSABLE_THREATS = ("gray-box", "black-box")


def reevaluate(defense: torch.nn.Module, data: Any, source: str | Path, *, out_dir: str | Path,
               repeats: int | None = None, seed: int | None = None, progress: bool = True,
               command: str | None = None) -> Report:
    """Evaluate ``defense`` on the stored gray-box/black-box adversarial examples of the run in
    ``source`` (made with ``save_adversarial=True`` on the same ``data``); write a run to ``out_dir``.

    Refused (``ConfigMismatchError``) when ``source`` is incomplete, stored no examples, was made on
    other data, when ``defense`` does not share its base network's weights (unless the source holds black-box
    rows only), or when its gray-box target
    (:meth:`~maskdefense.defenses.base.Defense.oblivious_target`) is not the one the source attacked.
    ``out_dir`` is locked for the run (``BusyError`` when another run holds it); its ``run.json`` binds only
    when records exist.
    """
    t_start = time.perf_counter()
    src = Path(source)
    run = json.loads((src / "run.json").read_text()) if (src / "run.json").exists() else None
    if run is None or run.get("status") != "complete" or not (src / "summary.json").exists():
        raise ConfigMismatchError(f"{src} is not a complete evaluation run")
    old_cfg, summary_old = run["config"], json.loads((src / "summary.json").read_text())
    defense = _as_defense(defense).eval()
    x, y, data_meta = _unpack(data)
    check_images(x)
    y = check_labels(y, x.shape[0])
    if tensor_hash(x, y) != old_cfg["data_sha256"]:
        raise ConfigMismatchError(f"{src} was evaluated on other data (hash differs)")
    # the source attacked this very defense, or a defense whose only network was this base (MAD, no defense);
    # transfer examples (made against the surrogate) serve any base
    same_base = old_cfg["model_sha256"] in (state_hash(defense), state_hash(defense, prefix="base."))
    transfer_only = {r["threat"] for r in summary_old["rows"] if r["threat"] in REUSABLE_THREATS} == {"black-box"}
    if not (same_base or transfer_only):
        raise ConfigMismatchError(f"the defense's weights differ from the base network of {src}: its adversarial "
                                  "examples were not made against this model")
    gray = run.get("targets", {}).get("gray-box")
    if gray is not None:
        mine = defense.oblivious_target()[1]
        if gray["target"] != mine:
            raise ConfigMismatchError(f"the gray-box examples of {src} were made against the {gray['target']}; this "
                                      f"defense's gray-box attacker attacks the {mine}")
    seed = int(old_cfg["seed"] if seed is None else seed)
    contract = contract_of(defense)
    repeats = repeats if repeats is not None else (3 if contract.randomized else 1)
    n, bs = int(old_cfg["n"]), int(old_cfg["batch_size"])
    old_rows = [r for r in summary_old["rows"] if r["threat"] in REUSABLE_THREATS]
    plans = [RowPlan(r["threat"], r["attack"], r["name"], r["label"], r["family"], r["norm"], r["eps"],
                     r["samples_per_gradient"], r["sanity"],
                     {"attack": r.get("paper_attack"), "defense": r.get("paper_defense")}) for r in old_rows]
    config = {**{k: v for k, v in old_cfg.items() if k != "randomized"}, "format": FORMAT,
              "defense": defense.config(), "defense_class": type(defense).__name__, "contract": contract.to_dict(),
              "repeats": repeats, "seed": seed, "versions": config_versions(), "reused_from": run["config_hash"],
              **({} if same_base else {"model_sha256": state_hash(defense)})}
    config_hash = config_digest(config)
    _predict(defense, x[:1], seed, "probe")  # a defense that fails at run time fails before anything is written
    groups: dict[str, list[dict[str, Any]]] = {}
    diags: list[dict[str, Any]] = []  # the attack targets' (unchanged) diagnostics are copied
    with exclusive(src, "reevaluate (reading its records)"):  # read only; a run still writing them is refused
        for rec in RecordStore(src / "records.jsonl"):
            if rec.get("kind") == "attack" and rec["threat"] in REUSABLE_THREATS:
                if "adv_file" not in rec:
                    raise ConfigMismatchError(f"{src} did not store its adversarial examples (save_adversarial=False)")
                groups.setdefault(f"attack|{rec['threat']}|{rec['attack']}|{rec['idx'] // bs * bs}", []).append(rec)
            elif rec.get("kind") == "diag" and rec["name"] not in _measured_again(same_base):
                diags.append(rec)
    with exclusive(out_dir, "reevaluate") as out:
        return _reevaluate(defense, contract, x, y, data_meta, src, run, summary_old, plans, groups, diags, config,
                           config_hash, out, n=n, bs=bs, seed=seed, repeats=repeats, progress=progress,
                           command=command, t_start=t_start, same_base=same_base)


def _measured_again(same_base: bool) -> tuple[str, ...]:
    """The diagnostics a reevaluation measures itself: the new defense's randomness, and the outputs of a base
    network other than the source's."""
    return ("randomness",) if same_base else ("randomness", "outputs:base")


def _reevaluate(defense: torch.nn.Module, contract: Contract, x: torch.Tensor, y: torch.Tensor, data_meta: Any,
                src: Path, run: dict[str, Any], summary_old: dict[str, Any], plans: list[RowPlan],
                groups: dict[str, list[dict[str, Any]]], diags: list[dict[str, Any]], config: dict[str, Any],
                config_hash: str, out: Path, *, n: int, bs: int, seed: int, repeats: int, progress: bool,
                command: str | None, t_start: float, same_base: bool) -> Report:
    old_cfg = run["config"]
    run_path = out / "run.json"
    store = RecordStore(out / "records.jsonl")
    has_records = store.path.exists() and store.path.stat().st_size > 0
    previous: dict[str, Any] = json.loads(run_path.read_text()) if has_records and run_path.exists() else {}
    if has_records and previous.get("config_hash") != config_hash:
        raise ConfigMismatchError(f"{out} holds a run with a different configuration; use another directory")
    store.open()
    meta = run_metadata(seed, command=command, config=config, config_hash=config_hash, source_run=str(src),
                        source_config_hash=run["config_hash"], threats=sorted({p.threat for p in plans}),
                        threat_descriptions={k: v for k, v in run.get("threat_descriptions", {}).items()
                                             if k in REUSABLE_THREATS},
                        checkpoint=run.get("checkpoint"), data=data_meta, status="running",
                        **resumption(previous, store))
    atomic_write_json(run_path, meta)

    for rec in diags:
        if f"diag|{rec['name']}" not in store.done_groups:
            store.append_group(f"diag|{rec['name']}", [{k: v for k, v in rec.items() if k not in ("group", "group_size")}])
    m = int(old_cfg.get("check_samples", 64))
    measures = {"randomness": lambda: randomness_check(defense, x[:m], seed),
                "outputs:base": lambda: output_stats(_no_grad(defense.base, x[:m]))}
    for name in _measured_again(same_base):
        if f"diag|{name}" not in store.done_groups:
            with _fork(derive_seed(seed, "diag", name)):
                res = measures[name]()
            store.append_group(f"diag|{name}", [{"key": f"diag|{name}", "kind": "diag", "name": name, **res}])
    todo = [(s, min(s + bs, n)) for s in range(0, n, bs) if f"clean|{s}" not in store.done_groups]
    bar = _progress(len(todo) + len(groups), progress, "reevaluate")
    for s, e in todo:
        store.append_group(f"clean|{s}", clean_records(defense, x[s:e], y[s:e], s, seed, repeats))
        bar.update(1)
    for group, recs in groups.items():
        if group in store.done_groups:
            bar.update(1)
            continue
        recs.sort(key=lambda r: r["idx"])
        stored = load_file(str(src / recs[0]["adv_file"]))
        s = int(stored["idx"][0])
        xb = x[s:s + len(stored["idx"])]
        x_eval = torch.where(stored["valid"].view(-1, *[1] * (xb.dim() - 1)), stored["x_adv"], xb)
        _, threat, key, _ = group.split("|", 3)
        pd = [_predict(defense, x_eval, seed, "defense", threat, key, s, r) for r in range(repeats)]
        pb = None if same_base else _argmax(defense.base, x_eval, seed, "base", threat, key, s)
        new = [{**{k: v for k, v in rec.items() if k not in ("group", "group_size", "score_adv")},
                **({} if pb is None else {"pred_base_adv": int(pb[rec["idx"] - s])}),
                "pred_defense_adv": [int(p[rec["idx"] - s]) for p in pd]} for rec in recs]
        if contract.rejects:
            scores = _scores(defense, x_eval, seed, "defense", threat, key, s)
            for rec in new:
                rec["score_adv"] = scores[rec["idx"] - s]
        store.append_group(group, new)
        bar.update(1)
    bar.close()

    clean, rows, diagnostics = summarize(store, plans, n=n, repeats=repeats, rejects=contract.rejects)
    flags = run_checks(rows, diagnostics, threats=meta["threats"], defense_name=str(config["defense"].get("defense")),
                       contract=contract, dim=int(x[0].numel()), n=n)
    summary = {**{k: summary_old.get(k) for k in ("model", "targets", "suite")}, "format": FORMAT, "config_hash": config_hash,
               "config": config, "threats": meta["threats"], "threat_descriptions": meta["threat_descriptions"],
               "data": data_meta or {}, "paper_benign": summary_old.get("paper_benign"), "clean": clean, "rows": rows,
               "flags": [f.to_dict() for f in flags], "diagnostics": diagnostics,
               "attacks": [a for a in summary_old.get("attacks", []) if a.get("key") in {p.spec_key for p in plans}],
               "reused_from": str(src)}
    write_summary(out, summary)
    wall = round(time.perf_counter() - t_start, 3)
    meta.update(status="complete", wall_time_s=wall,
                wall_time_s_total=round(float(meta["wall_time_s_previous"]) + wall, 3),
                records=store.n_records, flags=[f.to_dict() for f in flags])
    atomic_write_json(run_path, meta)
    return Report(rows, clean, flags, config, config_hash, meta["threats"], summary["attacks"], out, summary)
