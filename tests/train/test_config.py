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


# ---------------------------------------------------------------- typed schema (jsonargparse)
def test_scientific_floats_are_floats_on_the_command_line_and_in_files(tmp_path) -> None:
    cfg = load_config(None, ["--optimizer.weight_decay", "5e-4", "--optimizer.lr", "1e-1"])
    assert cfg["optimizer"]["weight_decay"] == 0.0005 and type(cfg["optimizer"]["weight_decay"]) is float
    assert cfg["optimizer"]["lr"] == 0.1
    p = tmp_path / "c.yaml"
    p.write_text("optimizer:\n  weight_decay: 5e-4\n  head_weight_decay: 1e-3\n")  # YAML 1.1: strings
    cfg = load_config(p)
    assert cfg["optimizer"]["weight_decay"] == 0.0005 and cfg["optimizer"]["head_weight_decay"] == 0.001


def test_lists_and_mappings_from_the_command_line() -> None:
    cfg = load_config(
        None,
        [
            "--data.val_sets",
            "{a: x.bin, b: y.txt}",
            "--scheduler.milestones",
            "[2, 4]",
            "--data.val_sets.c",
            "z.bin",
        ],
    )
    assert cfg["data"]["val_sets"] == {"a": "x.bin", "b": "y.txt", "c": "z.bin"}
    assert cfg["scheduler"]["milestones"] == [2, 4]
    cfg = load_config(
        None, ["--trainer.early_stopping.patience", "5", "--data.sampler.samples_per_class", "2"]
    )
    # A nullable section named by one of its keys exists, with the defaults of the others.
    assert cfg["trainer"]["early_stopping"] == {
        "monitor": "auto",
        "patience": 5,
        "mode": "auto",
        "min_delta": 0.0,
    }
    assert cfg["data"]["sampler"] == {"name": "pk", "classes_per_batch": None, "samples_per_class": 2}


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--trainer.max_epochs", "three"], ["'trainer.max_epochs'", "an integer", "'three'"]),
        (["--optimizer.lr", "fast"], ["'optimizer.lr'", "a number", "'fast'"]),
        (["--data.cache", "maybe"], ["'data.cache'", "true or false"]),
        (["--data.val_sets", "[a.bin, b.txt]"], ["'data.val_sets'", "mapping {name: path"]),
        (["--data.val_pairs", "[a.txt, b.txt]"], ["'data.val_pairs'", "data.val_sets"]),
        (["--checkpoint.keep", "alll"], ["'checkpoint.keep'", "did you mean 'all'"]),
        (["--trainer.early_stopping.patience", "x"], ["'trainer.early_stopping.patience'", "an integer"]),
        (
            ["--trainer.early_stopping.patiense", "2"],
            ["trainer.early_stopping.patiense", "did you mean 'patience'"],
        ),
        (
            ["--data.sampler", "{samples_per_klass: 2}"],
            ["data.sampler.samples_per_klass", "samples_per_class"],
        ),
        (["--optimiser.lr", "0.1"], ["unknown config key 'optimiser.lr'", "did you mean 'optimizer.lr'"]),
    ],
)
def test_wrong_types_and_keys_are_one_line_naming_the_key(argv: list[str], words: list[str]) -> None:
    with pytest.raises(FaceforgeError) as e:
        load_config(None, argv)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_wrong_type_in_a_file_names_the_file(tmp_path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("trainer:\n  max_epochs: three\n")
    with pytest.raises(
        FaceforgeError, match=r"bad\.yaml: config key 'trainer.max_epochs' must be an integer"
    ):
        load_config(p)


def test_cli_wrong_type_exits_2_with_one_line(capsys, tmp_path) -> None:
    from faceforge.cli.main import main

    code = main(["train", "--trainer.max_epochs", "three", "--run_root", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "'trainer.max_epochs'" in err and "integer" in err and "'three'" in err
    assert not (tmp_path / "runs").exists()


def test_print_config_round_trip_through_the_cli(capsys, tmp_path) -> None:
    from faceforge.cli.main import main

    argv = ["--optimizer.weight_decay", "5e-4", "--data.val_sets", "{lfw: lfw.bin, mine: pairs.txt}",
            "--data.sampler.samples_per_class", "4", "--checkpoint.keep", "3",
            "--model.backbone.width", "0.5", "--scheduler.name", "step",
            "--scheduler.decay_steps", "[100, 200]"]  # fmt: skip
    assert main(["train", "--print_config", *argv]) == 0
    first = capsys.readouterr().out
    p = tmp_path / "x.yaml"
    p.write_text(first)
    assert main(["train", "--config", str(p), "--print_config"]) == 0
    assert capsys.readouterr().out == first
    cfg = load_config(p)
    assert cfg == load_config(None, argv) == yaml.safe_load(first)
    assert cfg["optimizer"]["weight_decay"] == 0.0005 and cfg["checkpoint"]["keep"] == 3


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--validation.retrieval", "{k: 5}"], "validation.retrieval needs data.split"),
        (["--checkpoint.monitor", "val/lfw_acc"], r"'val/lfw_acc' is not logged.*val/acc"),
        (["--data.val_sets", "{lfw: l.bin}", "--checkpoint.monitor", "val/lfw_ac"],
         "did you mean 'val/lfw_acc'"),
        (["--data.sampler", "{classes_per_batch: 8, samples_per_class: 4}", "--data.batch_size", "64"],
         r"8 x samples_per_class 4 = 32 images, but data.batch_size is 64"),
        (["--scheduler.name", "step"], "scheduler.decay_steps"),
        (["--data.val_sets", "{}"], "empty mapping"),
        (["--data.val_sets", "{a/b: x.bin}"], "set name 'a/b'"),
    ],
)  # fmt: skip
def test_combinations_are_checked_before_training(argv: list[str], match: str) -> None:
    from faceforge.train.config import validate_config

    with pytest.raises(FaceforgeError, match=match):
        validate_config(load_config(None, argv))


def test_monitor_auto_follows_the_validation_configured() -> None:
    from faceforge.train.config import resolve_monitor

    assert resolve_monitor(load_config(None)) == ("val/acc", "max")
    assert resolve_monitor(load_config(None, ["--data.val_pairs", "null"])) == ("train/loss_epoch", "min")
    sets = load_config(None, ["--data.val_sets", "{lfw: a.bin, cfp: b.bin}"])
    assert resolve_monitor(sets) == ("val/mean_acc", "max")
    assert resolve_monitor(sets, "val/lfw_acc", "auto") == ("val/lfw_acc", "max")
    ret = load_config(None, ["--data.split", "s.json", "--validation.retrieval", "{k: 3}"])
    assert resolve_monitor(ret) == ("val/knn_acc", "max")
