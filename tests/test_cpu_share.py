"""A sweep trial's CPU generation pool reserves a fixed share of the cluster (CPUs / concurrent trials),
whatever was free when the pool started, and that share fits beside the other trials' Train workers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tkre.cluster import cpu_share
from tkre.cluster.cpu_share import CpuShare, share_for_trials
from tkre.config import ExperimentConfig, GeneratorConfig
from tkre.generate.backends import hf

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import make_tiny_llama  # noqa: E402


@pytest.mark.parametrize("total, largest, trials, threads, reserve", [
    (2, 2, 2, 1, 0.95),     # the quickstart: 2 cores, 2 trials
    (2, 2, 1, 2, 1.95),     # one trial alone: both cores
    (16, 16, 2, 8, 7.95),
    (8, 8, 3, 2, 2.0),      # 2.67 CPUs each: 2 threads, reserving no more than it runs
    (16, 4, 2, 4, 3.95),    # 4 nodes x 4 CPUs: an actor cannot span nodes
    (1, 1, 4, 1, 0.2),      # less than a CPU each: one thread on what is left
])
def test_share_of_n_cpus_for_m_concurrent_trials(total, largest, trials, threads, reserve):
    share = share_for_trials(total, largest, trials, trial_cpus=0.05)
    assert share.threads() == threads
    assert share.reservation() == pytest.approx(reserve)


def test_the_concurrent_trials_drivers_and_pools_fit_the_cluster_exactly():
    for total, trials in [(2, 2), (3, 2), (16, 3), (7, 7)]:
        share = share_for_trials(total, total, trials, trial_cpus=0.05)
        assert trials * (0.05 + share.reservation()) <= total + 1e-9


def test_a_pool_of_several_actors_splits_the_share():
    share = CpuShare(cpus=8, trial_cpus=0.05)
    assert (share.threads(2), share.reservation(2)) == (4, 3.975)
    assert (share.threads(16), share.reservation(16)) == (1, 0.4968)


def test_hf_actor_in_a_trial_uses_the_share_not_the_free_cpus(monkeypatch):
    monkeypatch.setattr(hf.os, "cpu_count", lambda: 2)  # outside Ray and a trial: every core is free
    gen = GeneratorConfig(device="cpu")
    assert hf.cpu_threads(gen) == (2, 2.0)
    with cpu_share.use(share_for_trials(2, 2, 2, trial_cpus=0.05)):
        assert hf.cpu_threads(gen) == (1, 0.95)
        assert hf.cpu_threads(gen.model_copy(update={"threads_per_actor": 3})) == (3, 3.0)  # explicit wins
        # the quickstart's SCDG: 2 threads on 1.9 reserved CPUs (the two trials' drivers hold the rest)
        fixed = gen.model_copy(update={"threads_per_actor": 2, "cpus_per_actor": 1.9})
        assert hf.cpu_threads(fixed) == (2, 1.9)
    assert cpu_share.current() is None


def test_pipeline_task_runs_the_experiment_under_its_trials_share(monkeypatch, tmp_path):
    import tkre.pipeline
    from tkre.sweep.trial import pipeline_task

    seen = []

    class Row:
        def to_flat(self):
            return {}

    def fake_run(cfg, **kwargs):
        seen.append(cpu_share.current())
        return Row()

    monkeypatch.setattr(tkre.pipeline, "run_experiment", fake_run)
    share = CpuShare(cpus=1.0, trial_cpus=0.05)
    cfg = ExperimentConfig.model_validate({"storage_path": str(tmp_path)})
    assert pipeline_task(cfg, None, 1, None, "tkre", share) == {}
    assert seen == [share] and cpu_share.current() is None


def test_a_trials_explanations_run_beside_the_other_trials_train_worker(ray_local, semeval, tmp_path):
    """2 CPUs, 2 trials: both drivers and the other trial's 0.95-CPU Train worker hold their CPUs; EDKG
    under the trial's share starts its pool at once (a pool counting free CPUs would ask for a whole
    one and wait for the Train worker to finish)."""
    import concurrent.futures

    from ray.util.placement_group import placement_group, remove_placement_group

    from tkre.config import EDKGConfig
    from tkre.data import sample_kshot
    from tkre.generate import generate_explanations

    model = make_tiny_llama(tmp_path / "tiny_llama")
    cfg = EDKGConfig(generator=GeneratorConfig(model=model, cache_dir=str(tmp_path / "cache"), batch_size=4,
                                               device="cpu"), max_new_tokens=4)
    golden = sample_kshot(semeval, 8, 1).train[:4]
    share = share_for_trials(2, 2, 2, trial_cpus=0.05)

    def edkg():
        with cpu_share.use(share):
            return generate_explanations(golden, cfg, tmp_path / "out")

    pg = placement_group([{"CPU": 0.05}, {"CPU": 0.05}, {"CPU": 0.95}])  # drivers + a Train worker
    assert pg.wait(60)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        done = pool.submit(edkg)
        manifest = done.result(timeout=180)  # TimeoutError: the pool waited for CPUs held elsewhere
        assert manifest["counts"]["generated"] == 4
    finally:
        remove_placement_group(pg)  # a pool still waiting can then finish
        pool.shutdown(wait=True)


def test_train_workers_run_their_threads_or_the_whole_cpus_they_reserve():
    from tkre.config import ResourcesConfig

    assert ResourcesConfig(cpus_per_worker=0.95).torch_threads() == 1
    assert ResourcesConfig(cpus_per_worker=2.5).torch_threads() == 2
    assert ResourcesConfig(cpus_per_worker=1.9, threads=2).torch_threads() == 2
    assert ResourcesConfig(cpus_per_worker=1.9, threads=2).per_worker() == {"CPU": 1.9}  # threads reserve nothing


def test_a_generators_reserved_cpus_leave_its_artifacts_alone():
    from tkre.pipeline import generator_key_config

    gen = GeneratorConfig(threads_per_actor=2)
    assert generator_key_config(gen) == generator_key_config(gen.model_copy(update={"cpus_per_actor": 1.9}))
    assert generator_key_config(gen) != generator_key_config(GeneratorConfig())  # threads do count (sampling)
