"""Secrets never written (issue 14, item 1): a planted API key reaches the code that needs it, and no
file under the Ray session directory, the storage path, the generation cache or W&B's directories
holds it after a small sweep (W&B offline) and an openai generation against the fixture server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
import uuid
from pathlib import Path

from sweep_helpers import golden_only_base, write_mini_dataset, write_sweep
from tiny_models import make_tiny_llama

SERVER = Path(__file__).parent / "fixtures" / "openai_server.py"

DRIVER = textwrap.dedent('''
    import hashlib, json, os, sys
    import ray
    from tkre.config import EDKGConfig, GeneratorConfig, OpenAIConfig
    from tkre.data import load_dataset, sample_kshot
    from tkre.generate import generate_explanations
    from tkre.sweep.run import run_sweep

    sweep_file, base_url, cache, out = sys.argv[1:5]
    res = run_sweep(sweep_file)
    status = list(res.rows["status"])

    @ray.remote(num_cpus=0)
    def worker_sees(digests):  # compares hashes inside the worker: no secret is passed or returned
        return {n: hashlib.sha256(os.environ.get(n, "").encode()).hexdigest() == d for n, d in digests.items()}

    sees = ray.get(worker_sees.remote({n: hashlib.sha256(os.environ[n].encode()).hexdigest()
                                       for n in ("OPENAI_API_KEY", "WANDB_API_KEY")}))
    golden = sample_kshot(load_dataset("semeval"), 8, 1).train[:3]
    gen = GeneratorConfig(backend="openai", model="tiny", cache_dir=cache, batch_size=4,
                          sampling={"temperature": 0.0},
                          openai=OpenAIConfig(base_url=base_url, api_key_env="OPENAI_API_KEY"))
    cfg = EDKGConfig(generator=gen, max_new_tokens=4)
    m = generate_explanations(golden, cfg, out)
    print("RESULT " + json.dumps({"status": status, "sees": sees, "written": m["counts"]["written"]}), flush=True)
    ray.shutdown()
''')


def _files_with(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                data = p.read_bytes()
                hits += [f"{p} ({n[:6].decode()}...)" for n in needles if n in data]
        except OSError:  # sockets, files removed while we walk
            continue
    return hits


def test_planted_keys_reach_workers_and_are_written_nowhere(tmp_path, semeval, tiny_encoder_dir):
    openai_key = f"sk-planted-{uuid.uuid4().hex}"
    wandb_key = uuid.uuid4().hex + uuid.uuid4().hex[:8]  # 40 hex digits, like a real W&B key
    hf_token = f"hf_planted{uuid.uuid4().hex}"
    data = write_mini_dataset(semeval, tmp_path / "data", n_train=3, n_dev=2, n_test=2)
    store = tmp_path / "store"
    sweep = {"name": "secrets", "base": golden_only_base(data, tiny_encoder_dir, store, epochs=1),
             "grid": {"data.seed": [1]}, "min_free_gb": 0, "trial_timeout_s": 600,
             "wandb": {"enabled": True, "project": "tkre-secrets-test"}}
    path = write_sweep(tmp_path / "secrets.yaml", sweep)
    llama = make_tiny_llama(tmp_path / "llama")
    ray_tmp = Path(tempfile.mkdtemp(prefix="tkre-sec-", dir="/tmp"))  # short: Ray's socket paths
    wandb_dirs = {n: tmp_path / "wandb" / n for n in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR",
                                                       "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")}
    for d in wandb_dirs.values():
        d.mkdir(parents=True)
    (tmp_path / "driver.py").write_text(DRIVER)
    srv = subprocess.Popen([sys.executable, str(SERVER), "--model", llama], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        line = srv.stdout.readline()
        assert line.startswith("PORT "), line
        url = f"http://127.0.0.1:{int(line.split()[1])}"
        env = {**os.environ, "OPENAI_API_KEY": openai_key, "WANDB_API_KEY": wandb_key, "HF_TOKEN": hf_token,
               "WANDB_MODE": "offline", "RAY_TMPDIR": str(ray_tmp), "RAY_ADDRESS": "local",
               **{k: str(v) for k, v in wandb_dirs.items()}}
        proc = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(path), f"{url}/v1",
                               str(tmp_path / "cache"), str(tmp_path / "gen")], env=env, capture_output=True,
                              text=True, timeout=900, cwd=str(tmp_path))
        with urllib.request.urlopen(f"{url}/stats", timeout=10) as r:
            auth = set(json.loads(r.read())["auth"])
    finally:
        srv.terminate()
        srv.wait(30)
    output = proc.stdout + proc.stderr
    try:
        assert proc.returncode == 0, output[-4000:]
        result = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
        assert result["status"] == ["ok"] and result["written"] == 3
        assert result["sees"] == {"OPENAI_API_KEY": True, "WANDB_API_KEY": True}  # a local Ray inherits them
        assert auth == {f"Bearer {openai_key}"}  # the key did reach the server
        sessions = list((ray_tmp / "ray").glob("session_*"))
        assert sessions and any((s / "logs").is_dir() for s in sessions)
        assert list((store / "sweeps" / "secrets").rglob("*.wandb")), "W&B wrote no offline run to check"
        needles = [openai_key.encode(), wandb_key.encode(), hf_token.encode()]
        hits = []
        for root in (ray_tmp, store, tmp_path / "cache", tmp_path / "gen", tmp_path / "wandb"):
            hits += _files_with(root, needles)
        assert not hits, hits
        for key in (openai_key, wandb_key, hf_token):
            assert key not in output
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
