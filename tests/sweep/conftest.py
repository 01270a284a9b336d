"""Tiny sweeps on the real data mirror, sharing one checkpoint cache per test session."""

from __future__ import annotations

import pytest


def tiny_toml(output, *, name="tiny", seeds=(0,), cache="", extra="", model_label="cnn", graph=False, attacks=None) -> str:
    """A sweep with one small cnn on 300 MNIST images (1 epoch) evaluated on 60 test images."""
    text = f"""
[sweep]
name = "{name}"
output = "{output}"
seeds = {list(seeds)}
checkpoint_cache = "{cache}"

[datasets.mnist]
spec = "mnist"
train_subset = 300
test_subset = 60

[models."{model_label}"]
model = "cnn"
dataset = "mnist"
epochs = 1
batch_size = 100
"""
    if graph:
        text += """
[datasets.cora]
spec = "cora"

[models.gcn]
dataset = "cora"
epochs = 30
"""
    text += attacks if attacks is not None else '\n[attacks.clean]\nattack = "none"\n'
    return text + extra


@pytest.fixture(scope="session")
def ckpt_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")
