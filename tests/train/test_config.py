"""Config loading: YAML + dotted overrides, did-you-mean on unknown keys, print/reload round trip."""

from __future__ import annotations

import pytest
import yaml

from faceforge.errors import FaceforgeError
from faceforge.train.config import DEFAULTS, dump_config, load_config, parse_overrides


def test_overrides_are_typed_and_nested(tmp_path) -> None:
    cfg = load_config(
        None, ["--trainer.max_epochs", "3", "--model.backbone.width", "0.5", "--data.val_pairs=null"]
    )
    assert cfg["trainer"]["max_epochs"] == 3
    assert cfg["model"]["backbone"] == {"name": "ghostfacenetv1", "embedding_size": 512, "width": 0.5}
    assert cfg["data"]["val_pairs"] is None
    assert DEFAULTS["trainer"]["max_epochs"] == 10  # the defaults are not mutated


def test_file_then_overrides(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ntrainer:\n  max_epochs: 7\nmodel:\n  head:\n    name: cosface\n    margin: 0.35\n")
    cfg = load_config(p, ["--model.head.scale", "30"])
    assert cfg["name"] == "x" and cfg["trainer"]["max_epochs"] == 7
    # Switching the head drops the previous head's options.
    assert cfg["model"]["head"] == {"name": "cosface", "margin": 0.35, "scale": 30}


def test_unknown_key_has_did_you_mean() -> None:
    with pytest.raises(
        FaceforgeError, match=r"unknown config key 'trainer.max_epoch'.*did you mean 'trainer.max_epochs'"
    ):
        load_config(None, ["--trainer.max_epoch", "3"])


def test_unknown_key_in_file_names_the_file(tmp_path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("optimiser:\n  lr: 0.1\n")
    with pytest.raises(FaceforgeError, match=r"bad.yaml: unknown config key 'optimiser'.*'optimizer'"):
        load_config(p)


def test_print_config_reloads_to_the_same_dict(tmp_path) -> None:
    cfg = load_config(None, ["--model.backbone.stride", "2", "--optimizer.lr", "0.05"])
    p = tmp_path / "x.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg
    assert yaml.safe_load(p.read_text())["optimizer"]["lr"] == 0.05


def test_bad_override_syntax() -> None:
    with pytest.raises(FaceforgeError, match="needs a value"):
        parse_overrides(["--trainer.max_epochs"])
    with pytest.raises(FaceforgeError, match="unexpected argument"):
        parse_overrides(["max_epochs", "3"])
