"""Shared tools of the hostile-input suite (``docs/security.md``): every test builds its own hostile file.

* ``no_network``: the socket layer patched so that any connection or name lookup is recorded and fails;
  a test asserts the record stays empty (nothing downloads, nothing phones home).
* ``peak_rss_mib(fn)``: runs ``fn`` and returns how far the process's peak resident memory rose above
  where it was (Linux: ``/proc/self/clear_refs`` resets the high-water mark first), with ``fn``'s
  exception or result.
* ``one_line(exc)``: the error is one line that a user can read.
"""

from __future__ import annotations

import socket
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(autouse=True)
def _threads(one_thread: None) -> None:
    """Every test here at one torch thread (the shared ``one_thread`` fixture of tests/conftest.py)."""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every connection and DNS lookup the code under test attempts."""
    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def fn(*args: Any, **kw: Any) -> Any:
            attempts.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise OSError(f"network access attempted in a test: {what}")

        return fn

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def _hwm_kib() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_rss_mib(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn's result or the exception it raised, peak RSS rise in MiB)``; skips where Linux cannot tell."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pytest.skip("peak memory needs Linux /proc/self/clear_refs")
    before = _rss_kib()
    try:
        out: Any = fn()
    except Exception as e:  # the caller inspects it
        out = e
    peak = _hwm_kib() or before
    return out, (peak - before) / 1024


def one_line(exc: BaseException) -> str:
    """The message, asserted to be one line of reasonable length."""
    msg = str(exc)
    assert "\n" not in msg and 10 < len(msg) < 700, msg
    assert "Traceback" not in msg
    return msg


# ------------------------------------------------------------------------------------ hostile images


def png_header_bomb(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width × height`` (valid CRC) followed by one tiny IDAT, no more."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def gif_header_bomb(width: int, height: int) -> bytes:
    """A GIF whose screen and first image declare ``width × height`` (LZW data for a few pixels)."""
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return head + image + b"\x3b"


def jpeg_header_bomb(width: int, height: int) -> bytes:
    """A JPEG whose SOF0 declares ``width × height``; the scan data stops after a few bytes."""
    from loadtest import header_only_jpeg

    return header_only_jpeg(width, height)


# ------------------------------------------------------------------------------------ checkpoints


def tiny_backbone_cfg() -> dict[str, Any]:
    return {"name": "ghostfacenetv1", "width": 0.25, "stride": 2, "embedding_size": 16}


def write_checkpoint(
    path: Path, backbone_cfg: dict[str, Any], state: dict[str, Any] | None = None, **extra: Any
) -> Path:
    """A faceforge-layout checkpoint (as training writes it) with ``backbone_cfg`` stored in its config.

    ``state``: backbone tensors (default: those of the tiny GhostFaceNet of :func:`tiny_backbone_cfg`).
    """
    from faceforge.models.build import build_backbone

    if state is None:
        state = build_backbone(tiny_backbone_cfg(), 32).state_dict()
    ckpt = {
        "state_dict": {f"backbone.{k}": v for k, v in state.items()},
        "hyper_parameters": {
            "config": {
                "model": {"backbone": backbone_cfg, "head": {"name": "arcface"}},
                "data": {"image_size": 32},
            }
        },
        "global_step": 1,
        **extra,
    }
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="session")
def h() -> Any:
    """The helpers above, for the test modules (which cannot import a conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        peak_rss_mib=peak_rss_mib,
        one_line=one_line,
        png_header_bomb=png_header_bomb,
        gif_header_bomb=gif_header_bomb,
        jpeg_header_bomb=jpeg_header_bomb,
        tiny_backbone_cfg=tiny_backbone_cfg,
        write_checkpoint=write_checkpoint,
    )
