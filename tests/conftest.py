"""Shared fixtures: one local Ray per test session, tiny models with the real tokenizers, markers.

Slow and GPU tests are skipped by default, with the reason printed (pytest -ra):
  --run-slow   run tests marked `slow` (real models, multi-minute end-to-end runs)
  --run-gpu    run tests marked `gpu` (needs CUDA)
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu (needs CUDA)")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: long end-to-end run, enable with --run-slow")
    skip_gpu = pytest.mark.skip(reason="gpu: needs a CUDA GPU, enable with --run-gpu")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not config.getoption("--run-gpu"):
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
                                           "TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A tiny randomly initialised BERT masked LM saved with the embedded MiniLM tokenizer.

    Fast and deterministic: for shapes, masking, losses and Ray plumbing, never for quality."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from tkre.models import resolve_encoder

    out = tmp_path_factory.mktemp("tiny_encoder")
    tok = AutoTokenizer.from_pretrained(resolve_encoder("embedded:minilm"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertForMaskedLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def semeval():
    from tkre.data import load_dataset

    return load_dataset("semeval")
