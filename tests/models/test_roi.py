"""roi_cnn: the proposal grid, and deformable RoI pooling starting exactly as RoI align."""

import pytest
import torch

from robustbench_geo.models import create_model
from robustbench_geo.models.roi import proposal_grid


def test_proposal_grid_is_symmetric_and_inside():
    p = proposal_grid((56, 56), sizes=(0.5, 0.75), stride=0.125)
    assert p.shape == (25 + 9, 4)
    assert (p >= 0).all() and (p <= 56).all()
    mirrored = torch.stack([56 - p[:, 2], p[:, 1], 56 - p[:, 0], p[:, 3]], dim=1)
    assert torch.allclose(mirrored.sort(dim=0).values, p.sort(dim=0).values)


def test_deform_roi_starts_as_roi_align():
    torch.manual_seed(0)
    plain = create_model("roi_cnn", pool="roi_align").eval()
    deform = create_model("roi_cnn", pool="deform_roi").eval()
    missing, unexpected = deform.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("pool.offset_fc") for k in missing)
    x = torch.rand(3, 1, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(deform(x), plain(x), atol=1e-5, rtol=1e-5)


def test_unknown_pool_lists_valid():
    with pytest.raises(KeyError, match="Valid RoI pools: deform_roi, ps_deform_roi, roi_align"):
        create_model("roi_cnn", pool="roi_max")
