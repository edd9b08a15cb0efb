"""Shared fixtures: one local Ray per test session, tiny models with the real tokenizers, markers.

Slow and GPU tests are skipped by default, with the reason printed (pytest -ra):
  --run-slow   run tests marked `slow` (real models, multi-minute end-to-end runs)
  --run-gpu    run tests marked `gpu` (needs CUDA)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny_models.py, tests/sweep_helpers.py

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


def init_local_ray(**resources):
    """A local Ray (2 CPUs) as every test uses it; `resources`: ray.init's num_gpus / resources, which
    a test may declare (Ray schedules on them; nothing checks that the hardware exists)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
                                       "TOKENIZERS_PARALLELISM": "false"}}, **resources)
    return ray


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        init_local_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_with_gpus(ray_local):
    """A local Ray that declares 2 GPUs of type A10G (Ray's `accelerator_type:A10G` resource) for one
    module, so that GPU requests really schedule on a CPU machine; the shared one is back afterwards."""
    ray_local.shutdown()
    init_local_ray(num_gpus=2, resources={"accelerator_type:A10G": 2})
    yield ray_local
    ray_local.shutdown()
    init_local_ray()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A tiny randomly initialised BERT masked LM saved with the embedded MiniLM tokenizer.

    Fast and deterministic: for shapes, masking, losses and Ray plumbing, never for quality."""
    from tiny_models import make_tiny_encoder

    return make_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"))


@pytest.fixture(scope="session")
def semeval():
    from tkre.data import load_dataset

    return load_dataset("semeval")
