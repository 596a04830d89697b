"""Malicious and malformed inputs: every one ends in a one-line UserInputError (CLI: exit 2) or is carried as data.

Matrix (row -> where it is tested):
- pickle that runs code without --trust-pickle -> test_vectors.py::test_pt_malicious_pickle_refused (sentinel file)
- safetensors truncated / header lying about its length / 10**12 header -> test_vectors.py::
  test_safetensors_corrupt_and_lying_header; absurd header length 2**60, header not an object, overlapping or
  out-of-file offsets, overflowing shapes -> test_safetensors_malformed_header; lone surrogate names -> here
- NaN / all-zero tensors in a file -> test_vectors.py::test_safetensors_nan_and_zero_in_file, test_npy; through the
  CLI (NaN, inf, norm overflow, NaN/inf scale; inspect and steer) -> test_cli_nan_inf_exit_2, test_steer_nan_vector
- GGUF garbage / empty / truncated / a model file -> test_vectors.py::test_gguf_garbage_truncated_and_model_file;
  absurd counts, string lengths, array lengths, dims, offsets, nesting, alignment -> test_gguf_absurd_header
  (bounded time and memory); a model GGUF is refused before its tensors are copied -> test_gguf_model_not_copied
- path traversal: names are data, never paths -> test_traversal_names_*
- control characters, bidi overrides, 100k-character lines: HTML report -> test_report_*; results parquet/jsonl
  -> test_results_round_trip_hostile_text; terminal output -> test_inspect_*; `realize score` on the tiny model ->
  test_score_hostile_prompts; prompt files with NUL / UTF-16 / surrogate escapes -> test_score_bad_prompt_files
  (invalid UTF-8: test_perplexity.py::test_score_cli_bad_input); CAA pairs -> test_pairs_*
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import re
import signal
import struct
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from realize.data.caa_examples import read_pairs
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel
from realize.data.results_dataset import read_rows, write_rows
from realize.data.vectors import (
    SteeringVector,
    load_vectors,
    save_control_vector_gguf,
    save_safetensors,
)
from realize.evidence import Generation
from realize.cli import main
from realize.report import render_report, write_report

D = 8
HOSTILE = "a\x00b \x1b[31mred\x1b[0m \x1b]0;title\x07 c\rd \u202eevil\u202c <script>alert(1)</script> $\\foo$"
LONG = "word " * 20_000  # 100k characters on one line
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


class _Overrun(BaseException):
    """Raised by the deadline alarm; a BaseException so that no `except Exception` in the code under test eats it."""


@contextlib.contextmanager
def bounded(seconds: float = 1.0, megabytes: float = 32.0) -> Iterator[None]:
    """Fail (instead of hanging or swapping) if the block runs longer or allocates more than this."""

    def alarm(signum: int, frame: object) -> None:
        raise _Overrun(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    tracemalloc.start()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < megabytes * 2**20, f"peak allocation {peak / 2**20:.0f} MiB"


def one_line_error(path: Path, match: str, **kw: object) -> UserInputError:
    with bounded(), pytest.raises(UserInputError, match=match) as info:
        load_vectors(path, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert str(path) in message and "\n" not in message and not RAW_CONTROLS.search(message)
    return info.value


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------------------------------- GGUF, byte by byte
def g_str(text: str | bytes, length: int | None = None) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def g_kv_str(key: str, value: str, length: int | None = None) -> bytes:
    return g_str(key) + struct.pack("<I", 8) + g_str(value, length)


def g_tensor(name: str, dims: list[int], ttype: int = 0, offset: int = 0) -> bytes:
    return (g_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<IQ", ttype, offset))


ARCH = g_kv_str("general.architecture", "controlvector")


def gguf_bytes(n_tensors: int, n_kv: int, body: bytes, data: bytes = b"", tail: int = 0) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body
    return head + b"\0" * (-len(head) % 32) + data + b"\0" * tail


ONES = np.ones(D, np.float32).tobytes()
NESTED = b"".join(struct.pack("<IQ", 9, 1) for _ in range(12)) + struct.pack("<IQ", 0, 0)
GGUF_CASES = {
    "tensor_count": (gguf_bytes(2**62, 1, ARCH + g_tensor("direction.1", [D]), ONES), "tensor count claims"),
    "kv_count": (gguf_bytes(1, 2**62, ARCH + g_tensor("direction.1", [D]), ONES), "metadata count claims"),
    "key_length": (gguf_bytes(0, 1, g_str("general.architecture", 2**62), tail=64), "length 4611686018427387904"),
    "value_length": (gguf_bytes(1, 1, g_kv_str("general.architecture", "controlvector", 2**62)
                                + g_tensor("direction.1", [D]), ONES), "length 4611686018427387904"),
    "u8_array_2_62": (gguf_bytes(0, 1, g_str("x") + struct.pack("<IIQ", 9, 0, 2**62) + b"abc", tail=64),
                      "4611686018427387904 elements"),
    "string_array_2_62": (gguf_bytes(0, 1, g_str("x") + struct.pack("<IIQ", 9, 8, 2**62), tail=64), "claims"),
    "nested_arrays": (gguf_bytes(0, 1, g_str("x") + struct.pack("<I", 9) + NESTED), "nests arrays"),
    "unknown_value_type": (gguf_bytes(0, 1, g_str("x") + struct.pack("<I", 77), tail=64), "unknown value type"),
    "dims_2_40": (gguf_bytes(1, 1, ARCH + g_tensor("direction.1", [2**40]), ONES), "extends past the end"),
    "dims_wrap_uint64": (gguf_bytes(1, 1, ARCH + g_tensor("direction.1", [D, 2**61 + 1]), ONES),
                         "extends past the end"),  # numpy's uint64 product wraps to 8 elements
    "five_dims": (gguf_bytes(1, 1, ARCH + g_tensor("direction.1", [1, 1, 1, 1, D]), ONES), "at most 4"),
    "offset_2_62": (gguf_bytes(1, 1, ARCH + g_tensor("direction.1", [D], offset=2**62), ONES),
                    "extends past the end"),
    "offset_past_end": (gguf_bytes(1, 1, ARCH + g_tensor("direction.1", [D], offset=32), ONES),
                        "extends past the end"),
    "unknown_tensor_type": (gguf_bytes(1, 1, ARCH + g_tensor("direction.1", [D], ttype=999), ONES), "unknown type"),
    "alignment_zero": (gguf_bytes(0, 1, g_str("general.alignment") + struct.pack("<II", 4, 0)), "power of two"),
    "version_99": (b"GGUF" + struct.pack("<IQQ", 99, 0, 0), "version 99"),
}


@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_gguf_absurd_header(tmp_path: Path, case: str) -> None:
    content, reason = GGUF_CASES[case]
    path = tmp_path / f"{case}.gguf"
    path.write_bytes(content)
    one_line_error(path, f"{case}.gguf: corrupt or truncated GGUF file .*{re.escape(reason)}")


def test_gguf_crafted_file_is_valid_when_honest(tmp_path: Path) -> None:
    """The byte-level builder above makes real GGUF: without the lies it loads (so the cases test the lies)."""
    path = tmp_path / "honest.gguf"
    path.write_bytes(gguf_bytes(1, 2, ARCH + g_kv_str("realize.name", "honest") + g_tensor("direction.1", [D]), ONES))
    (v,) = load_vectors(path)
    assert v.name == "honest" and v.layers == (1,) and torch.equal(v.vector, torch.ones(D))


def test_gguf_big_endian_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "be.gguf"
    writer = gguf.GGUFWriter(path, "controlvector", endianess=gguf.GGUFEndian.BIG)
    writer.add_tensor("direction.2", np.arange(1, D + 1, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (v,) = load_vectors(path)
    assert torch.equal(v.directions[2], torch.arange(1, D + 1, dtype=torch.float32))


def test_gguf_model_not_copied(tmp_path: Path) -> None:
    """A model GGUF passed as a vector is refused from its metadata, without copying its tensors into memory."""
    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tensor("token_embd.weight", np.ones((1024, 2048), np.float32))  # 8 MiB
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with bounded(megabytes=4), pytest.raises(UserInputError, match="architecture is 'llama'"):
        load_vectors(path)


# ------------------------------------------------------------------------------------ safetensors, byte by byte
def st_bytes(header: object, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


F32 = {"dtype": "F32", "shape": [D], "data_offsets": [0, 4 * D]}
ST_CASES = {
    "length_2_60": st_bytes({"layer.0": F32}, ONES, length=2**60),
    "length_2_64_minus_1": st_bytes({"layer.0": F32}, ONES, length=2**64 - 1),
    "header_list": st_bytes([F32]),
    "header_string": st_bytes(b'"layer.0"'),
    "header_number": st_bytes(b"12"),
    "header_not_json": st_bytes(b"{layer.0"),
    "header_not_utf8": st_bytes(b'{"layer.\xff": 1}'),
    "offsets_overlap": st_bytes({"layer.0": F32, "layer.1": {**F32, "data_offsets": [16, 16 + 4 * D]}}, ONES * 2),
    "offsets_past_end": st_bytes({"layer.0": {**F32, "data_offsets": [2**62, 2**62 + 4 * D]}}, ONES),
    "data_shorter": st_bytes({"layer.0": F32}, ONES[:8]),
    "shape_overflow": st_bytes({"layer.0": {**F32, "shape": [2**62 + 1, 4]}}, ONES),
    "shape_negative": st_bytes({"layer.0": {**F32, "shape": [-1]}}, ONES),
    "metadata_not_string": st_bytes({"__metadata__": {"names": 5}, "layer.0": F32}, ONES),
}


@pytest.mark.parametrize("case", list(ST_CASES))
def test_safetensors_malformed_header(tmp_path: Path, case: str) -> None:
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(ST_CASES[case])
    one_line_error(path, f"{case}.safetensors: corrupt or truncated safetensors file")


def test_safetensors_lone_surrogate_name_refused(tmp_path: Path) -> None:
    """JSON "\\ud800" decodes to a str that no UTF-8 writer (terminal, parquet, report) accepts."""
    path = tmp_path / "surrogate.safetensors"
    path.write_bytes(st_bytes({"__metadata__": {"names": '["\\ud800"]'}, "layer.0": F32}, ONES))
    one_line_error(path, "surrogate.safetensors: metadata 'names' .*lone surrogate")


def test_safetensors_escape_sequence_key_not_echoed_raw(tmp_path: Path) -> None:
    path = tmp_path / "key.safetensors"
    path.write_bytes(st_bytes({"\x1b]0;pwned\x07": F32}, ONES))
    one_line_error(path, r"tensor keys \[\\x1b\]0;pwned\\x07\]")


# ------------------------------------------------------------------------------- path traversal: names are data
EVIL = "../../evil"


@pytest.fixture()
def evil_files(tmp_path: Path) -> dict[str, Path]:
    vector = SteeringVector(directions={3: torch.ones(D)}, scale=2.0, name=EVIL, notes="../../notes")
    st, gg = tmp_path / "in" / "v.safetensors", tmp_path / "in" / "v.gguf"
    st.parent.mkdir()
    save_safetensors([vector], st)
    save_control_vector_gguf(vector, gg)
    return {"safetensors": st, "gguf": gg}


@pytest.mark.parametrize("fmt", ["safetensors", "gguf"])
def test_traversal_names_load_and_save_inside_out_dir(tmp_path: Path, evil_files: dict[str, Path],
                                                      fmt: str) -> None:
    (v,) = load_vectors(evil_files[fmt])
    assert v.name == EVIL
    before = tree(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    v.save(out / "copy.safetensors")
    assert main(["inspect", str(out / "copy.safetensors")]) == 0
    assert tree(tmp_path) - before == {"out", "out/copy.safetensors"}
    assert load_vectors(out / "copy.safetensors")[0].name == EVIL


def _row(i: int, **kw: object) -> dict:
    import test_results_dataset as trd

    return {**trd._row(i, "realizable"), **kw}


def test_traversal_names_export_writes_only_into_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [_row(0, vector_name=EVIL, vector_id="../../../id", source_file="/etc/passwd", model="../m", kind="vector"),
            _row(1, vector_name="..\\..\\win", vector_id="/abs", attack="../a")]
    write_rows(rows, tmp_path / "audit")
    before = tree(tmp_path)
    assert main(["export", str(tmp_path / "audit"), "--out", str(tmp_path / "ds")]) == 0
    added = tree(tmp_path) - before
    assert added and all(p == "ds" or p.startswith("ds/") for p in added), added
    back = read_rows(tmp_path / "ds" / "data" / "train-00000-of-00001.parquet")
    assert [r["vector_name"] for r in back] == [EVIL, "..\\..\\win"]
    capsys.readouterr()


def _audit(name: str, prompt: str, generation: str):  # -> JudgedAudit
    import test_report as tr

    base = tr.judged(0.85)
    activation = base.audit.axes["activation"]
    best = dataclasses.replace(activation.best, score=dataclasses.replace(activation.best.score, prompt=prompt))
    activation = dataclasses.replace(activation, best=best, frontier=(best.score, activation.frontier[0]))
    behavior = base.audit.axes["behavior"]
    facts = dataclasses.replace(behavior.behavior, generations=(Generation(generation, generation, generation,
                                                                           generation),))
    audit = dataclasses.replace(base.audit, name=name, source=name, method=name,
                                axes={"activation": activation, "behavior": dataclasses.replace(behavior,
                                                                                                 behavior=facts)})
    judgements = {axis: dataclasses.replace(j, prompt_verdicts=j.prompt_verdicts[:len(audit.axes[axis].frontier)])
                  for axis, j in base.judgements.items()}
    return dataclasses.replace(base, audit=audit, judgements=judgements)


def test_traversal_names_item_store_uses_hashed_ids(tmp_path: Path) -> None:
    """The audit's per-item files are named by a hash of the vector, never by its name."""
    from realize.store import ItemStore
    from realize.targets import item_id

    audit = _audit(EVIL, EVIL, EVIL).audit
    key = item_id("vector", torch.ones(D), 3, 2.0, {"name": EVIL})
    audit = dataclasses.replace(audit, vector_id=key)
    store = ItemStore(tmp_path / "items")
    store.save(audit)
    assert re.fullmatch(r"[0-9a-f]{16}", key) and tree(tmp_path) == {"items", f"items/{key}.json"}
    assert store.load(key).name == EVIL


# --------------------------------------------------------------- control characters, bidi, 100k-character lines
def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


@pytest.mark.parametrize("name", [HOSTILE, "x" * 100_000, "$\\frac{1}{$", EVIL])
def test_report_hostile_names_and_prompts(tmp_path: Path, name: str) -> None:
    audit = _audit(name, HOSTILE + LONG, HOSTILE + "\n" + LONG)
    start = time.perf_counter()
    page = render_report([audit], settings=HOSTILE)
    assert time.perf_counter() - start < 5
    assert not RAW_CONTROLS.search(page), "raw control or bidi character in the page"
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\\x1b[31mred" in page and "\\u202eevil" in page  # visible, not acted upon
    assert LONG.strip() in page  # long lines are kept, wrapped by CSS
    assert "overflow-wrap:anywhere" in page
    for png in _pngs(page):
        width, height = struct.unpack(">II", png[16:24])
        assert width < 2000 and height < 2000, (width, height)
    write_report(tmp_path / "report.html", page)
    assert (tmp_path / "report.html").read_bytes().decode("utf-8") == page


def test_results_round_trip_hostile_text(tmp_path: Path) -> None:
    texts = [HOSTILE, LONG, "line\u2028sep\u2029para\x85nel", "\ufeffbom\u200bzw", EVIL]
    rows = [_row(i, prompt=t, vector_name=t, source_file=t) for i, t in enumerate(texts)]
    parquet = write_rows(rows, tmp_path)
    back = read_rows(parquet)
    assert [(r["prompt"], r["vector_name"], r["source_file"]) for r in back] == [(t, t, t) for t in texts]
    lines = (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(texts)  # U+2028 / U+0085 inside a prompt do not split a record
    assert [json.loads(line)["prompt"] for line in lines] == texts


def test_inspect_does_not_echo_escape_sequences(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "v.safetensors"
    save_safetensors([SteeringVector(directions={1: torch.ones(D)}, name=HOSTILE, model_hint="\x1b[2J",
                                     method="\u202emeth", notes="n\x1b[31m")], path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert not RAW_CONTROLS.search(out) and "\\x1b[31mred" in out and "\\x1b[2J" in out and "\\u202emeth" in out
    assert load_vectors(path)[0].name == HOSTILE  # escaped for display only


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tiny: LoadedModel) -> str:
    path = tmp_path_factory.mktemp("tiny-model")
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return str(path)


def test_score_hostile_prompts(tiny_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prompts = ["a \x1b[31mred\x1b[0m prompt", "carriage\rreturn inside", "\u202eevil reversed", "tab\tand\x7fdel",
               "line\u2028separator", "x" * 100_000]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts), encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(path), "--model", tiny_dir, "--out", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(prompts)
    rows = [json.loads(line) for line in lines]
    assert [r["prompt"] for r in rows] == prompts
    assert rows[-1]["truncated"] and all(0.0 <= r["realism"] <= 1.0 for r in rows)
    capsys.readouterr()


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("nul.txt", b"hello\x00world\n", "NUL byte at byte offset 5"),
        ("utf16.txt", "Explain it.\n".encode("utf-16-le"), "NUL byte"),
        ("bad.txt", b"caf\xe9\n", "not valid UTF-8"),
        ("surrogate.jsonl", b'{"prompt": "a \\ud800 b"}\n', "line 1: .*lone surrogate"),
    ],
)
def test_score_bad_prompt_files(tmp_path: Path, capsys: pytest.CaptureFixture, name: str, content: bytes,
                                match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["score", str(path), "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and re.search(match, err), err
    assert not (tmp_path / "o.jsonl").exists()


def test_pairs_unicode_line_separator_inside_json(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    pair = {"positive": "happy\u2028line", "negative": "sad\x85line"}
    path.write_text(json.dumps(pair, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_pairs(path) == [("happy\u2028line", "sad\x85line")]


def test_pairs_lone_surrogate_refused(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"positive": "a\\udc00", "negative": "b"}\n', encoding="utf-8")
    with pytest.raises(UserInputError, match=r"pairs\.jsonl:1: .*lone surrogate"):
        read_pairs(path)


# ------------------------------------------------------------------------------------ NaN / inf through the CLI
def _st(path: Path, tensor: torch.Tensor, **meta: str) -> Path:
    save_file({"layer.3": tensor}, str(path), metadata=meta or None)
    return path


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def _bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


NAN_CASES = {
    "nan": (lambda p: _st(p / "nan.safetensors", torch.full((D,), float("nan"))), [], "NaN or inf"),
    "inf": (lambda p: _st(p / "inf.safetensors", torch.tensor([1.0] * (D - 1) + [float("inf")])), [], "NaN or inf"),
    "npy_neg_inf": (lambda p: _npy(p / "ninf.npy", np.full(D, -np.inf, np.float32)), ["--layer", "2"], "NaN or inf"),
    "gguf_nan": (lambda p: _bytes(p / "nan.gguf", gguf_bytes(1, 1, ARCH + g_tensor("direction.1", [D]),
                                                             np.full(D, np.nan, np.float32).tobytes())),
                 [], "NaN or inf"),
    "norm_overflow": (lambda p: _st(p / "big.safetensors", torch.full((D,), 1e20)), [], "norm overflows float32"),
    "scale_nan_in_file": (lambda p: _st(p / "sn.safetensors", torch.ones(D), scale="nan"), [], "scale"),
    "scale_overflow_in_file": (lambda p: _st(p / "so.safetensors", torch.ones(D), scale="3e38"), [], "overflows"),
    "scale_flag_inf": (lambda p: _st(p / "ok.safetensors", torch.ones(D)), ["--scale", "inf"], "--scale inf"),
    "scale_flag_nan": (lambda p: _st(p / "ok.safetensors", torch.ones(D)), ["--scale", "nan"], "--scale nan"),
}


@pytest.mark.parametrize("case", list(NAN_CASES))
def test_cli_nan_inf_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    make, flags, match = NAN_CASES[case]
    path = make(tmp_path)
    assert main(["inspect", str(path), *flags]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("realize inspect: error: ") and str(path) in err, err
    assert match in err and captured.out == ""


def test_steer_nan_vector(tiny_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _st(tmp_path / "nan.safetensors", torch.full((32,), float("nan")), scale="1.0")
    assert main(["steer", str(path), "--model", tiny_dir, "--tokens", "2"]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and "NaN or inf" in captured.err and captured.out == ""
