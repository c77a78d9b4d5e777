"""`maskdefense train` and `info --checkpoint` on bad input: one clear error line, exit code 2, no
traceback, nothing trained."""

import pytest

from maskdefense.cli import main


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: usage, then one error line
        code = e.code
    err = capsys.readouterr().err
    return code, err


def _one_error_line(err):
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert not err.strip().splitlines()[-1].startswith(" "), err  # the error is the last line
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--width", "0"], "--width: must be > 0"),
    (["--epochs", "0"], "--epochs: must be >= 1"),
    (["--lr", "-1"], "--lr: must be > 0"),
    (["--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--mask-cell", "2", "--mask-rate", "1.5"], "--mask-rate: must lie in [0, 1]"),
    (["--mask-cell", "3"], "cell 3 does not divide image side 8"),
    (["--mask-cell", "2", "--mask-fill", "foo"], "--mask-fill: expected one of black, mean, noise"),
    (["--limit", "0"], "--limit: must be >= 1"),
    (["--weight-decay", "-0.1"], "--weight-decay: must be >= 0"),
    (["--epochs", "two"], "--epochs: expected an integer"),
    (["--width", "0.5"], "cannot build model digits_cnn with width=0.5"),
    (["--model", "vgg16"], "cannot build model vgg16"),
])
def test_bad_option_values_are_one_error_line_and_exit_code_2(args, message, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _run(["train", "--dataset", "digits", "--out", str(out), "--no-progress", *args], capsys)
    assert code == 2
    assert message in _one_error_line(err)
    assert not (out / "model.safetensors").exists()


def test_an_output_path_that_is_a_file_or_read_only_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    code, err = _run(["train", "--out", str(f), "--epochs", "1", "--no-progress"], capsys)
    assert code == 2 and "is not a folder" in _one_error_line(err)
    # /proc/1 is a folder nobody may write into, root included
    code, err = _run(["train", "--out", "/proc/1", "--epochs", "1", "--no-progress"], capsys)
    assert code == 2 and "not writable" in _one_error_line(err)


def test_a_second_train_into_a_busy_folder_is_refused(tmp_path, capsys):
    from maskdefense.rundir import exclusive

    with exclusive(tmp_path, "train"):
        code, err = _run(["train", "--out", str(tmp_path), "--epochs", "1", "--no-progress"], capsys)
    assert code == 2 and "in use by another process (train" in _one_error_line(err)
    assert not (tmp_path / "model.safetensors").exists()


def test_fewer_epochs_into_a_longer_run_is_refused_and_info_checks_the_weights(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--limit", "200", "--no-progress"]
    assert main([*args, "--epochs", "2"]) == 0
    ckpt = out / "model.safetensors"
    before = ckpt.read_bytes()
    capsys.readouterr()
    code, err = _run([*args, "--epochs", "1"], capsys)
    assert code == 2 and "trained for 2 epochs, more than the 1 asked for" in _one_error_line(err)
    assert ckpt.read_bytes() == before
    assert main(["info", "--checkpoint", str(ckpt)]) == 0
    out_text = capsys.readouterr().out
    assert '"weights_sha256"' in out_text and '"command"' in out_text  # the record, and the run from model.json
    ckpt.write_bytes(before[: len(before) - 100])  # truncated
    code, err = _run(["info", "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and "cannot read weights" in _one_error_line(err)
    data = bytearray(before)
    data[-1] ^= 1
    ckpt.write_bytes(bytes(data))
    code, err = _run(["info", "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and "corrupted" in _one_error_line(err)


def test_train_on_a_tiny_imagenet_stand_in(tmp_path, monkeypatch, capsys):
    """The dataset's default model takes 64x64 RGB images and as many classes as wnids.txt lists."""
    import json

    from test_data import make_tiny_tree, no_network, tiny_stand_in

    no_network(monkeypatch)
    make_tiny_tree(tmp_path / "data")
    tiny_stand_in(monkeypatch)
    out = tmp_path / "run"
    code, err = _run(["train", "--dataset", "tiny-imagenet", "--data-root", str(tmp_path / "data"), "--out", str(out),
                      "--epochs", "1", "--batch-size", "4", "--no-progress"], capsys)
    assert code == 0, err
    meta = json.loads((out / "model.json").read_text())
    assert meta["arch"] == "resnet18_narrow" and meta["arch_kwargs"]["input_size"] == 64
    assert meta["arch_kwargs"]["num_classes"] == 3
