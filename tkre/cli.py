"""The `tkre` command line. Parses options, calls one library function per command, prints.

No logic lives here: each command delegates to the module that owns the concept. User mistakes
(`TkreError`) are printed in one line with a non-zero exit; `--debug` shows the traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tkre import __version__
from tkre.cli_inspect import (DATASET_HELP, PATCH_HELP, PATH_HELP, cluster_app, data_app, evaluate, models_app,
                              print_plan)
from tkre.cli_serve import compare_generators_cmd, serve_cmd
from tkre.errors import TkreError, strip_ansi

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(help="tkre: few-shot relation extraction with TKRE (knowledge generation, two-stage "
                       "pre-training, fine-tuning) as Ray pipelines and sweeps.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(cluster_app, name="cluster")

_state = {"debug": False}

SET_HELP = "dotted config override KEY=VALUE (repeatable; applied after the other options), e.g. --set lr=1e-4"


def _version(value: bool) -> None:
    if value:
        console.print(f"tkre {__version__}")
        raise typer.Exit()


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="show tracebacks for errors"),
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="print the version and exit")) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s")


def run_app() -> None:
    """Console-script entry point: one-line errors unless --debug."""
    try:
        # standalone_mode=False: click returns a typer.Exit's code instead of raising it
        code = app(standalone_mode=False)
    except TkreError as e:
        if _state["debug"]:
            raise
        # the message as plain text: "[...]" in it is not rich markup, and no raw ANSI codes
        err_console.print(Text.assemble(("error:", "red"), " ", strip_ansi(e)), highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as e:  # click usage errors carry their own exit code
        import click
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


# -------------------------------------------------------------------------------------- pretrain

@app.command("pretrain")
def pretrain(config: Optional[Path] = typer.Option(None, "--config", help="YAML file (its `pretrain:` section or the whole file)"),
             workers: Optional[int] = typer.Option(None, "--workers", help="Ray Train workers (overrides the config)"),
             dataset: str = typer.Option("semeval", "--dataset", help=DATASET_HELP),
             path: Optional[str] = typer.Option(None, "--path", help=PATH_HELP),
             k: int = typer.Option(8, "--k", help="examples per relation in the golden K-shot split"),
             seed: int = typer.Option(1, "--seed", help="K-shot seed"),
             protocol: str = typer.Option("knowprompt", "--protocol", help="knowprompt or genpt"),
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


# -------------------------------------------------------------------------------------- finetune

@app.command("finetune")
def finetune(backbone: Optional[str] = typer.Option(None, "--backbone", help="typ_marker (default) or genpt"),
             dataset: str = typer.Option("semeval", "--dataset", help=DATASET_HELP),
             path: Optional[str] = typer.Option(None, "--path", help=PATH_HELP),
             patch: Optional[str] = typer.Option(None, "--patch", help=PATCH_HELP),
             k: int = typer.Option(8, "--k", help="examples per relation"),
             seed: int = typer.Option(1, "--seed", help="K-shot seed (knowprompt: 1..5; genpt: 13, 21, 42, 87, 100)"),
             protocol: str = typer.Option("knowprompt", "--protocol", help="K-shot protocol: knowprompt or genpt"),
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
    best_epoch; dev_micro_f1 of that epoch), OUT/predictions.parquet and OUT/checkpoint."""
    from tkre.config import DataConfig, FinetuneConfig, validate_config
    from tkre.finetune.command import finetune_dataset
    from tkre.finetune.encoder_recipes import apply_encoder_recipe
    from tkre.console import ProgressBar
    from tkre.overrides import load_with_overrides, parse_assignments

    cfg = load_with_overrides(config, FinetuneConfig, section="finetune", overrides={
        "backbone": backbone, "encoder": init, "synthetic_cap_per_relation": synthetic_cap_per_relation, "epochs": epochs,
        "lr": lr, "batch_size": batch_size, "max_length": max_length, "resources.num_workers": workers,
        **parse_assignments(set_)})
    cfg, recipe_note = apply_encoder_recipe(cfg)
    if recipe_note:
        console.print(recipe_note, soft_wrap=True, highlight=False)
    data = validate_config({"dataset": dataset, "path": path, "patch_path": patch, "k": k, "seed": seed,
                            "protocol": protocol}, DataConfig, source="<options>")
    with ProgressBar("fine-tuning", console=console):  # epochs/steps/loss/dev F1 from the train loop
        m = finetune_dataset(data, cfg, out_dir=out, synthetic_path=synthetic, run_name=run_name,
                             storage_path=storage_path)
    console.print(f"{cfg.backbone} {dataset} K={k} seed={seed}: best dev epoch {m['best_epoch']} "
                  f"(dev micro-F1 {m['dev_micro_f1'] if m['dev_micro_f1'] is not None else float('nan'):.4f}), "
                  f"test micro-F1 {m['test_micro_f1']:.4f}, macro-F1 {m['test_macro_f1']:.4f} (fractions 0-1)")
    console.print(f"  windowed: train {m['counts']['train_windowed']}, test {m['counts']['test_windowed']}; "
                  f"unseen test relation examples {m['counts']['test_unseen_relation_examples']}")
    console.print(f"  -> {out / 'metrics.json'}, checkpoint {m['checkpoint']}")


app.command("evaluate")(evaluate)  # defined with the other inspection commands (tkre/cli_inspect.py)

# -------------------------------------------------------------------------------------- generate

generate_app = typer.Typer(help="LLM knowledge generation: EDKG explanations, SCDG synthetic samples.",
                           no_args_is_help=True)
app.add_typer(generate_app, name="generate")


def _generation_inputs(stage, dataset, path, patch, k, seed, protocol, config, generator_opts, stage_opts):
    """(K-shot split, EDKGConfig or SCDGConfig with its generator resolved) from the command's options:
    the config file's `edkg:` / `scdg:` sections first (SCDG inherits EDKG's generator unless it has its
    own), then the options given on top, as dotted overrides (generator options go to the stage's
    generator, `--set` keys are the section's own, e.g. generator.sampling.top_p=0.9)."""
    from tkre.config import ExperimentConfig
    from tkre.data import load_dataset, sample_kshot
    from tkre.overrides import apply_overrides, load_with_overrides

    exp = load_with_overrides(config, ExperimentConfig)
    section = exp.edkg if stage == "edkg" else exp.resolved_scdg()
    overrides = {**{f"generator.{key}": value for key, value in generator_opts.items()}, **stage_opts}
    cfg = apply_overrides(section.model_dump(), {key: v for key, v in overrides.items() if v is not None},
                          type(section), source=f"{config} + options" if config else "<options>")
    split = sample_kshot(load_dataset(dataset, path, patch), k, seed, protocol)
    return split, cfg


_GEN_OPTS = dict(
    dataset=typer.Option("semeval", "--dataset", help=DATASET_HELP),
    path=typer.Option(None, "--path", help=PATH_HELP),
    patch=typer.Option(None, "--patch", help=PATCH_HELP),
    k=typer.Option(8, "--k", help="examples per relation in the K-shot split"),
    seed=typer.Option(1, "--seed", help="K-shot seed (knowprompt: 1..5; genpt: 13, 21, 42, 87, 100)"),
    protocol=typer.Option("knowprompt", "--protocol", help="K-shot protocol: knowprompt or genpt"),
    backend=typer.Option(None, "--backend", help="hf, vllm or openai (default from config: hf)"),
    model=typer.Option(None, "--model", help="HF id, local path, server model name or embedded:smollm2"),
    config=typer.Option(None, "--config", help="YAML file with `edkg:` / `scdg:` sections (an experiment file)"),
    cache_dir=typer.Option(None, "--cache-dir", help="generation cache (default ~/.cache/tkre/generation)"),
    batch_size=typer.Option(None, "--batch-size", help="prompts per batch"),
    concurrency=typer.Option(None, "--concurrency", help="actors in the generation pool"),
    temperature=typer.Option(None, "--temperature", help="0 = greedy"),
    base_url=typer.Option(None, "--base-url", help="openai backend: server root, e.g. http://127.0.0.1:8000/v1"),
    set_=typer.Option(None, "--set", help=SET_HELP + " (keys of the stage's section, e.g. generator.sampling.top_p=0.9)"),
    out=typer.Option(..., "--out", help="output directory"),
)


@generate_app.command("explanations")
def generate_explanations_cmd(
        dataset: str = _GEN_OPTS["dataset"], path: Optional[str] = _GEN_OPTS["path"],
        patch: Optional[str] = _GEN_OPTS["patch"], k: int = _GEN_OPTS["k"], seed: int = _GEN_OPTS["seed"],
        protocol: str = _GEN_OPTS["protocol"], backend: Optional[str] = _GEN_OPTS["backend"],
        model: Optional[str] = _GEN_OPTS["model"], config: Optional[Path] = _GEN_OPTS["config"],
        cache_dir: Optional[str] = _GEN_OPTS["cache_dir"], batch_size: Optional[int] = _GEN_OPTS["batch_size"],
        concurrency: Optional[int] = _GEN_OPTS["concurrency"],
        max_new_tokens: Optional[int] = typer.Option(
            None, "--max-new-tokens", help="new tokens per explanation (default edkg.max_new_tokens: 1024)"),
        temperature: Optional[float] = _GEN_OPTS["temperature"], base_url: Optional[str] = _GEN_OPTS["base_url"],
        set_: Optional[list[str]] = _GEN_OPTS["set_"], out: Path = _GEN_OPTS["out"]) -> None:
    """EDKG: explain every golden K-shot example with the LLM -> OUT/explanations.parquet."""
    from tkre.manifest import write_stage_manifest
    from tkre.generate import generate_explanations
    from tkre.overrides import parse_assignments

    split, cfg = _generation_inputs(
        "edkg", dataset, path, patch, k, seed, protocol, config,
        {"backend": backend, "model": model, "cache_dir": cache_dir, "batch_size": batch_size,
         "concurrency": concurrency, "sampling.temperature": temperature, "openai.base_url": base_url},
        {"max_new_tokens": max_new_tokens, **parse_assignments(set_)})
    m = write_stage_manifest(out, "edkg", lambda: generate_explanations(split.train, cfg, out),
                             cfg.model_dump(mode="json"))
    c = m["counts"]
    console.print(f"{c['written']}/{c['golden']} explanations ({m['generator']}) -> {out / m['file']}")
    console.print(f"  cache hits {c['cache_hits']}, generated {c['generated']}, errors {c['errors']}, "
                  f"empty {c['empty']}; {m['tokens']} tokens in {m['seconds']:.1f} s ({m['tokens_per_s']:.1f} tok/s)")


@generate_app.command("synthetic")
def generate_synthetic_cmd(
        dataset: str = _GEN_OPTS["dataset"], path: Optional[str] = _GEN_OPTS["path"],
        patch: Optional[str] = _GEN_OPTS["patch"], k: int = _GEN_OPTS["k"], seed: int = _GEN_OPTS["seed"],
        protocol: str = _GEN_OPTS["protocol"], backend: Optional[str] = _GEN_OPTS["backend"],
        model: Optional[str] = _GEN_OPTS["model"], config: Optional[Path] = _GEN_OPTS["config"],
        cache_dir: Optional[str] = _GEN_OPTS["cache_dir"], batch_size: Optional[int] = _GEN_OPTS["batch_size"],
        concurrency: Optional[int] = _GEN_OPTS["concurrency"],
        max_new_tokens: Optional[int] = typer.Option(
            None, "--max-new-tokens", help="new tokens per completion (default: scdg.tokens_per_sample x "
                                           "samples per prompt)"),
        temperature: Optional[float] = _GEN_OPTS["temperature"], base_url: Optional[str] = _GEN_OPTS["base_url"],
        samples_per_relation: Optional[int] = typer.Option(
            None, "--samples-per-relation", help="synthetic samples asked per relation (default K)"),
        samples_per_prompt: Optional[int] = typer.Option(None, "--samples-per-prompt",
                                                         help="new samples asked in one prompt (default 8)"),
        max_rounds: Optional[int] = typer.Option(None, "--max-rounds", help="rounds while relations lack samples "
                                                                            "(default 10)"),
        set_: Optional[list[str]] = _GEN_OPTS["set_"], out: Path = _GEN_OPTS["out"]) -> None:
    """SCDG: synthetic samples per relation, validated -> OUT/synthetic.parquet + rejects.parquet."""
    from tkre.manifest import write_stage_manifest
    from tkre.data import relation_type_schema
    from tkre.generate import generate_synthetic
    from tkre.overrides import parse_assignments

    split, cfg = _generation_inputs(
        "scdg", dataset, path, patch, k, seed, protocol, config,
        {"backend": backend, "model": model, "cache_dir": cache_dir, "batch_size": batch_size,
         "concurrency": concurrency, "sampling.temperature": temperature, "openai.base_url": base_url},
        {"max_new_tokens": max_new_tokens, "samples_per_relation": samples_per_relation,
         "samples_per_prompt": samples_per_prompt, "max_rounds": max_rounds, **parse_assignments(set_)})
    n = cfg.samples_per_relation or k
    m = write_stage_manifest(out, "scdg", lambda: generate_synthetic(
        split.train, relation_type_schema(split.train), cfg, out, per_relation=n), cfg.model_dump(mode="json"))
    c = m["counts"]
    console.print(f"{c['kept']} synthetic samples for {c['relations']} relations ({m['generator']}, {m['rounds']} "
                  f"of at most {m['max_rounds']} round(s)) -> {out / m['file']}")
    if m["relations_short"]:
        console.print(f"  {len(m['relations_short'])} relation(s) short of {n} samples after the last round")
    console.print(f"  acceptance {c['valid']}/{c['samples']} = {m['acceptance_rate']:.1%}; cache hits "
                  f"{c['cache_hits']}, generated {c['generated']}; {m['tokens']} tokens in {m['seconds']:.1f} s "
                  f"({m['tokens_per_s']:.1f} tok/s); type check {'on' if m['type_check'] else 'off (no types)'}")
    table = Table("relation", "kept", "valid", "samples", "acceptance")
    for rel, a in m["acceptance"].items():
        table.add_row(rel, f"{a['kept']}/{a['asked']}", str(a["valid"]), str(a["samples"]), f"{a['rate']:.0%}")
    console.print(table)
    reasons = Table("reject reason", "count")
    for reason, count in sorted(m["reasons"].items(), key=lambda kv: -kv[1]):
        reasons.add_row(reason, str(count))
    console.print(reasons)


# ------------------------------------------------------------------------- experiments & sweeps

@app.command("run")
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


@app.command("sweep")
def sweep_cmd(sweep_file: str = typer.Argument(..., help="sweeps/<name>.yaml or a shipped sweep's name"),
              resume: bool = typer.Option(False, "--resume", help="continue an interrupted sweep"),
              address: Optional[str] = typer.Option(None, "--address", help="Ray address, e.g. auto (cluster)"),
              storage: Optional[str] = typer.Option(None, "--storage", help="override storage_path"),
              plan: bool = typer.Option(False, "--plan", help="print every trial, shared artifacts and resources; "
                                                              "run nothing (no Ray)"),
              as_json: bool = typer.Option(False, "--json", help="with --plan: one JSON object per trial and line "
                                                                 "(name, variant, resolved experiment config)")) -> None:
    """Run a sweep with Ray Tune (grid, Optuna + ASHA search, evaluate-best), resumable."""
    if plan or as_json:
        return print_plan(sweep_file, storage, as_json)
    from tkre.sweep import run_sweep

    out = run_sweep(sweep_file, resume=resume, address=address, storage_path=storage)
    counts = out.rows["status"].value_counts().to_dict() if len(out.rows) else {}
    console.print(f"{len(out.rows)} trials ({', '.join(f'{v} {k}' for k, v in counts.items())}) in "
                  f"{out.seconds:.0f}s; results: {out.results_path}")
    _exit_if_all_trials_failed(out)


def _exit_if_all_trials_failed(out) -> None:
    """Print one clean line per failed trial; exit 1 when no trial of the sweep succeeded."""
    from tkre.errors import one_line

    failed = out.rows[out.rows["status"] == "error"] if len(out.rows) else out.rows
    for _, r in failed.iterrows():
        console.print(f"  failed {r['trial_id']}: {one_line(r['error'], 300)}", markup=False, highlight=False)
    if len(out.rows) and len(failed) == len(out.rows):
        err_console.print(f"error: all {len(failed)} trials of the sweep failed; first: "
                          f"{one_line(failed.iloc[0]['error'], 300)}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command("report")
def report_cmd(sweep_dir: str = typer.Argument(..., help="a sweep directory (holds results.parquet)"),
               out: Optional[str] = typer.Option(None, "--out", help="report folder (default: <sweep-dir>/report)")) -> None:
    """Tables (mean +- std over seeds, paper numbers side by side), PNG plots and a Markdown report."""
    from tkre.report import write_report

    rep = write_report(sweep_dir, out)
    console.print(rep.markdown_text_tables, soft_wrap=True, markup=False, highlight=False)  # tables stay whole in logs
    console.print(f"report: {rep.markdown_path}" + (f" (uploaded to {rep.published})" if rep.published else ""))


app.command("compare-generators")(compare_generators_cmd)  # tkre/cli_serve.py
app.command("serve")(serve_cmd)


@app.command("quickstart")
def quickstart_cmd(storage: Optional[str] = typer.Option(None, "--storage", help="override storage_path"),
                   address: Optional[str] = typer.Option(None, "--address", help="Ray address")) -> None:
    """`tkre sweep quickstart` + `tkre report`: golden-only vs TKRE on SemEval 8-shot."""
    from tkre.report import write_report
    from tkre.sweep import run_sweep

    out = run_sweep("quickstart", resume=True, address=address, storage_path=storage)
    _exit_if_all_trials_failed(out)
    rep = write_report(out.sweep_dir)
    console.print(rep.markdown_text_tables, soft_wrap=True, markup=False, highlight=False)  # tables stay whole in logs
    console.print(f"{len(out.rows)} trials in {out.seconds:.0f}s; report: {rep.markdown_path}")


if __name__ == "__main__":
    run_app()
