"""The `resources:` block -> Ray requests (Tune placement group, Train ScalingConfig, vLLM processor)
and the early "can this cluster ever run a trial" check, against cluster.yaml and hand-made clusters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tkre.cluster import NodeShape
from tkre.config import ExperimentConfig, ResourcesConfig
from tkre.errors import ConfigError
from tkre.resources import (ClusterCapacity, ClusterResourcesConfig, apply_to_experiment, capacity_from_nodes,
                            check_fits, cluster_capacity, scaling_config_kwargs, train_resources,
                            trial_resources, vllm_processor_kwargs)

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def cap(*nodes: tuple[str, dict, int]) -> ClusterCapacity:
    return ClusterCapacity([NodeShape(n, {k: float(v) for k, v in r.items()}, c) for n, r, c in nodes], ["test"])


LAPTOP = cap(("laptop", {"CPU": 2}, 1))


# ------------------------------------------------------------------------------------- mapping

def test_trial_placement_group_reserves_only_the_driver():
    pgf = trial_resources(ClusterResourcesConfig(trial_cpus=0.25, train_workers=4, gpus_per_worker=1))
    assert pgf.bundles == [{"CPU": 0.25}]
    assert pgf.required_resources == {"CPU": 0.25}


def test_scaling_config_arguments_build_a_real_ray_train_scaling_config():
    from ray.train import ScalingConfig

    cfg = ClusterResourcesConfig(train_workers=8, cpus_per_worker=10, gpus_per_worker=1,
                                 placement_strategy="STRICT_PACK")
    kwargs = scaling_config_kwargs(cfg)
    assert kwargs == {"num_workers": 8, "use_gpu": True, "resources_per_worker": {"CPU": 10.0, "GPU": 1.0},
                      "placement_strategy": "STRICT_PACK"}
    sc = ScalingConfig(**kwargs)
    assert sc.total_resources == {"CPU": 80.0, "GPU": 8.0}
    cpu = scaling_config_kwargs(ClusterResourcesConfig(train_workers=2, cpus_per_worker=0.5))
    assert ScalingConfig(**cpu).total_resources == {"CPU": 1.0}
    # fractional GPUs survive the trip through the training stages' ResourcesConfig
    half = train_resources(ClusterResourcesConfig(gpus_per_worker=0.5))
    assert half.use_gpu and scaling_config_kwargs(half)["resources_per_worker"]["GPU"] == 0.5
    # a plain stage config (what train_loop.fit receives) maps the same way
    assert scaling_config_kwargs(ResourcesConfig(num_workers=2))["resources_per_worker"] == {"CPU": 1.0}


def test_one_block_sets_every_stage_of_an_experiment():
    cfg = ClusterResourcesConfig(train_workers=2, cpus_per_worker=4, gpus_per_worker=1,
                                 generation_tensor_parallel=4, generation_replicas=2)
    exp = apply_to_experiment(cfg, ExperimentConfig())
    assert (exp.generation.vllm.tensor_parallel_size, exp.generation.vllm.num_replicas) == (4, 2)
    for stage in (exp.pretrain, exp.finetune):
        assert (stage.resources.num_workers, stage.resources.use_gpu, stage.resources.cpus_per_worker) == (2, True, 4)
    assert ExperimentConfig().generation.vllm.tensor_parallel_size == 1  # the input is not mutated
    assert vllm_processor_kwargs(cfg) == {"concurrency": 2, "tensor_parallel_size": 4}


def test_bad_resource_values_are_config_errors():
    from pydantic import ValidationError

    for bad in ({"train_workers": 0}, {"trial_cpus": 0}, {"gpus_per_worker": 1.5}, {"typo": 1}):
        with pytest.raises(ValidationError):
            ClusterResourcesConfig(**bad)


# ---------------------------------------------------------------------------------- fit checks

def test_laptop_defaults_fit_and_two_concurrent_trials_with_half_cpu_drivers_fit():
    check_fits(ClusterResourcesConfig(), LAPTOP)
    check_fits(ClusterResourcesConfig(trial_cpus=0.5, max_concurrent_trials=2), LAPTOP)


def test_concurrent_drivers_that_starve_training_fail_instead_of_hanging():
    with pytest.raises(ConfigError, match="max_concurrent_trials=2 .* would wait forever"):
        check_fits(ClusterResourcesConfig(trial_cpus=1, max_concurrent_trials=2), LAPTOP)


def test_gpu_training_on_a_cpu_cluster_fails_early_naming_the_field():
    with pytest.raises(ConfigError, match=r"Ray Train worker .*GPU: 1.*largest GPU per node: 0"):
        check_fits(ClusterResourcesConfig(gpus_per_worker=1), LAPTOP)


def test_cluster_yaml_capacity_bounds_workers_replicas_and_tensor_parallel():
    capacity = cluster_capacity(str(CLUSTER_YAML), live=False)
    totals = capacity.totals()
    assert totals["GPU"] == 2 * 8 + 1 * 8 + 8 * 1  # p4d x2 + p5 x1 + g5 x8 (global max_workers 10 allows all)
    # 8-way tensor parallel on one node, 3 such replicas: fits (two A100 nodes + one H100 node)
    check_fits(ClusterResourcesConfig(generation_tensor_parallel=8, generation_replicas=3), capacity, uses_vllm=True)
    # a 16-GPU replica can never exist: no node has 16 GPUs
    with pytest.raises(ConfigError, match=r"vLLM replica .*GPU: 16.*ONE node.*largest GPU per node: 8"):
        check_fits(ClusterResourcesConfig(generation_tensor_parallel=16), capacity, uses_vllm=True)
    # 4 replicas x 8 GPUs: there are 32 GPUs in total, but only 3 nodes with 8 -> cannot be placed
    with pytest.raises(ConfigError, match="generation_replicas=4"):
        check_fits(ClusterResourcesConfig(generation_tensor_parallel=8, generation_replicas=4), capacity,
                   uses_vllm=True)
    # ...while the same config without vLLM generation does not ask for those GPUs at all
    check_fits(ClusterResourcesConfig(generation_tensor_parallel=8, generation_replicas=4), capacity)
    # 24 one-GPU train workers spread over nodes: fits with PACK; 16 on ONE node (STRICT_PACK) does not
    check_fits(ClusterResourcesConfig(train_workers=24, cpus_per_worker=4, gpus_per_worker=1), capacity)
    with pytest.raises(ConfigError, match=r"train_workers=33"):
        check_fits(ClusterResourcesConfig(train_workers=33, cpus_per_worker=1, gpus_per_worker=1), capacity)
    with pytest.raises(ConfigError, match=r"STRICT_PACK"):
        check_fits(ClusterResourcesConfig(train_workers=16, gpus_per_worker=1, placement_strategy="STRICT_PACK"),
                   capacity)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        check_fits(ClusterResourcesConfig(trial_cpus=4, gpus_per_worker=1, generation_tensor_parallel=2),
                   LAPTOP, uses_vllm=True)
    lines = str(e.value).splitlines()
    assert len(lines) == 3 and all(line.startswith("resources: ") for line in lines)


def test_live_capacity_reads_ray_nodes_and_skips_dead_ones(ray_local):
    import ray

    live = capacity_from_nodes(ray.nodes())
    assert live.totals()["CPU"] == 2
    dead = capacity_from_nodes([{"Alive": False, "Resources": {"CPU": 64.0}, "NodeID": "x" * 10}])
    assert dead.shapes == []
    both = cluster_capacity({"max_workers": 1, "head_node_type": "h",
                             "available_node_types": {"h": {"resources": {"CPU": 1}, "node_config": {}},
                                                      "g": {"resources": {"CPU": 8, "GPU": 1}, "node_config": {},
                                                            "max_workers": 1}}})
    assert both.totals()["GPU"] == 1 and both.totals()["CPU"] >= 9  # autoscaler types + the live 2-CPU node
    check_fits(ClusterResourcesConfig(gpus_per_worker=1), both)


def test_resources_for_experiments_is_the_inverse_of_apply_and_takes_the_peak():
    from tkre.resources import resources_for, uses_vllm

    base = ExperimentConfig()
    big = apply_to_experiment(ClusterResourcesConfig(train_workers=4, cpus_per_worker=8, gpus_per_worker=1,
                                                     generation_tensor_parallel=2, generation_replicas=3), base)
    big = big.model_copy(update={"generation": big.generation.model_copy(update={"backend": "vllm"})})
    peak = resources_for([base, big], trial_cpus=0.25, max_concurrent_trials=3)
    assert (peak.train_workers, peak.cpus_per_worker, peak.gpus_per_worker) == (4, 8, 1)
    assert (peak.generation_tensor_parallel, peak.generation_replicas) == (2, 3)
    assert (peak.trial_cpus, peak.max_concurrent_trials) == (0.25, 3)
    assert uses_vllm([base, big]) and not uses_vllm([base])
    # only_set: a block that names only the concurrency leaves every stage as the experiment had it
    kept = apply_to_experiment(ClusterResourcesConfig(max_concurrent_trials=4), big, only_set=True)
    assert kept.finetune.resources == big.finetune.resources and kept.generation.vllm == big.generation.vllm


def test_cluster_check_command_checks_a_sweep_against_the_node_types(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from tkre.cli import app
    from tkre.resources import check_cluster_file

    def sweep(name: str, base: dict) -> str:
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump({"name": name, "base": base, "resources": {"max_concurrent_trials": 4}}))
        return str(p)

    ok = sweep("fits", {"finetune": {"resources": {"num_workers": 8, "use_gpu": True}},
                        "generation": {"backend": "vllm", "vllm": {"tensor_parallel_size": 8, "num_replicas": 2}}})
    summary = check_cluster_file(str(CLUSTER_YAML), ok)
    assert summary["sweep"]["uses_vllm"] and summary["sweep"]["resources"]["generation_tensor_parallel"] == 8
    too_big = sweep("too_big", {"generation": {"backend": "vllm", "vllm": {"tensor_parallel_size": 16}}})
    with pytest.raises(ConfigError, match=r"too_big.yaml: resources: one vLLM replica"):
        check_cluster_file(str(CLUSTER_YAML), too_big)
    result = CliRunner().invoke(app, ["cluster", "check", str(CLUSTER_YAML), "--sweep", ok])
    assert result.exit_code == 0 and "sweep fits fits" in result.output.replace("\n", " ")
