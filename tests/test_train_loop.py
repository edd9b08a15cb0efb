"""The shared Ray Train loop on local Ray: learning, best-epoch selection, resume after a crash
(new trainer with the same run name, and automatic retries), callbacks, Ray Tune forwarding."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from tkre.config import ResourcesConfig
from tkre.train_loop import FitResult, LoopSettings, decay_parameter_groups, fit


def _register_by_value():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules


class RegressionTask:
    """y = x @ w + 0.5 learnt by a linear layer; evaluate = MSE on a fixed held-out set."""

    def __init__(self, n: int = 64, fail_at_epoch: int | None = None, marker: str | None = None):
        self.n, self.fail_at_epoch, self.marker = n, fail_at_epoch, marker

    def _data(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 4, generator=g)
        return x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.5

    def build_model(self):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))

    def train_dataset(self):
        x, y = self._data(self.n, 1)
        return [{"x": x[i], "y": y[i]} for i in range(self.n)]

    def collate(self, items):
        return {"x": torch.stack([i["x"] for i in items]), "y": torch.stack([i["y"] for i in items])}

    def loss(self, model, batch):
        mse = torch.nn.functional.mse_loss(model(batch["x"]).squeeze(-1), batch["y"])
        return mse, {"mse": float(mse)}

    def evaluate(self, model, epoch):
        if self.fail_at_epoch is not None and epoch == self.fail_at_epoch and not os.path.exists(self.marker):
            Path(self.marker).write_text("crashed once")
            raise RuntimeError(f"deliberate crash at epoch {epoch}")
        x, y = self._data(32, 2)
        return {"eval_mse": float(torch.nn.functional.mse_loss(model(x).squeeze(-1), y))}

    def save(self, model, directory):
        os.makedirs(directory, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(directory, "weights.pt"))


def _settings(epochs=4, **kw):
    return LoopSettings(epochs=epochs, lr=0.05, batch_size=8, grad_accum=2, warmup_ratio=0.1, seed=3, log_every=1000,
                        select_metric="eval_mse", select_mode="min", **kw)


def _weights(result: FitResult):
    return torch.load(os.path.join(result.best_checkpoint_dir, "weights.pt"))


def test_weight_decay_skips_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    model.add_module("final_norm", torch.nn.Linear(3, 3, bias=False))  # by name, as the HF Trainer does
    decay, no_decay = decay_parameter_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 3])] and len(no_decay["params"]) == 4
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


class _RecordingCallback:
    """A Ray Train UserCallback (runs on the controller) that appends each report's epoch to a file."""

    def __new__(cls, path):
        from ray.train import UserCallback

        class Recorder(UserCallback):
            def __init__(self, p):
                self.p = p

            def after_report(self, run_context, metrics, checkpoint):
                with open(self.p, "a") as f:
                    f.write(json.dumps({"epoch": metrics[0]["epoch"], "ckpt": checkpoint is not None}) + "\n")

        return Recorder(path)


def test_two_workers_learn_select_best_epoch_and_call_callbacks(ray_local, tmp_path):
    _register_by_value()
    import io

    from rich.console import Console

    from tkre.console import ProgressBar

    log = tmp_path / "reports.jsonl"
    shown = io.StringIO()
    with ProgressBar("training", console=Console(file=shown, width=200)):  # the CLI commands' bar
        result = fit(RegressionTask(), _settings(), ResourcesConfig(num_workers=2, cpus_per_worker=1.0),
                     run_name="two_workers", storage_path=str(tmp_path / "runs"),
                     callbacks=[_RecordingCallback(str(log))])
    h = result.metrics_history
    assert [m["epoch"] for m in h] == [0, 1, 2, 3]
    assert h[-1]["eval_mse"] < 0.5 * h[0]["eval_mse"]  # it learns
    # 64 examples / 2 workers / 4 per worker = 8 micro-batches = 4 optimizer steps per epoch
    assert result.summary["steps_per_epoch"] == 4 and result.summary["global_step"] == 16
    assert [m["global_step"] for m in h] == [4, 8, 12, 16]
    # linear warm-up over round(0.1 * 16) = 2 steps, then linear decay to 0 at step 16
    assert [m["lr"] for m in h] == pytest.approx([0.05 * (16 - s) / 14 for s in (4, 8, 12, 16)])
    assert h[0]["samples_per_s"] > 0 and "train_mse" in h[0]
    best = min(h, key=lambda m: m["eval_mse"])
    assert result.summary["best_epoch"] == best["epoch"]
    assert result.best_checkpoint_dir.endswith(f"epoch_{best['epoch']:04d}/model")
    assert set(_weights(result)) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [0, 1, 2, 3]
    # the bar got rank 0's progress events: last epoch, last step, the epoch's train loss
    assert "training: epoch 4/4 step 16/16 train_loss" in shown.getvalue(), shown.getvalue()


def test_crashed_run_resumes_with_same_steps_and_weights(ray_local, tmp_path):
    """A new trainer with the same run name continues from the last checkpoint (ray#45516), at an
    epoch's end or inside an epoch, and ends with exactly the step count and weights of an
    uninterrupted run."""
    import ray.train

    _register_by_value()
    res = ResourcesConfig(num_workers=1, cpus_per_worker=1.0)
    clean = fit(RegressionTask(), _settings(), res, run_name="clean", storage_path=str(tmp_path / "runs"))

    crashing = RegressionTask(fail_at_epoch=2, marker=str(tmp_path / "crashed"))
    with pytest.raises(ray.train.TrainingFailedError):
        fit(crashing, _settings(), res, run_name="crashy", storage_path=str(tmp_path / "runs"))
    saved = sorted(p.name for p in (tmp_path / "runs" / "crashy").glob("epoch_*"))
    assert saved[-1] == "epoch_0001"  # the crash came before epoch 2 was reported (older ones may be pruned)

    resumed = fit(crashing, _settings(), res, run_name="crashy", storage_path=str(tmp_path / "runs"))
    assert resumed.summary["resumed_from_epoch"] == 2
    assert resumed.summary["global_step"] == clean.summary["global_step"] == 4 * 4  # 64 / 8 per batch / accum 2 = 4 per epoch
    assert [m["epoch"] for m in resumed.metrics_history] == [0, 1, 2, 3]
    assert [m["global_step"] for m in resumed.metrics_history] == [m["global_step"] for m in clean.metrics_history]
    for a, b in zip(resumed.metrics_history, clean.metrics_history):
        assert a["eval_mse"] == pytest.approx(b["eval_mse"], rel=1e-5)
    w_clean, w_resumed = _weights(clean), _weights(resumed)
    assert all(torch.allclose(w_clean[k], w_resumed[k], atol=1e-6) for k in w_clean)

    # Evaluating every 6 steps (4 per epoch): at steps 6 (inside epoch 1), 12, 16. A crash at step 12's
    # evaluation leaves the mid-epoch checkpoint of step 6; the resumed run skips epoch 1's first 4
    # micro-batches and ends where the uninterrupted per-epoch run does: the evaluation schedule and the
    # resume point change nothing in the training.
    mid = RegressionTask(fail_at_epoch=2, marker=str(tmp_path / "crashed_mid"))
    with pytest.raises(ray.train.TrainingFailedError):
        fit(mid, _settings(eval_every_steps=6), res, run_name="mid", storage_path=str(tmp_path / "runs"))
    assert sorted(p.name for p in (tmp_path / "runs" / "mid").glob("step_*")) == ["step_000006"]
    resumed = fit(mid, _settings(eval_every_steps=6), res, run_name="mid", storage_path=str(tmp_path / "runs"))
    assert resumed.summary["resumed_from_epoch"] == 1 and resumed.summary["resumed_from_step"] == 6
    assert [(m["epoch"], m["global_step"]) for m in resumed.metrics_history] == [(1, 6), (2, 12), (3, 16)]
    by_step = {m["global_step"]: m["eval_mse"] for m in clean.metrics_history}
    for m in resumed.metrics_history[1:]:
        assert m["eval_mse"] == pytest.approx(by_step[m["global_step"]], rel=1e-5)
    best = min(resumed.metrics_history, key=lambda m: m["eval_mse"])
    assert resumed.best_checkpoint_dir.endswith(f"step_{best['global_step']:06d}/model")


def test_evaluation_points_and_resume_points():
    from tkre.loop_schedule import evaluates_after_step, evaluates_at_epoch_end, resume_point

    every_22 = _settings(max_steps=110, eval_every_steps=22)
    assert [s for s in range(1, 111) if evaluates_after_step(every_22, s, 110)] == [22, 44, 66, 88, 110]
    assert [s for s in range(1, 31) if evaluates_after_step(_settings(eval_every_steps=7), s, 30)] == [7, 14, 21, 28, 30]
    assert not evaluates_at_epoch_end(every_22)
    assert evaluates_at_epoch_end(_settings()) and not evaluates_after_step(_settings(), 4, 16)
    assert resume_point({"epoch": 1, "micro_done": 4}, 8) == (1, 4)   # inside epoch 1: skip its first 4
    assert resume_point({"epoch": 1, "micro_done": 8}, 8) == (2, 0)   # an epoch's end: the next epoch
    assert resume_point({"epoch": 1}, 8) == (2, 0)                    # written before mid-epoch checkpoints


class PlateauTask(RegressionTask):
    """Reports a fixed eval_mse per epoch: best at epoch 1, then no better (for patience)."""

    SCORES = (3.0, 2.0, 2.5, 2.5, 2.1, 2.2, 2.3, 2.4)

    def evaluate(self, model, epoch):
        return {"eval_mse": self.SCORES[epoch]}


def test_step_budget_and_patience_end_training_where_they_say(ray_local, tmp_path):
    """max_steps: exactly that many optimizer steps, the last epoch partial, the schedule spanning them;
    patience: training stops `patience` epochs after the best, and says so."""
    from tkre.loop_schedule import out_of_patience, planned_steps

    _register_by_value()
    res = ResourcesConfig(num_workers=1, cpus_per_worker=1.0)
    steps = fit(RegressionTask(), _settings(epochs=1, max_steps=10), res, run_name="steps",
                storage_path=str(tmp_path / "runs"))
    assert [m["global_step"] for m in steps.metrics_history] == [4, 8, 10]  # 4 steps per epoch, then 2
    assert steps.summary["global_step"] == steps.summary["total_steps"] == 10
    assert steps.metrics_history[-1]["lr"] == pytest.approx(0.0)  # linear decay reaches 0 at step 10
    assert steps.summary["stopped_on_patience"] is False
    plateau = fit(PlateauTask(), _settings(epochs=8, patience=2), res, run_name="plateau",
                  storage_path=str(tmp_path / "runs"))
    assert [m["epoch"] for m in plateau.metrics_history] == [0, 1, 2, 3]  # best at 1, two epochs without better
    assert plateau.summary["stopped_on_patience"] is True
    assert plateau.summary["best_epoch"] == 1 and plateau.summary["best_step"] == 8
    s = _settings(patience=3)
    assert planned_steps(_settings(epochs=3), 4) == (3, 12) and planned_steps(_settings(max_steps=9), 4) == (3, 9)
    assert not out_of_patience([{"eval_mse": v} for v in (3, 2, 2.5, 2.5)], s)
    assert out_of_patience([{"eval_mse": v} for v in (3, 2, 2.5, 2.5, 2.5)], s)
    assert not out_of_patience([{"eval_mse": v} for v in (3, 2, 2.5, 2.5, 2.5)], _settings())  # no patience set


@pytest.mark.slow
def test_automatic_retry_resumes_within_one_call(ray_local, tmp_path):
    """FailureConfig(max_failures=1): the failed attempt is retried from its last checkpoint."""
    _register_by_value()
    res = ResourcesConfig(num_workers=1, cpus_per_worker=1.0)
    retry = fit(RegressionTask(fail_at_epoch=1, marker=str(tmp_path / "crashed2")), _settings(epochs=2), res,
                run_name="retry", storage_path=str(tmp_path / "runs"), max_failures=1)
    assert retry.summary["resumed_from_epoch"] == 1 and retry.summary["global_step"] == 8


def test_tune_report_callback_forwards_epoch_metrics(ray_local, tmp_path):
    """A Ray Tune function trainable runs fit() and forwards its per-epoch reports (what ASHA needs)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    _register_by_value()
    storage = str(tmp_path / "runs")

    def trainable(config):
        fit(RegressionTask(), _settings(epochs=2), ResourcesConfig(num_workers=1, cpus_per_worker=1.0),
            run_name=f"trial_lr{config['lr']}", storage_path=storage, callbacks=[TuneReportCallback()])

    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 0.1}), param_space={"lr": tune.grid_search([0.05])},
                       tune_config=tune.TuneConfig(metric="eval_mse", mode="min"),
                       run_config=tune.RunConfig(storage_path=storage, name="tune"))
    grid = tuner.fit()
    assert not grid.errors
    df = grid[0].metrics_dataframe
    assert list(df["epoch"]) == [0, 1] and (df["eval_mse"] > 0).all()
