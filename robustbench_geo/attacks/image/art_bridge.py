"""Bridge to the Adversarial Robustness Toolbox (ART), both ways.

* :func:`to_art` wraps a model as an ART ``PyTorchClassifier`` (inputs in ``[0, 1]``, logits out);
  ``channels_first=False`` puts an NHWC -> NCHW permutation in front of the model, so ART attacks
  that only handle channels-last data correctly (``SpatialTransformation`` derives its x-shift
  range from ``x.shape[1]``, which is the channel count for NCHW arrays: that axis is never
  shifted) see proper ``(N, H, W, C)`` arrays.
* ``art:<EvasionAttack>`` runs any ART evasion attack in our pipeline (``rbgeo attack ... --attack
  art:ProjectedGradientDescent --param eps=0.3``); its keyword arguments are the ART attack's, plus
  ``seed`` and ``channels_last``. numpy/tensor conversion happens here, once per batch, and the
  model is wrapped so that forward/backward passes are counted like ours.
* :class:`GeometricEvasion` is an ART ``EvasionAttack`` that runs one of our attacks, so ART
  users can adopt them: ``GeometricEvasion(classifier, attack="grid", max_angle_deg=30).generate(x, y)``.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
import torch.nn as nn

from robustbench_geo.attacks.base import AttackEntry, create_attack, get_attack, register_resolver
from robustbench_geo.attacks.image.core import ImageAttack, Work
from robustbench_geo.check import unknown_name_error


class _Counted(nn.Module):
    """Counts images through ``model`` forward (and backward, via a hook on the output)."""

    def __init__(self, model: nn.Module, channels_last: bool = False):
        super().__init__()
        self.model, self.channels_last, self.work = model, channels_last, None

    def forward(self, x):
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        out = self.model(x)
        if self.work is not None:
            self.work.forward += x.shape[0]
            if out.requires_grad:
                n = x.shape[0]
                out.register_hook(lambda g: self._count_backward(n) or g)
        return out

    def _count_backward(self, n):
        self.work.backward += n


def to_art(model: nn.Module, *, input_shape: tuple[int, int, int], nb_classes: int, channels_first: bool = True,
           clip_values=(0.0, 1.0), device: str | torch.device = "cpu"):
    """Wrap ``model`` as an ART ``PyTorchClassifier``.

    Args:
        model: ``(B, C, H, W)`` images in ``[0, 1]`` -> logits.
        input_shape: ``(C, H, W)`` (always given channels-first; transposed for ``channels_first=False``).
        nb_classes: number of classes.
        channels_first: ART sees ``(N, C, H, W)`` arrays; ``False``: ``(N, H, W, C)`` arrays, permuted
            back to NCHW in front of the model.
        clip_values: valid input range.
        device: where the model runs.

    Returns:
        ``art.estimators.classification.PyTorchClassifier`` (cross-entropy loss, no preprocessing).
    """
    from art.estimators.classification import PyTorchClassifier

    c, h, w = input_shape
    net = model if channels_first else _Counted(model, channels_last=True)
    return PyTorchClassifier(net.eval(), loss=nn.CrossEntropyLoss(), input_shape=(c, h, w) if channels_first else (h, w, c),
                             nb_classes=nb_classes, channels_first=channels_first, clip_values=clip_values,
                             device_type="cpu" if torch.device(device).type == "cpu" else "gpu")


class ArtEvasion(ImageAttack):
    """Runs an ART evasion attack (``art_class``) on a batch; non-geometric (``kind = "none"``)."""

    kind = "none"
    art_class = None
    accepts_any_params = False

    def __init__(self, model, *, seed: int = 0, channels_last: bool = False, **art_kwargs):
        super().__init__(model, seed=seed)
        self.channels_last = bool(channels_last)
        self.art_kwargs = art_kwargs
        self.counted = _Counted(model)

    def run(self, images, labels, work: Work):
        dev = images.device
        c, h, w = images.shape[1:]
        self.counted.work = work
        clf = to_art(self.counted, input_shape=(c, h, w), nb_classes=self._num_classes(images),
                     channels_first=not self.channels_last, device=dev)
        attack = self.art_class(clf, **self.art_kwargs)  # fresh per batch: some ART attacks cache their result
        x = images.detach().cpu().numpy().astype(np.float32)
        if self.channels_last:
            x = x.transpose(0, 2, 3, 1)
        np.random.seed(self.seed % (2 ** 32))
        torch.manual_seed(self.seed)
        try:
            adv = attack.generate(x=x, y=labels.cpu().numpy())
        finally:
            self.counted.work = None
        adv = torch.from_numpy(np.asarray(adv, dtype=np.float32))
        if self.channels_last:
            adv = adv.permute(0, 3, 1, 2)
        info = {k: float(getattr(attack, k)) for k in ("attack_rot", "attack_trans_x", "attack_trans_y", "fooling_rate")
                if isinstance(getattr(attack, k, None), (int, float, np.floating, np.integer))}
        return {}, {**info, "adversarial": adv.contiguous().to(dev)}

    def apply(self, images, params, info):
        return info.pop("adversarial")

    def _num_classes(self, images) -> int:
        with torch.inference_mode():
            return int(self.model(images[:1]).shape[1])

    def config(self) -> dict:
        return {"art_attack": self.art_class.__name__, "art_kwargs": dict(self.art_kwargs), "seed": self.seed,
                "channels_last": self.channels_last}


def _art_evasion_classes() -> dict[str, type]:
    import art.attacks.evasion as ev
    from art.attacks.attack import EvasionAttack

    return {n: c for n, c in vars(ev).items() if inspect.isclass(c) and issubclass(c, EvasionAttack) and c is not EvasionAttack}


def resolve_art(name: str) -> AttackEntry:
    """``art:<EvasionAttack>`` -> an entry whose parameters are the ART attack's keyword arguments."""
    art_name = name.partition(":")[2]
    classes = _art_evasion_classes()
    if art_name not in classes:
        raise unknown_name_error("ART evasion attack", art_name, classes)
    art_cls = classes[art_name]
    sig = inspect.signature(art_cls.__init__)
    params = {p.name: p.default for p in list(sig.parameters.values())[2:]
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    params.update({"seed": 0, "channels_last": False})
    docs = {p: "ART parameter (see the ART documentation)" for p in params}
    docs.update({"seed": "seeds numpy and torch before ART runs", "channels_last": "give ART (N, H, W, C) arrays"})
    cls = type(f"Art{art_name}", (ArtEvasion,), {"art_class": art_cls, "param_docs": docs})
    return AttackEntry(name, cls, "image", f"ART {art_name} (adversarial-robustness-toolbox)", params, docs)


register_resolver("art", resolve_art)


def _geometric_evasion_class():
    from art.attacks.attack import EvasionAttack
    from art.estimators.classification import PyTorchClassifier

    class GeometricEvasion(EvasionAttack):
        """Our geometric attacks as an ART ``EvasionAttack`` (PyTorch classifiers without preprocessing).

        ``GeometricEvasion(classifier, attack="grid", **params).generate(x, y)`` returns the
        adversarial array; ``last_result`` keeps our full result (parameters found, success, work).
        """

        attack_params = EvasionAttack.attack_params + ["attack", "params"]
        _estimator_requirements = (PyTorchClassifier,)

        def __init__(self, estimator, attack: str = "grid", **params):
            super().__init__(estimator=estimator)
            entry = get_attack(attack)
            if entry.domain != "image":
                raise ValueError(f"attack: expected an image attack, got {attack!r} ({entry.domain})")
            self.attack, self.params, self.last_result = attack, params, None

        def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
            est = self.estimator
            if any(not _is_identity(op) for op in getattr(est, "preprocessing_operations", None) or []):
                raise ValueError("estimator: expected a classifier without preprocessing (inputs in [0, 1]), "
                                 f"got preprocessing {est.preprocessing_operations}")
            xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
            if not est.channels_first:
                xt = xt.permute(0, 3, 1, 2)
            if y is None:
                y = est.predict(x)
            y = np.asarray(y)
            labels = torch.from_numpy(y.argmax(1) if y.ndim == 2 else y).long()
            model = est.model
            while isinstance(model, _Counted):  # our own wrappers (channels-last permutation, counting)
                model = model.model
            dev = next(model.parameters()).device
            result = create_attack(self.attack, model, **self.params)(xt.contiguous().to(dev), labels.to(dev))
            self.last_result = result
            adv = result.adversarial.detach().cpu()
            if not est.channels_first:
                adv = adv.permute(0, 2, 3, 1)
            return adv.contiguous().numpy()

    return GeometricEvasion


def _is_identity(op) -> bool:
    """An ART preprocessing step that leaves inputs unchanged (ART adds mean 0 / std 1 by default)."""
    mean, std = getattr(op, "mean", None), getattr(op, "std", None)
    return mean is not None and std is not None and np.all(np.asarray(mean) == 0) and np.all(np.asarray(std) == 1)


def __getattr__(name):  # GeometricEvasion is built lazily so that importing this module stays cheap
    if name == "GeometricEvasion":
        cls = _geometric_evasion_class()
        globals()["GeometricEvasion"] = cls
        return cls
    raise AttributeError(name)
