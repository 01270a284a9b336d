"""benchmarks/scaled_mnist.py, the training protocol of the Scaled MNIST table: the table over kept
runs, and how a run names what differs from ours."""

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
scaled_mnist = pytest.importorskip("scaled_mnist")


def _run(seed, rows):
    return {"seed": seed, "test_size": 10000,
            "rows": [{"protocol": p, "variant": v, "seed": seed, "mnist": a, "mnist_scaled": b, "train_s": 1.0}
                     for p, v, a, b in rows]}


def test_a_table_of_variants_run_with_different_seeds_says_which_seeds_each_row_pools():
    runs = [_run(0, [("both", "regular", 98.0, 60.0), ("original", "x", 97.0, 93.0)]),
            _run(1, [("both", "regular", 98.5, 62.0), ("original", "x", 97.5, 94.0)]),
            _run(0, [("both", "regular", 98.0, 60.0), ("original", "y", 96.0, 95.0)])]
    columns, rows = scaled_mnist.table(runs)
    assert columns[2] == "seeds"
    by_variant = {r[1]: r for r in rows}
    assert by_variant["regular"][2] == "0,1" and by_variant["x"][2] == "0,1" and by_variant["y"][2] == "0"
    assert by_variant["x"][4].startswith("93.50 [")  # Scaled MNIST: the mean of the two seeds
    same = scaled_mnist.table(runs[:2])[0]
    assert "seeds" not in same  # one seed set for every row: no column


def test_runs_that_disagree_on_one_seeds_model_are_refused():
    runs = [_run(0, [("both", "regular", 98.0, 60.0)]), _run(0, [("both", "regular", 98.0, 61.0)])]
    with pytest.raises(ValueError, match="expected one trained model"):
        scaled_mnist.table(runs)


def test_every_reference_difference_is_named_in_the_label_and_the_run_file():
    args = argparse.Namespace(
        offset_style="keras", finetune_epochs=2, epochs=10, finetune_lr=5e-4, finetune_batch_size=32,
        finetune_trainable="offsets+bn", interpolation="nearest", block_order="relu-bn",
        finetune_bn_momentum=0.01)
    label = scaled_mnist.original_variant(args)
    for words in ("keras offsets", "2 ep, Adam 0.0005, batch 32", "batch norm trained too", "BN momentum 0.01",
                  "nearest sampling",
                  "ReLU before BN"):
        assert words in label
    assert scaled_mnist._variant_tag(args) == "-keras-ft2-lr0.0005-b32-bn-bnm0.01-nearest-relu-bn"
    assert scaled_mnist._sampled(args, "regular, plain MNIST") == "regular, plain MNIST [nearest sampling; ReLU before BN]"
    assert scaled_mnist._scale_augment(args) == "scale-nearest"


def test_a_batch_norm_momentum_without_trained_batch_norm_is_refused(capsys):
    with pytest.raises(SystemExit):
        scaled_mnist.main(["--finetune-bn-momentum", "0.01", "--protocols", "original"])
    assert "offsets+bn" in capsys.readouterr().err
