"""The evaluation harness: verification, epsilon enforcement, protocol numbers, resume (injected
failure, truncated file, SIGKILL), config mismatch, reports, defense specs and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from maskdefense.attacks import ATTACKS, AttackDef, ParamSpec, SpecError, parse_attack_spec, register_attack
from maskdefense.defenses.base import Contract, Defense, NoDefense
from maskdefense.ops.eot import log_mean_softmax
from maskdefense.provenance import run_metadata as harness_run_metadata
from maskdefense.eval.harness import record_commits
from maskdefense.rundir import BusyError, exclusive
from maskdefense.validation import InputError, check_images
from maskdefense.eval import (
    ConfigMismatchError, RecordStore, ThreatModel, attack_and_verify, benchmark_pgd_linf, build_defense, evaluate,
    make_target, norm_tolerance, parse_defense_spec, parse_threats, perturbation_norms, verify_perturbation,
)
from maskdefense.registry import UnknownNameError

from conftest import train_digits_linear  # noqa: E402

SUMMARY_FILES = ("summary.md", "summary.csv", "summary.json")


@pytest.fixture(scope="module")
def trained():
    model, x, y = train_digits_linear(48)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.85
    return model, x, y


def _fake(name, fn, norm="linf"):
    """Register a rule-breaking attack (once per session)."""
    if name not in ATTACKS:
        register_attack(AttackDef(
            name=name, family="Fake", norm=norm, backend="test", implementation="tests", kind="fixed-epsilon",
            params=(ParamSpec("eps", "float", required=True, minimum=0.0),),
            runner=lambda d, p, model, x, y, g: fn(x, p["eps"]),
        ))


_fake("test-cheat-eps", lambda x, eps: (x + 3 * eps).clamp(0, 1))
_fake("test-cheat-range", lambda x, eps: x + eps)  # inside the budget, but pixels above 1
_fake("test-nan", lambda x, eps: x * float("nan"))


def _read(out: Path) -> dict[str, bytes]:
    return {f: (out / f).read_bytes() for f in SUMMARY_FILES}


# ----------------------------------------------------------------------------------------------
# verification


def test_norms_and_tolerance():
    x = torch.zeros(2, 1, 2, 2)
    xa = x.clone()
    xa[0, 0, 0, 0] = 0.3
    xa[0, 0, 1, 1] = -0.4
    n = perturbation_norms(x, xa)
    assert n["l0"].tolist() == [2, 0] and n["l1"][0].item() == pytest.approx(0.7)
    assert n["l2"][0].item() == pytest.approx(0.5) and n["linf"][0].item() == pytest.approx(0.4)
    assert norm_tolerance(0.1, "linf", 784) == pytest.approx(0.1 * (1 + 1e-5) + 1e-6)
    x = torch.full((3, 1, 4, 4), 0.5)
    ok = x + 0.1
    over = x + 0.1 + 1e-4
    ver = verify_perturbation(x, torch.cat([ok[:1], over[:1], (x + 0.6)[:1]]), "linf", 0.1)
    assert ver.valid.tolist() == [True, False, False]
    assert ver.eps_ok.tolist() == [True, False, False] and ver.range_ok.tolist() == [True, True, False]
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    ver = verify_perturbation(x, nan, "l2", 10.0)
    assert ver.valid.tolist() == [False, True, True] and not ver.range_ok[0] and not ver.eps_ok[0]
    with pytest.raises(ValueError):
        verify_perturbation(x, x[:2], "l2", 1.0)


def test_undefended_model_is_broken_by_large_pgd(trained):
    model, x, y = trained
    out = attack_and_verify("pgd-linf:eps=0.3", model, x, y, seed=0, batch_size=16)
    assert out.valid.all() and out.accuracy < 0.05  # sanity: ~0% at a large budget
    weak = attack_and_verify("pgd-linf:eps=0.01", model, x, y, seed=0, batch_size=16)
    assert weak.accuracy > 0.5
    bench = benchmark_pgd_linf(model, x, y, eps=0.3, steps=20, batch_size=16, abs_stepsize=0.03)
    assert bench["n"] == 48 and bench["images_per_second"] > 0 and bench["robust_accuracy"] < 0.1
    assert "steps=20" in bench["attack"] and "abs_stepsize=0.03" in bench["attack"]


# ----------------------------------------------------------------------------------------------
# epsilon and range enforcement


def test_eps_violation_counts_as_failure_and_flags(trained, tmp_path):
    model, x, y = trained
    rep = evaluate(model, (x, y), "test-cheat-eps:eps=0.05;fgsm-linf:eps=0.05", out_dir=tmp_path, sanity=None,
                   batch_size=16, progress=False)
    row = rep.row("test-cheat-eps:eps=0.05")
    moved = ((x + 0.15).clamp(0, 1) - x).flatten(1).abs().amax(1) > 0.05 * (1 + 1e-5) + 1e-6
    assert row["n_eps_violations"] == int(moved.sum()) > 0 and row["n_invalid"] == row["n_eps_violations"]
    assert row["n_range_violations"] == 0
    # invalid examples are replaced by the clean image: the base model is right on all of them
    assert row["attack_acc"] == 1.0 and row["robust_acc"] == rep.clean["base_clean_acc"]
    assert "PERTURBATION_EXCEEDS_EPS" in rep.flag_codes()
    assert rep.row("fgsm-linf:eps=0.05")["n_invalid"] == 0
    assert all(f.attack != rep.row("fgsm-linf:eps=0.05")["attack"] for f in rep.flags)
    recs = [r for r in RecordStore(tmp_path / "records.jsonl") if r.get("attack") == row["attack"]]
    assert len(recs) == 48 and sum(not r["eps_ok"] for r in recs) == row["n_eps_violations"]


def test_out_of_range_and_nan_are_caught(trained, tmp_path):
    model, x, y = trained
    rep = evaluate(model, (x, y), "test-cheat-range:eps=0.05;test-nan:eps=0.05", out_dir=tmp_path, sanity=None,
                   batch_size=16, progress=False)
    r1 = rep.row("test-cheat-range:eps=0.05")
    assert r1["n_range_violations"] == int(((x + 0.05) > 1).flatten(1).any(1).sum()) > 0
    assert r1["n_eps_violations"] == 0
    r2 = rep.row("test-nan:eps=0.05")
    assert r2["n_range_violations"] == 48 and r2["n_eps_violations"] == 48 and r2["attack_acc"] == 1.0
    codes = rep.flag_codes()
    assert "PIXEL_OUT_OF_RANGE" in codes and "PERTURBATION_EXCEEDS_EPS" in codes


# ----------------------------------------------------------------------------------------------
# protocol numbers and reports


def test_protocol_numbers_match_a_direct_computation(trained, tmp_path):
    model, x, y = trained
    y = y.clone()
    y[:4] = (y[:4] + 1) % 10  # make the base model wrong on a few images
    rep = evaluate(model, (x, y), "pgd-linf:eps=0.05,steps=5", out_dir=tmp_path, sanity=None, batch_size=16,
                   progress=False)
    out = attack_and_verify("pgd-linf:eps=0.05,steps=5", model, x, y, seed=0, batch_size=16)
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
    adv_ok = out.pred == y
    row = rep.row("pgd-linf:eps=0.05,steps=5")
    assert row["n_correct"] == int(clean_ok.sum()) == rep.clean["n_correct"]
    assert row["attack_acc"] == pytest.approx(float(adv_ok[clean_ok].float().mean()), abs=1e-6)
    assert row["defense_acc"] == row["attack_acc"] and row["improvement"] == 0.0  # no defense
    assert row["robust_acc"] == pytest.approx(float((clean_ok & adv_ok).float().mean()), abs=1e-6)
    assert row["defense_std"] == 0.0 and rep.clean["repeats"] == 1
    assert rep.clean["defense_clean_acc_on_correct"] == 1.0  # no defense: right on every image it gets right
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["rows"][0]["attack"] == row["attack"] and s["attacks"][0]["params"]["steps"] == 5
    csv = (tmp_path / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("threat,label,name,family,norm,eps") and len(csv) == 2
    assert (tmp_path / "acc_vs_eps.png").stat().st_size > 1000
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "complete" and run["config_hash"] == rep.config_hash
    assert run["attacks"][0]["params"]["rel_stepsize"] == pytest.approx(1 / 30)
    for k in ("git_commit", "versions", "seed", "wall_time_s", "targets", "threats"):
        assert k in run
    assert run["versions"]["foolbox"] and run["config"]["model_sha256"]


def test_mean_norm_of_the_examples_found_leaves_out_failed_searches(trained, tmp_path):
    # a minimum-norm attack returns the clean image where its search found nothing: `mean_norm` averages those
    # zeros in, `mean_norm_fooled` is the distortion of the examples that fool the model
    model, x, y = trained

    def half(x, eps):  # a large step on the even images, nothing (a failed search) on the odd ones
        out = x.clone()
        out[::2] = 1 - out[::2]
        return out

    _fake("test-half-search", half, norm="l2")
    rep = evaluate(model, (x, y), "test-half-search:eps=100", out_dir=tmp_path, sanity=None, progress=False)
    row = rep.row("test-half-search:eps=100")
    with torch.no_grad():
        ok = model(x).argmax(1) == y
        x_adv = half(x, None)
        fooled = ok & (model(x_adv).argmax(1) != y)
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert 0 < int(fooled.sum()) < int(ok.sum())
    assert row["mean_norm"] == pytest.approx(float(norms.mean()), rel=1e-5)
    assert row["mean_norm_fooled"] == pytest.approx(float(norms[fooled].mean()), rel=1e-5)


def test_mad_gray_box_and_adaptive_side_by_side(trained, tmp_path):
    model, x, y = trained
    defense = build_defense("mad:cell=2,rate=0.25,n=5,n_grad=4", model)
    rep = evaluate(defense, (x[:32], y[:32]), "fgsm-linf:eps=0.1;pgd-linf:eps=0.1,steps=5",
                   "gray-box,adaptive", out_dir=tmp_path, sanity=None, batch_size=16, progress=False)
    assert rep.clean["repeats"] == 3 and len(rep.clean["defense_clean_per_repeat"]) == 3
    recs = [r for r in RecordStore(tmp_path / "records.jsonl") if r["kind"] == "clean" and r["pred_base"] == r["label"]]
    direct = sum(p == r["label"] for r in recs for p in r["pred_defense"]) / (3 * len(recs))
    assert rep.clean["defense_clean_acc_on_correct"] == pytest.approx(direct, abs=1e-6)
    g, a = rep.row("pgd-linf:eps=0.1,steps=5", "gray-box"), rep.row("pgd-linf:eps=0.1,steps=5", "adaptive")
    assert g["samples_per_gradient"] == 1 and a["samples_per_gradient"] == 4
    # the robust accuracy and its std over repeats, recomputed from the records by hand
    recs = list(RecordStore(tmp_path / "records.jsonl"))
    clean = {r["idx"]: r for r in recs if r["kind"] == "clean"}
    adv = [r for r in recs if r["kind"] == "attack" and r["threat"] == "adaptive" and r["attack"] == a["attack"]]
    per_repeat = [sum(clean[r["idx"]]["pred_defense"][k] == r["label"] == r["pred_defense_adv"][k] for r in adv) / 32
                  for k in range(3)]
    assert a["robust_acc"] == pytest.approx(sum(per_repeat) / 3, abs=1e-6)
    assert a["robust_std"] == pytest.approx(float(torch.tensor(per_repeat).std()), abs=1e-6)
    md = (tmp_path / "summary.md").read_text()
    assert "gray-box Defense" in md and "adaptive Defense" in md and "## Flags" in md
    assert "4 random sample(s) per gradient" in md
    assert "RANDOMIZED_WITHOUT_EOT" not in rep.flag_codes()


def test_black_box_needs_a_surrogate(trained, tmp_path):
    model, x, y = trained
    with pytest.raises(ValueError, match="surrogate"):
        evaluate(model, (x, y), "fgsm-linf:eps=0.1", "black-box", out_dir=tmp_path, progress=False)
    torch.manual_seed(3)
    surrogate = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    rep = evaluate(model, (x[:16], y[:16]), "fgsm-linf:eps=0.1", "black-box,gray-box", out_dir=tmp_path / "b",
                   surrogate=surrogate, sanity=None, batch_size=16, progress=False)
    assert {r["threat"] for r in rep.rows} == {"black-box", "gray-box"}
    assert rep.config["surrogate_sha256"]


def test_save_adversarial(trained, tmp_path):
    from safetensors.torch import load_file

    model, x, y = trained
    evaluate(model, (x[:20], y[:20]), "fgsm-linf:eps=0.1", out_dir=tmp_path, sanity=None, batch_size=8,
             progress=False, save_adversarial=True)
    files = sorted((tmp_path / "adversarial" / "gray-box").rglob("*.safetensors"))
    assert len(files) == 3
    t = load_file(str(files[-1]))
    assert t["x_adv"].shape == (4, 1, 8, 8) and t["idx"].tolist() == [16, 17, 18, 19] and t["valid"].all()
    recs = [r for r in RecordStore(tmp_path / "records.jsonl") if r["kind"] == "attack"]
    assert all((tmp_path / r["adv_file"]).exists() for r in recs)


# ----------------------------------------------------------------------------------------------
# resume


def _run(model, x, y, out, **kw):
    return evaluate(model, (x, y), "fgsm-linf:eps=0.05;pgd-linf:eps=0.05,steps=3;mi-fgsm:eps=0.05,steps=3",
                    "gray-box", out_dir=out, batch_size=8, progress=False,
                    sanity="pgd-linf:eps=0.5,steps=3", **kw)


def test_resume_after_interruption_gives_identical_tables(trained, tmp_path, monkeypatch):
    model, x, y = trained
    ref = tmp_path / "ref"
    _run(model, x, y, ref)
    n_records = sum(1 for _ in RecordStore(ref / "records.jsonl"))

    out = tmp_path / "killed"
    real = RecordStore.append_group
    calls = {"n": 0}

    def flaky(self, group, records):
        calls["n"] += 1
        if calls["n"] == 14:
            raise KeyboardInterrupt("simulated kill")
        return real(self, group, records)

    monkeypatch.setattr(RecordStore, "append_group", flaky)
    monkeypatch.setattr("maskdefense.eval.harness.WALL_TIME_SAVE_S", 0.0)
    with pytest.raises(KeyboardInterrupt):
        _run(model, x, y, out)
    monkeypatch.setattr(RecordStore, "append_group", real)
    killed = json.loads((out / "run.json").read_text())
    assert killed["status"] == "running" and killed["wall_time_s_total"] > 0  # the killed run's time is kept
    partial = sum(1 for _ in RecordStore(out / "records.jsonl"))
    assert 0 < partial < n_records
    # and a write killed in the middle of a group: complete lines of it, then half a line
    with open(out / "records.jsonl", "ab") as f:
        line = json.dumps({"key": "gray-box|x|0", "group": "attack|gray-box|x|0", "group_size": 8}).encode()
        f.write(line + b"\n" + line[:25])
    monkeypatch.setattr("maskdefense.eval.harness.run_metadata",
                        lambda *a, **kw: {**harness_run_metadata(*a, **kw), "git_commit": "later"})
    _run(model, x, y, out)
    assert _read(out) == _read(ref)
    keys = [r["key"] for r in RecordStore(out / "records.jsonl")]
    assert len(keys) == len(set(keys)) == n_records
    final = json.loads((out / "run.json").read_text())
    assert final["runs"] == 2 and final["wall_time_s_total"] > final["wall_time_s"]
    # each earlier run's commit, start and status stay in the history (the records span both runs)
    assert [h["status"] for h in final["history"]] == ["running"]
    assert final["history"][0]["started"] == killed["started"]
    assert final["history"][0]["git_commit"] == killed["git_commit"]
    assert killed["records_at_start"] == 0 and 0 < final["records_at_start"] < n_records
    assert record_commits(final) == [killed["git_commit"], "later"]  # both computed records


def test_rerun_of_a_finished_run_keeps_its_history(trained, tmp_path, monkeypatch):
    model, x, y = trained
    out = tmp_path / "run"
    _run(model, x, y, out)
    first = json.loads((out / "run.json").read_text())
    monkeypatch.setattr("maskdefense.eval.harness.run_metadata",
                        lambda *a, **kw: {**harness_run_metadata(*a, **kw), "git_commit": "later"})
    _run(model, x, y, out)  # nothing left to attack: the summary is rewritten, the records stay
    again = json.loads((out / "run.json").read_text())
    assert again["runs"] == 2 and again["git_commit"] == "later"
    keys = ("git_commit", "started", "wall_time_s", "status", "records_at_start", "records")
    assert again["history"] == [{k: first[k] for k in keys}]
    assert again["records"] == first["records"] == again["records_at_start"]
    assert record_commits(again) == [first["git_commit"]]  # the rerun computed nothing


@pytest.mark.parametrize("history, last, commits", [
    ([], {"git_commit": "a", "records_at_start": 0, "records": 5}, ["a"]),
    ([], {"git_commit": "a", "records_at_start": 5, "records": 5}, []),
    # killed runs (no final count) are judged by the next run's start; an unknown count credits the run
    ([{"git_commit": "a", "records_at_start": 0, "records": None}, {"git_commit": "b", "records_at_start": 3}],
     {"git_commit": "c", "records_at_start": 3, "records": 9}, ["a", "c"]),
    ([{"git_commit": "a", "records": 4}], {"git_commit": "b", "records_at_start": 4, "records": 4}, ["a"]),
    ([{"git_commit": "a", "status": "running"}], {"git_commit": "b", "records_at_start": 4, "records": 4}, ["a"]),
    ([{"git_commit": "a", "records": 4}], {"git_commit": "a", "records_at_start": 4, "records": 8}, ["a"]),
])
def test_record_commits_names_the_runs_that_added_records(history, last, commits):
    assert record_commits({**last, "history": history}) == commits


def test_truncated_record_file_is_repaired(trained, tmp_path):
    model, x, y = trained
    ref = tmp_path / "ref"
    _run(model, x, y, ref)
    out = tmp_path / "cut"
    _run(model, x, y, out)
    data = (out / "records.jsonl").read_bytes()
    (out / "records.jsonl").write_bytes(data[: len(data) - 700])  # ends mid-line, mid-group
    store = RecordStore(out / "records.jsonl").open()
    assert store.repaired > 0 and (out / "records.jsonl").read_bytes().endswith(b"\n")
    rep = _run(model, x, y, out)
    assert _read(out) == _read(ref)
    assert sum(1 for _ in RecordStore(out / "records.jsonl")) == sum(1 for _ in RecordStore(ref / "records.jsonl"))
    assert rep.flags == [] or all(f.code != "INCOMPLETE" for f in rep.flags)


def test_a_different_configuration_is_refused(trained, tmp_path):
    model, x, y = trained
    evaluate(model, (x[:16], y[:16]), "fgsm-linf:eps=0.05", out_dir=tmp_path, sanity=None, batch_size=8,
             progress=False)
    for kw in ({"seed": 1}, {"batch_size": 4}, {"repeats": 2}):
        with pytest.raises(ConfigMismatchError, match="different configuration"):
            evaluate(model, (x[:16], y[:16]), "fgsm-linf:eps=0.05", out_dir=tmp_path, sanity=None,
                     progress=False, **{"batch_size": 8, **kw})
    with pytest.raises(ConfigMismatchError):
        evaluate(model, (x[:17], y[:17]), "fgsm-linf:eps=0.05", out_dir=tmp_path, sanity=None, batch_size=8,
                 progress=False)
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    with pytest.raises(ConfigMismatchError, match="model_sha256"):
        evaluate(other, (x[:16], y[:16]), "fgsm-linf:eps=0.05", out_dir=tmp_path, sanity=None, batch_size=8,
                 progress=False)
    rep = evaluate(model, (x[:16], y[:16]), "fgsm-linf:eps=0.05", out_dir=tmp_path, sanity=None, batch_size=4,
                   progress=False, resume=False)
    assert rep.config["batch_size"] == 4


_SLEEPY = '''
import sys, time, torch
from torch import nn
from maskdefense.eval import evaluate

class Sleepy(nn.Module):
    def __init__(self, delay):
        super().__init__()
        self.delay = delay
    def forward(self, x):
        time.sleep(self.delay)
        return x

def setup(delay):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), Sleepy(delay)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (40,), generator=g)
    return model, x, y

def run(out, delay):
    model, x, y = setup(delay)
    return evaluate(model, (x, y), "pgd-linf:eps=0.05,steps=3;fgsm-l2:eps=0.3", out_dir=out, batch_size=4,
                    sanity=None, progress=False)

if __name__ == "__main__":
    run(sys.argv[1], float(sys.argv[2]))
'''


def test_sigkill_and_rerun_gives_identical_tables(tmp_path):
    script = tmp_path / "sleepy_run.py"
    script.write_text(textwrap.dedent(_SLEEPY))
    sys.path.insert(0, str(tmp_path))
    try:
        import sleepy_run  # noqa: F401
    finally:
        sys.path.remove(str(tmp_path))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(out), "0.01"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records = out / "records.jsonl"
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            if records.exists() and records.read_bytes().count(b"\n") >= 60:
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.005)
        else:
            pytest.fail("run did not start writing records")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.md").exists()
    sleepy_run.run(out, 0.0)  # rerun the same configuration in this process (no sleep: same weights)
    ref = tmp_path / "ref"
    sleepy_run.run(ref, 0.0)
    assert _read(out) == _read(ref)
    keys = [r["key"] for r in RecordStore(records)]
    assert len(keys) == len(set(keys)) == sum(1 for _ in RecordStore(ref / "records.jsonl"))


# ----------------------------------------------------------------------------------------------
# repeatability, provenance, refusals (each failed before its fix)


class IgnoresGenerator(Defense):
    """A randomized defense whose predict draws from torch's global RNG, ignoring the generator it is given."""

    def contract(self):
        return Contract(randomized=True)

    def forward(self, x):
        return self.base(x)

    @torch.no_grad()
    def predict(self, x, *, generator=None):
        return self.base((x + 0.5 * torch.rand(x.shape)).clamp(0, 1)).argmax(1)

    def config(self):
        return {"defense": "ignores-generator"}


def test_a_defense_ignoring_its_generator_gives_repeatable_runs(trained, tmp_path):
    model, x, y = trained
    d = IgnoresGenerator(model)
    with torch.no_grad():
        draws = {tuple(d.predict(x).tolist()) for _ in range(3)}
    assert len(draws) > 1  # its predictions do depend on the global RNG
    outs = []
    for k, state in enumerate((1, 2)):
        torch.manual_seed(state)  # whatever ran before in the process
        evaluate(d, (x, y), "fgsm-linf:eps=0.05", "gray-box", out_dir=tmp_path / str(k), batch_size=16,
                 sanity=None, progress=False, repeats=2)
        outs.append(_read(tmp_path / str(k)))
    assert outs[0] == outs[1]


def test_library_versions_are_part_of_the_config(trained, tmp_path, monkeypatch):
    from importlib import metadata

    from maskdefense.eval import harness

    model, x, y = trained
    kw = dict(out_dir=tmp_path, sanity=None, batch_size=16, progress=False)
    rep = evaluate(model, (x[:16], y[:16]), "fgsm-linf:eps=0.05", **kw)
    assert rep.config["versions"] == {k: metadata.version(k)
                                      for k in ("maskdefense", "torch", "numpy", "foolbox", "pyautoattack")}
    real = harness.library_versions
    monkeypatch.setattr(harness, "library_versions", lambda: {**real(), "torch": "0.0.1"})  # an upgrade
    with pytest.raises(ConfigMismatchError, match="versions"):
        evaluate(model, (x[:16], y[:16]), "fgsm-linf:eps=0.05", **kw)


def test_a_busy_output_folder_is_refused(trained, tmp_path):
    model, x, y = trained
    out = tmp_path / "out"
    kw = dict(out_dir=out, sanity=None, batch_size=16, progress=False)
    with exclusive(out, "another evaluate"):
        with pytest.raises(BusyError, match="in use by another process .another evaluate"):
            evaluate(model, (x[:16], y[:16]), "fgsm-linf:eps=0.05", **kw)
        assert not (out / "records.jsonl").exists() and not (out / "run.json").exists()
    rep = evaluate(model, (x[:16], y[:16]), "fgsm-linf:eps=0.05", **kw)  # free again
    assert sum(1 for _ in RecordStore(out / "records.jsonl")) == 16 + 16 + 3 and rep.rows[0]["n"] == 16  # clean, attack, diag


def test_a_failed_run_writes_nothing_and_blocks_nothing(trained, tmp_path):
    model, x, y = trained
    out = tmp_path / "run"
    kw = dict(out_dir=out, sanity=None, batch_size=8, progress=False, repeats=1)
    with pytest.raises(InputError, match="cell 3 does not divide"):  # rejected at run time, not at construction
        evaluate(build_defense("mad:cell=3,rate=0.5", model), (x[:16], y[:16]), "fgsm-linf:eps=0.05",
                 "gray-box,adaptive", **kw)
    assert not out.exists()
    # a run.json left behind without records (an older failure) does not block the corrected command
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"config_hash": "0" * 64, "config": {"seed": 7}}))
    rep = evaluate(build_defense("mad:cell=2,rate=0.5", model), (x[:16], y[:16]), "fgsm-linf:eps=0.05",
                   "gray-box,adaptive", **kw)
    assert json.loads((out / "run.json").read_text())["config_hash"] == rep.config_hash


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.uint8])
def test_images_other_than_float32_are_refused(trained, tmp_path, dtype):
    model, x, y = trained
    images = (x * 255).to(dtype) if dtype == torch.uint8 else x.to(dtype)
    name = str(dtype).replace("torch.", "")
    with pytest.raises(InputError, match=f"float32.*{name}.*" + ("255" if dtype == torch.uint8 else r"x\.float\(\)")):
        evaluate(model, (images, y), "fgsm-linf:eps=0.05", out_dir=tmp_path / "o", sanity=None, progress=False)
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match=name):
        check_images(images)
    assert check_images(x) is x


def test_resume_with_another_plan_is_refused(trained, tmp_path):
    model, x, y = trained
    data = (x[:16], y[:16])
    kw = dict(out_dir=tmp_path, batch_size=8, progress=False)
    evaluate(model, data, "fgsm-linf:eps=0.05", "gray-box", sanity=None, **kw)
    before = _read(tmp_path)
    for attacks, threat, sanity, what in [
        ("fgsm-linf:eps=0.05;fgsm-l2:eps=0.5", "gray-box", None, "attacks added: fgsm-l2:eps=0.5"),
        ("fgsm-l2:eps=0.5", "gray-box", None, "attacks removed: fgsm-linf:eps=0.05"),
        ("fgsm-linf:eps=0.05", "gray-box,adaptive", None, "threat models gray-box -> gray-box,adaptive"),
        ("fgsm-linf:eps=0.05", "gray-box", "pgd-linf:eps=0.5,steps=2", "sanity attack none -> pgd-linf"),
    ]:
        with pytest.raises(ConfigMismatchError, match=what):
            evaluate(model, data, attacks, threat, sanity=sanity, **kw)
    assert _read(tmp_path) == before
    evaluate(model, data, "fgsm-linf:eps=0.05", "gray-box", sanity=None, **kw)  # the same plan resumes
    assert _read(tmp_path) == before


def test_identical_runs_write_identical_adversarial_files(trained, tmp_path):
    from safetensors import safe_open

    model, x, y = trained
    for d in ("a", "b"):
        evaluate(model, (x[:20], y[:20]), "fgsm-linf:eps=0.1", out_dir=tmp_path / d, sanity=None, batch_size=4,
                 progress=False, save_adversarial=True)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.safetensors"))
    assert len(files) == 5
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    with safe_open(str(tmp_path / "a" / files[1]), "pt") as st:
        assert json.loads(st.metadata()["maskdefense"]) == {"attack": parse_attack_spec("fgsm-linf:eps=0.1").key,
                                                            "start": 4, "threat": "gray-box"}


# ----------------------------------------------------------------------------------------------
# the headline property: the adaptive attack beats the gray-box one where the gray-box transfer is weak


class SecretPermutations(Defense):
    """A randomized defense whose gray-box transfer is weak by construction: every forward shuffles the
    pixels with one of two fixed secret permutations (drawn per image) before a base network trained on
    the unshuffled images and on both shufflings. Examples made against the base (gray-box) barely move
    the shuffled views; attacking the defense end to end with EOT over the draws breaks it."""

    def __init__(self, base, perms, n_grad=8):
        super().__init__(base)
        self.perms, self.n_grad = perms, n_grad

    def contract(self):
        return Contract(randomized=True, samples_per_forward=self.n_grad)

    def view(self, x, generator=None):
        k = torch.randint(len(self.perms), (x.shape[0],), generator=generator)
        return shuffle(x, torch.stack([self.perms[int(i)] for i in k]))

    def forward(self, x):
        return log_mean_softmax(torch.stack([self.base(self.view(x)) for _ in range(self.n_grad)]), dim=0)

    @torch.no_grad()
    def predict(self, x, *, generator=None):
        return self.base(self.view(x, generator)).argmax(1)

    def config(self):
        return {"defense": "secret-permutations", "n_grad": self.n_grad}


def shuffle(x, idx):
    return x.flatten(1).gather(1, idx).view_as(x)


def test_adaptive_attack_beats_gray_box_on_a_randomized_defense(tmp_path):
    from maskdefense.data import load_dataset

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    g = torch.Generator().manual_seed(0)
    perms = [torch.randperm(64, generator=g) for _ in range(2)]
    views = [torch.arange(64)] + perms
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), 0.01)
    for _ in range(200):
        k = torch.randint(3, (len(train.labels),), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(shuffle(train.images, torch.stack(views)[k])), train.labels).backward()
        opt.step()
    model.eval()
    x, y = test.images[:100], test.labels[:100]
    rep = evaluate(SecretPermutations(model, perms), (x, y), "bim-linf:eps=0.1,steps=10", "gray-box,adaptive",
                   out_dir=tmp_path, sanity=None, batch_size=100, progress=False, repeats=2)
    assert rep.clean["defense_clean_acc"] > 0.85
    gray, adaptive = rep.row("bim-linf:eps=0.1,steps=10", "gray-box"), rep.row("bim-linf:eps=0.1,steps=10", "adaptive")
    assert gray["attack_acc"] < 0.3  # the gray-box examples do fool the base network ...
    assert adaptive["samples_per_gradient"] == 8 and "RANDOMIZED_WITHOUT_EOT" not in rep.flag_codes()
    # ... but the adaptive (EOT) attack leaves lower accuracy, beyond the sampling noise of 100 images
    assert adaptive["robust_acc"] < gray["robust_acc"] - 0.2
    assert adaptive["defense_acc"] < gray["defense_acc"] - 0.2


# ----------------------------------------------------------------------------------------------
# threat models and defense specs


def test_threat_models_parse_and_targets(trained):
    model, _, _ = trained
    assert parse_threats("gray-box, adaptive") == [ThreatModel.GRAY_BOX, ThreatModel.WHITE_BOX_ADAPTIVE]
    assert parse_threats(["oblivious", "transfer", "white-box"]) == list(ThreatModel)
    assert str(ThreatModel.BLACK_BOX) == "black-box"
    with pytest.raises(UnknownNameError):
        parse_threats("grey")
    d = build_defense("mad:cell=2,rate=0.5,n_grad=3", model)
    t, info = make_target(d, ThreatModel.GRAY_BOX)
    assert t is model
    t, info = make_target(d, "adaptive", eot_samples=2)
    assert info["samples_per_gradient"] == 6 and type(t).__name__ == "EOT"
    t, info = make_target(NoDefense(model), "adaptive", eot_samples=5)
    assert info["samples_per_gradient"] == 1


def test_defense_specs(trained):
    model, _, _ = trained
    assert parse_defense_spec("mad:cell=7,rate=0.75,n=5") == ("mad", {"cell": 7, "rate": 0.75, "n": 5})
    assert isinstance(build_defense("none", model), NoDefense)
    d = build_defense("mad:cell=2,rate=0.75,n=7,fill=mean", model)
    assert d.contract().randomized and d.n == 7 and d.config()["cell"] == 2
    with pytest.raises(UnknownNameError, match="mad"):
        build_defense("madd:cell=2,rate=0.5", model)
    with pytest.raises(SpecError, match="cell and rate"):
        build_defense("mad:rate=0.5", model)
    with pytest.raises(SpecError, match="unexpected keyword|got an unexpected"):
        build_defense("mad:cell=2,rate=0.5,votes=3", model)
    with pytest.raises(SpecError):
        build_defense("mad:cell=2,rate=1.5", model)
    with pytest.raises(SpecError):
        build_defense("none:cell=2", model)


# ----------------------------------------------------------------------------------------------
# CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from maskdefense.checkpoint import save_checkpoint
    from maskdefense.models import create_model

    torch.manual_seed(0)
    m = create_model("digits_cnn", width=4)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(m, path, {"dataset": "digits"})
    return path


def test_cli_evaluate_and_attack(checkpoint, tmp_path, capsys):
    from maskdefense.cli import main

    out = tmp_path / "ev"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--attacks", "fgsm-linf:eps=0.1;pgd-l2:eps=0.5,steps=2",
            "--defense", "mad:cell=2,rate=0.5,n=3,n_grad=2", "--threat", "gray-box,adaptive", "--n", "12",
            "--batch-size", "6", "--repeats", "2", "--sanity", "pgd-linf:eps=0.5,steps=2", "--out", str(out),
            "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "adaptive" in text and "summary.md" in text
    run = json.loads((out / "run.json").read_text())
    assert run["checkpoint"]["sha256"] and run["config"]["defense"]["defense"] == "mad"
    assert run["data"] == {"name": "digits", "split": "test"}
    first = _read(out)
    assert main(args) == 0  # rerun: everything resumed, same tables
    assert _read(out) == first
    capsys.readouterr()
    assert main(args[:-3] + ["--seed", "1", "--out", str(out), "--no-progress"]) == 2
    assert "different configuration" in capsys.readouterr().err

    out2 = tmp_path / "atk"
    assert main(["attack", "--checkpoint", str(checkpoint), "--attacks", "fgsm-linf:eps=0.1", "--n", "10",
                 "--out", str(out2), "--no-progress"]) == 0
    assert len(list((out2 / "adversarial").rglob("*.safetensors"))) == 1
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--attacks", "pgd-linf:eps=0.1,stepz=2",
                 "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "stepz" in err and "Traceback" not in err
    assert main(["evaluate", "--list"]) == 0
    assert "mad-table5-mnist" in capsys.readouterr().out


def _cli(args: list[str]) -> int:
    from maskdefense.cli import main

    try:
        return main(args)
    except SystemExit as e:  # argparse errors
        return int(e.code)


def test_cli_states_the_dataset_and_refuses_a_missing_one(checkpoint, tmp_path, capsys):
    from maskdefense.checkpoint import save_checkpoint
    from maskdefense.models import create_model

    common = ["--attacks", "fgsm-linf:eps=0.1", "--n", "8", "--sanity", "none", "--no-progress"]
    assert _cli(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "a")] + common) == 0
    assert "dataset: digits (recorded in the checkpoint; --dataset" in capsys.readouterr().out
    assert _cli(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "digits", "--out", str(tmp_path / "b")]
                + common) == 0
    assert "recorded in the checkpoint" not in capsys.readouterr().out
    bare = tmp_path / "bare.safetensors"
    save_checkpoint(create_model("digits_cnn", width=4), bare, {})
    assert _cli(["evaluate", "--checkpoint", str(bare), "--out", str(tmp_path / "c")] + common) == 2
    err = capsys.readouterr().err
    assert "--dataset is required" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("command", ["evaluate", "attack"])
@pytest.mark.parametrize("bad, what", [
    (["--n", "0"], "--n"), (["--eot", "0"], "--eot"), (["--repeats", "0"], "--repeats"),
    (["--batch-size", "0"], "--batch-size"), (["--split", "foo"], "--split"), (["--threat", "grey"], "--threat"),
    (["--threat", ","], "--threat"), (["--n", "many"], "--n"),
])
def test_cli_bad_option_values_fail_before_any_work(command, bad, what, tmp_path, capsys):
    # the checkpoint does not exist: a bad option value must be reported before anything is loaded
    code = _cli([command, "--checkpoint", str(tmp_path / "missing.safetensors"), "--attacks", "fgsm-linf:eps=0.1",
                 "--out", str(tmp_path / "out"), "--no-progress"] + bad)
    err = capsys.readouterr().err
    assert code == 2 and what in err and "missing.safetensors" not in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_busy_folder_and_recovers_from_a_failed_run(checkpoint, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--attacks", "fgsm-linf:eps=0.1", "--n", "8",
            "--threat", "gray-box,adaptive", "--repeats", "1", "--sanity", "none", "--out", str(out), "--no-progress"]
    assert _cli(args + ["--defense", "mad:cell=3,rate=0.5"]) == 2  # the cell does not divide 8x8 images
    err = capsys.readouterr().err
    assert "does not divide" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    with exclusive(out, "evaluate"):
        assert _cli(args + ["--defense", "mad:cell=2,rate=0.5"]) == 2
        err = capsys.readouterr().err
        assert "in use by another process" in err and not (out / "run.json").exists()
    assert _cli(args + ["--defense", "mad:cell=2,rate=0.5"]) == 0
