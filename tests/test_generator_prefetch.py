"""A sweep driver starts converting the embedded hf generator at once (while Ray starts), and only for
experiments whose EDKG or SCDG runs it."""

from __future__ import annotations

from tkre.config import EMBEDDED_GENERATOR, ExperimentConfig
from tkre.generate.backends import hf


def _exp(**sections) -> ExperimentConfig:
    return ExperimentConfig.model_validate(sections)


def test_embedded_generator_is_converted_in_the_background_once(monkeypatch):
    converted = []
    monkeypatch.setattr(hf, "resolve_generator", lambda name: converted.append(name) or (name, "rev"))
    tkre = _exp(edkg={"generator": {"backend": "hf", "model": EMBEDDED_GENERATOR}})
    thread = hf.convert_in_background([tkre, tkre])
    assert thread is not None and thread.daemon
    thread.join(30)
    assert converted == [EMBEDDED_GENERATOR]


def test_nothing_is_converted_when_no_stage_runs_the_embedded_generator_on_hf(monkeypatch):
    monkeypatch.setattr(hf, "resolve_generator", lambda name: (_ for _ in ()).throw(AssertionError(name)))
    golden_only = _exp(stages={"edkg": False, "scdg": False, "pretrain_stage1": False, "pretrain_stage2": False})
    remote = _exp(edkg={"generator": {"backend": "openai", "model": "gpt-4o-mini"}})
    local = _exp(edkg={"generator": {"backend": "hf", "model": "/models/other"}})
    assert hf.convert_in_background([golden_only, remote, local]) is None


def test_a_failed_conversion_is_left_to_the_trial(monkeypatch):
    def fail(name):
        raise OSError("disk full")

    monkeypatch.setattr(hf, "resolve_generator", fail)
    thread = hf.convert_in_background([_exp()])
    thread.join(30)
    assert not thread.is_alive()
