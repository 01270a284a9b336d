"""``rbgeo list models|datasets|attacks|threat-models|defenses``."""

from __future__ import annotations

import click

from robustbench_geo.cli.options import handle_errors


@click.group("list")
def list_group():
    """List registered models, datasets, ...

    \b
    Examples:
      rbgeo list models
      rbgeo list models --pattern 'deform*'
      rbgeo list datasets
      rbgeo list attacks
      rbgeo list threat-models
      rbgeo list defenses
    """


@list_group.command("models")
@click.option("--pattern", default="*", show_default=True, help="Glob over model names.")
@handle_errors
def list_models_cmd(pattern):
    """Registered models with their task and description."""
    from robustbench_geo.models import get_model_entry, list_models

    for name in list_models(pattern):
        e = get_model_entry(name)
        click.echo(f"{name:18s} {e.task:6s} {e.description}")


@list_group.command("datasets")
@handle_errors
def list_datasets_cmd():
    """Registered datasets with their task and shape."""
    from robustbench_geo.data import dataset_info, list_datasets

    for name in list_datasets():
        i = dataset_info(name)
        shape = f"{i.in_channels}x{i.image_size[0]}x{i.image_size[1]}" if i.task == "image" else "graph"
        click.echo(f"{name:15s} {i.task:6s} {shape:9s} {i.num_classes:3d} classes  {i.description}")


@list_group.command("attacks")
@click.option("--domain", type=click.Choice(["image", "graph"]), default=None, help="Only image or graph attacks.")
@handle_errors
def list_attacks_cmd(domain):
    """Registered attacks with their parameters, defaults and units."""
    from robustbench_geo.attacks import get_attack, list_attacks

    for name in list_attacks(domain):
        e = get_attack(name)
        click.echo(f"{name} [{e.domain}]: {e.description}")
        for line in e.describe_params():
            click.echo(f"    {line}")


@list_group.command("threat-models")
@click.option("--domain", type=click.Choice(["image", "graph"]), default=None, help="Only image or graph threat models.")
def list_threat_models_cmd(domain):
    """Named threat models of the Python API (rbg.benchmark): attack, parameters and source."""
    from robustbench_geo.evaluation.threat_models import get_threat_model, list_threat_models

    for name in list_threat_models(domain):
        t = get_threat_model(name)
        params = ", ".join(f"{k}={v}" for k, v in {**t.params, **t.options}.items())
        click.echo(f"{name} [{t.domain}]: {t.attack}({params}): {t.description}")
        click.echo(f"    source: {t.source}")


@list_group.command("defenses")
@handle_errors
def list_defenses_cmd():
    """Spatial defenses of image training (rbgeo train --defense NAME[:key=value,...]) with their parameters."""
    from robustbench_geo.train_defenses import DEFENSES, describe_params, list_defenses

    for name in list_defenses():
        click.echo(f"{name}: {DEFENSES[name][1]}")
        for line in describe_params(name):
            click.echo(f"    {line}")
