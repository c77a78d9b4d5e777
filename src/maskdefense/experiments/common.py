"""Shared pieces of the experiments: getting (training if needed) the models a study needs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from torch import nn

from ..checkpoint import CheckpointError, components_of, load_components, load_model, read_metadata, read_sidecar
from ..eval.harness import record_commits
from ..provenance import atomic_write_json
from ..training.presets import AutoencoderPreset, DenoiserPreset, PartPreset, Preset, SFMPreset, create_preset
from ..training.loop import (
    denoiser_training_key, part_training_key, sfm_training_key, train_autoencoder_on_dataset,
    train_denoiser_on_dataset, train_on_dataset, train_on_part_data, train_sfm_on_dataset, training_key,
)


class MissingRunError(FileNotFoundError):
    """A study needs another study's results first (its stored examples); the message names the command."""


def ensure_model(
    preset: str | Preset,
    runs_dir: str | Path = "runs",
    *,
    seed: int = 0,
    data_root: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool | None = None,
    monitor_test: bool = False,
    **overrides: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model trained with ``preset`` (and ``overrides``) and ``seed``: reused when its checkpoint
    exists and was trained with exactly this configuration, else trained (or its interrupted training
    resumed) first. Each configuration has its own folder, ``runs_dir/<preset>-<hash of the training
    configuration>``, so changing a preset's rate, cell, model, epochs or seed trains a new model and
    never reuses or overwrites another one. A preset that fine-tunes (``init``) gets its starting model the
    same way first. ``monitor_test``: record test accuracy after every epoch when training (see
    :func:`~maskdefense.training.loop.train_on_dataset`). An :class:`AutoencoderPreset` gives its trained
    image-to-image network (:func:`~maskdefense.training.loop.train_autoencoder_on_dataset`), a
    :class:`PartPreset` its part extractor or classifier (:func:`~maskdefense.training.loop.train_on_part_data`),
    a :class:`DenoiserPreset` its denoiser (:func:`~maskdefense.training.loop.train_denoiser_on_dataset`; its
    classifier's preset, and the denoiser it starts from, got the same way first)."""
    p = create_preset(preset, **overrides) if isinstance(preset, str) else preset
    if isinstance(p, SFMPreset):
        raise TypeError(f"preset {p.name} trains a masker with its classifier: get them with ensure_sfm()")
    if isinstance(p, AutoencoderPreset):
        config, corrupt = p.train_config(seed=seed), p.corruption()
        key = training_key(p.dataset, p.model, p.model_kwargs, config, corrupt, loss=p.loss)
        path = _run_path(p.name, key, runs_dir, seed)
        if not (path.exists() and "test_mse" in read_metadata(path)):
            train_autoencoder_on_dataset(p.dataset, p.model, corrupt, config, out_dir=path.parent, loss=p.loss,
                                         model_kwargs=p.model_kwargs, data_root=data_root, log=log, progress=progress,
                                         meta={"preset": p.to_dict()})
        return load_model(path)
    if isinstance(p, PartPreset):
        config = p.train_config(seed=seed)
        key = part_training_key(p.task, p.data, p.model, p.model_kwargs, config, p.area_threshold)
        path = _run_path(p.name, key, runs_dir, seed)
        done = "test_part_set_accuracy" if p.task == "segment" else "test_accuracy"
        if not (path.exists() and done in read_metadata(path)):
            train_on_part_data(p.task, p.data, p.model, config, out_dir=path.parent, model_kwargs=p.model_kwargs,
                               area_threshold=p.area_threshold, data_root=data_root, log=log, progress=progress,
                               meta={"preset": p.to_dict()})
        return load_model(path)
    if isinstance(p, DenoiserPreset):
        return _ensure_denoiser(p, runs_dir, seed=seed, data_root=data_root, log=log, progress=progress)
    config, transform = p.train_config(seed=seed), p.transform()
    init_from, init = _ensure_init(p.init, runs_dir, seed=seed, data_root=data_root, log=log, progress=progress,
                                   monitor_test=monitor_test)
    key = training_key(p.dataset, p.model, p.model_kwargs, config, transform, init=init, task=p.task)
    path = _run_path(p.name, key, runs_dir, seed)
    if path.exists() and "test_accuracy" in read_metadata(path):
        return load_model(path)
    train_on_dataset(p.dataset, p.model, config, out_dir=path.parent, model_kwargs=p.model_kwargs,
                     transform=transform, data_root=data_root, log=log, progress=progress,
                     meta={"preset": p.to_dict()}, init_from=init_from, monitor_test=monitor_test, task=p.task)
    return load_model(path)  # with the checkpoint's sha256 in its metadata


def _ensure_init(init: str | None, runs_dir: str | Path, component: str = "model",
                 **kw: Any) -> tuple[Path | None, str | None]:
    """The checkpoint path and weights hash (of its network ``component``) of the model of preset ``init``
    (trained if needed), or ``None``s."""
    if init is None:
        return None, None
    _, meta = ensure_model(init, runs_dir, **kw)
    return Path(meta["path"]), components_of(meta)[component]["weights_sha256"]


def _ensure_denoiser(p: DenoiserPreset, runs_dir: str | Path, *, seed: int, **kw: Any) -> tuple[nn.Module, dict[str, Any]]:
    classifier_path, classifier = _ensure_init(p.classifier, runs_dir, seed=seed, **kw)
    init_from, init = _ensure_init(p.init, runs_dir, "denoiser", seed=seed, **kw)
    assert classifier_path is not None and classifier is not None
    config = p.train_config(seed=seed)
    key = denoiser_training_key(p.dataset, p.model, p.model_kwargs, config, classifier=classifier, sigma=p.sigma,
                                objective=p.objective, init=init)
    path = _run_path(p.name, key, runs_dir, seed)
    if not (path.exists() and "test_accuracy" in read_metadata(path)):
        train_denoiser_on_dataset(p.dataset, p.model, classifier_path, config, out_dir=path.parent, sigma=p.sigma,
                                  objective=p.objective, model_kwargs=p.model_kwargs, init_from=init_from,
                                  meta={"preset": p.to_dict()}, **kw)
    return load_model(path, component="denoiser")


def ensure_sfm(
    preset: str | SFMPreset,
    runs_dir: str | Path = "runs",
    *,
    seed: int = 0,
    data_root: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool | None = None,
    **overrides: Any,
) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """The classifier and masker trained with the :class:`SFMPreset` ``preset`` (and ``overrides``) and
    ``seed``, as :func:`ensure_model` gets a model: reused from ``runs_dir/<preset>-<hash>`` when trained with
    exactly this configuration, else trained (resumed) first, the classifier's starting model (``init``)
    too. Returns ``({"classifier": ..., "masker": ...}, metadata)``."""
    p = create_preset(preset, **overrides) if isinstance(preset, str) else preset
    if not isinstance(p, SFMPreset):
        raise TypeError(f"preset {p.name} does not train a masker: get its model with ensure_model()")
    config, preprocess = p.train_config(seed=seed), p.preprocessor()
    init_from, init = _ensure_init(p.init, runs_dir, seed=seed, data_root=data_root, log=log, progress=progress)
    key = sfm_training_key(p.dataset, p.classifier, p.classifier_kwargs, config, masker_name=p.masker,
                           masker_kwargs=p.masker_kwargs, weights=p.weights, preprocess=preprocess,
                           classifier_input=p.classifier_input, init=init, norm_group=p.norm_group)
    path = _run_path(p.name, key, runs_dir, seed)
    if not (path.exists() and "test_accuracy" in read_metadata(path)):
        train_sfm_on_dataset(p.dataset, p.classifier, config, out_dir=path.parent, weights=p.weights,
                             classifier_kwargs=p.classifier_kwargs, masker_name=p.masker, masker_kwargs=p.masker_kwargs,
                             preprocess=preprocess, classifier_input=p.classifier_input, norm_group=p.norm_group,
                             init_from=init_from, data_root=data_root, log=log, progress=progress,
                             meta={"preset": p.to_dict()})
    return load_components(path)


def _run_path(name: str, key: dict[str, Any], runs_dir: str | Path, seed: int) -> Path:
    """``runs_dir/<preset>-<hash of the training key>/model.safetensors``; refused when a checkpoint there
    was trained with another key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    path = Path(runs_dir) / f"{name}-{digest}" / "model.safetensors"
    if path.exists():
        saved = read_metadata(path).get("training_key")
        if saved != key:
            raise CheckpointError(
                f"{path} holds a model trained with another configuration than preset {name} with seed {seed} "
                f"asks for; delete {path.parent} or use another runs folder.\n  saved:    "
                f"{json.dumps(saved, sort_keys=True)}\n  expected: {json.dumps(key, sort_keys=True)}")
    return path


def training_summary(p: Preset | Mapping[str, Any]) -> str:
    """How a classifier preset trains, in words: epochs, optimizer, peak learning rate and schedule, and the
    preset it is fine-tuned from. ``p``: the preset, or its ``to_dict()`` as a checkpoint's record keeps it."""
    d = p if isinstance(p, Mapping) else p.to_dict()
    start = f", fine-tuned from {d['init']}" if d.get("init") else ""
    return f"{d['epochs']} epochs, {d['optimizer']} lr {d['lr']:g}, {d['schedule']} schedule{start}"


def harness_provenance(run_dirs: Iterable[Path]) -> dict[str, Any]:
    """What a study's meta says of the harness runs in ``run_dirs``, from their run.json: their total wall time
    over all resumptions (``eval_wall_time_s_total``) and the commits that computed their records
    (``record_commits``: :func:`maskdefense.eval.harness.record_commits`, sorted, as run.json wrote them, a
    ``+dirty`` kept), which :func:`maskdefense.results.provenance_block` prints beside the commit of the command
    that wrote the README."""
    runs = [json.loads((d / "run.json").read_text()) for d in run_dirs if (d / "run.json").exists()]
    return {"eval_wall_time_s_total": round(sum(float(r.get("wall_time_s_total") or 0.0) for r in runs), 1),
            "record_commits": sorted({c for r in runs for c in record_commits(r)})}


def mean_defined(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None (None when there are none: e.g. no image was correct)."""
    v = [x for x in values if x is not None]
    return sum(v) / len(v) if v else None


def budget_markdown(rows: list[dict[str, Any]], *, value: str = "Defense",
                    defense_name: Callable[[str], str] | None = None) -> str:
    """The verdict and the table of a budget check (rows of :func:`maskdefense.eval.budget.compare_budgets`;
    with ``defense_name``, a leading column naming each row's ``"defense"``)."""
    from ..results import markdown_table, pct

    bad = [r for r in rows if not r["enough"]]
    verdict = (f"**{len(bad)} of {len(rows)} rows moved more than their noise** (flag `BUDGET_NOT_ENOUGH`): their "
               "numbers depend on the budget." if bad else f"All {len(rows)} rows moved less than their noise.")
    shown = [{**r, "budget_text": ", ".join(f"{k} {v}->{r['budget_scaled'][k]}" for k, v in r["budget"].items()) or "-",
              "spg": "{}->{}".format(*r["samples_per_gradient"]), "verdict": "yes" if r["enough"] else "**no**",
              **({"defense": defense_name(r["defense"])} if defense_name else {})} for r in rows]
    lead = ["defense"] if defense_name else []
    return verdict + "\n\n" + markdown_table(
        shown, lead + ["label", "threat", "budget_text", "spg", "base", "scaled", "delta", "noise", "verdict"],
        lead + ["attack", "threat", "budget", "samples per gradient", value, f"{value} (more budget)", "change (pts)",
                "noise (pts)", "enough?"],
        {"base": pct, "scaled": pct, "delta": lambda v: "-" if v is None else f"{100 * v:+.2f}",
         "noise": lambda v: f"{100 * v:.2f}"})


def checkpoint_record(meta: dict[str, Any]) -> dict[str, Any]:
    """What a results file keeps of a checkpoint's record: architecture(s), data, epochs, hashes, test metrics,
    the preset and the training key."""
    keep = ("arch", "arch_kwargs", "components", "dataset", "epochs", "sha256", "weights_sha256", "test_accuracy",
            "test_mse", "test_input_mse", "test_mask_mean", "test_kept", "preset", "training_key")
    return {k: meta.get(k) for k in keep if k in meta}


def keep_training_records(out: str | Path, metas: Iterable[dict[str, Any]]) -> list[str]:
    """Copy the training record of each model (``metas``: the metadata :func:`ensure_model` / :func:`ensure_sfm`
    return) into ``out/checkpoints/<run folder>.json``: the checkpoint's sidecar, its record with the run's
    per-epoch history and seconds, no weights. Returns the file names."""
    names = []
    for m in metas:
        path = Path(m["path"])
        names.append(f"{path.parent.name}.json")
        atomic_write_json(Path(out) / "checkpoints" / names[-1], read_sidecar(path) or read_metadata(path))
    return names


def flag_lines(flags: list[dict[str, Any]]) -> str:
    """The integrity flags as a markdown list (``run``: the harness run a flag comes from)."""
    return "\n".join(f"- **{f['code']}** ({f['severity']}{', ' + f['run'] if f.get('run') else ''}): {f['message']}"
                     for f in flags) or "- none"


def check_sections(meta: dict[str, Any], how: str, *, defense_name: Callable[[str], str] | None = None,
                   flags: str | None = None) -> list[str]:
    """The closing sections of a study's README from its ``meta`` (``budget_check``, ``flags``,
    ``eval_wall_time_s_total``): the budget check (``how``: what was run again; then :func:`budget_markdown`),
    the integrity flags (``flags``: their text, else :func:`flag_lines`) and the harness runs' wall time."""
    return ["## Is the attack budget enough?",
            f"{how} {budget_markdown(meta['budget_check'], value='accuracy', defense_name=defense_name)}",
            "## Integrity flags", flag_lines(meta["flags"]) if flags is None else flags,
            f"Wall time of the harness runs over all resumptions: {meta['eval_wall_time_s_total']} s."]
