from click.testing import CliRunner

from robustbench_geo.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_list():
    r = run("list", "models")
    assert r.exit_code == 0 and "deform_cnn" in r.output and "gcn" in r.output
    r = run("list", "datasets")
    assert r.exit_code == 0 and "mnist-scaled" in r.output and "cora" in r.output
    r = run("list", "threat-models", "--domain", "graph")
    assert r.exit_code == 0 and "structure-poisoning [graph]: metattack(budget_edge_fraction=0.05, mode=poisoning)" in r.output
    assert "rotation-translation" not in r.output


def test_unknown_names_exit_2():
    r = run("train", "cnnn", "mnist")
    assert r.exit_code == 2 and "Valid models" in r.output and "'cnn'" in r.output
    r = run("train", "cnn", "mnistt")
    assert r.exit_code == 2 and "Valid datasets" in r.output
    r = run("train", "cnn", "mnist", "--param", "oops")
    assert r.exit_code == 2 and "expected key=value" in r.output


def test_train_and_eval_image(mnist_root, tmp_path):
    out = tmp_path / "cnn"
    r = run("train", "cnn", "mnist", "--epochs", 1, "--subset", 256, "--test-subset", 128, "--quiet",
            "--out", out, "--data-root", mnist_root)
    assert r.exit_code == 0, r.output
    assert "clean accuracy" in r.output and (tmp_path / "cnn.safetensors").exists()
    r = run("eval", out, "mnist-scaled", "--subset", 128, "--data-root", mnist_root)
    assert r.exit_code == 0 and "clean accuracy" in r.output and "n=128" in r.output
    r = run("eval", out, "cora", "--data-root", mnist_root)
    assert r.exit_code == 2


def test_train_graph_and_mismatch(cora_root, tmp_path):
    r = run("train", "gcn", "cora", "--quiet", "--out", tmp_path / "g", "--data-root", cora_root)
    assert r.exit_code == 0 and "gcn on cora" in r.output
    r = run("train", "gcn", "mnist", "--data-root", cora_root)
    assert r.exit_code == 2 and "graph data" in r.output


def test_eval_missing_checkpoint(tmp_path):
    r = run("eval", tmp_path / "nope", "mnist")
    assert r.exit_code == 1 and "not found" in r.output
