import pytest
import torch
import torchvision

from robustbench_geo.ops import DeformConv2d, deform_conv2d, resolve_backend


def test_torchvision_backend_matches_reference():
    torch.manual_seed(0)
    x, w = torch.rand(2, 4, 7, 7), torch.rand(6, 4, 3, 3)
    off, mask = torch.randn(2, 18, 7, 7), torch.rand(2, 9, 7, 7)
    ref = torchvision.ops.deform_conv2d(x, off, w, padding=1, mask=mask)
    assert torch.allclose(deform_conv2d(x, off, w, padding=1, mask=mask, backend="torchvision"), ref)


def test_backend_names():
    assert resolve_backend("auto", "cpu") in ("native", "torchvision")
    with pytest.raises(KeyError, match="Valid deformable-convolution backends: auto"):
        resolve_backend("nope")
    with pytest.raises(ValueError, match="divisible by groups"):
        DeformConv2d(3, 4, 3, groups=2)
