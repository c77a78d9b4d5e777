import pytest
import torch

from maskdefense.models import UnknownNameError, create_model, list_models
from maskdefense.validation import InputError

SHAPES = {"lenet5": (1, 28), "digits_cnn": (1, 8), "conv_ae": (1, 28)}
#: Image-to-image networks (reformers, denoisers, inpainters): images in, images of the same shape out.
IMAGE_TO_IMAGE = {"rednet", "conv_ae"}
#: Residual denoisers: images in, ``x - noise estimate`` of the same shape out (not clamped to [0, 1]).
RESIDUAL_DENOISERS = {"dncnn"}
#: Mask generators: images in, one-channel masks in [0, 1] of the same size out.
MASKERS = {"attention_unet"}
#: Part segmenters: images in, per-pixel logits of the background and every part out.
SEGMENTERS = {"part_unet"}


def _shape(name):
    return SHAPES.get(name, (3, 32))


@pytest.mark.parametrize("name", list_models())
def test_every_model_maps_images_to_logits_or_images(name):
    kw = {"width": 0.125} if name.startswith(("vgg", "resnet")) else {"width": 4} if name in MASKERS else {}
    torch.manual_seed(0)
    m = create_model(name, **kw).eval()
    c, s = _shape(name)
    x = torch.rand(3, c, s, s)
    out = m(x)
    if name in IMAGE_TO_IMAGE or name in MASKERS:
        assert out.shape == (3, 1 if name in MASKERS else c, s, s)
        assert float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    elif name in RESIDUAL_DENOISERS:
        assert out.shape == x.shape
    elif name in SEGMENTERS:
        assert out.shape == (3, 1 + m.num_parts, s, s)
    else:
        assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    assert m.spec["name"] == name


def test_registry_lists_the_issue_models():
    names = list_models()
    for required in ("lenet5", "vgg16", "resnet18", "digits_cnn", "vgg16_narrow", "resnet18_narrow"):
        assert required in names
    assert list_models("vgg*") == [n for n in names if n.startswith("vgg")]


def test_unknown_model_name_suggests_close_match():
    with pytest.raises(UnknownNameError, match="lenet5"):
        create_model("lenet")


def test_width_multiplier_scales_parameters():
    full = sum(p.numel() for p in create_model("vgg16").parameters())
    narrow = sum(p.numel() for p in create_model("vgg16_narrow").parameters())
    assert 14e6 < full < 16e6  # the CIFAR VGG16 has ~14.7M parameters
    assert narrow < full / 10


def test_normalization_lives_inside_the_model():
    m = create_model("lenet5")
    assert torch.allclose(m.normalize.mean.flatten(), torch.tensor([0.1307]))
    # changing the normalization buffers changes the output: inputs are raw [0,1] images
    x = torch.rand(2, 1, 28, 28)
    a = m(x)
    m.normalize.mean.fill_(0.9)
    assert not torch.allclose(a, m(x))


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(1, 28, 28), "shape"),
        (torch.rand(2, 3, 28, 28), "channel"),
        (torch.rand(2, 1, 32, 32), "28x28"),
    ],
)
def test_model_rejects_wrong_shapes(bad, match):
    with pytest.raises(InputError, match=match):
        create_model("lenet5")(bad)


@pytest.mark.parametrize(
    "bad, match",
    [
        ((torch.rand(2, 1, 28, 28) * 255).to(torch.uint8), "dtype"),
        (torch.rand(2, 1, 28, 28) * 255, r"\[0, 1\]"),
        (torch.full((2, 1, 28, 28), float("nan")), "NaN"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_check_input_rejects_bad_values(bad, match):
    with pytest.raises(InputError, match=match):
        create_model("lenet5").check_input(bad)


@pytest.fixture
def user_model():
    """A model registered through the public decorator (removed from the registry afterwards)."""
    from torch import nn

    from maskdefense.models import MODELS

    @MODELS.register("user_tiny_net", hidden=4)
    class TinyNet(nn.Module):
        """A user's model: not an ImageClassifier, no ``spec`` of its own."""

        def __init__(self, hidden: int = 4, sizes: tuple = (1, 8)) -> None:
            super().__init__()
            self.sizes = sizes
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(sizes[0] * sizes[1] ** 2, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 10))

        def forward(self, x):
            return self.net(x)

    yield "user_tiny_net"
    MODELS._entries.pop("user_tiny_net")


def test_user_registered_model_reloads_from_its_checkpoint(user_model, tmp_path):
    """MODELS.register is public: a model registered through it is saved and rebuilt like a built-in one,
    with the keyword arguments it was built with (not the registered defaults)."""
    from maskdefense.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    m = create_model(user_model, hidden=7).eval()
    assert m.spec == {"name": user_model, "kwargs": {"hidden": 7}}
    save_checkpoint(m, tmp_path / "model.safetensors", {"dataset": "digits"})
    loaded, meta = load_model(tmp_path / "model.safetensors")
    assert meta["arch"] == user_model and meta["arch_kwargs"] == {"hidden": 7}
    assert loaded.net[1].out_features == 7
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(loaded(x), m(x))


def test_spec_kwargs_are_json_values(user_model):
    import json

    m = create_model(user_model, sizes=(1, 8))
    assert m.spec["kwargs"] == {"hidden": 4, "sizes": [1, 8]}
    assert json.loads(json.dumps(m.spec)) == m.spec


def test_a_factory_that_returns_no_module_is_refused():
    from maskdefense.models import MODELS

    MODELS.add("user_not_a_model", lambda: 3)
    try:
        with pytest.raises(TypeError, match="not a torch.nn.Module"):
            create_model("user_not_a_model")
    finally:
        MODELS._entries.pop("user_not_a_model")
