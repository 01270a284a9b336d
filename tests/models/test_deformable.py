"""ChannelOffsetConv (the reference experiment's offset layer) and deform_cnn(offset_style="channel")."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_geo.models import create_model
from robustbench_geo.models.deformable import ChannelOffsetConv, load_regular_weights, offset_layers
from robustbench_geo.training import _trainable_parameters


class ConstantOffset(nn.Module):
    """Stands in for the offset predictor: the same ``(dy, dx)`` for every channel and pixel."""

    def __init__(self, dy: float, dx: float):
        super().__init__()
        self.dy, self.dx = dy, dx

    def forward(self, x):
        off = torch.empty(x.shape[0], 2 * x.shape[1], *x.shape[2:], dtype=x.dtype)
        off[:, 0::2], off[:, 1::2] = self.dy, self.dx
        return off


class FixedPrediction(nn.Module):
    """Stands in for the offset predictor: returns a given prediction whatever the input."""

    def __init__(self, pred: torch.Tensor):
        super().__init__()
        self.pred = pred

    def forward(self, x):
        return self.pred


@pytest.mark.parametrize("stride", [1, 2])
def test_zero_offsets_compute_exactly_the_plain_conv(stride):
    torch.manual_seed(0)
    layer = ChannelOffsetConv(3, 5, 3, stride=stride, padding=1, init_std=0.0, impl="gather")
    assert not layer.offset_conv.weight.any() and layer.offset_conv.bias is None
    x = torch.randn(2, 3, 9, 8)
    assert torch.equal(layer(x), layer.conv(x))
    layer.impl = "grid_sample"  # the default: the same to float rounding
    torch.testing.assert_close(layer(x), layer.conv(x), rtol=0, atol=1e-5)


def test_default_offset_predictor_is_the_references_gaussian():
    torch.manual_seed(0)
    layer = ChannelOffsetConv(64, 128)
    w = layer.offset_conv.weight
    assert w.shape == (128, 64, 3, 3)  # 2 offsets per input channel, from a 3x3 window
    assert abs(w.std().item() - 0.01) < 1e-3 and abs(w.mean().item()) < 1e-3
    with pytest.raises(ValueError, match="init_std: expected"):
        ChannelOffsetConv(3, 5, init_std=-1.0)
    with pytest.raises(ValueError, match="impl: expected one of"):
        ChannelOffsetConv(3, 5, impl="nearest")


@pytest.mark.parametrize("impl", ["grid_sample", "gather"])
def test_constant_offset_shifts_the_feature_map_before_the_conv(impl):
    torch.manual_seed(0)
    layer = ChannelOffsetConv(2, 4, 3, padding=1, impl=impl).double()
    layer.offset_conv = ConstantOffset(dy=2.0, dx=-1.0)
    x = torch.randn(3, 2, 8, 7, dtype=torch.float64)
    # independently: pad by repeating the border, then crop the window moved 2 rows down, 1 column left
    padded = F.pad(x, (1, 0, 0, 2), mode="replicate")  # (left 1, right 0, top 0, bottom 2)
    shifted = padded[:, :, 2:, :7]
    torch.testing.assert_close(layer(x), layer.conv(shifted), rtol=0, atol=1e-12)


def test_gradients_reach_the_offset_predictor_only_through_the_sampling():
    torch.manual_seed(0)
    model = create_model("deform_cnn", offset_style="channel")
    params = _trainable_parameters(model, "offsets")
    names = [n for n, _ in model.named_parameters() if "offset_conv" in n]
    assert len(params) == len(names) == 3  # one weight per offset layer, no bias
    F.cross_entropy(model(torch.rand(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


@pytest.mark.parametrize("style", ["channel", "keras"])
def test_regular_weights_load_into_the_channel_offset_twin(style):
    torch.manual_seed(0)
    reg = create_model("cnn").eval()
    twin = create_model("deform_cnn", offset_style=style).eval()
    assert [n for n, _ in offset_layers(twin)] == ["features.3", "features.6", "features.9"]
    untouched = load_regular_weights(twin, reg.state_dict())
    assert untouched == [f"features.{i}.offset_conv.weight" for i in (3, 6, 9)]
    x = torch.rand(4, 1, 28, 28)
    # the Gaussian offsets (std 0.01 weights) move samples by a fraction of a pixel: close, not equal
    assert (twin(x) - reg(x)).abs().max() < 0.5
    for _, layer in offset_layers(twin):
        nn.init.zeros_(layer.offset_conv.weight)
    torch.testing.assert_close(twin(x), reg(x), rtol=0, atol=1e-5)


def test_keras_layout_reads_the_prediction_in_memory_order():
    """layout="keras": the (B, 2C, H, W) prediction read as (B*C, H, W, 2), as the reference reshapes it."""
    torch.manual_seed(0)
    b, c, h, w = 2, 3, 4, 5
    pred = torch.randn(b, 2 * c, h, w, dtype=torch.float64)
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    layer = ChannelOffsetConv(c, 4, layout="keras").double()
    layer.offset_conv = FixedPrediction(pred)
    layer.record = True
    layer(x)
    flat = pred.reshape(b * c, h * w * 2)  # per channel c of image n: prediction channels 2c and 2c + 1, flattened
    for n in range(b):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    k = 2 * (i * w + j)  # the reference's (dy, dx) of pixel (i, j): flat entries k and k + 1
                    got = layer.last_offset[n, 2 * ch:2 * ch + 2, i, j]
                    assert torch.equal(got, flat[n * c + ch, k:k + 2]), (n, ch, i, j)
    assert not torch.equal(layer.last_offset, pred)  # not the paired layout
    with pytest.raises(ValueError, match="layout: expected 'paired' or 'keras'"):
        ChannelOffsetConv(3, 5, layout="nhwc")


def test_unknown_offset_style_lists_the_choices():
    with pytest.raises(ValueError, match=r"offset_style: expected one of \['dcn', 'channel', 'keras'\], got 'tap'"):
        create_model("deform_cnn", offset_style="tap")


def test_relu_before_bn_blocks_load_into_their_deformable_twin_and_compute_the_same():
    """``block_order="relu-bn"`` (the reference's Keras blocks): ReLU runs before batch norm, so the
    output can be negative after a block, and the deformable twin with zero offsets still computes the
    regular model exactly; a twin of the other order refuses the weights."""
    torch.manual_seed(0)
    reg = create_model("cnn", block_order="relu-bn").eval()
    for m in reg.modules():  # non-trivial statistics, so that the order matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(0.5, 1.0)
            m.running_var.uniform_(0.5, 2.0)
    assert [type(m).__name__ for m in reg.features[:3]] == ["Conv2d", "ReLU", "BatchNorm2d"]
    x = torch.rand(4, 1, 28, 28)
    assert reg.features[:3](x).min() < 0  # BN after ReLU: shifted below zero
    twin = create_model("deform_cnn", block_order="relu-bn").eval()
    load_regular_weights(twin, reg.state_dict())
    torch.testing.assert_close(twin(x), reg(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="no counterpart"):
        load_regular_weights(create_model("deform_cnn"), reg.state_dict())
    with pytest.raises(ValueError, match="bn-relu"):
        create_model("cnn", block_order="bn-first")
