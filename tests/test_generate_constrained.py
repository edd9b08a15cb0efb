"""Constrained SCDG (issue 15): the one JSON schema, its parser, and the hf backend enforcing it at decode
time with llguidance on a tiny Llama; per-row sampling seeds independent of batch-mates; threads and
reserved CPUs that agree; constrained and free generations cached under different keys."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tkre.config import DecodingConfig, GeneratorConfig, SCDGConfig
from tkre.data import relation_type_schema
from tkre.generate import generate_synthetic, read_rejects
from tkre.generate import parse, validate
from tkre.generate.backends import backend_spec, create_backend
from tkre.generate.schema import scdg_schema, schema_json

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import make_tiny_llama  # noqa: E402

REL = "Cause-Effect(e1,e2)"
PAIRS = [["PERSON", "ORGANIZATION"], ["PERSON", "CITY"]]
#: enough new tokens for any output of the schema (every masked token writes >= 1 character)
ROOMY = 560


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama_c"))


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def backend(tiny_llama, request):
    """The hf backend on CPU (float32), and on a CUDA GPU (float16) with --run-gpu."""
    return create_backend(GeneratorConfig(model=tiny_llama, threads_per_actor=1, device=request.param))


# ------------------------------------------------------------------------------------------ schema + parser

def test_schema_fixes_relation_and_restricts_types():
    free = scdg_schema(REL, 3)
    arr = free["properties"]["samples"]
    assert arr["minItems"] == arr["maxItems"] == 3 and free["required"] == ["samples"]
    assert arr["items"]["properties"]["relation"] == {"type": "string", "enum": [REL]}
    assert set(arr["items"]["required"]) == {"relation", "context"}  # SemEval: no type fields; entities marked
    pattern = re.compile(arr["items"]["properties"]["context"]["pattern"])
    assert pattern.match("The <head>fire</head> came from a <tail>short circuit</tail> .")
    assert pattern.match("<tail>Smoke</tail> came from the <head>tyres</head> .")  # either order
    for bad in ("The fire came from a <tail>short circuit</tail> .",  # the head is not marked
                "The <head>fire</head> and <head>smoke</head> came from a <tail>spark</tail> .",  # twice
                "The <head></head> came from a <tail>spark</tail> .",  # empty entity
                'The <head>fire</head> said "hi" to a <tail>spark</tail> .'):  # a quote: no JSON escapes
        assert not pattern.match(bad), bad
    typed = scdg_schema("per:employee_of", 1, PAIRS)["properties"]["samples"]["items"]["anyOf"]
    assert sorted((b["properties"]["head_type"]["enum"][0], b["properties"]["tail_type"]["enum"][0])
                  for b in typed) == sorted(map(tuple, PAIRS))
    with pytest.raises(ValueError):
        scdg_schema(REL, 0)


def test_json_parser_reads_marked_entities_where_they_are_marked():
    v = validate.SampleValidator([], {}, source="t")
    text = json.dumps({"samples": [
        {"relation": REL, "context": "The  fire near the <head> fire </head> came from a <tail>short circuit</tail> ."},
        {"relation": REL, "context": "<tail>Smoke</tail> came from the <head>tyres</head> ."},
        {"relation": REL, "context": "The <head>fir</head>e came from a <tail>spark</tail> ."},  # inside a word
        {"relation": REL, "context": "The <head>fire</head> came from a spark ."}]})  # no tail mark
    outs = v.validate_completion(text, REL, json_format=True)
    assert [o.reason for o in outs] == [None, None, parse.SUBJECT_NOT_IN_CONTEXT, parse.UNPARSEABLE]
    first, second = outs[0].example, outs[1].example
    # the marked occurrence (the second "fire"), not the first one a search would find; spaces normalised
    assert " ".join(first.tokens) == "The fire near the fire came from a short circuit ."
    assert (first.subj_start, first.subj_end, first.object) == (4, 5, "short circuit")
    assert (second.subject, second.object, second.obj_start) == ("tyres", "Smoke", 0)
    assert "inside a word" in outs[2].detail and "marked once" in outs[3].detail


def test_json_parser_reads_samples_salvages_cut_output_and_falls_back_to_text():
    good = {"relation": REL, "context": "The fire was caused by a short circuit .", "head": "fire",
            "tail": "short circuit"}
    text = json.dumps({"samples": [good, {**good, "context": "Smoke came from the tyres .", "head": "Smoke",
                                          "tail": "tyres"}]})
    v = validate.SampleValidator([], {}, source="t")
    outs = v.validate_completion(text, REL, json_format=True)  # entity fields (a server's own JSON) still read
    assert [o.reason for o in outs] == [None, None] and outs[0].example.object == "short circuit"
    cut = text[: text.rindex("Smoke") + 3]  # stopped by max_new_tokens inside the second sample
    assert [s.reason for s in parse.parse_json_samples(cut)] == [None, parse.TRUNCATED]
    assert parse.parse_json_samples('{"samples": [{"relation": "x"}]}')[0].reason == parse.MISSING_FIELD
    assert parse.parse_json_samples('{"samples": [{"relation": "x", "context": 1, "head": "a", "tail": "b"}]}'
                                    )[0].reason == parse.UNPARSEABLE
    assert parse.parse_json_samples("")[0].reason == parse.EMPTY_OUTPUT
    # a server that ignored the schema answered free text: the free-text parser reads it
    free = ("Relation: Cause-Effect(e1,e2).\nContext: the smoke came from the fire .\nHead Entity: smoke.\n"
            "Head Type: .\nTail Entity: fire.\nTail Type: .\n")
    assert [o.reason for o in v.validate_completion(free, REL, json_format=True)] == [None]


# ------------------------------------------------------------------------------------------ hf backend

def test_hf_constrained_outputs_always_parse_and_follow_the_schema(backend):
    """A random tiny model, sampled and greedy: every constrained output is JSON of its row's schema."""
    schemas = [schema_json(scdg_schema(REL, 2)), schema_json(scdg_schema("per:employee_of", 1, PAIRS)), None]
    prompts = ["Write samples.", "Write one typed sample, please, in JSON.", "free text row"]
    for sampling in (DecodingConfig(temperature=0.9, max_new_tokens=ROOMY), DecodingConfig(temperature=0.0,
                                                                                          max_new_tokens=ROOMY)):
        rows = backend.generate_rows(prompts, sampling, [1, 2, 3], schemas)
        assert [r.constrained for r in rows] == [True, True, False]
        first, second = (json.loads(r.text)["samples"] for r in rows[:2])
        assert len(first) == 2 and all(s["relation"] == REL and set(s) == {"relation", "context"}
                                       and s["context"].count("<head>") == s["context"].count("<tail>") == 1
                                       for s in first)
        [typed] = second
        assert typed["relation"] == "per:employee_of" and [typed["head_type"], typed["tail_type"]] in PAIRS
        assert all(0 < r.tokens < ROOMY for r in rows[:2])  # it stopped by itself, at EOS


def test_decode_drops_finished_rows_and_writes_what_generate_writes(backend):
    """The hf backend's own decode loop: the same tokens as transformers' `generate` over the same
    processors (greedy and sampled), while a row that is done leaves the batch at once."""
    import torch

    from tkre.generate.backends import hf_decoding

    tok, model = backend.tokenizer, backend.model
    schemas = [schema_json(scdg_schema(REL, 1)), None, None]
    enc = tok(["Write one sample.", "a free row", "another free row, longer"], return_tensors="pt",
              padding=True).to(model.device)
    for temperature in (0.0, 0.9):
        def procs():
            mask = hf_decoding.SchemaMask(backend._ll_tokenizer(), [backend._grammar(x) if x else None
                                                                    for x in schemas], backend.eos_ids)
            return hf_decoding.processors(temperature=temperature, top_p=0.95, top_k=backend.top_k,
                                          seeds=[1, 2, 3], mask=mask)
        batch_sizes: list[int] = []
        hook = model.register_forward_pre_hook(lambda m, a, kw: batch_sizes.append(kw["input_ids"].shape[0]),
                                               with_kwargs=True)
        try:
            mine = hf_decoding.decode(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=ROOMY,
                                      eos_ids=backend.eos_ids, procs=procs())
        finally:
            hook.remove()
        with torch.inference_mode():
            ref = model.generate(**enc, max_new_tokens=ROOMY, do_sample=False, temperature=None, top_p=None,
                                 top_k=None, pad_token_id=tok.pad_token_id, logits_processor=procs())
        for row, ids in enumerate(ref[:, enc["input_ids"].shape[1]:].tolist()):
            end = next((j + 1 for j, t in enumerate(ids) if t in backend.eos_ids), len(ids))
            assert mine[row] == ids[:end], (temperature, row)
        lengths = [len(m) for m in mine]
        assert len(set(lengths)) > 1, lengths  # the check below needs rows of different lengths
        # step k computes exactly the rows that have not ended before it
        assert batch_sizes == [sum(n > k for n in lengths) for k in range(max(lengths))], lengths


def test_hf_bad_schema_fails_its_row_only(backend):
    rows = backend.generate_rows(["a", "b"], DecodingConfig(temperature=0.0, max_new_tokens=4), [1, 2],
                                 ["{not a schema", None])
    assert rows[0].text is None and "schema" in rows[0].error
    assert rows[1].error is None and rows[1].text is not None


def test_sampled_row_does_not_depend_on_its_batch_mates(backend, monkeypatch):
    """A sampled row sees its own logits only and draws from its own generator (seeded by its key), so
    its batch-mates cannot steer it -- up to float rounding, which the test does not pretend away.

    A batched forward pass computes a row's logits with other kernels than a one-row pass (MKL on an
    AVX-512 CPU: the last bit of a one-row matmul differs, ~1e-7; float16 GPU kernels by more), and a draw
    that lands within that rounding of the boundary between two tokens goes either way. On a tiny random
    model's near-flat logits that happens within a few steps on some machines and never on others, so
    comparing texts across batches tests the machine, not the code. The two halves of the claim are
    checked instead, each exactly: (a) at every step, until its text diverges (if ever), the row's
    logits agree across batches to float tolerance: no padding, position or KV-cache leak from
    batch-mates; (b) in every batch, its tokens are what a lone sampler with its seed draws from those
    logits: no random state shared with batch-mates (`torch.manual_seed` + batched `multinomial` fails)."""
    import numpy as np
    import torch

    from tkre.generate.backends import hf_decoding

    seed, prompt, sampler = 7, "Tell me about rivers.", hf_decoding.RowSampler
    traces: list[list[tuple[np.ndarray, int]]] = []  # per call: the seed-7 row's (logits, token) per step
    settings: dict = {}  # the samplers' temperature, top-k, top-p

    class Recording(sampler):
        def __init__(self, seeds, **kw):
            super().__init__(seeds, **kw)
            self.target = list(seeds).index(seed)
            settings.update(kw)
            traces.append([])

        def __call__(self, input_ids, scores):
            out = super().__call__(input_ids, scores)
            rows = list(self.batch_rows(scores.shape[0]))
            if self.target in rows:
                pos = rows.index(self.target)
                traces[-1].append((scores[pos].float().cpu().numpy().copy(), int(out[pos].argmax())))
            return out

    monkeypatch.setattr(hf_decoding, "RowSampler", Recording)
    s = DecodingConfig(temperature=1.0, top_p=1.0, max_new_tokens=12)
    alone = backend.generate_rows([prompt], s, [seed])[0]
    backend.generate_rows(["x", prompt, "a much longer prompt than the others here"], s, [1, seed, 3])
    backend.generate_rows([prompt, "y"], s, [seed, 99])
    assert len(traces) == 3 and len(traces[0]) == alone.tokens > 1  # one call each, no retry alone
    # float32 rounding; float16 on a GPU (a batch-mate's padding leaking into the row moves logits ~2e-2)
    tolerance = 1e-5 if backend.device == "cpu" else 5e-3
    for n, trace in enumerate(traces[1:], 1):
        for step, ((mine, token), (theirs, their_token)) in enumerate(zip(traces[0], trace)):
            assert np.abs(mine - theirs).max() < tolerance, f"batch {n}, step {step}: logits differ from alone"
            if token != their_token:
                break  # rounding moved a draw: the prompts differ from here on
    for trace in traces:
        lone = sampler([seed], **settings)
        drawn = [int(lone(None, torch.from_numpy(x)[None]).argmax()) for x, _ in trace]
        assert drawn == [t for _, t in trace], "a row's draws are not its own seed's on its own logits"
    assert backend.generate_rows([prompt], s, [seed + 1])[0].text != alone.text  # the seed matters


def test_hf_samples_with_the_top_k_transformers_would_use(backend, monkeypatch):
    """The tiny model's generation config sets no top-k; transformers' own sampling then keeps the top 50
    (transformers 5 leaves the config's field None and fills the default in at `generate`): the backend
    must too, not sample the whole vocabulary's tail."""
    import torch
    from transformers import TopKLogitsWarper

    assert backend.model.generation_config.top_k is None  # the case under test
    used: list[int] = []
    init = TopKLogitsWarper.__init__

    def recording_init(self, top_k, *args, **kwargs):
        used.append(top_k)
        init(self, top_k, *args, **kwargs)

    monkeypatch.setattr(TopKLogitsWarper, "__init__", recording_init)
    with torch.inference_mode():
        backend.model.generate(torch.tensor([[1, 5, 6]], device=backend.model.device), do_sample=True,
                               max_new_tokens=1, pad_token_id=backend.tokenizer.pad_token_id)
    assert used and backend.top_k == used[0]


def test_hf_actor_reserves_the_cpus_it_uses(tiny_llama):
    spec = backend_spec(GeneratorConfig(model=tiny_llama, threads_per_actor=2, device="cpu"))
    assert spec.num_cpus == 2 and spec.init_kwargs["threads"] == 2
    default = backend_spec(GeneratorConfig(model=tiny_llama, concurrency=2, device="cpu"))
    assert default.num_cpus == default.init_kwargs["threads"] >= 1


# ------------------------------------------------------------------------------------------ pipeline

def test_constrained_and_free_scdg_are_cached_apart(ray_local, tiny_llama, semeval, tmp_path):
    from tkre.data import sample_kshot

    golden = sample_kshot(semeval, 8, 1).train
    rel = golden[0].relation
    gen = GeneratorConfig(model=tiny_llama, cache_dir=str(tmp_path / "cache"), threads_per_actor=1,
                          sampling={"temperature": 0.7})
    runs = {}
    for constrained in (True, False, True):
        cfg = SCDGConfig(generator=gen, samples_per_prompt=1, prompt_examples=1, max_rounds=1, max_new_tokens=ROOMY,
                         constrained=constrained, samples_per_relation=2)
        runs.setdefault(constrained, []).append(generate_synthetic(
            golden, relation_type_schema(golden), cfg, tmp_path / f"s{constrained}", relations=[rel]))
    c1, c2 = runs[True]
    [free] = runs[False]
    assert c1["counts"]["generated"] == 2 and free["counts"]["generated"] == 2  # free did not reuse constrained
    assert c2["counts"]["cache_hits"] == 2 and c2["counts"]["generated"] == 0
    assert c1["constrained"] is True and free["constrained"] is False and c1["counts"]["unconstrained"] == 0
    parse_failures = {parse.UNPARSEABLE, parse.TRUNCATED, parse.MISSING_FIELD, parse.WRONG_RELATION}
    assert not parse_failures & set(c1["reasons"]), c1["reasons"]
    assert all(json.loads(r["raw"])["relation"] == rel for r in read_rejects(tmp_path / "sTrue"))
