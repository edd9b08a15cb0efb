"""cluster.yaml: validated offline against Ray's own autoscaler schema (no cloud SDK, no private Ray
module); no secrets; shared storage is a URI; every node runs Ray's LLM image and installs tkre from the
mounted repository; the Hugging Face cache is on the host; node types declare the resources tkre checks."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tkre.cluster.cluster_yaml import (_ray_autoscaler_file, docker_env, driver_runtime_env, load_cluster_yaml,
                                       node_shapes, secret_findings, validate_cluster_config)
from tkre.errors import ConfigError

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return load_cluster_yaml(CLUSTER_YAML)


def test_cluster_yaml_passes_rays_autoscaler_schema_offline(raw, monkeypatch):
    # no cloud credentials anywhere: preparing + validating must not need them
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    prepared = validate_cluster_config(raw, str(CLUSTER_YAML))
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]
    # the defaults were filled (validate_config demands cluster_synced_files) and setup merged per role
    assert "cluster_synced_files" in prepared
    assert any("pip install" in c and "$HOME/tkre" in c for c in prepared["worker_setup_commands"])
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


def test_schema_validation_really_rejects_bad_files(raw):
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_8x_a100"]["resources"]["GPU"] = "eight"
    with pytest.raises(ConfigError, match=r"available_node_types\.gpu_8x_a100\.resources\.GPU"):
        validate_cluster_config(bad, "bad.yaml")
    typo = copy.deepcopy(raw)
    typo["max_worker"] = 3  # unknown top-level key
    with pytest.raises(ConfigError, match="max_worker"):
        validate_cluster_config(typo, "typo.yaml")
    wrong_head = copy.deepcopy(raw)
    wrong_head["head_node_type"] = "nope"
    with pytest.raises(ConfigError, match="head_node_type"):
        validate_cluster_config(wrong_head, "head.yaml")


def test_schema_validation_checks_what_ray_up_checks(raw):
    bad_docker = copy.deepcopy(raw)
    bad_docker["docker"].pop("container_name")
    with pytest.raises(ConfigError, match="docker"):
        validate_cluster_config(bad_docker, "docker.yaml")
    too_many = copy.deepcopy(raw)
    too_many["available_node_types"]["gpu_8x_a100"]["min_workers"] = raw["max_workers"] + 1
    with pytest.raises(ConfigError, match="min_workers"):
        validate_cluster_config(too_many, "min.yaml")
    with pytest.raises(ConfigError, match=r"provider\.type"):
        validate_cluster_config({**raw, "provider": {"type": "nope"}}, "provider.yaml")
    bad_setup = copy.deepcopy(raw)
    bad_setup["setup_commands"] = "pip install tkre"
    with pytest.raises(ConfigError, match="setup_commands"):
        validate_cluster_config(bad_setup, "setup.yaml")


def test_validation_equals_rays_own_prepare_and_validate(raw):
    """What `ray up` itself does to the file (Ray's private prepare_config/validate_config, imported here
    only, never in tkre) gives the same prepared config and rejects the same files."""
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError as e:  # pragma: no cover - only on a Ray upgrade
        pytest.fail(f"Ray moved its cluster-file validators ({e}): compare with the new ones")
    ours = validate_cluster_config(raw, "cluster.yaml")
    rays = prepare_config(copy.deepcopy(raw))
    validate_config(rays)
    assert ours == rays
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_8x_a100"]["resources"]["GPU"] = "eight"
    with pytest.raises(Exception):
        validate_config(prepare_config(bad))


def test_no_cloud_sdk_or_private_ray_module_is_needed():
    """A fresh machine has no boto3: validating the cluster file must not import it, nor Ray's
    private autoscaler modules (tkre uses only the data files Ray ships)."""
    script = ("import sys; sys.modules['boto3'] = sys.modules['botocore'] = None\n"
              "from tkre.cluster.cluster_yaml import load_cluster_yaml, validate_cluster_config\n"
              f"validate_cluster_config(load_cluster_yaml({str(CLUSTER_YAML)!r}))\n"
              "print(sorted(m for m in sys.modules if m.startswith('ray.autoscaler._private')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_no_secret_literals_in_cluster_yaml():
    text = CLUSTER_YAML.read_text()
    assert secret_findings(text) == []
    for name in ("WANDB_API_KEY", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"):
        for line in text.splitlines():
            if name in line and not line.lstrip().startswith("#"):
                pytest.fail(f"{name} set in cluster.yaml: {line.strip()}")
    # and the detector does catch the shapes it is meant to catch
    assert secret_findings("env: OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx")
    assert secret_findings("- --env WANDB_API_KEY=0123456789abcdef0123456789abcdef01234567")
    assert secret_findings("key: AKIAABCDEFGHIJKLMNOP")


def test_storage_path_is_a_shared_uri(raw):
    env = docker_env(raw)
    storage = env.get("TKRE_STORAGE_PATH")
    assert storage, "cluster.yaml must set TKRE_STORAGE_PATH for every container"
    scheme = storage.split("://", 1)[0] if "://" in storage else ""
    assert scheme in {"s3", "gs", "gcs", "hdfs", "abfs"}, f"storage {storage!r} is not a cloud URI"
    import pyarrow.fs as pafs  # the URI must be one pyarrow.fs understands (parsed only, no network)
    assert hasattr(pafs, {"s3": "S3FileSystem", "gs": "GcsFileSystem"}.get(scheme, "HadoopFileSystem"))


def test_every_node_runs_rays_llm_image_and_installs_tkre_from_the_mounted_repo_without_heavy_deps(raw):
    """vLLM and CUDA torch come with the image, not from pip at every boot: tkre is installed with its
    plain dependencies, the image's ray/torch/vllm/transformers pinned as constraints."""
    mounts = raw["file_mounts"]
    repo_remote = next(remote for remote, local in mounts.items() if local == ".")
    setup = raw["setup_commands"]
    install = next(c for c in setup if "pip install" in c and "tkre" in c)
    assert repo_remote.replace("~", "$HOME") in install and "[vllm]" not in install
    pins = next(c for c in setup if "/tmp/image-pins.txt" in c and "pip list" in c)
    assert "-c /tmp/image-pins.txt" in install and setup.index(pins) < setup.index(install)
    for package in ("ray", "torch", "vllm"):
        assert package in pins
    image = raw["docker"]["image"]
    assert image.startswith("rayproject/ray-llm:2.60.0-py312-"), image  # Ray's LLM images: Python 3.12 only
    import ray

    assert image.split(":")[1].startswith(ray.__version__ + "-")


def test_hugging_face_cache_lives_on_the_hosts_disk(raw):
    """A restarted container must not download the model weights again: HF_HOME is inside a host volume
    (a `-v host:container` docker option) whose host folder an initialization command creates."""
    env = docker_env(raw)
    hf_home = env["HF_HOME"]
    volumes = [o.split()[1].split(":") for o in raw["docker"]["run_options"] if str(o).startswith("-v ")]
    hosts = [host for host, target in volumes if hf_home == target or hf_home.startswith(target.rstrip("/") + "/")]
    assert hosts, f"HF_HOME {hf_home} is not on a host volume: {volumes}"
    assert any(hosts[0] in c and "mkdir -p" in c for c in raw["initialization_commands"])


def test_node_types_declare_resources_tkre_can_check(raw):
    shapes = {s.name: s for s in node_shapes(raw)}
    assert set(shapes) == set(raw["available_node_types"])
    assert shapes["head"].max_count == 1 and shapes["head"].resources.get("GPU", 0) == 0
    gpu8 = [s for s in shapes.values() if s.resources.get("GPU", 0) == 8]
    gpu1 = [s for s in shapes.values() if s.resources.get("GPU", 0) == 1]
    assert gpu8 and gpu1, "an 8-GPU type (vLLM tensor parallel, multi-GPU training) and a 1-GPU type"
    assert sum(s.max_count for s in shapes.values() if s.name != "head") >= raw["max_workers"] > 0


def test_driver_runtime_env_takes_only_listed_settings_never_secrets():
    env = {"WANDB_API_KEY": "x" * 40, "OPENAI_API_KEY": "sk-test", "AWS_SECRET_ACCESS_KEY": "no", "EMPTY": "",
           "HF_TOKEN": "hf_x", "WANDB_PROJECT": "p", "OPENAI_BASE_URL": "http://h/v1"}
    out = driver_runtime_env(environ=env)
    assert out == {"env_vars": {"WANDB_PROJECT": "p", "OPENAI_BASE_URL": "http://h/v1"}}  # Ray logs runtime envs
    assert driver_runtime_env(environ=env, extra={"HF_TOKEN": "hf_y", "TOKENIZERS_PARALLELISM": "false"}) == {
        "env_vars": {"WANDB_PROJECT": "p", "OPENAI_BASE_URL": "http://h/v1", "TOKENIZERS_PARALLELISM": "false"}}
    json.dumps(out)  # usable as --runtime-env-json


def test_missing_or_broken_cluster_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such cluster file"):
        load_cluster_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_cluster_yaml(tmp_path / "bad.yaml")


def test_driver_runtime_env_skips_keys_a_submitted_job_already_sets():
    from tkre.cluster.cluster_yaml import driver_runtime_env

    shell = {"WANDB_API_KEY": "k" * 40, "OPENAI_API_KEY": "sk-x", "WANDB_MODE": "online", "PATH": "/bin",
             "WANDB_PROJECT": "p"}
    # secrets never go into a runtime env (Ray writes it to logs/runtime_env_agent.log), even via `extra`
    assert driver_runtime_env(environ=shell, extra={"MY_API_TOKEN": "t"}) == {
        "env_vars": {"WANDB_MODE": "online", "WANDB_PROJECT": "p"}}
    job = {**shell, "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(
        {"runtime_env": {"working_dir": "gcs://x.zip", "env_vars": {"WANDB_MODE": "online"}}})}
    out = driver_runtime_env(environ=job, extra={"HF_HUB_OFFLINE": "1"})
    assert out == {"env_vars": {"WANDB_PROJECT": "p", "HF_HUB_OFFLINE": "1"}}
    # and Ray's own merge accepts it (a repeated key would make ray.init raise in the job's driver)
    from ray.runtime_env.runtime_env import _merge_runtime_env

    job_env = json.loads(job["RAY_JOB_CONFIG_JSON_ENV_VAR"])["runtime_env"]
    assert _merge_runtime_env(job_env, out) is not None
    assert _merge_runtime_env(job_env, {"env_vars": {"WANDB_MODE": "online"}}) is None
    assert driver_runtime_env(environ={}) == {}


#: The instance profile `ray up` gives an AWS head whose node_config names none.
RAY_DEFAULT_INSTANCE_PROFILE = "ray-autoscaler-v1"


def test_rays_default_instance_profile_is_the_one_the_tests_assume():
    # read from Ray's source, not imported: ray.autoscaler._private.aws.config imports boto3
    source = _ray_autoscaler_file("_private/aws/config.py")
    prefix = re.search(r'^RAY = "([^"]+)"$', source, flags=re.M)
    suffix = re.search(r'^DEFAULT_RAY_INSTANCE_PROFILE = RAY \+ "([^"]+)"$', source, flags=re.M)
    assert prefix and suffix, "Ray changed how it names its default instance profile"
    assert prefix.group(1) + suffix.group(1) == RAY_DEFAULT_INSTANCE_PROFILE


def _profile_name(profile: dict | None) -> str | None:
    """`{Name: n}` or `{Arn: arn:aws:iam::ACCOUNT:instance-profile/n}` -> n."""
    if not profile:
        return None
    return profile.get("Name") or str(profile.get("Arn", "")).rsplit("instance-profile/", 1)[-1] or None


def storage_writers_without_the_heads_profile(raw: dict) -> list[str]:
    """Node types that write to the s3:// store but would run without the head's instance profile.
    Every node type writes to it (the head runs the trial drivers, GPU workers upload checkpoints and
    artifacts). A head without one gets Ray's default profile (ray.autoscaler's AWS _configure_iam_role)."""
    if not docker_env(raw).get("TKRE_STORAGE_PATH", "").startswith("s3://"):
        return []
    types = raw["available_node_types"]
    head = _profile_name(types[raw["head_node_type"]]["node_config"].get("IamInstanceProfile"))
    head = head or RAY_DEFAULT_INSTANCE_PROFILE
    return [name for name, t in types.items()
            if name != raw["head_node_type"] and _profile_name(t["node_config"].get("IamInstanceProfile")) != head]


def test_every_node_type_that_writes_to_s3_has_the_heads_instance_profile(raw):
    assert raw["provider"]["type"] == "aws" and docker_env(raw)["TKRE_STORAGE_PATH"].startswith("s3://")
    gpu_types = [n for n, t in raw["available_node_types"].items() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types
    assert storage_writers_without_the_heads_profile(raw) == []
    for name in gpu_types:  # the check does catch a worker type without it, or with another profile
        for profile in (None, {"Name": "some-other-profile"}):
            bad = copy.deepcopy(raw)
            bad["available_node_types"][name]["node_config"].pop("IamInstanceProfile", None)
            if profile:
                bad["available_node_types"][name]["node_config"]["IamInstanceProfile"] = profile
            assert storage_writers_without_the_heads_profile(bad) == [name]
    # a head that names its own profile: the workers must name the same one
    own = copy.deepcopy(raw)
    own["available_node_types"][own["head_node_type"]]["node_config"]["IamInstanceProfile"] = {
        "Arn": "arn:aws:iam::123456789012:instance-profile/tkre-node"}
    assert sorted(storage_writers_without_the_heads_profile(own)) == sorted(gpu_types)


def test_cluster_check_refuses_a_file_with_a_secret_and_names_the_line(tmp_path):
    from tkre.sweep.plan import check_cluster_file

    leaky = tmp_path / "cluster.yaml"
    text = CLUSTER_YAML.read_text()
    leaky.write_text(text + "\n# - --env WANDB_API_KEY=0123456789abcdef0123456789abcdef01234567\n")
    with pytest.raises(ConfigError, match=r"line \d+: .*never write them into the cluster file") as e:
        check_cluster_file(str(leaky))
    assert "0123456789abcdef" not in str(e.value)
    assert check_cluster_file(str(CLUSTER_YAML))["storage"].startswith("s3://")


def test_secret_names_are_whole_words():
    from tkre.cluster.cluster_yaml import is_secret_name

    for name in ("WANDB_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "GCP_CREDENTIALS", "TOKEN"):
        assert is_secret_name(name), name
    for name in ("TOKENIZERS_PARALLELISM", "WANDB_PROJECT", "MONKEY_PATCH", "KEYBOARD"):
        assert not is_secret_name(name), name
