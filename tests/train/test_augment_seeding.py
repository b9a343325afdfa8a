"""Per-sample augmentation seeding: an image's draws depend on its sample seed only, leave the global
RNG as it was, and never go through ``torch.manual_seed`` (which also queues a seed for every
accelerator backend with a recorded stack trace: 1.1 ms per image, more than the augmentation)."""

from __future__ import annotations

import torch

from faceforge.data.transforms import DIGIFACE_AUGMENT, build_transforms
from faceforge.train.datamodule import _Augmented


class _Images(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.imgs = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)

    def __len__(self) -> int:
        return len(self.imgs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.imgs[i], i


def test_sample_seed_alone_decides_the_draws(monkeypatch) -> None:
    aug = build_transforms([{**t, "p": 1.0} for t in DIGIFACE_AUGMENT])
    ds = _Augmented(_Images(), aug)
    # what the seed means: the CPU generator seeded with it, exactly as torch.manual_seed would
    torch.manual_seed(1234)
    want = aug(ds.base[2][0])

    def refuse(*_a, **_k):
        raise AssertionError("torch.manual_seed on the per-sample path")

    monkeypatch.setattr(torch, "manual_seed", refuse)
    torch.default_generator.manual_seed(99)
    state = torch.get_rng_state()
    got, label = ds[(2, 1234)]
    assert label == 2 and torch.equal(got, want)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    assert not torch.equal(ds[(2, 1235)][0], want)  # another seed, other draws
