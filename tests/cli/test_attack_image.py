import pytest
from click.testing import CliRunner

from robustbench_geo.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def checkpoint(mnist_root, tmp_path_factory):
    from robustbench_geo.training import fit

    out = tmp_path_factory.mktemp("ckpt") / "cnn"
    fit("cnn", "mnist", epochs=1, subset=256, test_subset=64, batch_size=64, progress=False, data_root=mnist_root,
        out=out)
    return out


def test_attack_cli_writes_rows_and_png(checkpoint, mnist_root, tmp_path):
    out = tmp_path / "run"
    r = run("attack", checkpoint, "mnist", "--attack", "grid", "--param", "angle_steps=5", "--param", "shift_steps=3",
            "--n", 24, "--out", out, "--data-root", mnist_root, "--quiet")
    assert r.exit_code == 0, r.output
    assert "clean accuracy" in r.output and "robust accuracy" in r.output
    import pandas as pd

    rows = pd.read_csv(out / "rows.csv")
    assert len(rows) == 24 and {"angle_deg", "tx_px", "ty_px", "success", "loss", "adv_pred"} <= set(rows.columns)
    assert rows["angle_deg"].abs().max() <= 30 and rows["tx_px"].abs().max() <= 3
    assert (out / "examples.png").stat().st_size > 1000 and (out / "outcome.json").exists()



def test_attack_outcome_follows_the_results_schema(checkpoint, mnist_root, tmp_path):
    import json

    from robustbench_geo.results_schema import read_results, validate

    out = tmp_path / "run"
    r = run("attack", checkpoint, "mnist", "--attack", "grid", "--param", "angle_steps=3", "--param", "shift_steps=1",
            "--n", 4, "--seeds", 2, "--out", out, "--data-root", mnist_root, "--quiet")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "outcome.json").read_text())
    validate(doc)
    assert [(d["kind"], d["seed"]) for d in doc] == [("attack", 0), ("attack", 1)] and read_results(out / "outcome.json") == doc

@pytest.mark.parametrize("args, message", [
    (["--param", "max_angle=3"], "unknown parameter(s) ['max_angle']"),
    (["--param", "max_shift_px=-1"], "max_shift_px: expected a number in [0.0, 10000.0], got -1"),
    (["--attack", "scale", "--param", "scale_range=(1.2,0.8)"], "expected min <= max"),
    (["--attack", "gridd"], "Did you mean 'grid'"),
])
def test_attack_cli_bad_input_exits_2(checkpoint, mnist_root, args, message):
    base = ["attack", checkpoint, "mnist", "--n", 4, "--data-root", mnist_root, "--quiet"]
    if "--attack" not in args:
        base += ["--attack", "grid"]
    r = run(*base, *args)
    assert r.exit_code == 2 and message in r.output, r.output


def test_list_attacks_shows_params_and_units():
    r = run("list", "attacks", "--domain", "image")
    assert r.exit_code == 0
    for text in ("grid [image]", "worst_of_k", "random", "affine_pgd", "scale", "max_angle_deg = 30.0", "degrees",
                 "pixels"):
        assert text in r.output, text


def test_manifool_cli_writes_distances_and_the_budget_curve(checkpoint, mnist_root, tmp_path):
    import json

    import pandas as pd

    out = tmp_path / "mf"
    r = run("attack", checkpoint, "mnist", "--attack", "manifool", "--param", "steps=20", "--n", 16, "--out", out,
            "--data-root", mnist_root, "--quiet")
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(out / "rows.csv")
    assert {"geodesic_distance", "normalised_distance", "min_fooling_budget", "angle_deg", "scale_x"} <= set(rows.columns)
    fooled = rows[rows["success"]]
    assert len(fooled) and (fooled["normalised_distance"] > 0).all()
    metrics = json.loads((out / "outcome.json").read_text())[0]["metrics"]
    assert metrics["mean_normalised_distance"] > 0
    assert (out / "budget_curve.png").stat().st_size > 1000


def test_vote_cli_attacks_the_deployed_vote_and_records_it(checkpoint, mnist_root, tmp_path):
    import json

    out = tmp_path / "vote"
    r = run("attack", checkpoint, "mnist", "--attack", "worst_of_k", "--param", "k=3", "--vote", 3, "--n", 16,
            "--out", out, "--data-root", mnist_root, "--quiet")
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "outcome.json").read_text())[0]
    assert rec["defense"] == {"defense": "majority_vote", "votes": 3, "max_angle_deg": 30.0, "max_shift_px": 3.0,
                              "seed": 0, "randomness": "fresh"}
    r = run("attack", checkpoint, "mnist", "--attack", "grid", "--vote", 0, "--n", 4, "--data-root", mnist_root, "--quiet")
    assert r.exit_code == 2 and "--vote" in r.output, r.output
