"""Test helper: embed each crop from a thread of its own, all at once (what a service's request
threads do), and gather the answers in crop order."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


def embed_each_in_its_own_thread(rec: Any, crops: np.ndarray, timeout: float = 60.0) -> np.ndarray:
    """``rec.embed_crops(crops[i : i + 1])`` for every ``i`` from concurrent threads; rows in order."""
    out: dict[int, np.ndarray] = {}
    threads = [
        threading.Thread(target=lambda i=i: out.__setitem__(i, rec.embed_crops(crops[i : i + 1])))
        for i in range(len(crops))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    missing = [i for i in range(len(crops)) if i not in out]
    assert not missing, f"no embedding for crops {missing} within {timeout} s"
    return np.concatenate([out[i] for i in range(len(crops))])
