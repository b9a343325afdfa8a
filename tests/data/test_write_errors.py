"""A write that fails (a full disk) names the file it was writing, in the CLI's one line too: a plain
``OSError`` from ``write`` carries no file name, and one raised in a worker process is pickled."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest

from faceforge.cli.main import EXIT_ERROR, main
from faceforge.data.recordio import IndexedRecordWriter
from faceforge.fileio import write_bytes

_real_write_bytes = Path.write_bytes


def _disk_full_under(folder: str):
    def write(self: Path, data: bytes) -> int:
        if folder in self.parts:
            raise OSError(errno.ENOSPC, "No space left on device")  # as write(2) reports it: no name
        return _real_write_bytes(self, data)

    return write


def test_write_bytes_names_the_file_and_keeps_it_across_processes(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(Path, "write_bytes", _disk_full_under("full"))
    target = tmp_path / "full" / "a.jpg"
    with pytest.raises(OSError) as e:
        write_bytes(target, b"x")
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(target))
    back = pickle.loads(pickle.dumps(e.value))  # what a worker pool hands the parent
    assert (back.errno, back.filename, back.strerror) == (
        errno.ENOSPC,
        str(target),
        "No space left on device",
    )
    write_bytes(tmp_path / "ok.bin", b"y")  # other writes are untouched
    assert (tmp_path / "ok.bin").read_bytes() == b"y"


def test_write_bytes_keeps_an_error_that_already_names_its_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError) as e:  # a missing folder: open() names the file itself
        write_bytes(tmp_path / "no" / "such" / "f", b"x")
    assert e.value.filename == str(tmp_path / "no" / "such" / "f") and e.value.__cause__ is None


def test_synth_on_a_full_disk_says_which_file(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(Path, "write_bytes", _disk_full_under("train"))
    out = tmp_path / "s"
    code = main(["data", "synth", "--identities", "2", "--images-per-id", "2", "--val-identities", "20",
                 "--test-identities", "20", "--workers", "1", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_ERROR, err
    assert err[-1].startswith(f"faceforge: error: {out}/train/") and err[-1].endswith(
        ".jpg: No space left on device"
    ), err[-1]


def _fsync_fails(fd: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")  # a delayed-allocation file system reports it here


def test_atomic_writes_name_the_file_and_keep_the_old_one(tmp_path, monkeypatch) -> None:
    from faceforge import fileio
    from faceforge.eval import report

    target = tmp_path / "model.ckpt"
    fileio.atomic_write_bytes(target, b"old")
    monkeypatch.setattr(fileio.os, "fsync", _fsync_fails)  # the same os module report.py uses
    with pytest.raises(OSError) as e:
        fileio.atomic_write_bytes(target, b"new")
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(target))
    with pytest.raises(OSError) as e:
        report.write_json({"accuracy": 0.5}, tmp_path / "report.json")
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / "report.json"))
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_free_bytes_asks_the_nearest_existing_folder_and_trusts_no_sizeless_mount(
    tmp_path, monkeypatch
) -> None:
    from collections import namedtuple

    from faceforge import fileio

    usage = namedtuple("usage", "total used free")
    asked = []
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: asked.append(p) or usage(100, 60, 40))
    assert fileio.free_bytes(tmp_path / "not" / "yet") == 40 and asked == [tmp_path]
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage(0, 0, 0))  # a FUSE mount without sizes
    assert fileio.free_bytes(tmp_path) >= 1 << 60


def test_small_writers_name_their_file(tmp_path, file_size_limit) -> None:
    """Record files, their index, pair lists and text side files: each write that fails says where."""
    import errno as _errno

    from faceforge.data.pairs import Pairs, write_lfw_pairs, write_pairs_csv
    from faceforge.fileio import write_text

    rec = tmp_path / "t.rec"
    paths = [f"/x/a{i}.jpg" for i in range(400)]
    pairs = Pairs(paths, paths[::-1], [True] * 400, [0] * 400)
    folds = [([(f"n{f}", 1, 2)] * 300, [(f"n{f}", 1, f"m{f}", 2)] * 300) for f in range(10)]
    file_size_limit(4096)
    cases = [
        (rec, lambda: _records(rec)),
        (tmp_path / "p.csv", lambda: write_pairs_csv(tmp_path / "p.csv", pairs)),
        (tmp_path / "pairs.txt", lambda: write_lfw_pairs(tmp_path / "pairs.txt", folds)),
        (tmp_path / "n.txt", lambda: write_text(tmp_path / "n.txt", "x" * 10_000)),
    ]
    for target, write in cases:
        with pytest.raises(OSError) as e:
            write()
        assert (e.value.errno, e.value.filename) == (_errno.EFBIG, str(target)), (target, e.value)

    def _idx_only() -> None:  # the records fit; their index does not
        with IndexedRecordWriter(tmp_path / "u.rec", tmp_path / "u.idx") as w:
            for k in range(300):  # 2,400 bytes of frames, about 5,700 of index lines
                w.write(10**12 + k, b"")

    with pytest.raises(OSError) as e:
        _idx_only()
    assert e.value.filename == str(tmp_path / "u.idx"), e.value


def test_a_record_file_that_does_not_fit_keeps_the_earlier_one(tmp_path, file_size_limit) -> None:
    from faceforge.data.recordio import IndexedRecordReader

    rec = tmp_path / "t.rec"
    with IndexedRecordWriter(rec) as w:  # the pair a user packed before
        w.write(0, b"old")
    before = (rec.read_bytes(), rec.with_suffix(".idx").read_bytes())
    file_size_limit(4096)
    with pytest.raises(OSError) as e:
        _records(rec)
    assert e.value.filename == str(rec)
    assert (rec.read_bytes(), rec.with_suffix(".idx").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.idx", "t.rec"]  # no temporary left
    assert IndexedRecordReader(rec).read(0) == b"old"


def _records(rec: Path) -> None:
    with IndexedRecordWriter(rec) as w:
        for k in range(100):
            w.write(k, bytes(100))
