"""Decompression bombs and broken images: refused from the header, one line, memory bounded — for the
guarded decoder and every reader that goes through it (recognizer, alignment, training folders,
RecordIO and .bin records)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceforge.errors import FaceforgeError, ImageDecodeError
from faceforge.imageio import (
    ImageTooLargeError,
    check_encoded,
    decode_cost,
    decode_image,
    decode_image_scaled,
)

BOMBS = {"jpeg": (60000, 60000), "png": (50000, 50000), "gif": (65000, 65000)}


def _bomb(h, kind: str) -> bytes:
    w, hh = BOMBS[kind]
    return getattr(h, f"{kind}_header_bomb")(w, hh)


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_header_bombs_are_refused_before_decoding(kind, h) -> None:
    data = _bomb(h, kind)
    assert len(data) < 2000
    err, rise = h.peak_rss_mib(lambda: decode_image(data, source=f"bomb.{kind}"))
    assert isinstance(err, ImageTooLargeError), err
    msg = h.one_line(err)
    assert msg.startswith(f"bomb.{kind} ") and "the limit is 120,000,000" in msg
    assert "FACEFORGE_MAX_IMAGE_PIXELS" in msg
    assert rise < 40, f"{rise:.0f} MiB allocated for a refused image"


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_every_reader_refuses_or_skips_bombs(kind, tmp_path, h) -> None:
    from faceforge.align.io import read_image
    from faceforge.data.binset import BinSet
    from faceforge.data.folder import decode_image as folder_decode
    from faceforge.data.recordio import decode_image as record_decode
    from faceforge.infer import load_image

    data = _bomb(h, kind)
    f = tmp_path / f"bomb.{kind}"
    f.write_bytes(data)

    def all_readers() -> list[object]:
        out: list[object] = []
        for fn in (lambda: load_image(f), lambda: load_image(data), lambda: read_image(f)):
            try:
                fn()
                out.append("decoded")
            except FaceforgeError as e:
                out.append(e)
        out.append(folder_decode(f, 112))  # training folders: skipped (None) and counted
        out.append(record_decode(data))
        out.append(BinSet([data, data], np.array([True])).decode(0))
        return out

    res, rise = h.peak_rss_mib(all_readers)
    assert not isinstance(res, Exception), res
    errors, skipped = res[:3], res[3:]
    assert all(isinstance(e, ImageTooLargeError) for e in errors), errors
    for e in errors:
        h.one_line(e)
    assert skipped == [None, None, None]
    assert rise < 40, f"{rise:.0f} MiB"


def test_pils_own_bomb_error_is_ours_in_one_line(h) -> None:
    data = h.png_header_bomb(20000, 20000)  # 400 MP: over PIL's 2 x 89 MP, under a raised limit of ours
    with pytest.raises(ImageTooLargeError) as ei:
        decode_image(data, max_pixels=10**10, source="upload")
    msg = h.one_line(ei.value)
    assert msg.startswith("upload declares 400,000,000 pixels; the limit is 10,000,000,000")


def test_truncated_and_garbage_images_are_one_line_errors(h) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buf, format="PNG")
    good = buf.getvalue()
    for bad, why in ((good[:60], "truncated|malformed|cannot decode"), (b"hello there", "not an image"),
                     (b"", "empty")):  # fmt: skip
        with pytest.raises(ImageDecodeError, match=why) as ei:
            decode_image(bad)
        h.one_line(ei.value)


def test_draft_decode_bounds_a_huge_allowed_jpeg(h) -> None:
    from loadtest import flat_jpeg

    data = flat_jpeg(6000, 6650)  # 39.9 MP, allowed by a 40 MP limit
    header = check_encoded(data, max_pixels=40_000_000)
    assert header.pixels == 39_900_000 and len(data) < 400_000
    full = decode_cost(header)
    (rgb, scale), rise = h.peak_rss_mib(
        lambda: decode_image_scaled(data, max_pixels=40_000_000, max_side=2048, source="a.jpg")
    )
    assert max(rgb.shape[:2]) == 2048 and rgb.shape[2] == 3
    assert scale == pytest.approx(2048 / 6650, rel=1e-3)
    # libjpeg decoded at 1/2 scale: far below the full-size cost (decoded RGB + conversion + output)
    assert full > 250 * 2**20 and rise < 100, f"{rise:.0f} MiB (full decode would be {full / 2**20:.0f})"


def test_exif_orientation_is_applied_and_scale_refers_to_the_upright_picture() -> None:
    im = Image.new("RGB", (40, 20), (200, 0, 0))
    im.paste((0, 0, 200), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer turns it 90° clockwise
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif, quality=95)
    rgb, scale = decode_image_scaled(buf.getvalue())
    assert rgb.shape == (40, 20, 3) and scale == 1.0
    assert rgb[2, 10, 2] > 150  # the blue band is on top after the rotation
    small, s2 = decode_image_scaled(buf.getvalue(), max_side=20)
    assert small.shape[:2] == (20, 10) and s2 == pytest.approx(0.5)


def test_sixteen_bit_and_palette_images_become_rgb(tmp_path: Path) -> None:
    a = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(a).save(p)
    rgb = decode_image(p)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert rgb[63, 63, 0] == (int(a[63, 63]) // 257)
    pal = Image.new("P", (8, 8), 3)
    pal.putpalette([0, 0, 0, 10, 10, 10, 20, 20, 20, 250, 0, 0])
    buf = io.BytesIO()
    pal.save(buf, format="GIF")
    assert decode_image(buf.getvalue())[0, 0].tolist() == [250, 0, 0]


def test_gallery_build_skips_a_bomb_instead_of_aborting(tmp_path, h, capsys) -> None:
    import json

    from faceforge.cli.main import main

    ckpt = h.write_checkpoint(tmp_path / "m.ckpt", h.tiny_backbone_cfg())
    people = tmp_path / "people"
    rng = np.random.default_rng(0)
    for who in ("ann", "bob"):
        (people / who).mkdir(parents=True)
        for k in range(2):  # 32x32: the model's input size, so taken as aligned (no detector needed)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(people / who / f"{k}.png")
    (people / "bob" / "bomb.png").write_bytes(h.png_header_bomb(40000, 40000))
    code = main(
        ["gallery", "build", str(people), "--model", str(ckpt), "--out", str(tmp_path / "G"), "--json"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["count"] == 4
    (skip,) = out["skipped"]
    assert skip["file"].endswith("bomb.png") and "the limit is 120,000,000" in skip["reason"]
