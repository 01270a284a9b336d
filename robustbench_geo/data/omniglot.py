"""Omniglot for few-shot learning: character sets, held-out alphabets, and a seeded episode sampler.

Sources under the data root (read-only roots are copied into the cache, checksummed):

===========================================  ==========  ==========  ===========================
file                                         alphabets   characters  drawings
===========================================  ==========  ==========  ===========================
``omniglot/images_background_small1.zip``    5           136         20 per character (2,720)
``omniglot/images_background_small2.zip``    5           156         20 per character (3,120)
``omniglot/all_runs.zip``                    (eval.)     20 x 20     the 20 one-shot 20-way runs
``omniglot-py/images_{background,evaluation}/``  torchvision's layout of the full set (optional)
===========================================  ==========  ==========  ===========================

``small1`` and ``small2`` share two alphabets (Greek and Latin: the same 50 characters), so the
held-out split used here is ``small2`` *without* the alphabets of ``small1``: Japanese (katakana),
Sanskrit and Tagalog (106 characters). Images are resized from 105x105 to ``size`` (default 28,
PIL bilinear with antialiasing) and inverted so that ink is 1 and background 0 (as MNIST: zero
padding of a warp is background).

``all_runs.zip`` holds Lake et al.'s 20 one-shot classification runs: per run 20 training images
(one per class) and 20 test images, with the answer key in ``class_labels.txt``.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from robustbench_geo.data.root import prepare_files, resolve_data_root

#: md5 of the mirrored files (the offline mirror's README)
OMNIGLOT_FILES = {
    "images_background_small1": "e704a628b5459e08445c13499850abc4",
    "images_background_small2": "b75a71a51d3b13f821f212756fe481fd",
    "all_runs": "e8996daecdf12afeeb4a53a179f06b19",
}
_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{}.zip"
SUBSETS = ("small1", "small2", "small2-heldout", "background", "evaluation")


@dataclass
class CharacterSet:
    """Drawings grouped by character.

    Attributes:
        images: ``(N, 1, size, size)`` float32 in ``[0, 1]``, ink = 1.
        char: ``(N,)`` int64 character index into ``characters``.
        characters: ``"alphabet/characterXX"`` names.
        meta: provenance (subset, files, size).
    """

    images: torch.Tensor
    char: torch.Tensor
    characters: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def num_characters(self) -> int:
        return len(self.characters)

    @property
    def alphabets(self) -> list[str]:
        return sorted({c.split("/")[0] for c in self.characters})

    def by_character(self) -> list[torch.Tensor]:
        """Indices of the drawings of each character (sorted)."""
        order = torch.argsort(self.char, stable=True)
        counts = torch.bincount(self.char, minlength=self.num_characters).tolist()
        return list(torch.split(order, counts))

    def without_alphabets(self, alphabets) -> "CharacterSet":
        drop = set(alphabets)
        keep_chars = [i for i, c in enumerate(self.characters) if c.split("/")[0] not in drop]
        remap = torch.full((self.num_characters,), -1, dtype=torch.long)
        remap[keep_chars] = torch.arange(len(keep_chars))
        keep = remap[self.char] >= 0
        meta = {**self.meta, "dropped_alphabets": sorted(drop)}
        return CharacterSet(self.images[keep], remap[self.char[keep]], [self.characters[i] for i in keep_chars], meta)

    def __repr__(self) -> str:
        return (f"CharacterSet({self.meta.get('subset')!r}, alphabets={len(self.alphabets)}, "
                f"characters={self.num_characters}, drawings={len(self.char)})")


def _decode(data: bytes, size: int) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("L")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return 1.0 - np.asarray(img, dtype=np.float32) / 255.0


def _zip_path(name: str, root, download: bool) -> Path:
    root = resolve_data_root(root)
    rel = f"omniglot/{name}.zip"
    work = prepare_files(f"omniglot:{name}", root, [(rel, OMNIGLOT_FILES[name], _URL.format(name))],
                         download_missing=download)
    return work / rel


def _read_characters(entries: list[tuple[str, bytes]], size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    chars: dict[str, int] = {}
    imgs, ids = [], []
    for path, data in sorted(entries):
        parts = path.split("/")
        key = f"{parts[-3]}/{parts[-2]}"
        ids.append(chars.setdefault(key, len(chars)))
        imgs.append(_decode(data, size))
    images = torch.from_numpy(np.stack(imgs))[:, None] if imgs else torch.zeros(0, 1, size, size)
    return images.contiguous(), torch.tensor(ids, dtype=torch.long), list(chars)


def load_omniglot(subset: str = "small1", *, root=None, download: bool = True, size: int = 28) -> CharacterSet:
    """Load an Omniglot character set.

    Args:
        subset: ``small1`` / ``small2`` (the mirrored background subsets), ``small2-heldout``
            (``small2`` minus the alphabets of ``small1``), or ``background`` / ``evaluation``
            (the full sets, torchvision's ``omniglot-py/`` layout under the data root).
        root: data root; download: allow downloading missing zips; size: output side in pixels.
    """
    if subset not in SUBSETS:
        from robustbench_geo.check import unknown_name_error

        raise unknown_name_error("Omniglot subset", subset, SUBSETS)
    if subset == "small2-heldout":
        train_alphabets = load_omniglot("small1", root=root, download=download, size=size).alphabets
        out = load_omniglot("small2", root=root, download=download, size=size).without_alphabets(train_alphabets)
        out.meta["subset"] = subset
        return out
    if subset in ("background", "evaluation"):
        folder = resolve_data_root(root) / "omniglot-py" / f"images_{subset}"
        if not folder.is_dir():
            from robustbench_geo.data.root import DataMissingError

            raise DataMissingError(f"Omniglot {subset!r}: expected torchvision's layout {folder}/<alphabet>/<character>/*.png; "
                                   f"the offline mirror has the small subsets only: use 'small1', 'small2' or 'small2-heldout'")
        entries = [(str(p.relative_to(folder.parent)), p.read_bytes()) for p in folder.glob("*/*/*.png")]
        source = str(folder)
    else:
        path = _zip_path(f"images_background_{subset}", root, download)
        with zipfile.ZipFile(path) as z:
            entries = [(n, z.read(n)) for n in z.namelist() if n.endswith(".png")]
        source = str(path)
    images, char, names = _read_characters(entries, size)
    return CharacterSet(images, char, names, {"subset": subset, "source": source, "size": size})


def load_one_shot_runs(*, root=None, download: bool = True, size: int = 28) -> list[dict]:
    """Lake et al.'s 20 one-shot 20-way runs: per run ``support (20, 1, s, s)``, ``query (20, 1, s, s)``,
    ``query_labels (20,)`` (index of the matching support image)."""
    path = _zip_path("all_runs", root, download)
    runs = []
    with zipfile.ZipFile(path) as z:
        names = sorted({n.split("/")[0] for n in z.namelist() if n.startswith("run")})
        for run in names:
            key = z.read(f"{run}/class_labels.txt").decode().split()
            pairs = [(key[i], key[i + 1]) for i in range(0, len(key), 2)]  # (test image, its training image) paths
            train = sorted({t for _, t in pairs})
            sup = np.stack([_decode(z.read(t), size) for t in train])
            qry = np.stack([_decode(z.read(q), size) for q, _ in pairs])
            labels = [train.index(t) for _, t in pairs]
            runs.append({"run": run, "support": torch.from_numpy(sup)[:, None], "query": torch.from_numpy(qry)[:, None],
                         "query_labels": torch.tensor(labels)})
    return runs


@dataclass(frozen=True)
class Episodes:
    """A batch of ``E`` N-way K-shot episodes with one query each.

    Attributes:
        support: ``(E, N*K, C, H, W)``, class-major (shot ``k`` of class ``n`` at ``n*K + k``).
        support_labels: ``(E, N*K)`` episode labels in ``[0, N)``.
        query: ``(E, C, H, W)``; query_labels: ``(E,)``.
        classes: ``(E, N, 2)`` the ``(character, quarter_turns)`` of each episode label.
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    classes: torch.Tensor

    def __len__(self) -> int:
        return self.query.shape[0]

    def __getitem__(self, sl) -> "Episodes":
        return Episodes(self.support[sl], self.support_labels[sl], self.query[sl], self.query_labels[sl], self.classes[sl])


def sample_episodes(chars: CharacterSet, n_way: int, k_shot: int, episodes: int, generator: torch.Generator,
                    rotations: bool = False) -> Episodes:
    """Draw ``episodes`` N-way K-shot episodes (seeded by ``generator``, on the CPU).

    Classes are distinct characters, or with ``rotations=True`` distinct (character, multiple of 90
    degrees) pairs: a rotated character is a new class (the paper's augmentation). The query is a
    drawing of one of the ``N`` classes (uniform) that is not among that class's ``K`` shots.
    """
    groups = chars.by_character()
    per = {len(g) for g in groups}
    if len(per) != 1:
        raise ValueError(f"characters: expected the same number of drawings per character, got {sorted(per)}")
    per = per.pop()
    n_classes = chars.num_characters * (4 if rotations else 1)
    if not 1 <= n_way <= n_classes or not 1 <= k_shot < per:
        raise ValueError(f"n_way, k_shot: expected 1 <= n_way <= {n_classes} and 1 <= k_shot < {per} drawings, "
                         f"got {n_way}, {k_shot}")
    table = torch.stack(groups)  # (characters, drawings)
    cls = torch.rand(episodes, n_classes, generator=generator).argsort(dim=1)[:, :n_way]  # (E, N) distinct
    char, turns = (cls // 4, cls % 4) if rotations else (cls, torch.zeros_like(cls))
    draw = torch.rand(episodes, n_way, per, generator=generator).argsort(dim=2)[..., :k_shot + 1]  # (E, N, K+1)
    idx = table[char.unsqueeze(-1), draw]  # (E, N, K+1) drawing indices
    q = torch.randint(0, n_way, (episodes,), generator=generator)
    ar = torch.arange(episodes)

    def rotated(index, quarter):
        out = chars.images[index.reshape(-1)]
        quarter = quarter.reshape(-1)
        for r in range(1, 4):
            sel = quarter == r
            if sel.any():
                out[sel] = torch.rot90(out[sel], r, dims=(-2, -1))
        return out

    support = rotated(idx[..., :k_shot], turns.unsqueeze(-1).expand(-1, -1, k_shot))
    support = support.view(episodes, n_way * k_shot, *chars.images.shape[1:])
    query = rotated(idx[ar, q, k_shot], turns[ar, q])
    labels = torch.arange(n_way).repeat_interleave(k_shot).expand(episodes, -1).contiguous()
    return Episodes(support, labels, query, q, torch.stack([char, turns], dim=-1))
