"""The evaluation harness: :func:`evaluate` a defense under threat models and attacks.

What it does, in order (every step resumable):

1. validates the data and resolves the attack specs and threat models; reads the defense's declared
   :class:`~maskdefense.defenses.base.Contract`; computes the run's *config* (defense config and
   contract, hashes of the weights and the data, seed, batch size, EOT samples, repeats, library
   versions); tries every defense and target call on one image; then locks the output folder and
   refuses to continue a run directory whose records belong to another config or another plan;
2. per batch of images: records the base model's and the defense's clean predictions (the defense
   ``repeats`` times with fresh randomness);
3. measures gradients, output ranges and randomness of every attack target on a sample of inputs
   (records used by the integrity checks);
4. for every (threat model, attack, batch): runs the attack against the threat model's target,
   verifies every example (budget and range: invalid examples count as failed attacks), and records
   per example the label, the base model's, the target's and the defense's predictions (and a
   detector's score) and the perturbation's L0/L1/L2/Linf norms and time;
5. summarizes the records into ``summary.md``/``.csv``/``.json``, ``acc_vs_eps.png`` and the flags.

Determinism: batches are fixed index ranges ``[k*B, (k+1)*B)``, and every random choice of a batch is
seeded from ``(seed, what, threat, attack, batch start)``: the generator given to the defense and, around
every defense, target and attack call, torch's global RNG (so a defense that ignores its generator is
repeatable too, whatever ran before in the process); the records of a batch are appended in one
atomic group. So a killed and resumed run recomputes exactly the missing batches with the same seeds
and yields the same tables as an uninterrupted run. The batch size is part of the config (the
randomness of a batch depends on its composition).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..attacks import AttackSpec, parse_attack_spec, parse_attacks, run_attack
from ..defenses.base import REJECT, Contract, Defense, NoDefense, contract_of
from ..provenance import atomic_write_bytes, atomic_write_json, atomic_write_text, library_versions, run_metadata
from ..rundir import exclusive
from ..seeding import derive_seed, seeded
from ..spec import SpecError
from ..validation import check_images, check_labels, positive_int
from .checks import Flag, gradient_stats, output_stats, run_checks
from .records import RecordStore
from .report import RowPlan, plot_acc_vs_eps, render_csv, render_markdown, summarize
from .threat import DetectorAware, ThreatModel, bound_labels, make_target, parse_threats
from .verify import verify_perturbation

__all__ = [
    "evaluate", "Report", "ConfigMismatchError", "derive_seed", "attack_and_verify", "AttackOutcome",
    "benchmark_pgd_linf", "state_hash", "tensor_hash", "FORMAT",
]

FORMAT = "maskdefense-eval-v1"
DEFAULT_SANITY = "pgd-linf:eps=0.5"
#: The sanity attack against a defense that rejects inputs: PGD on cross-entropy returns its last iterate, and
#: cross-entropy saturates once the detected class dominates (MagNet on MNIST scored 100% under adaptive PGD and
#: APGD-CE at Linf 0.5); PGD on the margin loss from the clean image returns its best iterate.
DETECTOR_SANITY = "pgd-cw-linf:eps=0.5"
#: The detector weights an adaptive attack on a defense that rejects is restarted with (``evaluate``'s
#: ``detector_weight``): the right trade-off between label and detector depends on the scale of the logits
#: against the score's, and no single weight is the strongest for every defense and example.
DETECTOR_WEIGHTS = (1.0, 10.0, 100.0)


def default_sanity(defense: nn.Module) -> str:
    """The sanity attack ``evaluate(sanity="auto")`` runs: :data:`DETECTOR_SANITY` against a defense that rejects
    inputs, else :data:`DEFAULT_SANITY`."""
    return DETECTOR_SANITY if contract_of(defense).rejects else DEFAULT_SANITY
WALL_TIME_SAVE_S = 30.0  # run.json's running wall-time total is refreshed at most this often
#: Libraries whose versions are part of a run's config: a resume after an upgrade is refused.
CONFIG_LIBS = ("maskdefense", "torch", "numpy", "foolbox", "pyautoattack")


class ConfigMismatchError(RuntimeError):
    """The output directory holds records of a different configuration."""


def _gen(*parts: Any) -> torch.Generator:
    return seeded(derive_seed(*parts))


def tensor_hash(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def state_hash(module: nn.Module, prefix: str = "") -> str:
    """sha256 of a module's state dict (names, dtypes, shapes, values); with ``prefix`` (``"base."``) of the
    entries whose names start with it only."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        if not k.startswith(prefix):
            continue
        h.update(k.encode())
        h.update(tensor_hash(v).encode())
    return h.hexdigest()


@dataclass
class Report:
    """The result of :func:`evaluate` (also written to ``out_dir``)."""

    rows: list[dict[str, Any]]
    clean: dict[str, Any]
    flags: list[Flag]
    config: dict[str, Any]
    config_hash: str
    threats: list[str]
    attacks: list[dict[str, Any]]
    out_dir: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict, repr=False)

    def row(self, attack: str | AttackSpec, threat: str | ThreatModel = "gray-box") -> dict[str, Any]:
        """The summary row of an attack (spec, key, label or text) under a threat model."""
        t = ThreatModel.parse(threat).value
        if isinstance(attack, AttackSpec):
            keys = {attack.key}
        else:
            keys = {attack}
            try:
                keys.add(parse_attack_spec(attack).key)
            except Exception:
                pass
        for r in self.rows:
            if r["threat"] == t and (r["attack"] in keys or r["label"] in keys):
                return r
        raise KeyError(f"no row for {attack!r} under {t}")

    @property
    def errors(self) -> list[Flag]:
        return [f for f in self.flags if f.severity == "error"]

    def flag_codes(self) -> set[str]:
        return {f.code for f in self.flags}

    def to_markdown(self) -> str:
        return render_markdown(self.summary)


def _unpack(data: Any) -> tuple[Tensor, Tensor, dict[str, Any]]:
    if hasattr(data, "images") and hasattr(data, "labels"):
        meta = {k: getattr(data, k) for k in ("name", "split") if hasattr(data, k)}
        return data.images, data.labels, meta
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1], {}
    raise TypeError("data must be an ImageData or a tuple (images, labels)")


def _as_defense(model: nn.Module) -> Defense:
    return model if isinstance(model, Defense) else NoDefense(model)


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not (enabled and sys.stderr.isatty()), leave=False,
                dynamic_ncols=True)


@contextmanager
def _fork(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG seeded to ``seed``; restore the caller's state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _predict(defense: Defense, x: Tensor, *parts: Any) -> Tensor:
    """``defense.predict`` with its generator seeded from ``parts`` and torch's global RNG too (seeded from
    ``("global", *parts)``), so a defense that ignores the generator it is given is still repeatable."""
    with _fork(derive_seed("global", *parts)):
        out = defense.predict(x, generator=_gen(*parts))
    if isinstance(out, tuple):
        out = out[0]
    return out.long().cpu()


@torch.no_grad()
def _argmax(model: nn.Module, x: Tensor, *parts: Any) -> Tensor:
    """``model(x).argmax(1)`` with torch's global RNG seeded from ``parts``."""
    with _fork(derive_seed("global", *parts)):
        return model(x).argmax(1).cpu()


@torch.no_grad()
def _scores(defense: Defense, x: Tensor, *parts: Any) -> list[float]:
    """The detector scores of a defense that rejects inputs, seeded like :func:`_predict`."""
    with _fork(derive_seed("global", "score", *parts)):
        return [float(v) for v in defense.detect(x, generator=_gen("score", *parts)).cpu()]


def randomness_check(defense: Defense, xs: Tensor, seed: int) -> dict[str, Any]:
    """Whether the defense's forward or predict differs between two runs with different seeds (the
    ``randomness`` diagnostic: undeclared or missing randomness is flagged)."""
    with torch.no_grad():
        with _fork(derive_seed(seed, "rnd", 1)):
            o1 = defense(xs)
        with _fork(derive_seed(seed, "rnd", 2)):
            o2 = defense(xs)
    p1 = _predict(defense, xs, seed, "rnd", 3)
    p2 = _predict(defense, xs, seed, "rnd", 4)
    fwd = not torch.equal(o1, o2)
    prd = not torch.equal(p1, p2)
    return {"declared": contract_of(defense).randomized, "observed": fwd or prd,
            "forward_differs": fwd, "predict_differs": prd}


def config_digest(config: Mapping[str, Any]) -> str:
    """The ``config_hash`` of a run: sha256 of its config as canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def config_versions() -> dict[str, str]:
    """The library versions that are part of a run's config (a resume after an upgrade is refused)."""
    return {k: v for k, v in library_versions().items() if k in CONFIG_LIBS}


def clean_records(defense: Defense, x: Tensor, y: Tensor, s: int, seed: int, repeats: int) -> list[dict[str, Any]]:
    """The clean records of the batch ``x, y`` starting at index ``s``: base and defense predictions,
    the defense ``repeats`` times with the batch's seeded randomness (and a detector's scores)."""
    pb = _argmax(defense.base, x, seed, "clean-base", s)
    pd = [_predict(defense, x, seed, "clean", s, r) for r in range(repeats)]
    recs = [{"key": f"clean|{s + i}", "kind": "clean", "idx": s + i, "label": int(y[i]),
             "pred_base": int(pb[i]), "pred_defense": [int(p[i]) for p in pd]} for i in range(len(y))]
    if contract_of(defense).rejects:
        for rec, score in zip(recs, _scores(defense, x, seed, "clean", s)):
            rec["score"] = score
    return recs


def write_summary(out: Path, summary: Mapping[str, Any]) -> None:
    """``summary.json``/``.csv``/``.md`` and ``acc_vs_eps.png`` of a run, written atomically."""
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.csv", render_csv(summary))
    atomic_write_text(out / "summary.md", render_markdown(summary))
    plot_acc_vs_eps(summary, out / "acc_vs_eps.png")


# ----------------------------------------------------------------------------------------------
# attacking one batch (shared by evaluate, attack_and_verify and the benchmark)


def _attack_batch(spec: AttackSpec, target: nn.Module, x: Tensor, y: Tensor, gen_seed: int) -> tuple[Tensor, Any, float]:
    t0 = time.perf_counter()
    x_adv = run_attack(spec, target, x, y, seeded(gen_seed))
    elapsed = time.perf_counter() - t0
    ver = verify_perturbation(x, x_adv, spec.norm, spec.eps)
    return x_adv, ver, elapsed


def _detector_weights(w: float | Sequence[float]) -> tuple[float, ...]:
    ws = (w,) if isinstance(w, (int, float)) and not isinstance(w, bool) else tuple(w)
    if not ws or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in ws):
        raise ValueError(f"detector_weight must be a positive number or a sequence of them, got {w!r}")
    return tuple(float(v) for v in ws)


def _over_detector_weights(spec: AttackSpec, target: nn.Module, x: Tensor, y: Tensor, weights: Sequence[float],
                           seed_of: Callable[[int], int],
                           fools: Callable[[Tensor, Tensor, int], Tensor]) -> tuple[Tensor, Any, float]:
    """The attack restarted with each detector weight in turn (see :func:`evaluate`'s ``detector_weight``) on the
    examples the previous weights did not make fool the defense; per example the first fooling example, else the
    last weight's. The target's weight is back at ``weights[0]`` afterwards.

    ``fools(x_adv, y, k)`` (bool, per example) decides what fooled: the defense's own decision (the harness passes
    ``predict``: not the label and not rejected), not the target's arg-max: its merged logit ``logsumexp(Z_y, G)``
    exceeds ``max Z`` also where the detector's margin is slightly *below* the threshold, so an example that passes
    the detector can look caught, and its restart would overwrite it with a worse one."""
    parts = [m for m in target.modules() if isinstance(m, DetectorAware)]
    x_out, todo, total = x.clone(), torch.ones(x.shape[0], dtype=torch.bool), 0.0
    try:
        for k, w in enumerate(weights):
            for m in parts:
                m.weight = float(w)
            idx = todo.nonzero()[:, 0]
            with bound_labels(target, y[idx]):
                x_adv, ver, dt = _attack_batch(spec, target, x[idx], y[idx], seed_of(k))
                x_ok = torch.where(ver.valid.view(-1, *[1] * (x.dim() - 1)), x_adv, x[idx])
                with _fork(seed_of(k)), torch.no_grad():
                    fooled = fools(x_ok, y[idx], k).cpu() & ver.valid.cpu()
            total += dt
            x_out[idx] = x_adv
            todo[idx[fooled]] = False
            if not todo.any():
                break
    finally:
        for m in parts:
            m.weight = float(weights[0])
    return x_out, verify_perturbation(x, x_out, spec.norm, spec.eps), total


@dataclass
class AttackOutcome:
    """Result of :func:`attack_and_verify`.

    x_adv : adversarial examples where valid, the clean image where the attack broke the rules.
    valid : per-example validity (budget, range, finite).
    norms : per-example L0/L1/L2/Linf of the raw perturbations.
    pred : the model's predictions on ``x_adv``; ``accuracy`` = mean(pred == y).
    seconds : attack wall time (without verification and prediction).
    """

    x_adv: Tensor
    valid: Tensor
    norms: dict[str, Tensor]
    pred: Tensor
    accuracy: float
    seconds: float
    spec: AttackSpec


def attack_and_verify(spec: AttackSpec | str, model: nn.Module, x: Tensor, y: Tensor, *, seed: int = 0,
                      batch_size: int = 100, threat: str = "gray-box", progress: bool = False) -> AttackOutcome:
    """Run ``spec`` against ``model`` through the harness (batched, seeded per batch as in
    :func:`evaluate`, every example verified), without writing anything."""
    spec = parse_attack_spec(spec) if isinstance(spec, str) else spec
    check_images(x)
    y = check_labels(y, x.shape[0])
    model.eval()
    outs, valids, preds = [], [], []
    norms: dict[str, list[Tensor]] = {}
    total = 0.0
    bar = _progress(math.ceil(x.shape[0] / batch_size), progress, spec.text)
    for s in range(0, x.shape[0], batch_size):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        x_adv, ver, dt = _attack_batch(spec, model, xb, yb, derive_seed(seed, "attack", threat, spec.key, s))
        total += dt
        x_eval = torch.where(ver.valid.view(-1, *[1] * (xb.dim() - 1)), x_adv, xb)
        outs.append(x_eval)
        valids.append(ver.valid)
        preds.append(_argmax(model, x_eval, seed, "verify", threat, spec.key, s))
        for k, v in ver.norms.items():
            norms.setdefault(k, []).append(v)
        bar.update(1)
    bar.close()
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    return AttackOutcome(
        torch.cat(outs) if outs else x.clone(), torch.cat(valids) if valids else torch.zeros(0, dtype=torch.bool),
        {k: torch.cat(v) for k, v in norms.items()}, pred,
        float((pred == y.cpu()).float().mean()) if len(pred) else float("nan"), total, spec)


def benchmark_pgd_linf(model: nn.Module, x: Tensor, y: Tensor, *, eps: float = 0.3, steps: int = 40,
                       batch_size: int = 256, seed: int = 0, **params: Any) -> dict[str, Any]:
    """Time Foolbox PGD-Linf through the harness on ``(x, y)``: returns images/s and the accuracy."""
    spec = parse_attack_spec(f"pgd-linf:eps={eps!r},steps={steps}").with_params(**params) if params else \
        parse_attack_spec(f"pgd-linf:eps={eps!r},steps={steps}")
    t0 = time.perf_counter()
    out = attack_and_verify(spec, model, x, y, seed=seed, batch_size=batch_size)
    wall = time.perf_counter() - t0
    n = int(x.shape[0])
    return {"attack": spec.key, "n": n, "batch_size": batch_size, "attack_seconds": round(out.seconds, 4),
            "wall_seconds": round(wall, 4), "images_per_second": round(n / out.seconds, 3) if out.seconds else None,
            "robust_accuracy": out.accuracy, "n_invalid": int((~out.valid).sum()),
            "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------------------------
# the evaluation


def _slug(spec: AttackSpec) -> str:
    return f"{spec.name}_{hashlib.sha1(spec.key.encode()).hexdigest()[:10]}"


def _config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(d if len(d) < 200 else d[:200] + "..." for d in diffs)


def open_run(out: Path, store: RecordStore, config: dict[str, Any], config_hash: str, *, resume: bool, holds: str,
             outputs: Sequence[str] = ()) -> dict[str, Any]:
    """Start or resume the run folder ``out`` (its lock held): ``resume=False`` clears its records, ``outputs``
    and ``run.json``; otherwise records already there must come from a run of this configuration (its
    ``run.json``'s hash; a ``run.json`` without records binds nothing), else a :class:`ConfigMismatchError` says
    that ``out`` holds ``holds``. Returns the previous ``run.json`` (``{}`` when there is nothing to resume)."""
    run_path = out / "run.json"
    if not resume:
        store.reset()
        for name in (*outputs, "run.json"):
            (out / name).unlink(missing_ok=True)
        return {}
    if not (store.path.exists() and store.path.stat().st_size > 0):
        return {}
    if not run_path.exists():
        raise ConfigMismatchError(f"{out} holds records but no run.json; cannot check their configuration")
    previous = json.loads(run_path.read_text())
    if previous.get("config_hash") != config_hash:
        raise ConfigMismatchError(f"{out} holds {holds} ({_config_diff(previous.get('config', {}), config)}); "
                                  "use another output directory, or start over (resume=False / --fresh)")
    return previous


#: What a run's ``history`` keeps of each earlier run into the same folder.
_HISTORY_KEYS = ("git_commit", "started", "wall_time_s", "status", "records_at_start", "records")


def resumption(previous: Mapping[str, Any], store: RecordStore) -> dict[str, Any]:
    """The run.json fields a run carries over from the previous run into its folder (``{}``: none): the wall
    time so far, the number of runs, the records found at its start (``store``, opened), and ``history``, the
    commit, start, wall time, status and record counts of every earlier run -- the records of a resumed run may
    come from several commits, and ``git_commit`` is only the last (:func:`record_commits` names them all)."""
    history = list(previous.get("history", []))
    if previous:
        history.append({k: previous.get(k) for k in _HISTORY_KEYS})
    return {"wall_time_s_previous": previous.get("wall_time_s_total", 0.0), "runs": int(previous.get("runs", 0)) + 1,
            "records_at_start": store.n_records, "history": history}


def record_commits(run: Mapping[str, Any]) -> list[str]:
    """The commits of the runs that added records to a run folder, in run order, from its run.json (``history``
    and the last run). A run added records if it ended (or the next run started) with more than it started
    with; a count that was not recorded (a run killed before it finished is followed by none; runs before the
    history existed) counts as added, so a commit is never left out, at worst named once too often."""
    runs = [*run.get("history", []), run]
    out: list[str] = []
    for i, r in enumerate(runs):
        start = r.get("records_at_start", runs[i - 1].get("records") if i else 0)
        end = r.get("records")
        if end is None and i + 1 < len(runs):
            end = runs[i + 1].get("records_at_start")
        added = start is None or end is None or int(end) > int(start)
        if added and r.get("git_commit") and r["git_commit"] not in out:
            out.append(r["git_commit"])
    return out


def evaluate(
    defense: nn.Module,
    data: Any,
    attacks: str | AttackSpec | Iterable[str | AttackSpec],
    threat: str | ThreatModel | Iterable[str | ThreatModel] = "gray-box",
    *,
    out_dir: str | Path,
    surrogate: nn.Module | None = None,
    eot_samples: int = 1,
    eot_reduction: str = "logprob",
    repeats: int | None = None,
    seed: int = 0,
    batch_size: int = 100,
    resume: bool = True,
    progress: bool = True,
    sanity: str | None = "auto",
    save_adversarial: bool = False,
    check_samples: int = 64,
    attack_overrides: str | Mapping[str, Mapping[str, Any]] | None = None,
    checkpoint_meta: Mapping[str, Any] | None = None,
    surrogate_meta: Mapping[str, Any] | None = None,
    check_options: Mapping[str, Any] | None = None,
    paper_benign: float | None = None,
    command: str | None = None,
    detector_weight: float | Sequence[float] = 1.0,
) -> Report:
    """Evaluate ``defense`` on ``data`` under ``threat`` model(s) with ``attacks``; write the results
    to ``out_dir`` and return the :class:`Report`.

    defense : a :class:`~maskdefense.defenses.base.Defense` (a plain model is wrapped in NoDefense);
        put in eval mode here.
    data : ``ImageData`` or ``(images, labels)``; images in [0, 1].
    attacks : spec string(s) (``"pgd-linf:eps=0.3;suite:mad-table5-mnist"``) or :class:`AttackSpec`s.
    threat : ``"gray-box"``, ``"black-box"``, ``"adaptive"`` or several (``"gray-box,adaptive"``).
    surrogate : the independently trained model the black-box threat attacks.
    eot_samples : forward passes averaged per gradient in the adaptive threat (on top of the defense's
        own averaging, e.g. MAD's ``n_grad``).
    repeats : evaluations of a randomized defense with fresh randomness (default 3 if randomized, else 1).
    batch_size : images per attack call; part of the config (fixes the per-batch randomness).
    resume : continue the records in ``out_dir`` (refused if its config differs); ``False`` deletes them.
    sanity : an extra white-box attack with a huge budget whose accuracy must be ~0 (flag
        ``LARGE_EPS_NOT_ZERO``); run under the adaptive threat (or gray-box for an undefended model); ``None``
        to skip; ``"auto"`` (default): :func:`default_sanity` (PGD-Linf 0.5; PGD-CW for a defense that rejects).
    save_adversarial : also store the adversarial examples (safetensors, one file per batch).
    check_samples : inputs used for the gradient/output/randomness measurements.
    attack_overrides : parameters forced on every attack of a name (``"cw-l2:steps=100"``).
    check_options : thresholds for :func:`maskdefense.eval.checks.run_checks` (``grad_frac``,
        ``transfer_tol``, ``large_eps_max_acc``).
    detector_weight : for a defense that rejects inputs, the weight of the detector-score margin in the
        adaptive target (:class:`~maskdefense.eval.threat.DetectorAware`); part of the config. Several weights:
        every adaptive attack is restarted with each in turn on the examples not yet fooled (classifier fooled
        and detector passed), which tunes the attacker's trade-off per example as Carlini and Wagner's search
        over their constant does (the right weight depends on the scale of the logits against the score's).

    Nothing is written before the configuration is validated (every defense and target call is tried
    on one image first); the output folder is then locked for the run (``BusyError`` when another run
    holds it). Resuming is refused when the config (including the library versions) or the plan
    (attacks, threat models, sanity attack) differs from the records' run; a ``run.json`` without
    records binds nothing.
    """
    t_start = time.perf_counter()
    defense = _as_defense(defense).eval()
    if surrogate is not None:
        surrogate.eval()
    x, y, data_meta = _unpack(data)
    check_images(x)
    y = check_labels(y, x.shape[0])
    x = x.detach().contiguous()
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("no images to evaluate")
    for name, v in (("batch_size", batch_size), ("eot_samples", eot_samples), ("check_samples", check_samples)):
        positive_int(v, name)
    threats = parse_threats(threat)
    specs = parse_attacks(attacks, overrides=attack_overrides)
    if ThreatModel.BLACK_BOX in threats and surrogate is None:
        raise ValueError("the black-box threat model needs surrogate= (an independently trained model)")
    contract = contract_of(defense)
    sanity = default_sanity(defense) if sanity == "auto" else sanity
    repeats = repeats if repeats is not None else (3 if contract.randomized else 1)
    positive_int(repeats, "repeats")
    defense_cfg = defense.config()
    defense_name = str(defense_cfg.get("defense", type(defense).__name__))

    # ---- plan: (threat, spec, is_sanity)
    plan: list[tuple[ThreatModel, AttackSpec, bool]] = [(t, s, False) for t in threats for s in specs]
    s_spec = parse_attack_spec(sanity) if sanity else None
    if s_spec is not None:
        s_threat = ThreatModel.WHITE_BOX_ADAPTIVE if ThreatModel.WHITE_BOX_ADAPTIVE in threats else (
            ThreatModel.GRAY_BOX if defense_name == "none" and ThreatModel.GRAY_BOX in threats else None)
        if s_threat is not None and all(not (t == s_threat and s.key == s_spec.key) for t, s, _ in plan):
            plan.append((s_threat, AttackSpec(s_spec.name, s_spec.params, s_spec.given, s_spec.settings,
                                              label=s_spec.text), True))
    plan_meta = {"threats": [t.value for t in threats], "attacks": list(dict.fromkeys(s.key for s in specs)),
                 "sanity": s_spec.key if s_spec is not None else None}
    if contract.rejects:  # the detector-aware target binds a batch's labels: attacks must use whole batches
        partial = sorted({s.display for t, s, _ in plan if t is ThreatModel.WHITE_BOX_ADAPTIVE
                          and not s.definition.whole_batches})
        if partial:
            raise SpecError(f"{', '.join(partial)}: the attack evaluates parts of a batch, so it cannot attack a "
                             "defense that rejects inputs adaptively here (classifier and detector together); use "
                             "an attack that runs on whole batches (Foolbox's, ours, APGD) under the adaptive threat model")

    config: dict[str, Any] = {
        "format": FORMAT,
        "defense": defense_cfg,
        "defense_class": type(defense).__name__,
        "contract": contract.to_dict(),
        "model_sha256": state_hash(defense),
        "surrogate_sha256": state_hash(surrogate) if surrogate is not None else None,
        "data_sha256": tensor_hash(x, y),
        "n": n,
        "image_shape": list(x.shape[1:]),
        "seed": int(seed),
        "batch_size": batch_size,
        "eot_samples": eot_samples,
        "eot_reduction": eot_reduction,
        "repeats": repeats,
        "check_samples": check_samples,
        "versions": config_versions(),
    }
    weights = _detector_weights(detector_weight)
    if contract.rejects:
        config["detector_weight"] = weights[0] if len(weights) == 1 else list(weights)
    config_hash = config_digest(config)

    targets: dict[ThreatModel, tuple[nn.Module, dict[str, Any]]] = {
        t: make_target(defense, t, surrogate=surrogate, eot_samples=eot_samples, eot_reduction=eot_reduction,
                       detector_weight=weights[0])
        for t in threats
    }
    for _, info in targets.values():
        if "detector" in info and len(weights) > 1:
            info["detector"]["weights"] = list(weights)
    for mod, _ in targets.values():
        mod.eval()
    # every defense and target call once on one image, before anything is written: a configuration that
    # fails at run time (a cell that does not divide the image) fails here and leaves no trace
    _predict(defense, x[:1], seed, "probe")
    if contract.rejects:
        _scores(defense, x[:1], seed, "probe")
    for t, (tgt, _) in targets.items():
        with bound_labels(tgt, y[:1]):
            _argmax(tgt, x[:1], seed, "probe", t.value)

    def row_plan(t: ThreatModel, s: AttackSpec, is_sanity: bool) -> RowPlan:
        spg = targets[t][1]["samples_per_gradient"]
        d = s.definition
        if d.eot_param and t is ThreatModel.WHITE_BOX_ADAPTIVE and contract.randomized:
            spg = spg * int(s.params[d.eot_param])
        return RowPlan(t.value, s.key, s.name, s.display, s.family, s.norm, s.eps, spg, is_sanity, s.paper)

    plans = [row_plan(t, s, sa) for t, s, sa in plan]
    with exclusive(out_dir, "evaluate") as out:
        store = RecordStore(out / "records.jsonl")
        run_path = out / "run.json"
        if not resume:
            shutil.rmtree(out / "adversarial", ignore_errors=True)
        previous = open_run(out, store, config, config_hash, resume=resume, holds="a run with a different configuration",
                            outputs=("summary.md", "summary.csv", "summary.json", "acc_vs_eps.png"))
        if previous:
            changed = _plan_diff(previous.get("plan"), plan_meta)
            if changed:
                raise ConfigMismatchError(
                    f"{out} holds a run of other attacks ({changed}); resume with the same attacks, threat models "
                    "and sanity attack, or use another output directory, or start over (resume=False / --fresh)")
        store.open()
        meta = run_metadata(
            seed, command=command, config=config, config_hash=config_hash, plan=plan_meta,
            threats=[t.value for t in threats],
            threat_descriptions={t.value: t.description for t in threats},
            targets={t.value: info for t, (_, info) in targets.items()},
            attacks=[s.to_dict() for _, s, _ in plan],
            sanity=sanity, checkpoint=dict(checkpoint_meta) if checkpoint_meta else None,
            surrogate_checkpoint=dict(surrogate_meta) if surrogate_meta else None,
            data=data_meta, status="running",
            **resumption(previous, store),
        )
        atomic_write_json(run_path, meta)
        report = _run_tasks(defense, contract, x, y, plan, plans, targets, store, out, meta, seed=seed,
                            repeats=repeats, batch_size=batch_size, check_samples=check_samples,
                            save_adversarial=save_adversarial, progress=progress, t_start=t_start,
                            check_options=check_options, defense_name=defense_name, threats=threats,
                            detector_weights=weights)
        summary = {
            "format": FORMAT, "config_hash": config_hash, "config": config,
            "threats": [t.value for t in threats],
            "threat_descriptions": {t.value: t.description for t in threats},
            "targets": {t.value: info for t, (_, info) in targets.items()},
            "model": _model_line(checkpoint_meta),
            "data": data_meta or {},
            "suite": _suite_title(attacks),
            "paper_benign": paper_benign if paper_benign is not None else _suite_benign(attacks),
            **report,
            "attacks": [s.to_dict() for _, s, _ in plan],
        }
        write_summary(out, summary)
        flags = [Flag(**f) for f in report["flags"]]
        timing: dict[str, float] = {}
        for rec in store:
            if rec.get("kind") == "attack":
                k = f"{rec['threat']}|{rec['attack']}"
                timing[k] = timing.get(k, 0.0) + float(rec.get("time_s", 0.0))
        wall = round(time.perf_counter() - t_start, 3)
        meta.update(status="complete", wall_time_s=wall,
                    wall_time_s_total=round(float(meta["wall_time_s_previous"]) + wall, 3),
                    attack_seconds={k: round(v, 3) for k, v in timing.items()},
                    records=store.n_records, repaired_records=store.repaired, flags=report["flags"])
        atomic_write_json(run_path, meta)
    return Report(summary["rows"], summary["clean"], flags, config, config_hash, [t.value for t in threats],
                  summary["attacks"], out, summary)


def _plan_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """What changed between two runs' plans (threat models, attacks, sanity attack); ``""`` if nothing."""
    if old is None:
        return ""
    out = []
    if list(old.get("threats", [])) != list(new["threats"]):
        out.append(f"threat models {','.join(old.get('threats', []))} -> {','.join(new['threats'])}")
    added = [k for k in new["attacks"] if k not in old.get("attacks", [])]
    removed = [k for k in old.get("attacks", []) if k not in new["attacks"]]
    if added:
        out.append("attacks added: " + ", ".join(added))
    if removed:
        out.append("attacks removed: " + ", ".join(removed))
    if old.get("sanity") != new["sanity"]:
        out.append(f"sanity attack {old.get('sanity') or 'none'} -> {new['sanity'] or 'none'}")
    return "; ".join(out)


def _run_tasks(defense: Defense, contract: Contract, x: Tensor, y: Tensor,
               plan: list[tuple[ThreatModel, AttackSpec, bool]], plans: list[RowPlan],
               targets: Mapping[ThreatModel, tuple[nn.Module, dict[str, Any]]], store: RecordStore, out: Path,
               meta: dict[str, Any], *, seed: int, repeats: int, batch_size: int, check_samples: int,
               save_adversarial: bool, progress: bool, t_start: float, check_options: Mapping[str, Any] | None,
               defense_name: str, threats: list[ThreatModel],
               detector_weights: tuple[float, ...] = (1.0,)) -> dict[str, Any]:
    """The missing work items of an :func:`evaluate` run (clean, diagnostics, attacks), then the summary's
    numbers and flags from the records: ``{"clean", "rows", "flags", "diagnostics"}``."""
    n = int(x.shape[0])
    chunks = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    m = min(n, check_samples)
    base = defense.base
    run_path = out / "run.json"

    def clean_task(s: int, e: int) -> None:
        store.append_group(f"clean|{s}", clean_records(defense, x[s:e], y[s:e], s, seed, repeats))

    def diag_task(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        with _fork(derive_seed(seed, "diag", name)):
            res = fn()
        store.append_group(f"diag|{name}", [{"key": f"diag|{name}", "kind": "diag", "name": name, **res}])

    def attack_task(t: ThreatModel, spec: AttackSpec, s: int, e: int) -> None:
        target = targets[t][0]
        xb, yb = x[s:e], y[s:e]
        if t is ThreatModel.WHITE_BOX_ADAPTIVE and contract.rejects and len(detector_weights) > 1:
            def fools(xe: Tensor, ye: Tensor, k: int) -> Tensor:
                p = _predict(defense, xe, seed, "restart", t.value, spec.key, s, k)
                return (p != ye.cpu()) & (p != REJECT)

            x_adv, ver, dt = _over_detector_weights(spec, target, xb, yb, detector_weights,
                                                    lambda k: derive_seed(seed, "attack", t.value, spec.key, s,
                                                                          *((f"weight{k}",) if k else ())), fools)
        else:
            with bound_labels(target, yb):
                x_adv, ver, dt = _attack_batch(spec, target, xb, yb, derive_seed(seed, "attack", t.value, spec.key, s))
        with bound_labels(target, yb):
            x_eval = torch.where(ver.valid.view(-1, *[1] * (xb.dim() - 1)), x_adv, xb)
            with _fork(derive_seed(seed, "target", t.value, spec.key, s)), torch.no_grad():
                pt = target(x_eval).argmax(1).cpu()
        pb = _argmax(base, x_eval, seed, "base", t.value, spec.key, s)
        pd = [_predict(defense, x_eval, seed, "defense", t.value, spec.key, s, r) for r in range(repeats)]
        scores = _scores(defense, x_eval, seed, "defense", t.value, spec.key, s) if contract.rejects else None
        group = f"attack|{t.value}|{spec.key}|{s}"
        adv_file = None
        if save_adversarial:
            from safetensors.torch import save as st_save

            rel = Path("adversarial") / t.value / _slug(spec) / f"{s:07d}.safetensors"
            # one metadata key: safetensors writes several in varying order (identical work, different bytes)
            blob = st_save({"x_adv": x_adv.cpu().contiguous(), "valid": ver.valid.cpu(),
                            "idx": torch.arange(s, e), "labels": yb.cpu()},
                           metadata={"maskdefense": json.dumps({"attack": spec.key, "threat": t.value, "start": s},
                                                               sort_keys=True)})
            atomic_write_bytes(out / rel, blob)
            adv_file = rel.as_posix()
        per = dt / (e - s)
        recs = []
        for i in range(e - s):
            rec = {
                "key": f"{t.value}|{spec.key}|{s + i}", "kind": "attack", "threat": t.value,
                "attack": spec.key, "idx": s + i, "label": int(yb[i]),
                "valid": bool(ver.valid[i]), "eps_ok": bool(ver.eps_ok[i]), "range_ok": bool(ver.range_ok[i]),
                "norms": {k: float(v[i]) for k, v in ver.norms.items()},
                "pred_base_adv": int(pb[i]), "pred_target_adv": int(pt[i]),
                "pred_defense_adv": [int(p[i]) for p in pd], "time_s": round(per, 6),
            }
            if scores is not None:
                rec["score_adv"] = scores[i]
            if adv_file:
                rec["adv_file"] = adv_file
            recs.append(rec)
        store.append_group(group, recs)

    def target_diag(tgt: nn.Module, fn: Callable[[nn.Module], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            with bound_labels(tgt, y[:m]):
                return fn(tgt)
        return run

    tasks: list[tuple[str, Callable[[], None]]] = []
    for s, e in chunks:
        if f"clean|{s}" not in store.done_groups:
            tasks.append(("clean", lambda s=s, e=e: clean_task(s, e)))
    diag: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("outputs:base", lambda: output_stats(_no_grad(base, x[:m]))),
        ("randomness", lambda: randomness_check(defense, x[:m], seed)),
    ]
    for t in threats:
        tgt = targets[t][0]
        diag.append((f"gradients:{t.value}", target_diag(tgt, lambda g: gradient_stats(g, x[:m], y[:m]))))
        if t is not ThreatModel.GRAY_BOX or tgt is not base:
            diag.append((f"outputs:target:{t.value}", target_diag(tgt, lambda g: output_stats(_no_grad(g, x[:m])))))
    for name, fn in diag:
        if f"diag|{name}" not in store.done_groups:
            tasks.append(("checks", lambda name=name, fn=fn: diag_task(name, fn)))
    for t, spec, _ in plan:
        for s, e in chunks:
            if f"attack|{t.value}|{spec.key}|{s}" not in store.done_groups:
                tasks.append((f"{t.value} {spec.display}", lambda t=t, spec=spec, s=s, e=e: attack_task(t, spec, s, e)))

    bar = _progress(len(tasks), progress, "evaluate")
    last_saved = time.perf_counter()
    try:
        for desc, fn in tasks:
            bar.set_postfix_str(desc[:60], refresh=False)
            fn()
            bar.update(1)
            if time.perf_counter() - last_saved > WALL_TIME_SAVE_S:  # so a killed run's wall time is kept
                last_saved = time.perf_counter()
                meta["wall_time_s_total"] = round(float(meta["wall_time_s_previous"]) + last_saved - t_start, 3)
                atomic_write_json(run_path, meta)
    finally:
        bar.close()

    # ---- summary from records only
    clean, rows, diagnostics = summarize(store, plans, n=n, repeats=repeats, rejects=contract.rejects)
    flags = run_checks(rows, diagnostics, threats=[t.value for t in threats], defense_name=defense_name,
                       contract=contract, dim=int(x[0].numel()), n=n, **dict(check_options or {}))
    return {"clean": clean, "rows": rows, "flags": [f.to_dict() for f in flags], "diagnostics": diagnostics}


@torch.no_grad()
def _no_grad(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def _model_line(meta: Mapping[str, Any] | None) -> str | None:
    if not meta:
        return None
    parts = [str(meta.get("arch", "?"))]
    if meta.get("path"):
        parts.append(str(meta["path"]))
    if meta.get("sha256"):
        parts.append(f"sha256 {str(meta['sha256'])[:16]}")
    return ", ".join(parts)


def _suites(attacks: Any) -> list[Any]:
    """The named suites in an attack list given as text (titles and reference numbers for the report)."""
    out = []
    if isinstance(attacks, str):
        from ..attacks.suites import get_suite

        for part in attacks.replace("\n", ";").split(";"):
            part = part.strip()
            if part.lower().startswith("suite:"):
                try:
                    out.append(get_suite(part.split(":", 1)[1]))
                except Exception:
                    pass
    return out


def _suite_benign(attacks: Any) -> float | None:
    suites = _suites(attacks)
    return suites[0].paper_benign if suites else None


def _suite_title(attacks: Any) -> str | None:
    suites = _suites(attacks)
    return "; ".join(s.description for s in suites) or None
