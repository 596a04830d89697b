"""Steering-vector dataclass, loaders and savers (no model needed)."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from realize.data.errors import UserInputError
from realize.data.vectors import (SteeringVector, check_compatible, describe, load_vectors, save_control_vector_gguf,
                          save_safetensors, single_layer)

D = 16


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(*shape)


def sv(layers: dict[int, torch.Tensor] | None = None, **kw: object) -> SteeringVector:
    return SteeringVector(directions=layers or {6: rand(D)}, **kw)  # type: ignore[arg-type]


class Evil:
    """Unpickling this creates the sentinel file: a stand-in for arbitrary code."""

    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.sentinel, "w"))


class FakeSteeringVectorsObject:
    """Mimics steering_vectors.SteeringVector (attributes layer_activations, layer_type)."""

    def __init__(self, acts: dict[int, torch.Tensor]) -> None:
        self.layer_activations = acts
        self.layer_type = "decoder_block"


# ---------------------------------------------------------------------------------------------------- dataclass
def test_dataclass_properties_and_to() -> None:
    v = sv({3: rand(D, seed=1)}, scale=4, name="x")
    assert v.layers == (3,) and v.dim == D and v.layer == 3 and v.scale == 4.0
    assert torch.equal(v.vector, rand(D, seed=1))
    assert v.norms()[3] == pytest.approx(float(rand(D, seed=1).norm()))
    w = v.to(torch.float64)
    assert w.vector.dtype == torch.float64 and w.name == "x" and v.vector.dtype == torch.float32
    multi = sv({12: rand(D, seed=2), 2: rand(D, seed=3)})
    assert multi.layers == (2, 12)
    with pytest.raises(UserInputError, match=r"layers \[2, 12\].*layer"):
        _ = multi.layer
    with pytest.raises(UserInputError, match="single layer"):
        single_layer(multi)
    assert multi.only(12).layers == (12,)


def test_dataclass_copies_input() -> None:
    t = rand(D)
    v = sv({1: t})
    t.zero_()
    assert bool(v.vector.any())


@pytest.mark.parametrize(
    ("directions", "scale", "pattern"),
    [
        ({}, None, "non-empty"),
        ({-1: rand(D)}, None, "int >= 0"),
        ({"3": rand(D)}, None, "int >= 0"),
        ({1: rand(2, D)}, None, "1-D"),
        ({1: rand(D), 2: rand(D + 1)}, None, "dimension"),
        ({1: torch.full((D,), float("nan"))}, None, "NaN"),
        ({1: torch.zeros(D)}, None, "all zeros"),
        ({1: torch.arange(D)}, None, "floating-point"),
        ({1: rand(D)}, float("inf"), "scale"),
        ({1: rand(D)}, 0.0, "scale"),
    ],
)
def test_dataclass_validation(directions: dict, scale: float | None, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        SteeringVector(directions=directions, scale=scale)


# -------------------------------------------------------------------------------------------------- safetensors
def test_safetensors_roundtrip_single(tmp_path: Path) -> None:
    v = sv({2: rand(D, seed=1), 7: rand(D, seed=2)}, scale=0.1 + 0.2, model_hint="HuggingFaceTB/SmolLM2-135M",
           method="caa", name="happy", notes="made by hand")
    path = tmp_path / "v.safetensors"
    save_safetensors([v], path)
    (w,) = load_vectors(path)
    assert w.layers == (2, 7)
    for layer in v.layers:
        assert torch.equal(w.directions[layer], v.directions[layer])
    assert (w.scale, w.model_hint, w.method, w.name, w.notes) == (0.1 + 0.2, v.model_hint, "caa", "happy",
                                                                  "made by hand")
    assert w.source == str(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert set(f.keys()) == {"layer.2", "layer.7"}
    assert meta["format"] == "realize.steering_vector" and meta["layer_convention"] == "block_output"
    assert meta["format_version"] == "1" and json.loads(meta["names"]) == ["happy"]
    assert not list(tmp_path.glob(".*tmp"))


def test_safetensors_roundtrip_multi(tmp_path: Path) -> None:
    rows = rand(3, D, seed=5)
    vs = [sv({4: rows[k]}, method="melbo", name=f"melbo.{k}") for k in range(3)]
    path = tmp_path / "m.safetensors"
    save_safetensors(vs, path)
    with safe_open(str(path), framework="pt") as f:
        assert tuple(f.get_tensor("layer.4").shape) == (3, D)
    ws = load_vectors(path)
    assert [w.name for w in ws] == ["melbo.0", "melbo.1", "melbo.2"]
    assert all(torch.equal(w.vector, rows[k]) and w.layer == 4 and w.scale is None for k, w in enumerate(ws))
    assert ws[0].model_hint is None and ws[0].method == "melbo"


def test_safetensors_save_refuses_mixed_vectors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="same layers"):
        save_safetensors([sv({1: rand(D)}), sv({2: rand(D)})], tmp_path / "x.safetensors")
    with pytest.raises(UserInputError, match="differ in scale"):
        save_safetensors([sv(scale=1.0), sv(scale=2.0)], tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


def test_safetensors_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v.safetensors"
    save_safetensors([sv(name="old")], path)
    before = path.read_bytes()

    def broken(tensors: dict, filename: str, metadata: dict) -> None:
        Path(filename).write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_safetensors([sv(name="new")], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.safetensors"]


def test_safetensors_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "repeng.safetensors"
    save_file({"direction.3": rand(D), "direction.5": rand(D, seed=1)}, str(path))
    (v,) = load_vectors(path, scale=2.0)
    assert v.layers == (3, 5) and v.scale == 2.0 and v.name == "repeng"
    bad = tmp_path / "bad.safetensors"
    save_file({"weight": rand(D), "bias": rand(D)}, str(bad))
    with pytest.raises(UserInputError, match=r"bad\.safetensors: tensor keys \[bias, weight\]; expected 'layer"):
        load_vectors(bad)


def test_safetensors_corrupt_and_lying_header(tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    save_safetensors([sv()], good)
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[:-10])
    header = json.dumps({"layer.0": {"dtype": "F32", "shape": [D], "data_offsets": [0, 4 * D]}}).encode()
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)  # claims 64 bytes, has 8
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    for p in (truncated, lying, huge):
        with pytest.raises(UserInputError, match=f"{p.name}: corrupt or truncated safetensors") as info:
            load_vectors(p)
        assert "\n" not in str(info.value)


def test_safetensors_nan_and_zero_in_file(tmp_path: Path) -> None:
    nan = tmp_path / "nan.safetensors"
    save_file({"layer.3": torch.full((D,), float("nan"))}, str(nan))
    with pytest.raises(UserInputError, match=r"nan\.safetensors: .*NaN"):
        load_vectors(nan)
    zero = tmp_path / "zero.safetensors"
    save_file({"layer.3": torch.zeros(D)}, str(zero))
    with pytest.raises(UserInputError, match=r"zero\.safetensors: .*all zeros"):
        load_vectors(zero)


def test_layer_argument_rules(tmp_path: Path) -> None:
    path = tmp_path / "v.safetensors"
    save_safetensors([sv({6: rand(D), 9: rand(D, seed=1)}, scale=3.0)], path)
    with pytest.raises(UserInputError, match=r"layer 7 disagrees with the file.*\[6, 9\]"):
        load_vectors(path, layer=7)
    (v,) = load_vectors(path, layer=9, scale=-1.5)
    assert v.layers == (9,) and torch.equal(v.vector, rand(D, seed=1)) and v.scale == -1.5
    assert load_vectors(path)[0].scale == 3.0
    with pytest.raises(UserInputError, match="layer -1"):
        load_vectors(path, layer=-1)


# ---------------------------------------------------------------------------------------------------------- gguf
def test_gguf_roundtrip(tmp_path: Path) -> None:
    v = sv({1: rand(D, seed=1), 5: rand(D, seed=2)}, scale=8.0, method="repeng", name="calm")
    path = tmp_path / "cv.gguf"
    save_control_vector_gguf(v, path, model_hint="llama")
    reader = gguf.GGUFReader(path)
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.5"]
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "controlvector"
    assert int(reader.fields["controlvector.layer_count"].parts[-1][0]) == 2
    del reader
    (w,) = load_vectors(path)
    assert w.layers == (1, 5) and w.model_hint == "llama" and w.scale == 8.0 and w.name == "calm"
    assert all(torch.equal(w.directions[i], v.directions[i]) for i in (1, 5))
    assert tuple(w.directions[5].shape) == (D,)


def test_gguf_plain_repeng_file(tmp_path: Path) -> None:
    """A file as repeng's export_gguf writes it (no realize.* keys), including direction.0."""
    path = tmp_path / "repeng.gguf"
    writer = gguf.GGUFWriter(path, "controlvector")
    writer.add_string("controlvector.model_hint", "mistral")
    writer.add_uint32("controlvector.layer_count", 2)
    writer.add_tensor("direction.0", rand(D).numpy())
    writer.add_tensor("direction.12", rand(D, seed=4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (v,) = load_vectors(path)
    assert v.layers == (0, 12) and v.scale is None and v.name == "repeng" and v.model_hint == "mistral"
    assert torch.equal(v.directions[12], rand(D, seed=4))


def test_gguf_export_layer0_refused(tmp_path: Path) -> None:
    path = tmp_path / "cv.gguf"
    with pytest.raises(UserInputError, match=r"cv\.gguf: .*layer 0"):
        save_control_vector_gguf(sv({0: rand(D), 3: rand(D)}), path)
    assert not list(tmp_path.iterdir())


def test_gguf_garbage_truncated_and_model_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 20)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    good = tmp_path / "good.gguf"
    save_control_vector_gguf(sv({4: rand(D)}), good)
    truncated = tmp_path / "trunc.gguf"
    truncated.write_bytes(good.read_bytes()[:-20])
    for p in (garbage, empty, truncated):
        with pytest.raises(UserInputError, match=f"{p.name}: corrupt or truncated GGUF") as info:
            load_vectors(p)
        assert "\n" not in str(info.value)
    model = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(model, "llama")
    writer.add_tensor("token_embd.weight", rand(4, D).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UserInputError, match="architecture is 'llama'; expected 'controlvector'"):
        load_vectors(model)


# ------------------------------------------------------------------------------------------------------- torch
def test_pt_plain_and_melbo(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save(rand(D), plain)
    with pytest.raises(UserInputError, match=r"plain\.pt: .*pass layer"):
        load_vectors(plain)
    (v,) = load_vectors(plain, layer=5, scale=2.0)
    assert v.layer == 5 and v.scale == 2.0 and torch.equal(v.vector, rand(D)) and v.name == "plain"
    melbo = tmp_path / "melbo.pth"
    torch.save(rand(4, D, seed=7), melbo)
    vs = load_vectors(melbo, layer=7)
    assert [w.name for w in vs] == [f"melbo.{k}" for k in range(4)]
    assert all(w.layer == 7 and torch.equal(w.vector, rand(4, D, seed=7)[k]) for k, w in enumerate(vs))
    bad = tmp_path / "bad.pt"
    torch.save(rand(2, 2, D), bad)
    with pytest.raises(UserInputError, match=r"bad\.pt: .*expected \(d,\) or \(n_vectors, d\)"):
        load_vectors(bad, layer=1)


@pytest.mark.parametrize("key", [12, "12", "layer.12", "direction.12"])
def test_pt_dict_forms(tmp_path: Path, key: object) -> None:
    path = tmp_path / "d.pt"
    torch.save({key: rand(D, seed=3)}, path)
    (v,) = load_vectors(path)
    assert v.layer == 12 and torch.equal(v.vector, rand(D, seed=3))


def test_pt_dict_bad_key_and_steering_vectors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"weight": rand(D)}, bad)
    with pytest.raises(UserInputError, match=r"bad\.pt: .*'weight'.*expected layer keys"):
        load_vectors(bad)
    sv_path = tmp_path / "sv.pt"
    torch.save({"layer_activations": {3: rand(D), 4: rand(D, seed=1)}, "layer_type": "decoder_block"}, sv_path)
    (v,) = load_vectors(sv_path)
    assert v.layers == (3, 4) and torch.equal(v.directions[4], rand(D, seed=1)) and v.method == "steering-vectors"
    mlp = tmp_path / "mlp.pt"
    torch.save({"layer_activations": {3: rand(D)}, "layer_type": "mlp"}, mlp)
    with pytest.raises(UserInputError, match="layer_type 'mlp'; only 'decoder_block'"):
        load_vectors(mlp)


def test_pt_malicious_pickle_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(Evil(str(sentinel)), path)
    with pytest.raises(UserInputError, match=r"evil\.pt: this \.pt file needs arbitrary code.*trust_pickle=True"):
        load_vectors(path, layer=0)
    assert not sentinel.exists()


def test_pt_trusted_custom_object(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "obj.pt"
    torch.save(FakeSteeringVectorsObject({2: rand(D, seed=9)}), path)
    with pytest.raises(UserInputError, match="needs arbitrary code"):
        load_vectors(path)
    with caplog.at_level(logging.WARNING, logger="realize.data.vector_formats"):
        (v,) = load_vectors(path, trust_pickle=True)
    assert v.layer == 2 and torch.equal(v.vector, rand(D, seed=9))
    assert any(r.levelno == logging.WARNING and "trust_pickle" in r.getMessage() for r in caplog.records)


def test_pt_corrupt(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(rand(D), good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:100])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"garbage" * 30)
    for p in (trunc, garbage):
        with pytest.raises(UserInputError, match=f"{p.name}: corrupt") as info:
            load_vectors(p, layer=1)
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------------- npy
def test_npy(tmp_path: Path) -> None:
    one = tmp_path / "one.npy"
    np.save(one, rand(D).numpy())
    (v,) = load_vectors(one, layer=3)
    assert v.layer == 3 and torch.equal(v.vector, rand(D))
    many = tmp_path / "many.npy"
    np.save(many, rand(2, D).numpy().astype(np.float64))
    vs = load_vectors(many, layer=1)
    assert len(vs) == 2 and vs[1].vector.dtype == torch.float32
    assert torch.allclose(vs[1].vector, rand(2, D)[1])
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserInputError, match=r"obj\.npy: holds Python objects"):
        load_vectors(obj, layer=1)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full(D, np.nan, dtype=np.float32))
    with pytest.raises(UserInputError, match=r"nan\.npy: .*NaN"):
        load_vectors(nan, layer=1)


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "v.json"
    p.write_text("{}")
    with pytest.raises(UserInputError, match=r"v\.json: unknown vector file extension '\.json'.*\.safetensors"):
        load_vectors(p)
    with pytest.raises(UserInputError, match=r"nope\.pt: no such file"):
        load_vectors(tmp_path / "nope.pt")


# ------------------------------------------------------------------------------------------------ compatibility
def test_check_compatible(caplog: pytest.LogCaptureFixture) -> None:
    v = sv({6: rand(D)}, model_hint="smollm2-135m-instruct", name="v")
    check_compatible(v, hidden_size=D, num_layers=30, model_name="HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(UserInputError, match="dimension 16 does not match the model's hidden size 32"):
        check_compatible(v, hidden_size=32, num_layers=30)
    with pytest.raises(UserInputError, match=r"layer\(s\) \[6\] out of range.*6 decoder blocks"):
        check_compatible(v, hidden_size=D, num_layers=6)
    with pytest.raises(UserInputError, match="made for model 'smollm2-135m-instruct'.*force=True"):
        check_compatible(v, hidden_size=D, num_layers=30, model_name="google/gemma-3-270m")
    with caplog.at_level(logging.WARNING, logger="realize.data.vectors"):
        check_compatible(v, hidden_size=D, num_layers=30, model_name="google/gemma-3-270m", force=True)
    assert any("gemma" in r.getMessage() for r in caplog.records)
    repeng_style = sv(model_hint="llama")
    check_compatible(repeng_style, hidden_size=D, num_layers=30, model_name="HuggingFaceTB/SmolLM2-135M-Instruct",
                     model_type="llama")
    with pytest.raises(UserInputError, match="made for model 'llama'"):
        check_compatible(repeng_style, hidden_size=D, num_layers=30, model_name="HuggingFaceTB/SmolLM2-135M")


def test_describe(tmp_path: Path) -> None:
    path = tmp_path / "v.safetensors"
    save_safetensors([sv({3: torch.full((D,), 0.5)}, scale=4.0, model_hint="smollm2", method="caa",
                         notes="hello")], path)
    text = describe(load_vectors(path))
    assert "[0] v" in text and "layers: 3" in text and f"dim: {D}" in text
    assert "layer 3: 2" in text  # |0.5 * ones(16)| = 2
    assert "scale: 4.0" in text and "smollm2" in text and "caa" in text and str(path) in text and "hello" in text


def test_save_dispatch(tmp_path: Path) -> None:
    v = sv({2: rand(D)}, name="n")
    v.save(tmp_path / "a.gguf")
    v.save(tmp_path / "a.safetensors")
    assert SteeringVector.load(tmp_path / "a.gguf").layer == 2
    assert SteeringVector.load(tmp_path / "a.gguf").model_hint is None  # written as "" (repeng needs the key)
    assert "controlvector.model_hint" in gguf.GGUFReader(tmp_path / "a.gguf").fields
    assert torch.equal(SteeringVector.load(tmp_path / "a.safetensors").vector, rand(D))
    with pytest.raises(UserInputError, match=r"a\.txt: cannot save"):
        v.save(tmp_path / "a.txt")
