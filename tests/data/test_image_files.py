"""One extension list and one folder scanner (:mod:`faceforge.imageio`) behind every reader of folders:
training, splits, evaluation, alignment and inference see the same images; training decodes what the
inference decoder decodes (issue #17)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from faceforge import imageio
from faceforge.align.batch import expand_image_inputs
from faceforge.data.folder import decode_image, image_folder_samples
from faceforge.data.splits import scan_folder
from faceforge.eval.classify import folder_samples
from faceforge.infer.pipeline import list_images


def _tree(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    made = {}
    for rel, fmt in [
        ("a/a_1.jpg", "JPEG"), ("a/a_2.PNG", "PNG"), ("a/a_3.gif", "GIF"), ("b/b_1.tif", "TIFF"),
        ("b/b_2.webp", "WEBP"), ("b/b_3.pgm", "PPM"),
    ]:  # fmt: skip
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)
        im = Image.fromarray(arr).convert("L" if rel.endswith(".pgm") else "RGB")
        im.save(p, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        made[rel] = np.asarray(im.convert("RGB"))
    (root / "a" / "._a_1.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork
    (root / "a" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / ".hidden" / "x_1.jpg")
    return made


def test_every_folder_reader_sees_the_same_images(tmp_path: Path) -> None:
    made = _tree(tmp_path)
    want = sorted(str(tmp_path / r) for r in made)
    assert [str(p) for p in imageio.list_images(tmp_path)] == want
    assert [str(p) for p in list_images(tmp_path)] == want
    assert sorted(expand_image_inputs([str(tmp_path)])) == want
    classes, samples = image_folder_samples(tmp_path)
    assert classes == ["a", "b"] and sorted(p for p, _ in samples) == want
    layout, groups = scan_folder(tmp_path)
    assert layout == "folder" and sorted(str(tmp_path / f) for fs in groups.values() for f in fs) == want
    paths, labels, names = folder_samples(tmp_path)
    assert sorted(paths) == want and names == ["a", "b"] and labels.count(0) == 3
    assert imageio.is_image_name("x/Y.JPEG") and not imageio.is_image_name("._y.jpg")
    assert not imageio.is_image_name("notes.txt")


def test_training_decodes_the_same_pixels_as_inference(tmp_path: Path) -> None:
    """cv2 (training) and PIL (inference) on lossless files, GIF included (cv2 cannot read it)."""
    made = _tree(tmp_path)
    for rel in ("a/a_2.PNG", "a/a_3.gif", "b/b_1.tif", "b/b_2.webp", "b/b_3.pgm"):
        train = decode_image(tmp_path / rel, color="RGB")
        infer = imageio.decode_image(tmp_path / rel)
        assert train is not None, rel
        np.testing.assert_array_equal(train, infer, err_msg=rel)
        if not rel.endswith(".gif"):  # GIF quantised the colours when it was written
            np.testing.assert_array_equal(infer, made[rel], err_msg=rel)
    bgr = decode_image(tmp_path / "a/a_3.gif", color="BGR")
    np.testing.assert_array_equal(bgr, imageio.decode_image(tmp_path / "a/a_3.gif")[..., ::-1])
    assert decode_image(tmp_path / "a" / "._a_1.jpg") is None  # undecodable: skipped, not fatal


def test_extension_for_encoded_bytes() -> None:
    import io

    arr = np.zeros((4, 4, 3), np.uint8)
    for fmt, ext in (("JPEG", ".jpg"), ("PNG", ".png"), ("BMP", ".bmp"), ("GIF", ".gif"), ("WEBP", ".webp")):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt)
        assert imageio.extension_for(buf.getvalue()) == ext, fmt
        assert imageio.is_image_name("x" + ext)
    assert imageio.extension_for(b"not an image") == ".img"
