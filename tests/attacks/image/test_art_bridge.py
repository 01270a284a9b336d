import numpy as np
import pytest
import torch

from robustbench_geo.attacks import get_attack
from robustbench_geo.evaluation import evaluate_attack
from robustbench_geo.attacks.image import to_art
from robustbench_geo.attacks.image.art_bridge import GeometricEvasion

# the same grid for both: 7 angles in +-30 degrees, shifts {-3, 0, 3} px (ART: 3/28 of the width, integers)
ART_GRID = dict(max_translation=3 / 28 * 100, num_translations=3, max_rotation=30.0, num_rotations=7, verbose=False)
OUR_GRID = dict(angle_steps=7, shift_steps=3, integer_shifts=True)


def test_our_grid_fools_at_least_as_many_as_art_spatial_transformation(tiny_model, mnist_small):
    mnist_small = mnist_small.subset(32, seed=0)
    ours = evaluate_attack(tiny_model, mnist_small, "grid", OUR_GRID, progress=False)
    for channels_last in (False, True):  # False: ART's channels-first path (one axis never shifted)
        art = evaluate_attack(tiny_model, mnist_small, "art:SpatialTransformation",
                              {**ART_GRID, "channels_last": channels_last}, progress=False)
        assert art.metrics["clean_accuracy"] == ours.metrics["clean_accuracy"]
        assert ours.metrics["robust_accuracy"] <= art.metrics["robust_accuracy"]
        assert art.metrics["verification_mismatches"] == 0 and art.metrics["forward_passes"] > 0


def test_art_pgd_by_name_and_param_errors(tiny_model, mnist_small):
    out = evaluate_attack(tiny_model, mnist_small, "art:ProjectedGradientDescent",
                          {"eps": 0.3, "eps_step": 0.1, "max_iter": 3, "verbose": False}, progress=False)
    assert out.metrics["robust_accuracy"] < out.metrics["clean_accuracy"] and out.metrics["backward_passes"] > 0
    with pytest.raises(ValueError, match="unknown parameter"):
        evaluate_attack(tiny_model, mnist_small, "art:ProjectedGradientDescent", {"epsilon": 0.3}, progress=False)
    with pytest.raises(KeyError, match="Did you mean 'ProjectedGradientDescent'"):
        get_attack("art:ProjectedGradientDescen")


@pytest.mark.parametrize("channels_first", [True, False])
def test_geometric_evasion_from_art(channels_first, tiny_model, mnist_small):
    clf = to_art(tiny_model, input_shape=(1, 28, 28), nb_classes=10, channels_first=channels_first)
    x = mnist_small.images[:16].numpy()
    if not channels_first:
        x = x.transpose(0, 2, 3, 1)
    attack = GeometricEvasion(clf, attack="grid", angle_steps=5, shift_steps=3)
    adv = attack.generate(x, mnist_small.labels[:16].numpy())
    assert adv.shape == x.shape and adv.dtype == np.float32
    fooled = clf.predict(adv).argmax(1) != mnist_small.labels[:16].numpy()
    assert np.array_equal(fooled, attack.last_result.success.numpy())
