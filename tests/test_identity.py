"""Keys that cannot go stale: every input an item's result depends on changes its id; configurations and identities
round-trip through JSON as typed objects."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

import realize.identity as identity_module
from realize.config import BUDGETS, AuditConfig
from realize.data.models import LoadedModel
from realize.identity import AuditIdentity, realism_digest, source_digest, model_digest
from realize.scorers.realism import RealismClassifier
from realize.scorers.realism import FEATURE_NAMES
from realize.targets import item_id


@pytest.fixture()
def classifier() -> RealismClassifier:
    n = len(FEATURE_NAMES)
    return RealismClassifier(FEATURE_NAMES, torch.zeros(n), torch.ones(n), ((torch.zeros(1, n), torch.tensor([2.0])),))


def _id(identity: AuditIdentity, kind: str = "null") -> str:
    return item_id(kind, {2: torch.ones(32)}, None, 1.0, identity.item_key())


def test_every_input_changes_the_item_id(tiny, classifier, monkeypatch):
    config = AuditConfig(budget="quick")
    base = AuditIdentity.of(tiny, config, classifier)
    ids = {"base": _id(base)}
    # the full weights: one value of one tensor, far beyond any sample of the first values
    model = copy.deepcopy(tiny.model)
    with torch.no_grad():
        model.model.layers[-1].mlp.down_proj.weight[-1, -1] += 1e-3
    ids["weights"] = _id(AuditIdentity.of(LoadedModel(model, tiny.tokenizer, tiny.name, tiny.path), config,
                                          classifier))
    # every resolved setting, not the preset's name
    faster = dataclasses.replace(config, search=dataclasses.replace(BUDGETS["quick"], steps=7))
    ids["search"] = _id(dataclasses.replace(base, config=faster))
    ids["siblings"] = _id(dataclasses.replace(base, config=dataclasses.replace(config, n_siblings=3)))
    # the realism judge: its parameters and threshold
    ids["realism"] = _id(dataclasses.replace(base, realism=realism_digest(dataclasses.replace(classifier,
                                                                                           threshold=0.3))))
    # the package's own source and the corpora
    ids["source"] = _id(dataclasses.replace(base, evidence_source="0" * 16))
    ids["corpora"] = _id(dataclasses.replace(base, corpora="1" * 16))
    assert len(set(ids.values())) == len(ids), ids
    # the count of controls and the verdict thresholds do not change an item (verdicts are recomputed)
    more = dataclasses.replace(config, n_null=9, thresholds=dataclasses.replace(config.thresholds, partial_score=0.3))
    assert _id(dataclasses.replace(base, config=more)) == ids["base"]
    assert model_digest(tiny) != model_digest(LoadedModel(model, tiny.tokenizer, tiny.name, tiny.path))


def test_model_digest_covers_config_and_tokenizer_not_where_the_model_was_saved(tiny):
    base = model_digest(tiny)
    model = copy.deepcopy(tiny.model)
    model.config.rms_norm_eps = 1e-3  # same weights, other arithmetic
    assert model_digest(LoadedModel(model, tiny.tokenizer, tiny.name, tiny.path)) != base
    model = copy.deepcopy(tiny.model)
    model.config._name_or_path = "/somewhere/else"  # provenance only
    assert model_digest(LoadedModel(model, tiny.tokenizer, tiny.name, "/somewhere/else")) == base
    tokenizer = copy.deepcopy(tiny.tokenizer)
    tokenizer.chat_template = "{{ messages[0]['content'] }}"
    assert model_digest(LoadedModel(tiny.model, tokenizer, tiny.name, tiny.path)) != base
    tokenizer = copy.deepcopy(tiny.tokenizer)
    tokenizer.add_tokens(["<extra>"])
    assert model_digest(LoadedModel(tiny.model, tokenizer, tiny.name, tiny.path)) != base
    assert model_digest(tiny) == base  # nothing above touched the fixture


def test_the_gguf_cache_writer_is_not_in_item_keys():
    # its product is: a faster writer that yields the same model keeps every key (and the shipped calibration)
    assert any(name == "data/gguf_cache.py" for name, _ in identity_module._package_files())
    assert "data/gguf_cache.py" in identity_module.NOT_EVIDENCE


def test_source_digest_follows_evidence_code_only(tmp_path, monkeypatch):
    evidence, report = tmp_path / "search.py", tmp_path / "report.py"
    evidence.write_text("x = 1\n")
    report.write_text("y = 1\n")
    monkeypatch.setattr(identity_module, "_package_files",
                        lambda: [("attacks/search.py", evidence), ("realize/report.py", report)])
    source_digest.cache_clear()
    before = source_digest()
    report.write_text("y = 2\n")
    source_digest.cache_clear()
    assert source_digest() == before  # presentation code: verdicts and reports are recomputed, items are not
    assert source_digest(evidence_only=False) != before
    evidence.write_text("x = 2\n")
    source_digest.cache_clear()
    assert source_digest() != before
    source_digest.cache_clear()


def test_config_and_identity_round_trip(tiny, classifier):
    config = AuditConfig(budget="quick", n_null=5, axes=("behavior",), show_progress=False)
    assert AuditConfig.from_json(config.to_json()) == config
    identity = AuditIdentity.of(tiny, config, classifier)
    back = AuditIdentity.from_json(identity.to_json())
    assert back.config == dataclasses.replace(config, show_progress=True) and back.weights == identity.weights
    with pytest.raises(ValueError, match="unknown fields"):
        AuditConfig.from_json({**config.to_json(), "generic_specific": 0.5})
    with pytest.raises(ValueError, match="missing fields"):
        AuditIdentity.from_json({k: v for k, v in identity.to_json().items() if k != "realism"})


def test_shipped_environment_mismatch_names_each_package_that_differs(tmp_path):
    from importlib.metadata import version

    from realize.pipeline import shipped_environment_mismatch

    env = tmp_path / "environment.txt"
    env.write_text(f"# a comment == with spaces\ntorch=={version('torch')}\n# wordfreq==0.0.1\n"
                   "no-such-package-here==1.0\n")
    assert shipped_environment_mismatch(env) == ["wordfreq: shipped 0.0.1, installed " + version("wordfreq"),
                                                 "no-such-package-here: shipped 1.0, installed absent"]
    assert shipped_environment_mismatch(tmp_path / "missing.txt") == []


def test_written_shipped_environment_matches_the_environment_that_wrote_it(tmp_path):
    from realize.pipeline import shipped_environment_mismatch, write_shipped_environment

    path = tmp_path / "environment.txt"
    write_shipped_environment(path)
    assert shipped_environment_mismatch(path) == []
    assert sum(line.count("==") for line in path.read_text().splitlines() if not line.startswith("#")) == 3


def test_a_directory_resumes_after_a_judging_change_and_refuses_an_evidence_change(tiny, classifier, tmp_path):
    from realize.data.errors import UserInputError
    from realize.outputs import IDENTITY, prepare_directory

    here = AuditIdentity.of(tiny, AuditConfig(budget="quick"), classifier)
    out = tmp_path / "audit"
    prepare_directory(out, dataclasses.replace(here, source="an older package"), overwrite=False)
    prepare_directory(out, here, overwrite=False)  # only code that judges or writes changed: the items stay valid
    assert AuditIdentity.from_json(json.loads((out / IDENTITY).read_text())).source == here.source
    with pytest.raises(UserInputError, match="different audit"):
        prepare_directory(out, dataclasses.replace(here, evidence_source="other evidence code"), overwrite=False)


def test_a_directory_resumes_under_other_judging_thresholds_but_not_another_min_realism(tiny, classifier, tmp_path):
    """`--content-test` / `--content-level` on a finished --out only judge again (the items do not hash them, and
    audit.json then records the thresholds the outputs were judged with); `--min-realism` changes what the search
    keeps, so it is another audit."""
    from realize.data.errors import UserInputError
    from realize.outputs import IDENTITY, ITEMS, prepare_directory
    from realize.verdict import VerdictThresholds

    base = AuditConfig(budget="quick")
    out = tmp_path / "audit"
    prepare_directory(out, AuditIdentity.of(tiny, base, classifier), overwrite=False)
    (out / ITEMS).mkdir()
    (out / ITEMS / "kept.json").write_text("{}")
    strict = dataclasses.replace(base, thresholds=VerdictThresholds(content_reference="nearest", content_level=0.95))
    prepare_directory(out, AuditIdentity.of(tiny, strict, classifier), overwrite=False)
    assert (out / ITEMS / "kept.json").is_file()
    recorded = json.loads((out / IDENTITY).read_text())["config"]["thresholds"]
    assert (recorded["content_reference"], recorded["content_level"]) == ("nearest", 0.95)
    other = dataclasses.replace(base, thresholds=VerdictThresholds(min_realism=0.2))
    with pytest.raises(UserInputError, match="different audit"):
        prepare_directory(out, AuditIdentity.of(tiny, other, classifier), overwrite=False)
