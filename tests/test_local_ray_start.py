"""A sweep's own local Ray, as `tkre sweep` starts it (`tkre.cluster.runtime.init_ray`, then Tune with
W&B off), in a subprocess -- this file run as a script -- so that the job is the first on a fresh Ray
and the process has not imported wandb (~15 s on 2 cores):

- the workers get the driver's settings and tkre's worker defaults by inheritance, the job has no
  runtime env (with one, Ray's workers started ahead at start-up serve none of its actors and tasks),
  and the driver does not keep the defaults it lent its Ray;
- a Tuner run with callbacks inside `wandb_hidden(True)` leaves wandb unimported, and wandb imports
  normally afterwards."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path


def _main(out: Path) -> None:
    import ray
    from ray import tune

    from tkre.cluster.runtime import init_ray
    from tkre.sweep.tracking import RAY_WANDB_INTEGRATION, wandb_hidden

    report: dict = {}
    try:
        init_ray()
        report["driver_verbosity"] = os.environ.get("TRANSFORMERS_VERBOSITY")

        @ray.remote(num_cpus=0)
        def worker_env() -> dict:
            return {"env": {k: os.environ.get(k) for k in ("TRANSFORMERS_VERBOSITY", "TOKENIZERS_PARALLELISM",
                                                           "TKRE_TEST_SETTING")},
                    "runtime_env": dict(ray.get_runtime_context().runtime_env)}

        report.update(ray.get(worker_env.remote(), timeout=120))

        class Counted(tune.Callback):
            results = 0

            def on_trial_result(self, iteration, trials, trial, result, **info):
                Counted.results += 1

        def trainable(config):
            tune.report({"x": config["x"]})

        with wandb_hidden(True):
            tune.Tuner(trainable, param_space={"x": tune.grid_search([1, 2])},
                       run_config=tune.RunConfig(storage_path=str(out.parent / "tune"), callbacks=[Counted()],
                                                 verbose=0)).fit()
        report["tune_results"] = Counted.results
        report["wandb_after_fit"] = "wandb" in sys.modules
        report["integration_after_fit"] = RAY_WANDB_INTEGRATION in sys.modules
        importlib.import_module("wandb")  # importable again after the block
        report["wandb_imports_after"] = True
    finally:
        ray.shutdown()
    out.write_text(json.dumps(report))


def test_local_ray_inherits_settings_without_runtime_env_and_tune_skips_wandb(tmp_path):
    out = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "TRANSFORMERS_VERBOSITY", "TOKENIZERS_PARALLELISM", "WANDB_MODE")}
    env["TKRE_TEST_SETTING"] = "from-the-shell"
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["env"] == {"TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false",
                             "TKRE_TEST_SETTING": "from-the-shell"}, report
    assert report["runtime_env"] == {}, report
    assert report["driver_verbosity"] is None, report  # lent to Ray's processes, not kept
    assert report["tune_results"] == 2, report
    assert not report["wandb_after_fit"] and not report["integration_after_fit"], report
    assert report["wandb_imports_after"], report


def test_environ_defaults_lend_only_what_is_unset_and_take_it_back():
    from tkre.cluster.runtime import environ_defaults

    os.environ["TKRE_T_KEEP"] = "mine"
    os.environ.pop("TKRE_T_NEW", None)
    try:
        with environ_defaults({"TKRE_T_KEEP": "lent", "TKRE_T_NEW": "lent"}):
            assert os.environ["TKRE_T_KEEP"] == "mine" and os.environ["TKRE_T_NEW"] == "lent"
        assert os.environ["TKRE_T_KEEP"] == "mine" and "TKRE_T_NEW" not in os.environ
    finally:
        os.environ.pop("TKRE_T_KEEP", None)


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
