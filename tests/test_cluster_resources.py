"""What a trial asks Ray for (read from its experiment config) and the one early "can this cluster ever
run a trial, and how many at once" check, against cluster.yaml and hand-made clusters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tkre.cluster.cluster_yaml import NodeShape
from tkre.config import ExperimentConfig, ResourcesConfig
from tkre.errors import ConfigError
from tkre.cluster.resources import ClusterCapacity, Request, capacity_from_nodes, cluster_capacity, fit_trials, trial_requests

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def cap(*nodes: tuple[str, dict, int]) -> ClusterCapacity:
    return ClusterCapacity([NodeShape(n, {k: float(v) for k, v in r.items()}, c) for n, r, c in nodes], ["test"])


LAPTOP = cap(("laptop", {"CPU": 2}, 1))


def exp(**sections) -> ExperimentConfig:
    return ExperimentConfig.model_validate(sections)


def train(workers=1, cpus=1.0, gpus=0.0) -> list[Request]:
    return [Request("finetune", workers, {"CPU": cpus, **({"GPU": gpus} if gpus else {})})]


def vllm(tp=1, replicas=1) -> list[Request]:
    return [Request("generation", replicas, {"CPU": 1.0, "GPU": float(tp)})]


def fits(requests, capacity, trial_cpus=0.05, concurrent=1) -> int:  # every trial asks for `requests`
    return fit_trials([requests], capacity, trial_cpus=trial_cpus, max_concurrent_trials=concurrent)


# ------------------------------------------------------------------------------------ requests

def test_train_workers_build_a_real_ray_train_scaling_config():
    from ray.train import ScalingConfig

    r = ResourcesConfig(num_workers=8, use_gpu=True, cpus_per_worker=10)
    sc = ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu, resources_per_worker=r.per_worker())
    assert sc.total_resources == {"CPU": 80.0, "GPU": 8.0}
    half = ResourcesConfig(use_gpu=True, gpus_per_worker=0.5)
    assert half.per_worker() == {"CPU": 1.0, "GPU": 0.5}
    assert ResourcesConfig(num_workers=2, cpus_per_worker=0.5).per_worker() == {"CPU": 0.5}  # no GPU key


def test_trial_requests_follow_the_stages_that_run():
    gpu = {"num_workers": 4, "use_gpu": True, "cpus_per_worker": 8}
    full = exp(pretrain={"resources": gpu}, edkg={"generator": {
        "backend": "vllm", "vllm": {"tensor_parallel_size": 2, "num_replicas": 3}}})
    assert trial_requests(full) == [Request("pretrain", 4, {"CPU": 8.0, "GPU": 1.0}),
                                    Request("finetune", 1, {"CPU": 1.0}),
                                    Request("generation", 3, {"CPU": 1.0, "GPU": 2.0})]  # SCDG inherits: one layout
    own = exp(edkg={"generator": {"backend": "vllm"}},
              scdg={"generator": {"backend": "vllm", "vllm": {"tensor_parallel_size": 4}}})
    assert [r.bundle["GPU"] for r in trial_requests(own) if r.stage == "generation"] == [1.0, 4.0]
    golden = exp(pretrain={"resources": gpu}, edkg={"generator": {"backend": "vllm"}},
                 stages={"edkg": False, "scdg": False, "pretrain_stage1": False, "pretrain_stage2": False})
    assert trial_requests(golden) == [Request("finetune", 1, {"CPU": 1.0})]  # no vLLM GPUs, no pre-training
    assert trial_requests(ExperimentConfig())[-1].stage == "finetune"  # hf generation runs on CPU actors


def test_bad_resource_values_are_config_errors():
    from pydantic import ValidationError

    from tkre.sweep.config import SweepResources

    for bad in ({"num_workers": 0}, {"gpus_per_worker": 1.5}, {"typo": 1}):
        with pytest.raises(ValidationError):
            ResourcesConfig(**bad)
    with pytest.raises(ValidationError):
        SweepResources(trial_cpus=0)


# ---------------------------------------------------------------------------------- fit checks

def test_laptop_defaults_fit_and_concurrency_is_lowered_to_what_trains_at_once():
    assert fits(trial_requests(ExperimentConfig()), LAPTOP, trial_cpus=0.5, concurrent=2) == 1
    assert fits(train(cpus=0.95), LAPTOP, concurrent=2) == 2  # the quickstart: two trials side by side
    eight = cap(("big", {"CPU": 8}, 1))
    assert fits(train(), eight, concurrent=4) == 4
    assert fits(train(), eight, concurrent=16) == 7  # 7 x (0.05 + 1) CPUs
    gpus = cap(("g", {"CPU": 16, "GPU": 4}, 1))
    assert fits(train(workers=2, gpus=1), gpus, concurrent=4) == 2


def test_concurrency_counts_the_trial_with_the_smallest_training_run():
    """The quickstart: golden-only trains on 0.95 CPU beside TKRE's generation, TKRE later on 1.9 of the
    2 cores: both run at once (TKRE's training waits for golden-only's worker), not one after the other."""
    golden, tkre = train(cpus=0.95), [Request("pretrain", 1, {"CPU": 1.9}), *train(cpus=1.9)]
    assert fit_trials([golden, tkre], LAPTOP, trial_cpus=0.05, max_concurrent_trials=2) == 2
    # a trial's peak is its largest run, whichever stage: two TKRE trials could never train at once
    assert fit_trials([tkre, tkre], LAPTOP, trial_cpus=0.05, max_concurrent_trials=2) == 1
    assert fit_trials([tkre, [Request("pretrain", 1, {"CPU": 1.9}), *golden]], LAPTOP, trial_cpus=0.05,
                      max_concurrent_trials=2) == 1
    four = cap(("n", {"CPU": 4}, 1))
    assert fit_trials([tkre, golden, tkre, golden], four, trial_cpus=0.05, max_concurrent_trials=8) == 4
    assert fit_trials([tkre, tkre, tkre], four, trial_cpus=0.05, max_concurrent_trials=8) == 2
    with pytest.raises(ConfigError, match="would wait forever"):  # 2 drivers + 1.95 > 2 CPUs: never placed
        fit_trials([golden, train(cpus=1.95)], LAPTOP, trial_cpus=0.05, max_concurrent_trials=2)


def test_concurrent_drivers_that_starve_training_fail_instead_of_hanging():
    with pytest.raises(ConfigError, match="max_concurrent_trials=2 .* would wait forever"):
        fits(train(), LAPTOP, trial_cpus=1, concurrent=2)


def test_gpu_training_on_a_cpu_cluster_fails_early_naming_the_field():
    with pytest.raises(ConfigError, match=r"Ray Train worker of finetune \(finetune.resources\).*GPU: 1.*"
                                          r"largest GPU per node: 0"):
        fits(train(gpus=1), LAPTOP)


def test_cluster_yaml_capacity_bounds_workers_replicas_and_tensor_parallel():
    capacity = cluster_capacity(str(CLUSTER_YAML), live=False)
    totals = capacity.totals()
    assert totals["GPU"] == 2 * 8 + 1 * 8 + 8 * 1  # p4d x2 + p5 x1 + g5 x8 (global max_workers 10 allows all)
    # 8-way tensor parallel on one node, 3 such replicas: fits (two A100 nodes + one H100 node)
    fits(vllm(tp=8, replicas=3), capacity)
    # a 16-GPU replica can never exist: no node has 16 GPUs
    with pytest.raises(ConfigError, match=r"vLLM replica .*GPU: 16.*ONE node.*largest GPU per node: 8"):
        fits(vllm(tp=16), capacity)
    # 4 replicas x 8 GPUs: there are 32 GPUs in total, but only 3 nodes with 8 -> cannot be placed
    with pytest.raises(ConfigError, match="num_replicas=4"):
        fits(vllm(tp=8, replicas=4), capacity)
    # 24 one-GPU train workers spread over nodes fit; 33 do not (32 GPUs in all)
    fits(train(workers=24, cpus=4, gpus=1), capacity)
    with pytest.raises(ConfigError, match=r"num_workers=33"):
        fits(train(workers=33, gpus=1), capacity)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        fits(train(gpus=1) + vllm(tp=2), LAPTOP, trial_cpus=4)
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
    fits(train(gpus=1), both)


def test_cluster_check_command_checks_a_sweep_against_the_node_types(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from tkre.cli import app
    from tkre.sweep.plan import check_cluster_file

    def sweep(name: str, base: dict) -> str:
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump({"name": name, "base": base, "resources": {"max_concurrent_trials": 4}}))
        return str(p)

    ok = sweep("fits", {"finetune": {"resources": {"num_workers": 8, "use_gpu": True}},
                        "edkg": {"generator": {"backend": "vllm",
                                               "vllm": {"tensor_parallel_size": 8, "num_replicas": 2}}}})
    summary = check_cluster_file(str(CLUSTER_YAML), ok)
    assert {"stage": "generation", "count": 2, "bundle": {"CPU": 1.0, "GPU": 8.0}} in summary["sweep"]["requests"]
    assert summary["sweep"]["concurrent_trials"] == 4
    too_big = sweep("too_big", {"edkg": {"generator": {"backend": "vllm", "vllm": {"tensor_parallel_size": 16}}}})
    with pytest.raises(ConfigError, match=r"too_big.yaml: resources: one vLLM replica"):
        check_cluster_file(str(CLUSTER_YAML), too_big)
    result = CliRunner().invoke(app, ["cluster", "check", str(CLUSTER_YAML), "--sweep", ok])
    assert result.exit_code == 0 and "sweep fits fits" in result.output.replace("\n", " ")
