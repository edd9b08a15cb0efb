"""`tkre pretrain`, `tkre finetune`, `tkre evaluate` and `tkre run`: one stage, or one whole experiment,
from the command line. Parse options, call the library function that owns the stage, print."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tkre.config import Backbone, DatasetName, Protocol
from tkre.cli.options import DATASET, K, PATCH, PATH, PROTOCOL, SEED, SET_HELP, console


def pretrain(config: Optional[Path] = typer.Option(None, "--config", help="YAML file (its `pretrain:` section or the whole file)"),
             workers: Optional[int] = typer.Option(None, "--workers", help="Ray Train workers (overrides the config)"),
             dataset: DatasetName = DATASET,
             path: Optional[str] = PATH,
             k: int = K,
             seed: int = SEED,
             protocol: Protocol = PROTOCOL,
             explanations: Optional[str] = typer.Option(None, "--explanations", help="explanation corpus (folder or parquet)"),
             synthetic: Optional[str] = typer.Option(None, "--synthetic", help="synthetic set (folder or parquet)"),
             set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
             out: Path = typer.Option(Path("runs/pretrain"), "--out", help="output folder")) -> None:
    """Two-stage pre-training (MSLM, then MSLM + SCL) on Ray Train; prints the checkpoint path."""
    from tkre.config import PretrainConfig
    from tkre.overrides import load_with_overrides, parse_assignments
    from tkre.pretrain import run_pretraining

    cfg = load_with_overrides(config, PretrainConfig, section="pretrain",
                              overrides={"resources.num_workers": workers, **parse_assignments(set_)})
    summary = run_pretraining(cfg, dataset=dataset, data_path=path, k=k, seed=seed, protocol=protocol,
                              explanations=explanations, synthetic=synthetic, out_dir=out, show_progress=True)
    for name in ("stage1", "stage2"):
        st = summary[name]
        if st.get("enabled"):
            scl = (f", SCL term skipped for {st['scl_skipped_examples']} (no negative span)"
                   if st.get("scl") else "")
            console.print(f"{name}: MSLM loss on a {st['heldout_texts']}-text sample "
                          f"{st['heldout_mslm_loss_before']:.3f} -> {st['heldout_mslm_loss_after']:.3f}, trained on "
                          f"{st['train_texts']} texts, {st['skipped_total']} skipped (entity cut at max_length){scl}")
        else:
            console.print(f"{name}: switched off")
    console.print(f"checkpoint: {summary['checkpoint']}")



def finetune(backbone: Optional[Backbone] = typer.Option(None, "--backbone", help="classifier (default typ_marker)"),
             dataset: DatasetName = DATASET,
             path: Optional[str] = PATH,
             patch: Optional[str] = PATCH,
             k: int = K,
             seed: int = SEED,
             protocol: Protocol = PROTOCOL,
             init: Optional[str] = typer.Option(None, "--init",
                                                help="initial weights: tkre pre-training checkpoint, HF folder/id "
                                                     "or embedded:minilm (default)"),
             synthetic: Optional[str] = typer.Option(None, "--synthetic",
                                                     help="synthetic examples: folder with synthetic.parquet, "
                                                          ".parquet or generic .jsonl"),
             synthetic_cap_per_relation: Optional[int] = typer.Option(
                 None, "--synthetic-cap-per-relation", help="cap on synthetic examples per relation (default: all)"),
             epochs: Optional[int] = typer.Option(None, "--epochs", help="epochs (paper: 10)"),
             lr: Optional[float] = typer.Option(None, "--lr", help="learning rate (paper: 3e-5)"),
             batch_size: Optional[int] = typer.Option(None, "--batch-size", help="batch over all workers (paper: 32)"),
             max_length: Optional[int] = typer.Option(None, "--max-length", help="subword limit (longer: windowed)"),
             workers: Optional[int] = typer.Option(None, "--workers", help="Ray Train workers"),
             config: Optional[Path] = typer.Option(None, "--config", help="YAML FinetuneConfig (or experiment file)"),
             set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
             run_name: Optional[str] = typer.Option(None, "--run-name", help="Ray run name (same name = resume)"),
             storage_path: Optional[str] = typer.Option(None, "--storage-path",
                                                        help="Ray run storage (default: OUT/ray_runs)"),
             out: Path = typer.Option(..., "--out", help="output folder")) -> None:
    """Fine-tune a TYP Marker or GenPT classifier on a K-shot split; keep the best dev epoch.

    Writes OUT/metrics.json (test_micro_f1 etc. as fractions 0-1, "f1_scale": "fraction";
    best_epoch, 0-based; best_step; steps; dev_micro_f1 of that epoch), OUT/predictions.parquet and OUT/checkpoint."""
    from tkre.config import DataConfig, FinetuneConfig, validate_config
    from tkre.finetune.command import finetune_dataset
    from tkre.console import ProgressBar
    from tkre.overrides import load_with_overrides, parse_assignments

    cfg = load_with_overrides(config, FinetuneConfig, section="finetune", overrides={
        "backbone": backbone, "encoder": init, "synthetic_cap_per_relation": synthetic_cap_per_relation, "epochs": epochs,
        "lr": lr, "batch_size": batch_size, "max_length": max_length, "resources.num_workers": workers,
        **parse_assignments(set_)})
    if recipe_note := cfg.recipe_note():
        console.print(recipe_note, soft_wrap=True, highlight=False)
    data = validate_config({"dataset": dataset, "path": path, "patch_path": patch, "k": k, "seed": seed,
                            "protocol": protocol}, DataConfig, source="<options>")
    with ProgressBar("fine-tuning", console=console):  # epochs/steps/loss/dev F1 from the train loop
        m = finetune_dataset(data, cfg, out_dir=out, synthetic_path=synthetic, run_name=run_name,
                             storage_path=storage_path)
    console.print(f"{cfg.backbone} {dataset} K={k} seed={seed} ({m['budget']}): best dev epoch "
                  f"{m['best_epoch'] + 1} of {m['epochs_run']}, step {m['best_step']} of {m['steps']}"
                  f"{', stopped on patience' if m['stopped_on_patience'] else ''} "
                  f"(dev micro-F1 {m['dev_micro_f1'] if m['dev_micro_f1'] is not None else float('nan'):.4f}), "
                  f"test micro-F1 {m['test_micro_f1']:.4f}, macro-F1 {m['test_macro_f1']:.4f} (fractions 0-1)")
    console.print(f"  micro-F1 {_excluded(m)}; windowed: train {m['counts']['train_windowed']}, test "
                  f"{m['counts']['test_windowed']}; unseen test relation examples "
                  f"{m['counts']['test_unseen_relation_examples']}")
    console.print(f"  -> {out / 'metrics.json'}, checkpoint {m['checkpoint']}")


def evaluate(checkpoint: str = typer.Argument(..., help="fine-tuned checkpoint folder (OUT/checkpoint)"),
             dataset: DatasetName = DATASET,
             path: Optional[str] = PATH,
             patch: Optional[str] = PATCH,
             split: str = typer.Option("test", "--split", help="train, dev or test"),
             batch_size: int = typer.Option(64, "--batch-size", help="examples per inference batch"),
             ray_data_min: Optional[int] = typer.Option(
                 None, "--ray-data-min", help="use Ray Data actors from this many examples (default 10000)"),
             actors: int = typer.Option(2, "--actors", help="Ray Data inference actors"),
             out: Path = typer.Option(..., "--out", help="output folder")) -> None:
    """Predict a split with a fine-tuned checkpoint: OUT/predictions.parquet (id, gold, predicted,
    score) and OUT/metrics.json (<split>_micro_f1 etc. as fractions 0-1)."""
    from tkre.config import DataConfig, validate_config
    from tkre.finetune.command import evaluate_dataset

    data = validate_config({"dataset": dataset, "path": path, "patch_path": patch}, DataConfig, source="<options>")
    m = evaluate_dataset(checkpoint, data, split=split, out_dir=out, batch_size=batch_size,
                         ray_data_min_examples=ray_data_min, actors=actors)
    console.print(f"{split}: micro-F1 {m[f'{split}_micro_f1']:.4f}, macro-F1 {m[f'{split}_macro_f1']:.4f} "
                  f"(fractions 0-1; {_excluded(m)}), {m['counts'][f'{split}_examples']} examples "
                  f"({m['inference']}) -> {out}")


def _excluded(metrics: dict) -> str:
    label = metrics.get("metric_excluded_label")
    return f"without the no-relation class {label!r}" if label else "over all classes (no no-relation class)"


def run_cmd(config: Path = typer.Argument(..., help="experiment YAML (an ExperimentConfig)"),
            set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP + ", e.g. pretrain.scl.tau=0.05")
            ) -> None:
    """Run one experiment (split -> EDKG -> SCDG -> stage 1 -> stage 2 -> fine-tune -> test)."""
    from tkre.overrides import parse_assignments
    from tkre.pipeline import run_experiment_file

    row = run_experiment_file(str(config), overrides=parse_assignments(set_))
    table = Table("field", "value")
    for key in ("dataset", "k", "seed", "edkg_generator", "scdg_generator", "synthetic_asked", "synthetic_kept",
                "encoder", "backbone", "dev_micro_f1", "test_micro_f1"):
        value = row.get(key)
        table.add_row(key, f"{100 * value:.2f}%" if key.endswith("f1") and value is not None else str(value))
    for key, value in row.items():
        if key.startswith(("artifact.", "seconds.")) and value is not None:
            table.add_row(key, str(value))
    console.print(table)
    if row.get("row_file"):
        console.print(f"row written to {row['row_file']}")
