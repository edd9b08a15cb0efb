"""SCDG rounds: relations short of samples are topped up, round after round, until every relation has
its target or `max_rounds` is reached; each completion's token budget is sized for the samples asked.

The LLM is replaced by a scripted function at the `generate_rows` seam (no model, no Ray), so the
test controls exactly how many valid samples each completion holds."""

from __future__ import annotations

import itertools

import pytest

from tkre.config import GeneratorConfig, SCDGConfig
from tkre.data.records import RelationExample
from tkre.generate import read_synthetic, synthetic
from tkre.generate.backends import BackendSpec

A, B = "Cause-Effect(e1,e2)", "Component-Whole(e1,e2)"


def _ex(i: int, rel: str) -> RelationExample:
    toks = tuple(f"golden {rel} example {i} : fire caused smoke .".split())
    return RelationExample(id=f"{rel}-{i}", tokens=toks, subj_start=5, subj_end=6, obj_start=7, obj_end=8,
                           relation=rel)


GOLDEN = [_ex(i, r) for r in (A, B) for i in range(4)]


class ScriptedLLM:
    """Each completion holds `valid[relation]` new, valid samples; records what every round asked."""

    def __init__(self, valid: dict[str, int]):
        self.valid = valid
        self.rounds: list[list[str]] = []
        self.budgets: set[int] = set()
        self.counter = itertools.count()
        self.pools: set[int] = set()

    def __call__(self, rows, spec, gen, sampling, cache, *, desc="", engines=None):
        self.rounds.append([row["relation"] for row in rows])
        self.pools.add(id(engines))  # every round gets the job's one engine pool
        self.budgets.add(sampling.max_new_tokens)
        out = {}
        for row in rows:
            samples = []
            for _ in range(self.valid[row["relation"]]):
                n = next(self.counter)
                samples.append(f"Relation: {row['relation']}.\nContext: the storm number {n} broke the dam .\n"
                               f"Head Entity: storm.\nTail Entity: dam.\n")
            out[row["key"]] = {"text": "\n".join(samples) or "no idea", "tokens": 5, "error": None, "cached": False}
        from tkre.generate.run import RunStats

        return out, RunStats(rows=len(rows), generated=len(rows), tokens=5 * len(rows), seconds=0.01)


@pytest.fixture
def fake_backend(monkeypatch):
    spec = BackendSpec(name="hf", cls="x:y", init_kwargs={}, model_id="scripted", revision="r", generator="hf:scripted")
    monkeypatch.setattr(synthetic, "backend_spec", lambda gen: spec)


def _run(tmp_path, llm, monkeypatch, per_relation=3, **kw):
    monkeypatch.setattr(synthetic, "generate_rows", llm)
    cfg = SCDGConfig(generator=GeneratorConfig(cache_dir=str(tmp_path / "cache")), samples_per_prompt=2,
                     prompt_examples=2, samples_per_relation=per_relation, **kw)
    return synthetic.generate_synthetic(GOLDEN, {}, cfg, tmp_path / "out", relations=[A, B])


def test_rounds_top_up_only_relations_short_of_samples(tmp_path, fake_backend, monkeypatch):
    llm = ScriptedLLM({A: 2, B: 1})  # A fills up in round 1; B needs a second round
    m = _run(tmp_path, llm, monkeypatch)  # default max_rounds (paper: until every relation has its samples)
    # round 1: ceil(3 / 2) = 2 prompts per relation; round 2: B only, 1 missing -> 1 prompt
    assert llm.rounds == [[A, A, B, B], [B]]
    assert len(llm.pools) == 1 and id(None) not in llm.pools  # one pool for both rounds
    assert m["rounds"] == 2 and m["relations_short"] == {}
    assert {r: a["kept"] for r, a in m["acceptance"].items()} == {A: 3, B: 3}
    assert m["reasons"] == {"surplus": 1}  # A's fourth valid sample
    assert len(read_synthetic(tmp_path / "out")) == 6
    # the budget is sized for the samples one prompt asks for: 2 x 128 new tokens
    assert llm.budgets == {2 * SCDGConfig().tokens_per_sample}


def test_rounds_stop_at_max_rounds_and_report_the_shortfall(tmp_path, fake_backend, monkeypatch):
    llm = ScriptedLLM({A: 2, B: 0})  # B never yields a valid sample
    m = _run(tmp_path, llm, monkeypatch, max_rounds=4, max_new_tokens=77)
    assert len(llm.rounds) == 4 and all(r == [B, B] for r in llm.rounds[1:])
    assert m["rounds"] == m["max_rounds"] == 4 and m["relations_short"] == {B: 0}
    assert llm.budgets == {77}  # an explicit budget wins


def test_successive_prompts_show_the_golden_samples_in_new_orders():
    """K = 8 shown 8 at a time: every prompt shows the same set, so from the second prompt on the order
    changes (seeded by relation and prompt index: the same on every run)."""
    golden = [_ex(i, "r") for i in range(8)]
    prompts = [synthetic.shown_examples(golden, "r", g, 8) for g in range(4)]
    assert prompts[0] == golden  # the first prompt: the golden order
    assert all(sorted(p, key=lambda e: e.id) == sorted(golden, key=lambda e: e.id) for p in prompts)
    assert len({tuple(e.id for e in p) for p in prompts}) == 4
    assert synthetic.shown_examples(golden, "r", 2, 8) == prompts[2]
    assert synthetic.shown_examples(golden, "other", 2, 8) != prompts[2]
    # more golden samples than shown: successive prompts start further on
    assert {e.id for e in synthetic.shown_examples(golden, "r", 1, 3)} == {golden[i].id for i in (3, 4, 5)}
