"""``faceforge detect`` / ``align`` / ``models files`` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceforge.cli.main import main


@pytest.fixture
def env(shared_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACEFORGE_MODEL_DIRS", str(shared_dir / "models/detectors"))
    return tmp_path


@pytest.fixture
def photos(env) -> Path:
    """A folder of good and bad files: every bad one must become a per-file outcome."""
    skimage_data = pytest.importorskip("skimage.data")
    face = skimage_data.astronaut()[20:260, 120:340]  # 220x240 crop around the face
    src = env / "src"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(face).save(src / "good.jpg")
    Image.fromarray(face).convert("L").save(src / "sub/gray.png")
    Image.fromarray(face).convert("RGBA").save(src / "rgba.png")
    Image.fromarray(face[:, :, 1].astype(np.uint16) * 257).save(src / "deep16.png")
    # Stored on its side with EXIF orientation 6 ("rotate 90° clockwise to view").
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(face, k=1))).save(src / "exif6.jpg", exif=exif)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(src / "tiny.png")
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(src / "noface.png")
    (src / "notes.jpg").write_text("this is not a JPEG")
    (src / "truncated.jpg").write_bytes((src / "good.jpg").read_bytes()[:200])
    return src


def test_detect_json(photos, capsys):
    assert main(["detect", str(photos / "good.jpg"), str(photos / "exif6.jpg"), "--json"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [len(r["faces"]) for r in recs] == [1, 1]
    a, b = (np.array(r["faces"][0]["landmarks"]) for r in recs)
    assert recs[1]["width"] == 220 and recs[1]["height"] == 240  # upright after EXIF
    np.testing.assert_allclose(a, b, atol=4)  # same face, same place once rotated upright
    assert a[0, 0] < a[1, 0] and a[0, 1] < a[2, 1] < a[3, 1]


def test_detect_bad_file_and_drawing(photos, env, capsys):
    out = env / "drawn.png"
    assert main(["detect", str(photos / "good.jpg"), "--out", str(out)]) == 0
    assert Image.open(out).size == (220, 240)
    assert main(["detect", str(photos / "notes.jpg"), "--json"]) == 2  # 2: a file could not be read
    rec = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert "not an image" in rec["error"]
    assert main(["detect", str(photos / "good.jpg"), "--detector", "yunnet"]) == 2
    assert "did you mean 'yunet'" in capsys.readouterr().err


def test_align_folder_and_rerun(photos, env, capsys):
    dst = env / "dst"
    assert main(["align", str(photos), str(dst), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    fails = {
        json.loads(x)["file"]: json.loads(x)["reason"]
        for x in (dst / "failures.jsonl").read_text().splitlines()
    }
    assert set(fails) == {"tiny.png", "noface.png", "notes.jpg", "truncated.jpg"}, fails
    assert "not an image" in fails["notes.jpg"] and "no face" in fails["noface.png"]
    assert summary["aligned"] == 5 and summary["failed"] == 4
    for rel in ("good.jpg", "sub/gray.jpg", "rgba.jpg", "deep16.jpg", "exif6.jpg"):
        im = Image.open(dst / rel)
        assert im.size == (112, 112) and im.mode == "RGB"
    # The EXIF-rotated photo gives (nearly) the same crop as the upright one.
    a = np.asarray(Image.open(dst / "good.jpg"), dtype=np.float32)
    b = np.asarray(Image.open(dst / "exif6.jpg"), dtype=np.float32)
    assert np.abs(a - b).mean() < 12
    # Re-run: everything finished or known-failed is skipped.
    assert main(["align", str(photos), str(dst), "--json", "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["aligned"] == 0 and again["skipped"] == 9
    assert len((dst / "failures.jsonl").read_text().splitlines()) == 4
    assert main(["align", str(photos), str(dst), "--json", "--quiet", "--retry-failed"]) == 0
    retried = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert retried["failed"] == 4 and retried["skipped"] == 5


def test_align_all_sizes_workers(photos, env, capsys):
    dst = env / "dst96"
    rc = main(
        [
            "align",
            str(photos),
            str(dst),
            "--size",
            "96x112",
            "--all",
            "--workers",
            "2",
            "--quiet",
            "--ext",
            "png",
        ]
    )
    assert rc == 0
    assert Image.open(dst / "good_0.png").size == (96, 112)
    assert main(["align", str(photos), str(env / "x"), "--size", "100x90"]) == 2
    assert "arcface template" in capsys.readouterr().err


def test_store_commands(env, capsys):
    assert main(["models", "files", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["files"]}
    assert rows["scrfd"]["path"].endswith("scrfd_500m_bnkps.onnx")
    assert rows["mtcnn_pnet"]["path"] is None


def test_align_stops_on_a_full_disk_and_resumes(photos, env, capsys, monkeypatch):
    """A full disk stops the run with one line naming the crop (not one failure per remaining photo);
    the crops written are whole, no temporary is left, and a re-run continues after them."""
    from faceforge.align import batch

    dst, writes = env / "dst_full", []
    real_imwrite, real_free_bytes = batch.cv2.imwrite, batch.free_bytes

    def imwrite(path, img, *a):  # the disk fills after two crops: a truncated file, then False
        if len(writes) >= 2:
            Path(path).write_bytes(b"\xff\xd8")
            return False
        writes.append(path)
        return real_imwrite(path, img, *a)

    monkeypatch.setattr(batch.cv2, "imwrite", imwrite)
    monkeypatch.setattr(batch, "free_bytes", lambda folder: 0)
    assert main(["align", str(photos), str(dst), "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"faceforge: error: {dst}/"), err
    assert err[0].endswith(f".jpg: {batch.DISK_FULL}"), err
    crops = sorted(p for p in dst.rglob("*") if p.is_file() and p.name != "failures.jsonl")
    assert len(crops) == 2 and all(Image.open(p).size == (112, 112) for p in crops), crops
    assert not [p for p in dst.rglob(".*")], "a temporary crop was left"
    # what a worker killed between its write and its rename leaves behind:
    (dst / ".truncated.partial.jpg").write_bytes(b"\xff\xd8")
    monkeypatch.setattr(batch.cv2, "imwrite", real_imwrite)  # not undo(): that would drop env's settings
    monkeypatch.setattr(batch, "free_bytes", real_free_bytes)
    assert main(["align", str(photos), str(dst), "--workers", "1", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["aligned"], summary["skipped"], summary["failed"]) == (3, 2, 4)
    assert not [p for p in dst.rglob(".*")], "the killed run's temporary was kept"
