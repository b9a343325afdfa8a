"""Worker pools fork safely after OpenCV ran threaded in the parent (faceforge.data.workers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest

from faceforge.data.workers import opencv_single_threaded

# The parent first runs OpenCV on two threads (as an LFW evaluation does), then forks workers that
# set their own thread count: before the fix every process slept forever on a futex.
_PARENT = """
import sys, numpy as np, cv2
cv2.setNumThreads(2)
img = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), np.uint8)
for _ in range(3):
    cv2.GaussianBlur(img, (15, 15), 3)
out = sys.argv[1]
{body}
print("threads after", cv2.getNumThreads())
"""

_WRITE = """
from faceforge.data.synth import write_dataset
s = write_dataset(out, identities=3, images_per_id=2, val_identities=0, test_identities=0, workers=2)
print("images", s["images"])
"""

_PACK = """
from pathlib import Path
from faceforge.data.pack import pack_folder
root = Path(out) / "src"
for person in ("a", "b"):
    (root / person).mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(root / person / f"{i}.jpg"), img[i * 40 : i * 40 + 64, :64])
r = pack_folder(root, Path(out) / "rec", workers=2)
print("images", r.num_images)
"""


@pytest.mark.parametrize(("body", "images"), [(_WRITE, 6), (_PACK, 6)], ids=["synth-writer", "pack"])
def test_fork_pool_after_threaded_opencv_does_not_hang(tmp_path: Path, body: str, images: int) -> None:
    script = textwrap.dedent(_PARENT).format(body=textwrap.dedent(body))
    try:
        run = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the forked workers hung after threaded OpenCV in the parent")
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"images {images}" in run.stdout
    assert "threads after 2" in run.stdout  # the caller's OpenCV setting is given back


def test_opencv_single_threaded_restores_the_setting() -> None:
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(3)
        with opencv_single_threaded():
            assert cv2.getNumThreads() == 1
        assert cv2.getNumThreads() == 3
        with pytest.raises(RuntimeError), opencv_single_threaded():
            raise RuntimeError("boom")
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)
