"""What every attack shares: the registry and parameter validation.

An attack is a small class ``Attack(model, *, <threat-model parameters with units in their
names>, ...)``; calling it returns a frozen result dataclass specific to its domain (images or
graphs). Classes register with :func:`register_attack`; their keyword-only ``__init__``
parameters (and defaults) are the parameters users set with ``--param key=value`` or in sweep
configs. Units and meanings come from the class attribute ``param_docs`` (``{name: text}``).

Running an attack over a dataset and summarising it is the evaluation layer's job
(:func:`robustbench_geo.evaluation.evaluate_attack`).
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass
from typing import Callable

from robustbench_geo.check import check_like, check_number
from robustbench_geo.registry import Registry

#: ``image`` and ``graph`` attacks apply to one kind of data; ``any`` to both (the ``none`` attack)
DOMAINS = ("image", "graph", "any")


@dataclass(frozen=True)
class AttackEntry:
    name: str
    cls: type
    domain: str  # "image", "graph" or "any"
    description: str
    params: dict  # name -> default (inspect.Parameter.empty when required)
    param_docs: dict
    numeric_words: frozenset = frozenset()  # parameters with a word default that also take a number (``float | str``)

    def describe_params(self) -> list[str]:
        out = []
        for p, default in self.params.items():
            d = "" if default is inspect.Parameter.empty else f" = {default!r}"
            doc = self.param_docs.get(p, "")
            out.append(f"{p}{d}" + (f"  ({doc})" if doc else ""))
        return out

    def defaults(self) -> dict:
        """The parameters that have defaults, with their defaults."""
        return {k: v for k, v in self.params.items() if v is not inspect.Parameter.empty}

    def fill(self, params: dict) -> dict:
        """``params`` checked (:func:`check_params`) with the defaults filled in: what a run records."""
        return {**self.defaults(), **check_params(self, params)}

    def applies_to(self, domain: str) -> bool:
        return self.domain in (domain, "any")


ATTACKS: Registry[AttackEntry] = Registry("attack")


def register_attack(name: str, *, domain: str, description: str = ""):
    """Class decorator registering an attack under ``name`` for ``domain`` (``image``/``graph``/``any``)."""
    if domain not in DOMAINS:
        raise ValueError(f"domain: expected one of {', '.join(DOMAINS)}, got {domain!r}")

    def wrap(cls):
        ATTACKS.add(name, make_entry(name, cls, domain, description))
        return cls

    return wrap


def make_entry(name: str, cls, domain: str, description: str = "") -> AttackEntry:
    sig = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls)
    keyword = [p for p in sig.parameters.values() if p.kind == inspect.Parameter.KEYWORD_ONLY]
    params = {p.name: p.default for p in keyword}
    numeric_words = frozenset(p.name for p in keyword if isinstance(p.default, str) and _takes_number(p.annotation))
    doc = description or (inspect.getdoc(cls) or "").split("\n")[0]
    return AttackEntry(name, cls, domain, doc, params, dict(getattr(cls, "param_docs", {})), numeric_words)


def _takes_number(annotation) -> bool:
    """Whether a parameter annotation (a string under ``from __future__ import annotations``) admits a number."""
    text = annotation if isinstance(annotation, str) else str(annotation)
    return any(part.strip() in ("float", "int") for part in text.split("|"))


def register_resolver(prefix: str, resolver: Callable[[str], AttackEntry]) -> None:
    """Resolve names ``prefix:...`` dynamically (e.g. ``art:`` for ART's evasion attacks)."""
    ATTACKS.add_resolver(prefix, resolver)


def list_attacks(domain: str | None = None, pattern: str = "*") -> list[str]:
    """Registered attack names matching the glob ``pattern``; with ``domain``, those that apply to it."""
    return ATTACKS.names(pattern, None if domain is None else (lambda e: e.applies_to(domain)))


def get_attack(name: str) -> AttackEntry:
    return ATTACKS.get(name)


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
    out = {}
    for k, v in params.items():
        if k in entry.numeric_words and isinstance(v, numbers.Real) and not isinstance(v, bool):
            out[k] = check_number(v, f"attack {entry.name!r}: {k}")  # stop_accuracy=0.5 as well as "chance"
        else:
            out[k] = check_like(v, entry.params.get(k), f"attack {entry.name!r}: {k}")
    return out


def create_attack(name: str, model, **params):
    """Build attack ``name`` against ``model`` with validated ``params``."""
    entry = get_attack(name)
    return entry.cls(model, **check_params(entry, params))
