"""What every attack shares: a registry, parameter validation, and the outcome summary.

An attack is a small class ``Attack(model, *, <threat-model parameters with units in their
names>, ...)``; calling it returns a frozen result dataclass specific to its domain (images or
graphs). Classes register with :func:`register_attack`; their keyword-only ``__init__``
parameters (and defaults) are the parameters users set with ``--param key=value`` or in sweep
configs. Units and meanings come from the class attribute ``param_docs`` (``{name: text}``).

:func:`evaluate_attack` is the one entry point the CLI and the sweep runner call: it dispatches to
the image or graph runner, which returns an :class:`AttackOutcome` (metrics, per-sample rows and
artefacts for reports).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from robustbench_geo.check import check_like, check_number, unknown_name_error


@dataclass(frozen=True)
class AttackEntry:
    name: str
    cls: type
    domain: str  # "image" or "graph"
    description: str
    params: dict  # name -> default (inspect.Parameter.empty when required)
    param_docs: dict

    def describe_params(self) -> list[str]:
        out = []
        for p, default in self.params.items():
            d = "" if default is inspect.Parameter.empty else f" = {default!r}"
            doc = self.param_docs.get(p, "")
            out.append(f"{p}{d}" + (f"  ({doc})" if doc else ""))
        return out


_ATTACKS: dict[str, AttackEntry] = {}
#: prefix -> resolver(name) -> AttackEntry, e.g. "art" for ``art:ProjectedGradientDescent``
_RESOLVERS: dict[str, Callable[[str], AttackEntry]] = {}


def register_attack(name: str, *, domain: str, description: str = ""):
    """Class decorator registering an attack under ``name`` for ``domain`` (``image``/``graph``)."""
    if domain not in ("image", "graph"):
        raise ValueError(f"domain: expected 'image' or 'graph', got {domain!r}")

    def wrap(cls):
        if name in _ATTACKS:
            raise ValueError(f"attack {name!r} is already registered")
        _ATTACKS[name] = make_entry(name, cls, domain, description)
        return cls

    return wrap


def make_entry(name: str, cls, domain: str, description: str = "") -> AttackEntry:
    sig = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls)
    params = {p.name: p.default for p in sig.parameters.values()
              if p.kind == inspect.Parameter.KEYWORD_ONLY}
    doc = description or (inspect.getdoc(cls) or "").split("\n")[0]
    return AttackEntry(name, cls, domain, doc, params, dict(getattr(cls, "param_docs", {})))


def register_resolver(prefix: str, resolver: Callable[[str], AttackEntry]) -> None:
    """Resolve names ``prefix:...`` dynamically (e.g. ``art:`` for ART's evasion attacks)."""
    _RESOLVERS[prefix] = resolver


def _ensure_builtin() -> None:
    import importlib

    for mod in ("robustbench_geo.attacks.image", "robustbench_geo.attacks.graph"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a domain not installed yet in this checkout
            if e.name != mod:
                raise


def list_attacks(domain: str | None = None) -> list[str]:
    _ensure_builtin()
    return sorted(n for n, e in _ATTACKS.items() if domain in (None, e.domain))


def get_attack(name: str) -> AttackEntry:
    _ensure_builtin()
    if name in _ATTACKS:
        return _ATTACKS[name]
    prefix, sep, _ = name.partition(":")
    if sep and prefix in _RESOLVERS:
        return _RESOLVERS[prefix](name)
    valid = list(_ATTACKS) + [f"{p}:<name>" for p in _RESOLVERS]
    raise unknown_name_error("attack", name, valid)


def check_params(entry: AttackEntry, params: dict) -> dict:
    """Reject unknown parameter names (listing the valid ones) and values of the wrong kind.

    Every value goes through :func:`~robustbench_geo.check.check_number` when its default is a
    number (``angle_steps=true`` is not 1, ``max_angle_deg=inf`` is not a budget) and must be a
    string or boolean where the default is one; ranges are checked by the attack's constructor with
    the same shared checks. Returns the parameters (integral floats for integer parameters as ints).
    """
    unknown = sorted(set(params) - set(entry.params))
    if unknown and not getattr(entry.cls, "accepts_any_params", False):
        raise ValueError(f"attack {entry.name!r}: unknown parameter(s) {unknown}; valid parameters: "
                         f"{', '.join(entry.describe_params()) or '(none)'}")
    return {k: check_like(v, entry.params.get(k), f"attack {entry.name!r}: {k}") for k, v in params.items()}


def create_attack(name: str, model, **params):
    """Build attack ``name`` against ``model`` with validated ``params``."""
    entry = get_attack(name)
    return entry.cls(model, **check_params(entry, params))


@dataclass
class AttackOutcome:
    """One attack run summarised for the CLI, the sweep store and reports.

    Attributes:
        attack: attack name.
        params: the parameters used (defaults filled in).
        seed: the attack seed.
        metrics: numbers only: ``clean_accuracy``, ``robust_accuracy``, ``success_rate`` and
            attack-specific ones (``flips``, ``mean_flow_px``, ``forward_passes``, ...).
        rows: per-sample (images) or per-target (graphs) records, plain Python values.
        artefacts: extra data for reports (example images, found parameters, edge flips, ...).
        seconds: wall time of the attack.
        config: everything needed to reproduce the run (model, dataset, versions, warp settings...).
    """

    attack: str
    params: dict
    seed: int
    metrics: dict[str, float]
    rows: list[dict] = field(default_factory=list)
    artefacts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)


def evaluate_attack(model, dataset, attack: str, params: dict | None = None, *, seed: int = 0, **kwargs) -> AttackOutcome:
    """Run ``attack`` on ``model`` over ``dataset`` and summarise it (dispatches on the dataset type).

    ``kwargs`` go to the domain runner (images: ``n``, ``batch_size``, ``device``, ``progress``;
    graphs: ``mode``, ``checkpoint_meta``, ``budget``, ``targets`` ...).
    """
    from robustbench_geo.data.base import GraphDataset

    entry = get_attack(attack)
    domain = "graph" if isinstance(dataset, GraphDataset) else "image"
    if entry.domain != domain:
        raise ValueError(f"attack {attack!r} is a {entry.domain} attack but the dataset is {domain} data; "
                         f"{domain} attacks: {', '.join(list_attacks(domain))}")
    if domain == "image":
        from robustbench_geo.attacks.image.runner import evaluate_image_attack as run
    else:
        from robustbench_geo.attacks.graph.runner import evaluate_graph_attack as run
    outcome = run(model, dataset, attack, params or {}, seed=seed, **kwargs)
    check_metrics(outcome.metrics, f"attack {attack!r}")
    return outcome


def check_metrics(metrics: dict, what: str) -> None:
    """Every metric is a finite number before anything is printed or stored (NaN never counts as fooled)."""
    for k, v in metrics.items():
        if v is not None:
            check_number(v, f"{what}: metric {k}")
