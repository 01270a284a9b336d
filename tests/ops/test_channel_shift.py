"""shift_channels (per-channel bilinear resampling) against a loop-based reference and gradcheck."""

import math

import pytest
import torch
from torch.autograd import gradcheck

from robustbench_geo.ops import shift_channels


def expected_shift(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Slow reference: every output pixel interpolated from its four neighbours, positions clamped."""
    b, c, h, w = x.shape
    out = torch.zeros_like(x)
    for n in range(b):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    y = min(max(i + offset[n, 2 * ch, i, j].item(), 0.0), h - 1.0)
                    xx = min(max(j + offset[n, 2 * ch + 1, i, j].item(), 0.0), w - 1.0)
                    y0, x0 = math.floor(y), math.floor(xx)
                    total = 0.0
                    for yi, wy in ((y0, 1 - (y - y0)), (min(y0 + 1, h - 1), y - y0)):
                        for xi, wx in ((x0, 1 - (xx - x0)), (min(x0 + 1, w - 1), xx - x0)):
                            total += wy * wx * x[n, ch, yi, xi].item()
                    out[n, ch, i, j] = total
    return out


IMPLS = ["grid_sample", "gather"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [0, 1, 3])
def test_zero_offset_returns_the_input(dtype, batch):
    x = torch.randn(batch, 4, 28, 9, dtype=dtype)
    zero = torch.zeros(batch, 8, 28, 9, dtype=dtype)
    assert torch.equal(shift_channels(x, zero, impl="gather"), x)  # the reference: bit for bit
    tol = 2e-5 if dtype == torch.float32 else 1e-12  # grid_sample's normalised coordinates round
    torch.testing.assert_close(shift_channels(x, zero), x, rtol=0, atol=tol)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_offset_on_a_non_contiguous_input(impl):
    x = torch.randn(2, 5, 6, 3, dtype=torch.float64).permute(0, 3, 1, 2)  # (2, 3, 5, 6), channels-last strides
    torch.testing.assert_close(shift_channels(x, torch.zeros(2, 6, 5, 6, dtype=torch.float64), impl=impl), x,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_constant_integer_offset_shifts_each_channel_with_the_border_repeated(impl):
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64)
    offset = torch.zeros(2, 4, 6, 7, dtype=torch.float64)
    offset[:, 0], offset[:, 1] = 1.0, -2.0  # channel 0: sample one row down, two columns left
    offset[:, 2], offset[:, 3] = -3.0, 0.0  # channel 1: three rows up
    out = shift_channels(x, offset, impl=impl)
    rows, cols = torch.arange(6), torch.arange(7)
    ch0 = x[:, 0][:, (rows + 1).clamp(0, 5)][:, :, (cols - 2).clamp(0, 6)]
    ch1 = x[:, 1][:, (rows - 3).clamp(0, 5)]
    torch.testing.assert_close(out[:, 0], ch0, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[:, 1], ch1, rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_fractional_offsets_match_the_loop_reference(impl):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    offset = 2.5 * torch.randn(2, 6, 5, 6, dtype=torch.float64)  # some positions fall outside the map
    torch.testing.assert_close(shift_channels(x, offset, impl=impl), expected_shift(x, offset))


def test_the_two_implementations_agree_in_value_and_gradient():
    torch.manual_seed(2)
    x = torch.randn(3, 4, 9, 8, requires_grad=True)
    offset = (1.7 * torch.randn(3, 8, 9, 8)).requires_grad_(True)
    grads = []
    for impl in IMPLS:
        out = shift_channels(x, offset, impl=impl)
        grads.append((out, *torch.autograd.grad(out.square().sum(), (x, offset))))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_input_and_offset(impl):
    torch.manual_seed(1)
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    # inside the map and away from integer positions, where bilinear interpolation is smooth
    offset = (0.3 + 0.4 * torch.rand(2, 4, 4, 5, dtype=torch.float64)) * torch.tensor([1.0, -1.0]).repeat(2).view(1, 4, 1, 1)
    offset = offset.clone().requires_grad_(True)
    assert gradcheck(lambda a, o: shift_channels(a, o, impl=impl), (x, offset))


def test_bad_shapes_name_what_was_expected():
    with pytest.raises(ValueError, match=r"offset: expected shape \(1, 4, 3, 3\)"):
        shift_channels(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="input: expected shape"):
        shift_channels(torch.zeros(2, 3, 3), torch.zeros(1, 4, 3, 3))
    with pytest.raises(ValueError, match=r"impl: expected one of \['grid_sample', 'gather'\], got 'nearest'"):
        shift_channels(torch.zeros(1, 2, 3, 3), torch.zeros(1, 4, 3, 3), impl="nearest")
