"""Fine-tuning budgets (finetune.budget): fixed epochs, fixed optimizer steps, to convergence. The
setting reaches the train loop, enters the fine-tuning artifact key only when it is not the default
(so the committed study's keys stay as they were), and keeps an embedded encoder's recipe."""

from __future__ import annotations

import pytest

from tkre.config import BudgetConfig, ExperimentConfig, FinetuneConfig, validate_config
from tkre.errors import ConfigError
from tkre.finetune.run import loop_budget
from tkre.pipeline import finetune_key_config
from tkre.sweep.config import experiment_for, grid_points, load_sweep, resolve_sweep_file

STUDY_SWEEPS = ["cpu_semeval", "cpu_semeval_steps", "cpu_semeval_steps_15", "cpu_semeval_15_epochs",
                "cpu_semeval_mlm_head"]


def test_budget_needs_its_own_fields():
    with pytest.raises(ConfigError, match="needs budget.steps"):
        validate_config({"finetune": {"budget": {"mode": "steps"}}}, ExperimentConfig)
    with pytest.raises(ConfigError, match="budget.steps is set but budget.mode is 'epochs'"):
        validate_config({"finetune": {"budget": {"steps": 100}}}, ExperimentConfig)
    assert BudgetConfig(mode="steps", steps=120).describe(10) == "120 steps"
    assert BudgetConfig().describe(12) == "12 epochs"
    assert BudgetConfig(mode="convergence", patience=2, max_epochs=20).describe(10) == \
        "convergence (patience 2, max 20 epochs)"


def test_budget_reaches_the_loop_settings():
    assert loop_budget(FinetuneConfig(epochs=7), has_dev=True) == {"epochs": 7}
    steps = FinetuneConfig(epochs=7, budget={"mode": "steps", "steps": 90})
    assert loop_budget(steps, has_dev=False) == {"epochs": 1, "max_steps": 90}
    conv = FinetuneConfig(budget={"mode": "convergence", "patience": 4, "max_epochs": 25})
    assert loop_budget(conv, has_dev=True) == {"epochs": 25, "patience": 4}
    with pytest.raises(ConfigError, match="no dev examples"):
        loop_budget(conv, has_dev=False)


def _paper_encoder(**kw) -> FinetuneConfig:
    """A FinetuneConfig whose lr/epochs/batch_size are its own (an embedded encoder's recipe would fill them)."""
    return FinetuneConfig(encoder="FacebookAI/roberta-large", **kw)


def test_budget_keys_fine_tuning_only_when_not_the_default():
    default = _paper_encoder()
    key = finetune_key_config(default, from_pretraining=False)
    assert "budget" not in key and key["epochs"] == 10  # a fixed-epochs run keeps the key it had
    steps = finetune_key_config(_paper_encoder(budget={"mode": "steps", "steps": 90}), from_pretraining=False)
    assert "epochs" not in steps and steps["budget"] == {"mode": "steps", "steps": 90}
    # epochs do not matter under a step budget; the steps do
    assert finetune_key_config(_paper_encoder(epochs=3, budget={"mode": "steps", "steps": 90}),
                               from_pretraining=False) == steps
    assert finetune_key_config(_paper_encoder(budget={"mode": "steps", "steps": 91}), from_pretraining=False) != steps
    conv = finetune_key_config(_paper_encoder(budget={"mode": "convergence"}), from_pretraining=False)
    assert conv["budget"] == {"mode": "convergence", "patience": 3, "max_epochs": 30}


def test_setting_a_budget_keeps_the_encoders_recipe():
    cfg = FinetuneConfig(encoder="embedded:minilm", budget={"mode": "steps", "steps": 100})
    assert cfg.recipe_note() is not None and cfg.lr == 1e-4 and cfg.batch_size == 16 and cfg.budget.steps == 100
    assert FinetuneConfig(encoder="embedded:minilm", epochs=5).recipe_note() is None


@pytest.mark.parametrize("name", STUDY_SWEEPS)
def test_committed_study_sweeps_keep_their_fine_tuning_keys(name):
    """The sweeps whose results are committed fix epochs and name no budget or evaluation schedule: their
    fine-tuning key configs hold neither, exactly as before those settings existed."""
    sweep = load_sweep(resolve_sweep_file(name))
    for point in grid_points(sweep):
        ft = experiment_for(sweep, point).finetune
        assert ft.budget == BudgetConfig() and "budget" not in ft.model_fields_set
        key = finetune_key_config(ft, from_pretraining=False)
        assert key == {k: v for k, v in ft.model_dump().items()
                       if k not in ("resources", "eval_ray_data_min_examples", "eval_actors", "eval_batch_size",
                                    "budget", "eval_every_steps")}
