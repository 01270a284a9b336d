"""p4 group convolutions: equivariance of each layer, invariance of p4cnn's logits to 90-degree rotations."""

import pytest
import torch

from robustbench_geo.models import create_model
from robustbench_geo.models.equivariant import P4Conv2d, p4_downsample


def _n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_budget_matches_cnn():
    budget = _n_params(create_model("cnn"))
    assert abs(_n_params(create_model("p4cnn")) - budget) / budget < 0.02
    assert abs(_n_params(create_model("dynamic_filter_cnn")) - budget) / budget < 0.02


@pytest.mark.parametrize("size", [12, 13])
def test_layers_are_equivariant(size):
    torch.manual_seed(0)
    x = torch.rand(2, 3, size, size, dtype=torch.float64)
    lift, gconv = P4Conv2d(3, 4, lifting=True).double(), P4Conv2d(4, 5).double()

    def f(img):
        return p4_downsample(gconv(lift(img)))

    y, yr = f(x), f(torch.rot90(x, 1, dims=(2, 3)))
    # rotating the input rotates every map and shifts the rotation axis by one
    torch.testing.assert_close(yr, torch.rot90(torch.roll(y, 1, dims=2), 1, dims=(-2, -1)))


@pytest.mark.parametrize("size", [28, 27, 10, 9])
@pytest.mark.parametrize("train_mode", [False, True])
def test_p4cnn_logits_are_invariant_to_90_degree_rotations(size, train_mode):
    torch.manual_seed(0)
    model = create_model("p4cnn", in_channels=2, num_classes=7, image_size=(size, size)).double()
    # non-trivial BN statistics so that eval mode is not the identity
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 2, size, size, dtype=torch.float64))
    model.train(train_mode)
    x = torch.rand(4, 2, size, size, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        assert y.std(dim=0).min() > 1e-6  # logits depend on the input
        for k in (1, 2, 3):
            torch.testing.assert_close(model(torch.rot90(x, k, dims=(2, 3))), y, atol=1e-10, rtol=1e-8)
        y_flip = model(torch.flip(x, dims=(3,)))  # p4 has no reflections: a mirror image changes the logits
        assert (y_flip - y).abs().max() > 1e-6


def test_plain_cnn_is_not_invariant():
    """The invariance test above can fail: the regular CNN (strided convs) breaks it."""
    torch.manual_seed(0)
    model = create_model("cnn").eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert (model(torch.rot90(x, 1, dims=(2, 3))) - model(x)).abs().max() > 1e-4


def test_dynamic_filters_depend_on_the_input():
    from robustbench_geo.models.dynamic_filter import DynamicFilterConv, dynamic_local_filter

    torch.manual_seed(0)
    # dynamic local filtering with position-constant filters is an ordinary depthwise convolution
    x = torch.rand(2, 4, 6, 7)
    k = torch.randn(4, 1, 3, 3)
    filters = k.view(1, 4 * 9, 1, 1).expand(2, 4 * 9, 3, 4)
    want = torch.nn.functional.conv2d(x, k, stride=2, padding=1, groups=4)
    torch.testing.assert_close(dynamic_local_filter(x, filters, 3, stride=2, padding=1), want)
    layer = DynamicFilterConv(4, 5, stride=1)
    layer.record = True
    layer(x)
    f = layer.last_filters
    assert f.shape == (2, 4 * 9, 6, 7)
    assert (f[0] - f[1]).abs().max() > 1e-4 and (f[0, :, 0, 0] - f[0, :, 3, 3]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="expected a number of groups dividing the 4 input channels"):
        dynamic_local_filter(x, torch.rand(2, 27, 6, 7))


def test_p4cnn_eq_features_are_equivariant_and_its_logits_see_orientation():
    """``p4cnn_eq``: a 90-degree turn of the input shifts the head's per-rotation features cyclically (so the
    features stay equivariant), and the logits change, so a 6 and a 9 rotated by 180 degrees can differ."""
    torch.manual_seed(0)
    model = create_model("p4cnn_eq", in_channels=1, num_classes=10, image_size=(28, 28)).double()
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 1, 28, 28, dtype=torch.float64))
    model.eval()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        pooled = model.features(x).mean(dim=(3, 4))  # (B, C, 4)
        turned = model.features(torch.rot90(x, 1, dims=(2, 3))).mean(dim=(3, 4))
        torch.testing.assert_close(turned, torch.roll(pooled, 1, dims=2), atol=1e-10, rtol=1e-8)
        y, y180 = model(x), model(torch.rot90(x, 2, dims=(2, 3)))
    assert (y180 - y).abs().max() > 1e-4
    # the head reads the same features as p4cnn's: with a head that averages the 4 rotations of a channel,
    # the logits are invariant again (the layout is channel-major, rotation-minor)
    with torch.no_grad():
        w = model.head.weight.view(10, -1, 4).mean(dim=2, keepdim=True).expand(-1, -1, 4).reshape(10, -1)
        model.head.weight.copy_(w)
        torch.testing.assert_close(model(torch.rot90(x, 2, dims=(2, 3))), model(x), atol=1e-10, rtol=1e-8)


def test_p4cnn_keeps_its_function_and_refuses_an_unknown_pool():
    """The rotation_pool option leaves p4cnn's logits as they were: max over rotations per position, then space."""
    from robustbench_geo.models.equivariant import P4CNN

    torch.manual_seed(0)
    model = create_model("p4cnn").double().eval()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        want = model.head(model.features(x).amax(dim=2).mean(dim=(2, 3)))
        torch.testing.assert_close(model(x), want)
    assert _n_params(create_model("p4cnn_eq")) - _n_params(create_model("p4cnn")) == 64 * 3 * 10
    with pytest.raises(ValueError, match="rotation_pool: expected one of max, none, got 'mean'"):
        P4CNN(rotation_pool="mean")
