"""Batch audits on the tiny model through the CLI: merge, resume after SIGKILL, corrupt items, two processes
(torchrun, gloo on CPU), determinism, and write failures (disk full / read-only)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import realize.pipeline as pipeline_module
from realize.data.vectors import SteeringVector, save_safetensors
from realize.scorers.realism.model import FAST_WEIGHTS
from realize.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory) -> dict[str, Path]:
    """The tiny model saved as an HF directory, and a file of two vectors at layer 2."""
    base = tmp_path_factory.mktemp("batch")
    model_dir = base / "tiny-llama"
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    g = torch.Generator().manual_seed(0)
    vectors = [SteeringVector(directions={2: torch.randn(32, generator=g)}, scale=2.0, method="test", name=f"v{i}")
               for i in range(2)]
    save_safetensors(vectors, base / "vectors.safetensors")
    return {"model": model_dir, "vectors": base / "vectors.safetensors", "base": base}


def _args(setup: dict[str, Path], out: Path) -> list[str]:
    return ["audit", str(setup["vectors"]), "--model", str(setup["model"]), "--budget", "quick", "--out", str(out),
            "--quiet", "--no-control-cache", "--no-manifold", "--axes", "activation", "--n-null", "1",
            "--n-isotropic", "0", "--n-positive", "2",
            "--realism-weights", str(FAST_WEIGHTS)]  # judge-free: the Gemma judge's forwards were most of the time


def _rows(out: Path) -> list[dict]:
    """results.jsonl rows without the wall time, sorted by item and prompt."""
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]
    return sorted(rows, key=lambda r: (r["vector_id"], r["attack"], r["prompt"]))


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TRANSFORMERS_VERBOSITY": "error"}


@pytest.fixture(scope="module")
def reference(setup) -> Path:
    """An uninterrupted single-process run (1 thread, like the subprocesses)."""
    out = setup["base"] / "reference"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_args(setup, out)) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_run_writes_plan_items_and_outputs(reference):
    plan = json.loads((reference / "plan.json").read_text())["items"]
    assert sorted(i["kind"] for i in plan) == ["null", "positive", "positive", "vector", "vector"]
    assert sorted(p.stem for p in (reference / "items").glob("*.json")) == sorted(i["id"] for i in plan)
    rows = _rows(reference)
    assert {r["vector_id"] for r in rows} == {i["id"] for i in plan}
    assert (reference / "report.html").is_file() and (reference / "dataset" / "README.md").is_file()


def test_merge_rebuilds_the_same_outputs(reference, capsys):
    before = _rows(reference)
    (reference / "results.jsonl").unlink()
    (reference / "results.parquet").unlink()
    assert main(["merge", str(reference)]) == 0
    assert "merged 5 items" in capsys.readouterr().out
    assert _rows(reference) == before


def test_merge_refuses_missing_or_corrupt_items_then_rerun_recomputes_only_those(setup, reference, tmp_path,
                                                                                 monkeypatch, capsys):
    out = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(reference), str(out)], check=True)
    plan = json.loads((out / "plan.json").read_text())["items"]
    vector = next(i for i in plan if i["kind"] == "vector")
    (out / "items" / f"{vector['id']}.json").write_text('{"store_version": 1, "trunc', encoding="utf-8")
    assert main(["merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 of 5 planned items are not finished" in err and vector["name"] in err and err.count("\n") == 1

    computed = []
    real = pipeline_module.audit_target

    def counting(setting, target, config):
        computed.append(target.vector_id)
        return real(setting, target, config)

    monkeypatch.setattr(pipeline_module, "audit_target", counting)
    torch.set_num_threads(1)
    assert main(_args(setup, out)) == 0
    assert computed == [vector["id"]]  # nothing else recomputed, nothing silently dropped
    assert _rows(out) == _rows(reference)


def test_sigkill_mid_batch_then_resume(setup, reference, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "realize", *_args(setup, out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "items").glob("*.json"))) >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = len(list((out / "items").glob("*.json")))
    assert 1 <= done < 6, "the kill should land mid-batch"
    assert not (out / "results.jsonl").exists()

    rerun = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({done} already done)" in rerun.stdout
    rows = _rows(out)
    keys = [(r["vector_id"], r["attack"], r["prompt"]) for r in rows]
    assert len(keys) == len(set(keys))  # no duplicate rows after resume
    assert rows == _rows(reference)  # identical results: same seed, deterministic on CPU


def test_two_processes_with_torchrun_match_one_process(setup, reference, tmp_path):
    out = tmp_path / "two"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "realize", *_args(setup, out)]
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[process 0/2] finished" in run.stdout and "[process 1/2] finished" in run.stdout
    assert run.stdout.count("report:") == 1  # only the main process merges
    assert _rows(out) == _rows(reference)


def test_disk_full_while_merging_leaves_no_partial_file(reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full"
    subprocess.run(["cp", "-r", str(reference), str(out)], check=True)
    before = (out / "results.parquet").read_bytes()

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("realize.data.results_dataset.pq.write_table", full)
    assert main(["merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert "results.parquet: cannot write (No space left on device)" in err and err.count("\n") == 1
    assert (out / "results.parquet").read_bytes() == before
    assert not list(out.glob(".*.tmp"))


def test_read_only_output_dir_is_one_clear_error(setup, tmp_path, monkeypatch, capsys):
    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("realize.data.atomic.tempfile.mkstemp", read_only)  # root ignores chmod: simulate the file system
    out = tmp_path / "ro"
    assert main(_args(setup, out)) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "Read-only file system" in err and err.count("\n") == 1
    assert not (out / "results.parquet").exists() and not list(out.rglob("*.tmp"))


def test_norm_bins_share_nulls_across_rounding_only():
    from realize.targets import bin_norm, norm_bin

    assert norm_bin(12.0000001) == norm_bin(12.0) == norm_bin(11.9999999) != norm_bin(3.0)
    assert norm_bin(4.0) == norm_bin(4.5) and norm_bin(4.0) != norm_bin(4.0 * 2 ** 0.5)
    for norm in (0.3, 3.0, 48.0, 500.0, 4.0 * 2 ** 0.2499):  # nulls are drawn within 2^(1/4) of the vector's norm
        ratio = bin_norm(norm_bin(norm)) / norm
        assert 2 ** -0.25 - 1e-9 <= ratio <= 2 ** 0.25 + 1e-9


def test_audit_without_scale_is_one_error(setup, tmp_path, capsys):
    """A file without a scale stops the audit with the same one-line error as steer/behavior/optimize."""
    path = tmp_path / "noscale.safetensors"
    save_safetensors([SteeringVector(directions={2: torch.ones(32)}, name="noscale")], path)
    assert main(["audit", str(path), "--model", str(setup["model"]), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no scale" in err and "--scale" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
