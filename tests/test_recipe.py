"""The CPU training recipe's options (issue "A CPU training recipe"): one-cycle schedule, label smoothing,
weight decay off norm parameters, bfloat16 autocast, channels-last, monitoring, fine-tuning from a
checkpoint, and that models trained before the options existed keep their run keys."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from maskdefense.checkpoint import load_model, read_metadata
from maskdefense.experiments.common import ensure_model
from maskdefense.models import create_model
from maskdefense.training.config import TrainConfig
from maskdefense.training.loop import Trainer, training_key
from maskdefense.training.presets import CPU_RECIPE, create_preset
from maskdefense.training.tasks import ClassificationTask
from maskdefense.training.tasks.base import make_optimizer, make_schedule


def _data(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = (torch.rand(n, 1, 8, 8, generator=g) * 0.3 + (y.float() / 10)[:, None, None, None] * 0.7).clamp(0, 1)
    return x, y


def test_onecycle_warms_up_then_anneals():
    p = nn.Linear(3, 2)
    cfg = TrainConfig(epochs=2, optimizer="sgd", lr=0.1, schedule="onecycle", warmup=0.25)
    opt = make_optimizer(list(p.parameters()), cfg)
    sched = make_schedule(opt, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = max(range(20), key=lambda i: lrs[i])
    assert peak == 4 and lrs[peak] == pytest.approx(0.1)  # OneCycleLR peaks at step 0.25 * 20 - 1
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[-1] < 0.01
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1 : peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :]))


def test_weight_decay_kept_off_norm_and_bias():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 2))
    params = list(net.parameters())
    on = make_optimizer(params, TrainConfig(optimizer="sgd", lr=0.1, weight_decay=1e-2))
    assert len(on.param_groups) == 1 and on.param_groups[0]["weight_decay"] == 1e-2
    off = make_optimizer(params, TrainConfig(optimizer="sgd", lr=0.1, weight_decay=1e-2, weight_decay_norm=False))
    decayed, plain = off.param_groups
    assert {id(p) for p in decayed["params"]} == {id(net[0].weight), id(net[3].weight)}
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 4  # conv bias, BN weight+bias, linear bias
    # a zero gradient: only the decayed parameters move
    for p in params:
        p.grad = torch.zeros_like(p)
    before = [p.detach().clone() for p in params]
    off.step()
    moved = {id(p) for p, b in zip(params, before) if not torch.equal(p, b)}
    assert moved == {id(net[0].weight), id(net[3].weight)}


def test_label_smoothing_reaches_the_training_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.mul_(30)  # confident logits: smoothing changes the loss a lot
    x, y = _data(32)
    task = ClassificationTask(model)
    task.setup(TrainConfig(label_smoothing=0.2), 1)
    with torch.no_grad():
        loss, _ = task.loss("train", x, y, torch.Generator())
        logits = model(x)
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, y, label_smoothing=0.2)), rel=1e-6)
    assert abs(float(loss) - float(F.cross_entropy(logits, y))) > 0.1


@pytest.mark.parametrize("bad", [dict(schedule="step"), dict(precision="fp16"), dict(warmup=0.0),
                                 dict(label_smoothing=1.0)])
def test_bad_recipe_options_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_bf16_channels_last_trains_and_saves_contiguous(tmp_path):
    torch.manual_seed(0)
    model = create_model("digits_cnn")
    x, y = _data()
    cfg = TrainConfig(epochs=3, batch_size=32, optimizer="sgd", lr=0.05, schedule="onecycle", precision="bf16",
                      channels_last=True, crop_padding=1, label_smoothing=0.1, weight_decay=5e-4,
                      weight_decay_norm=False)
    tr = Trainer(model, (x, y), (x[:32], y[:32]), cfg, out_dir=tmp_path, progress=False, log=lambda s: None)
    hist = tr.fit()
    assert all(torch.isfinite(torch.tensor(h.train_loss)) for h in hist)
    assert hist[-1].train_loss < hist[0].train_loss
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    loaded, _ = load_model(tmp_path / "model.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # a bf16 step is not the fp32 step: the option reaches the forward pass
    def one_step(precision: str) -> torch.Tensor:
        torch.manual_seed(1)
        m = create_model("digits_cnn")
        t = ClassificationTask(m)
        t.setup(TrainConfig(optimizer="sgd", lr=0.1, precision=precision), 1)
        t.begin_phase("train")
        t.step("train", x, y, torch.Generator())
        return m.features[0].weight.detach().clone()

    assert not torch.equal(one_step("bf16"), one_step("fp32"))


def test_monitor_is_recorded_outside_the_timed_seconds(tmp_path):
    torch.manual_seed(0)
    x, y = _data()
    tx, ty = _data(40, seed=1)
    tr = Trainer(create_model("digits_cnn"), (x, y), (x[:32], y[:32]), TrainConfig(epochs=2, batch_size=32),
                 monitor=(tx, ty), out_dir=tmp_path, progress=False, log=lambda s: None)
    hist = tr.fit()
    for h in hist:
        assert set(h.monitor) == {"accuracy"} and h.monitor_seconds > 0
    assert hist[-1].monitor["accuracy"] == pytest.approx(
        float((tr.model(tx).argmax(1) == ty).float().mean()))
    hist_plain = Trainer(create_model("digits_cnn"), (x, y), None, TrainConfig(epochs=1), progress=False,
                         log=lambda s: None).fit()
    assert hist_plain[0].monitor == {}
    rec = read_metadata(tmp_path / "model.safetensors")
    assert "monitor_seconds" not in rec["history"][0] and rec["history"][0]["monitor"]["accuracy"] >= 0


def test_old_presets_keep_their_run_keys():
    """The recipe options at their defaults leave the training key (and so the run folder) unchanged:
    these digests name run folders made before the options existed."""
    for name, digest in (("plain-mnist-cpu", "e4c7a578f1"), ("mad-mnist-cpu", "aba199ce40")):
        p = create_preset(name)
        key = training_key(p.dataset, p.model, p.model_kwargs, p.train_config(0), p.transform())
        assert hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10] == digest
    recipe = create_preset("plain-cifar10-cpu").train_config(0).key()
    assert {k: recipe[k] for k in ("precision", "channels_last", "label_smoothing")} == \
        {k: CPU_RECIPE[k] for k in ("precision", "channels_last", "label_smoothing")}


def test_fine_tuning_starts_from_the_init_preset(tmp_path):
    """``init`` names a registered preset: its model (plain-digits, 30 epochs, seconds) is trained first."""
    tuned = replace(create_preset("mad-digits", epochs=1), init="plain-digits")
    model, meta = ensure_model(tuned, tmp_path, seed=0, progress=False, log=lambda s: None)
    init_model, init_meta = ensure_model("plain-digits", tmp_path, seed=0, progress=False, log=lambda s: None)
    assert meta["training_key"]["init"] == init_meta["weights_sha256"]
    scratch = ensure_model(replace(tuned, init=None), tmp_path, seed=0, progress=False, log=lambda s: None)[1]
    assert "init" not in scratch["training_key"] and scratch["path"] != meta["path"]
    # one epoch of masked fine-tuning keeps much of the plain model's accuracy; from scratch it has little
    assert meta["test_accuracy"] > scratch["test_accuracy"] + 0.2


def test_train_cli_takes_the_recipe_from_a_preset_and_flags(tmp_path, capsys):
    """`train --preset` keeps every recipe option of the preset; flags override them; a preset that
    fine-tunes needs its starting checkpoint (or --from-scratch) and says so in one line."""
    from maskdefense.cli import main

    base = tmp_path / "base"
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.05",
                 "--schedule", "onecycle", "--warmup", "0.3", "--label-smoothing", "0.1", "--weight-decay", "5e-4",
                 "--no-decay-norm", "--precision", "bf16", "--channels-last", "--out", str(base),
                 "--no-progress"]) == 0
    cfg = read_metadata(base / "model.safetensors")["train_config"]
    assert (cfg["schedule"], cfg["warmup"], cfg["label_smoothing"], cfg["weight_decay_norm"], cfg["precision"],
            cfg["channels_last"]) == ("onecycle", 0.3, 0.1, False, "bf16", True)
    capsys.readouterr()
    assert main(["train", "--preset", "plain-cifar10-cpu", "--epochs", "1", "--out", str(tmp_path / "x"),
                 "--data-root", str(tmp_path / "none")]) == 2  # no CIFAR-10 there; options were accepted first
    assert "CIFAR-10 not found" in capsys.readouterr().err
    assert main(["train", "--preset", "mad-cifar10-cpu", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init-from" in err[0] and "plain-cifar10-cpu" in err[0]
    assert main(["train", "--dataset", "digits", "--init-from", str(base / "model.safetensors"), "--from-scratch",
                 "--out", str(tmp_path / "w")]) == 2
    assert "contradict" in capsys.readouterr().err
    tuned = tmp_path / "tuned"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--mask-cell", "2", "--mask-rate", "0.5",
                 "--init-from", str(base / "model.safetensors"), "--out", str(tuned), "--no-progress"]) == 0
    assert read_metadata(tuned / "model.safetensors")["training_key"]["init"] == \
        read_metadata(base / "model.safetensors")["weights_sha256"]
    capsys.readouterr()
    assert main(["train", "--dataset", "digits", "--width", "16", "--init-from", str(base / "model.safetensors"),
                 "--out", str(tmp_path / "z")]) == 2  # another architecture: refused in one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
