"""The streaming GGUF dequantizer: chunked rows equal whole-tensor dequantization, and the cache it writes holds
bitwise the weights transformers' own GGUF loading gives."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from realize.data import gguf_cache


@pytest.mark.parametrize("kind", ["Q4_1", "Q8_0", "Q4_K", "F32"])
def test_chunked_rows_equal_whole_tensor(monkeypatch, kind):
    import gguf

    qtype = getattr(gguf.GGMLQuantizationType, kind)
    values = np.random.default_rng(0).standard_normal((37, 256)).astype(np.float32)
    if kind == "Q4_K":  # gguf-py cannot quantize K-quants (Gemma's type): random blocks, scales masked finite
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        data = np.random.default_rng(1).integers(0, 256, (37, 256 // block * size), dtype=np.uint8)
        data.reshape(37, -1, size)[..., 1:4:2] &= 0x3B  # the high byte of both f16 scales (d, dmin): |x| < 2
    else:
        data = values if kind == "F32" else gguf.quants.quantize(values, qtype)
    tensor = SimpleNamespace(data=data, tensor_type=qtype)
    whole = gguf.dequantize(data, qtype)
    monkeypatch.setattr(gguf_cache, "_ROWS_PER_CHUNK", 5)  # 37 rows: 7 full chunks and a short one
    chunked = gguf_cache._dequantize_rows(tensor)
    assert chunked.dtype == whole.dtype and chunked.shape == whole.shape == (37, 256)
    assert np.array_equal(chunked, whole)
    assert np.isfinite(whole).all()
    if kind in ("Q4_1", "Q8_0"):
        assert not np.array_equal(whole, values)  # it was really quantized: the test compares two dequantizations


def test_one_metadata_parse_memoizes_and_restores(monkeypatch, tmp_path):
    import gguf
    import transformers.modeling_gguf_pytorch_utils as hf_gguf

    calls = {"reader": 0, "load": 0, "map": 0}

    class Reader:
        def __init__(self, path, mode="r"):
            calls["reader"] += 1

    def load(path, return_tensors=False, **kwargs):
        calls["load"] += 1
        return {"config": {"n": [1, 2]}, "tokenizer": {"tokens": ["a", "b"], "pairs": [["a", "b"]]},
                "tensors": "x" if return_tensors else None}

    def name_map(arch, n_blocks):
        calls["map"] += 1
        return (arch, n_blocks)

    monkeypatch.setattr(gguf, "GGUFReader", Reader)
    monkeypatch.setattr(hf_gguf, "load_gguf_checkpoint", load)
    monkeypatch.setattr(gguf, "get_tensor_name_map", name_map)
    path = tmp_path / "m.gguf"
    with pytest.raises(RuntimeError, match="inside"):
        with gguf_cache.one_metadata_parse():
            first = gguf.GGUFReader(str(path))
            assert gguf.GGUFReader(path) is first and calls["reader"] == 1  # str and Path name one file
            gguf.GGUFReader(tmp_path / "other.gguf")
            assert calls["reader"] == 2
            a = hf_gguf.load_gguf_checkpoint(str(path), return_tensors=False)
            a["config"]["n"].append(3)  # a caller's edit does not reach the next caller
            a["tokenizer"]["tokens"][0] = "z"
            a["tokenizer"]["pairs"][0].append("c")
            b = hf_gguf.load_gguf_checkpoint(path)
            assert b["config"]["n"] == [1, 2] and calls["load"] == 1
            assert b["tokenizer"] == {"tokens": ["a", "b"], "pairs": [["a", "b"]]}
            assert hf_gguf.load_gguf_checkpoint(path, return_tensors=True)["tensors"] == "x"  # never memoized
            assert calls["load"] == 2
            assert gguf.get_tensor_name_map("llama", 30) == gguf.get_tensor_name_map("llama", 30) == ("llama", 30)
            assert calls["map"] == 1
            raise RuntimeError("inside")
    assert gguf.GGUFReader is Reader and hf_gguf.load_gguf_checkpoint is load  # restored after the error
    assert gguf.get_tensor_name_map is name_map


@pytest.mark.slow
def test_cache_equals_transformers_loading(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from realize.data.models import default_gguf_path

    path = default_gguf_path()
    gguf_cache.write_gguf_cache(path, tmp_path / "cache", torch.float32)
    streamed = load_file(str(tmp_path / "cache" / "model.safetensors"))
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    expected = {k: v for k, v in reference.state_dict().items() if k != "lm_head.weight"}  # tied to the embedding
    assert set(streamed) == set(expected)
    for name, tensor in expected.items():
        assert streamed[name].dtype == tensor.dtype and torch.equal(streamed[name], tensor), name
    config = json.loads((tmp_path / "cache" / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    assert not list(tmp_path.glob("cache.tmp*"))  # the temp dir was renamed, not left behind
    from transformers import AutoTokenizer

    cached = AutoTokenizer.from_pretrained(tmp_path / "cache")
    direct = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)  # transformers' own parse, unmemoized
    assert cached.get_vocab() == direct.get_vocab()
    for text in ("Hello, world!", "  two spaces and émojis 🙂", "<|im_start|>user\nHi<|im_end|>"):
        assert cached(text)["input_ids"] == direct(text)["input_ids"], text
