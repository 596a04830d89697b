"""CLI behaviour on the vector files: output, one-line errors, exit code 2, nothing half-written."""

from __future__ import annotations

import pytest
import torch

from realize.data.vectors import SteeringVector, save_safetensors
from realize.cli import main
from realize.data.errors import UserInputError


@pytest.fixture()
def vector_file(tmp_path):
    path = tmp_path / "v.safetensors"
    save_safetensors([SteeringVector(directions={3: torch.ones(8)}, scale=2.0, model_hint="m", method="caa")], path)
    return path


def test_inspect_prints_layers_and_norms(vector_file, capsys):
    assert main(["inspect", str(vector_file)]) == 0
    out = capsys.readouterr().out
    assert "1 vector(s)" in out and "3" in out and "2.828" in out  # norm of ones(8)


@pytest.mark.parametrize(
    "content,name,expected",
    [
        (b"not a real file", "v.safetensors", "safetensors"),
        (b"\x00" * 10, "v.bin", "extension"),
        (b"garbage", "v.gguf", "gguf"),
    ],
)
def test_bad_files_exit_2_with_one_line(tmp_path, capsys, content, name, expected):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and expected in err.lower()


def test_missing_file_exit_2(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_train_vectors_rejects_bad_out_and_config(tmp_path, capsys):
    assert main(["train-vectors", "--method", "caa", "--out", str(tmp_path / "x.pt")]) == 2
    assert ".safetensors" in capsys.readouterr().err
    assert main(["train-vectors", "--method", "melbo", "--steps", "0", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "steps" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_missing_model_path(tmp_path, capsys, vector_file):
    assert main(["steer", str(vector_file), "--model", str(tmp_path / "no-model")]) == 2
    assert "no-model" in capsys.readouterr().err


def test_audit_without_vectors_exit_2(capsys):
    assert main(["audit"]) == 2
    assert "--demo" in capsys.readouterr().err


def test_audit_realism_weights_that_do_not_load_exit_2_before_the_model(tmp_path, capsys, vector_file):
    bad = tmp_path / "weights.json"
    bad.write_text("{}")
    # the model path does not exist either: the weights are checked first, so their error is the one printed
    assert main(["audit", str(vector_file), "--realism-weights", str(bad), "--model", str(tmp_path / "no-model"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "weights.json: corrupt realism classifier weights" in err and "no-model" not in err


def test_audit_flags_reach_the_verdict_thresholds():
    from realize.cli import build_parser
    from realize.commands.audit import _config

    config = _config(build_parser().parse_args(["audit", "v.safetensors", "--content-test", "nearest",
                                                "--min-realism", "0.3", "--content-level", "0.95"]))
    assert (config.thresholds.content_reference, config.thresholds.min_realism) == ("nearest", 0.3)
    assert config.thresholds.content_level == 0.95 and not config.thresholds.content_cosine
    cosine = _config(build_parser().parse_args(["audit", "v.safetensors", "--content-cosine"]))
    assert cosine.thresholds.content_cosine and cosine.thresholds.content_reference == "mean"
    with pytest.raises(UserInputError, match="content_level"):
        _config(build_parser().parse_args(["audit", "v.safetensors", "--content-level", "1.5"]))
    with pytest.raises(UserInputError, match="--content-level"):
        _config(build_parser().parse_args(["audit", "v.safetensors", "--content-level", "high"]))
    off = _config(build_parser().parse_args(["audit", "v.safetensors", "--content-level", "off"]))
    assert off.thresholds.content_level is None
    default = _config(build_parser().parse_args(["audit", "v.safetensors"]))
    assert default.thresholds == default.thresholds.__class__()


def test_export_filters_verdicts(tmp_path, capsys):
    import datasets

    import test_results_dataset as trd
    from realize.data.results_dataset import write_rows

    write_rows([trd._row(0, "realizable"), trd._row(1, "not realizable")], tmp_path / "audit")
    assert main(["export", str(tmp_path / "audit"), "--out", str(tmp_path / "ds"), "--verdict", "not realizable"]) == 0
    loaded = datasets.load_dataset(str(tmp_path / "ds"), split="train")
    assert loaded["prompt_verdict"] == ["not realizable"]
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "ds2")]) == 2
    assert "results.parquet" in capsys.readouterr().err
