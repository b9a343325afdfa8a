"""Identity mixup training data (SynFace, Qiu et al. ICCV 2021): images of identities interpolated
between two training identities, trained with the soft label ``phi·a + (1 − phi)·b``. A mixup CSV
(``name,a,b,phi``; ``faceforge data synth --mixup-identities N`` writes ``train_mix.csv``) names
each mixed identity, its two training classes and the weight of the first; its images are
``<csv stem>/<name>_*`` beside the CSV. :class:`MixupFolderDataset` gives each mixed identity a
label past the real classes, which the training step resolves through :class:`MixupTable`.
Details: docs/synthfaces.md, "Identity mixup".
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from faceforge.data.folder import FileListDataset, image_folder_samples
from faceforge.errors import FaceforgeError
from faceforge.imageio import list_images

__all__ = ["MAX_CSV_BYTES", "MixupFolderDataset", "MixupTable", "read_mixup_csv"]

#: a mixup CSV larger than this is refused before it is read (1 M rows take ~40 MB)
MAX_CSV_BYTES = 64 << 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class MixupTable:
    """Row ``r`` (label ``num_classes + r``): classes ``a[r]`` and ``b[r]``, weight ``phi[r]`` of ``a``."""

    a: torch.Tensor  # [M] int64
    b: torch.Tensor  # [M] int64
    phi: torch.Tensor  # [M] float32

    def __len__(self) -> int:
        return int(self.a.numel())


def read_mixup_csv(path: str | os.PathLike[str], classes: list[str]) -> tuple[list[str], MixupTable]:
    """The names and :class:`MixupTable` of a mixup CSV whose ``a``/``b`` are names of ``classes``.

    Every problem is a one-line :class:`FaceforgeError` naming the file, line and value.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise FaceforgeError(f"data.mixup: cannot read {p}: {e.strerror or e}") from None
    if size > MAX_CSV_BYTES:
        raise FaceforgeError(f"data.mixup: {p} is {size:,} bytes; expected at most {MAX_CSV_BYTES:,}")
    try:
        text = p.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FaceforgeError(f"data.mixup: {p} is not a UTF-8 text file ({e})") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0]] != ["name", "a", "b", "phi"]:
        raise FaceforgeError(f"data.mixup: {p} line 1 must be the header 'name,a,b,phi'")
    index = {c: i for i, c in enumerate(classes)}
    names: list[str] = []
    a, b, phi = [], [], []
    seen: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 4:
            raise FaceforgeError(
                f"data.mixup: {p} line {line}: expected 4 fields name,a,b,phi, got {len(row)}"
            )
        name, ca, cb, w = (c.strip() for c in row)
        if not _NAME.fullmatch(name) or name in seen:
            why = "repeats an earlier name" if name in seen else "is not a plain file-name stem"
            raise FaceforgeError(f"data.mixup: {p} line {line}: name {name!r} {why}")
        for c in (ca, cb):
            if c not in index:
                raise FaceforgeError(
                    f"data.mixup: {p} line {line}: class {c!r} is not a training identity folder"
                )
        try:
            wf = float(w)
        except ValueError:
            wf = float("nan")
        if not 0.0 <= wf <= 1.0:
            raise FaceforgeError(f"data.mixup: {p} line {line}: phi {w!r} must be a number in [0, 1]")
        seen.add(name)
        names.append(name)
        a.append(index[ca])
        b.append(index[cb])
        phi.append(wf)
    if not names:
        raise FaceforgeError(f"data.mixup: {p} lists no mixed identity")
    table = MixupTable(
        torch.tensor(a, dtype=torch.int64), torch.tensor(b, dtype=torch.int64), torch.tensor(phi)
    )
    return names, table


class MixupFolderDataset(FileListDataset):
    """The ImageFolder ``root`` plus the mixed identities of ``mixup_csv``.

    Images of ``root/<class>/`` keep their labels ``0 .. num_classes - 1``; the images of mixed
    identity row ``r`` (``<csv stem>/<name>_*`` next to the CSV) get label ``num_classes + r``, which
    :attr:`mixup` resolves to two classes and a weight. :attr:`num_classes` counts real classes only.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        mixup_csv: str | os.PathLike[str],
        size: int = 112,
        cache: bool = False,
    ) -> None:
        classes, samples = image_folder_samples(root)
        names, self.mixup = read_mixup_csv(mixup_csv, classes)
        folder = Path(mixup_csv).with_suffix("")
        if not folder.is_dir():
            raise FaceforgeError(
                f"data.mixup: the images of {mixup_csv} belong in {folder}/, which does not exist"
            )
        label = {n: len(classes) + r for r, n in enumerate(names)}
        found = set()
        for f in list_images(folder, recursive=False):
            name = f.stem.rsplit("_", 1)[0] if "_" in f.stem else f.stem
            if name in label:
                samples.append((str(f), label[name]))
                found.add(name)
        missing = [n for n in names if n not in found]
        if missing:
            raise FaceforgeError(
                f"data.mixup: {len(missing)} mixed identities of {mixup_csv} have no image in {folder}/ "
                f"(first: {missing[0]!r}; expected {missing[0]}_0001.jpg or similar)"
            )
        self._real_classes = len(classes)
        super().__init__(samples, size, cache, classes + names)
        self.root = Path(root)

    @property
    def num_classes(self) -> int:
        """Real training classes (mixed identities are not classes of the head)."""
        return self._real_classes
