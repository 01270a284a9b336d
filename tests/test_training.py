import pytest
import torch

from robustbench_geo.training import fit


def test_image_training_is_deterministic_and_learns(mnist_root, tmp_path):
    kw = dict(epochs=1, subset=512, test_subset=256, batch_size=64, seed=3, progress=False, data_root=mnist_root)
    a = fit("cnn", "mnist", out=tmp_path / "a", **kw)
    b = fit("cnn", "mnist", out=tmp_path / "b", **kw)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.meta["clean_accuracy"] == b.meta["clean_accuracy"]
    assert a.history[0]["train_accuracy"] > 0.3  # well above chance after one small epoch
    assert a.meta["seed"] == 3 and a.meta["dataset"] == "mnist" and a.meta["train"]["batch_size"] == 64


def test_augmented_training_and_offset_finetuning(mnist_root, tmp_path):
    base = fit("deform_cnn", "mnist", epochs=1, subset=128, test_subset=64, progress=False, data_root=mnist_root,
               out=tmp_path / "d")
    ft = fit("deform_cnn", "mnist", epochs=1, subset=128, test_subset=64, progress=False, data_root=mnist_root,
             augment="scale", trainable="offsets", init_from=tmp_path / "d")
    changed = {k for k, v in ft.model.state_dict().items() if not torch.equal(v, base.model.state_dict()[k])}
    assert changed and all("offset_conv" in k for k in changed)
    assert ft.meta["train"]["augment"] == "scale"
    assert all(p.requires_grad for p in ft.model.parameters())  # the frozen weights are given back their gradients


def test_offset_finetuning_takes_the_steps_of_a_loop_that_computes_every_gradient(mnist_test):
    """``trainable="offsets"`` freezes the other weights while it trains, which only skips work: the
    offsets' gradients, hence the Adam steps, are those of a loop that computes every gradient."""
    from robustbench_geo.data.base import ImageDataset
    from robustbench_geo.models import create_model
    from robustbench_geo.training import TrainConfig, train_image_model

    n, cfg = 64, TrainConfig(epochs=1, batch_size=32, seed=0, trainable="offsets")
    data = ImageDataset("mnist", mnist_test.images[:n], mnist_test.labels[:n], mnist_test.classes, {})
    torch.manual_seed(0)
    model = create_model("deform_cnn", offset_style="channel")
    twin = create_model("deform_cnn", offset_style="channel")
    twin.load_state_dict(model.state_dict())
    train_image_model(model, data, cfg, progress=False)
    twin.train()
    for m in twin.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    opt = torch.optim.Adam([p for name, p in twin.named_parameters() if "offset_conv" in name], lr=cfg.lr)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    for i in range(0, n, cfg.batch_size):
        idx = order[i:i + cfg.batch_size]
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(twin(data.images[idx]), data.labels[idx]).backward()
        opt.step()
    for (k, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), k


def test_offsets_plus_bn_trains_batch_norm_and_its_statistics_and_nothing_else(mnist_test):
    """``offsets+bn`` (the Keras reference's fine-tuning) moves the offsets, the batch-norm scales, shifts
    and running statistics, and leaves every convolution and the head as loaded; ``offsets`` moves no
    batch-norm tensor at all."""
    from robustbench_geo.data.base import ImageDataset
    from robustbench_geo.models import create_model
    from robustbench_geo.training import TrainConfig, train_image_model

    data = ImageDataset("mnist", mnist_test.images[:64], mnist_test.labels[:64], mnist_test.classes, {})
    torch.manual_seed(0)
    start = create_model("deform_cnn", offset_style="channel")
    bn_names = {f"{n}.{t}" for n, m in start.named_modules() if isinstance(m, torch.nn.BatchNorm2d)
                for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    for which in ("offsets", "offsets+bn"):
        model = create_model("deform_cnn", offset_style="channel")
        model.load_state_dict(start.state_dict())
        train_image_model(model, data, TrainConfig(epochs=1, batch_size=32, seed=0, trainable=which), progress=False)
        changed = {k for k, v in model.state_dict().items() if not torch.equal(v, start.state_dict()[k])}
        offsets = {k for k in changed if "offset_conv" in k}
        assert offsets, which
        assert changed - offsets == (bn_names if which == "offsets+bn" else set()), which
        assert all(p.requires_grad for p in model.parameters())


def test_trainable_names_agree_between_the_cli_and_the_training_loop():
    from robustbench_geo.cli.train import train
    from robustbench_geo.training import TRAINABLE, TrainConfig

    choice = next(o for o in train.params if o.name == "trainable").type.choices
    assert tuple(choice) == TRAINABLE
    with pytest.raises(KeyError, match="offsets\\+bn"):
        TrainConfig(trainable="bn")


def test_graph_training_reaches_published_accuracy(cora_root):
    r = fit("gcn", "cora", seed=0, progress=False, data_root=cora_root)
    assert 0.81 <= r.meta["clean_accuracy"] <= 0.86  # Pro-GNN Table 2: 83.50
    assert r.meta["split"] == "prognn" and r.meta["epochs_run"] < 1000


def test_mismatch_caught_before_training(cora_root):
    with pytest.raises(ValueError, match="is for image data but dataset 'cora' is graph data"):
        fit("cnn", "cora", data_root=cora_root)
    with pytest.raises(ValueError, match="geometric augmentation applies to image datasets only"):
        fit("gcn", "cora", augment="scale", data_root=cora_root)
    with pytest.raises(KeyError, match="Valid augmentations"):
        fit("cnn", "mnist", augment="zoom")


def test_cosine_schedule_anneals_and_bad_names_fail(mnist_root, cora_root):
    kw = dict(epochs=2, subset=256, test_subset=64, batch_size=64, progress=False, data_root=mnist_root)
    cos = fit("cnn", "mnist", schedule="cosine", **kw)
    const = fit("cnn", "mnist", **kw)
    assert [h["lr"] for h in const.history] == [1e-3, 1e-3]
    assert 4e-4 < cos.history[0]["lr"] < 6e-4 and cos.history[1]["lr"] < 1e-9  # half-way, then annealed to 0
    assert cos.meta["train"]["schedule"] == "cosine"
    with pytest.raises(KeyError, match="Valid learning-rate schedules.*cosine"):
        fit("cnn", "mnist", schedule="step", **kw)
    with pytest.raises(ValueError, match="graphs train at a constant learning rate"):
        fit("gcn", "cora", schedule="cosine", data_root=cora_root)
