"""The one registry type behind models, attacks, datasets and threat models."""

import pytest

from robustbench_geo.attacks import ATTACKS
from robustbench_geo.check import UnknownNameError
from robustbench_geo.data import DATASETS
from robustbench_geo.evaluation.threat_models import THREAT_MODELS
from robustbench_geo.models.registry import MODELS
from robustbench_geo.registry import Registry


def test_add_get_glob_and_close_matches():
    reg = Registry("colour")
    reg.add("red", 1)
    reg.add("green", 2)
    reg.add("grey", 3)
    assert reg.get("green") == 2 and "red" in reg and len(reg) == 3 and list(reg) == ["green", "grey", "red"]
    assert reg.names("gr*") == ["green", "grey"] and reg.names(where=lambda v: v > 1) == ["green", "grey"]
    with pytest.raises(UnknownNameError, match=r"unknown colour 'gren'. Did you mean 'green', 'grey'\? Valid colours: green, grey, red"):
        reg.get("gren")
    with pytest.raises(ValueError, match="colour 'red' is already registered"):
        reg.add("red", 4)


def test_prefix_resolvers():
    reg = Registry("attack")
    reg.add_resolver("lib", lambda name: name.upper())
    assert reg.get("lib:pgd") == "LIB:PGD"
    with pytest.raises(KeyError, match=r"Valid attacks: lib:<name>"):
        reg.get("other:pgd")


@pytest.mark.parametrize("registry, name", [(MODELS, "deform_cnn"), (ATTACKS, "stadv"), (DATASETS, "mnist-scaled"),
                                            (THREAT_MODELS, "worst-of-10")])
def test_every_registry_is_one_type_and_fails_alike(registry, name):
    assert isinstance(registry, Registry) and name in registry.names()
    with pytest.raises(UnknownNameError, match=f"Did you mean '{name}'"):
        registry.get(name[:-1] + "x")
