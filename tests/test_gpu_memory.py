"""`tkre sweep --plan`'s GPU memory check of vLLM generators (tkre.cluster.gpu_memory)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def test_llama_13b_in_fp16_does_not_fit_an_a10g_at_tp1_and_fits_at_tp2_or_on_an_a100():
    from tkre.cluster.gpu_memory import memory_check

    name = "/not-here/Llama-2-13b-chat-hf"  # no readable config: counted from the name (13e9 x 2 bytes)
    fits, line = memory_check(name, accelerator="A10G", tensor_parallel_size=1, gpu_memory_utilization=0.9)
    assert fits is False and "26.0 GB" in line and "DOES NOT FIT" in line and "tensor_parallel_size to 2" in line
    assert "from its model name" in line
    assert memory_check(name, accelerator="A10G", tensor_parallel_size=2, gpu_memory_utilization=0.9)[0] is True
    assert memory_check(name, accelerator="A100", tensor_parallel_size=1, gpu_memory_utilization=0.9)[0] is True
    fits, line = memory_check(name, accelerator=None, tensor_parallel_size=1, gpu_memory_utilization=0.9)
    assert fits is None and "vllm.accelerator_type unset" in line


def test_parameters_are_counted_from_the_config_on_the_meta_device(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from tiny_models import make_tiny_llama
    from tkre.cluster.gpu_memory import model_weights

    path = make_tiny_llama(tmp_path / "llama")
    w = model_weights(path)
    real = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).parameters())
    assert w.source == "config" and w.params == real and w.dtype_bytes in (2, 4)


def test_plan_shows_the_accelerator_and_memory_check_of_paper_table2():
    from tkre.sweep.config import load_sweep, resolve_sweep_file
    from tkre.sweep.plan import gpu_memory_lines, plan_trials

    lines = gpu_memory_lines(plan_trials(load_sweep(resolve_sweep_file("paper_table2"))))
    assert len(lines) == 1 and lines[0].startswith("edkg+scdg: meta-llama/Llama-2-13b-chat-hf"), lines
    assert "accelerator A100" in lines[0] and "fits" in lines[0], lines


def test_plan_reads_model_configs_locally_only(monkeypatch):
    """--plan never asks the Hub (it retried with back-off for ~a minute per model where unreachable)."""
    import transformers

    from tkre.cluster import gpu_memory

    seen = {}

    def fake(model, **kw):
        seen.update(kw)
        raise OSError("not in the local cache")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fake)
    gpu_memory.model_weights.cache_clear()
    w = gpu_memory.model_weights("meta-llama/Llama-2-13b-chat-hf")
    assert seen.get("local_files_only") is True
    assert w is not None and w.source == "model name" and w.params == 13e9
