"""`tkre generate explanations|synthetic`: EDKG and SCDG on their own, from a K-shot split."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tkre.config import Backend, DatasetName, Protocol
from tkre.cli.options import DATASET, K, PATCH, PATH, PROTOCOL, SEED, SET_HELP, console

generate_app = typer.Typer(help="LLM knowledge generation: EDKG explanations, SCDG synthetic samples.",
                           no_args_is_help=True)


def _generation_inputs(stage, dataset, path, patch, k, seed, protocol, config, generator_opts, stage_opts):
    """(K-shot split, EDKGConfig or SCDGConfig) from the command's options: the config file's `edkg:` /
    `scdg:` sections with the data options, built as an experiment (SCDG inherits EDKG's generator unless
    it has its own, and asks K samples per relation unless told), then the stage options given on top, as
    dotted overrides (generator options go to the stage's generator, `--set` keys are the section's own,
    e.g. generator.sampling.top_p=0.9)."""
    from tkre.config import ExperimentConfig
    from tkre.data import load_dataset, sample_kshot
    from tkre.overrides import apply_overrides, load_with_overrides

    exp = load_with_overrides(config, ExperimentConfig, overrides={
        "data.dataset": dataset, "data.path": path, "data.patch_path": patch, "data.k": k, "data.seed": seed,
        "data.protocol": protocol})
    section = exp.edkg if stage == "edkg" else exp.scdg
    overrides = {**{f"generator.{key}": value for key, value in generator_opts.items()}, **stage_opts}
    cfg = apply_overrides(section.model_dump(), {key: v for key, v in overrides.items() if v is not None},
                          type(section), source=f"{config} + options" if config else "<options>")
    split = sample_kshot(load_dataset(dataset, path, patch), k, seed, protocol)
    return split, cfg


_GEN_OPTS = dict(
    dataset=DATASET,
    path=PATH,
    patch=PATCH,
    k=K,
    seed=SEED,
    protocol=PROTOCOL,
    backend=typer.Option(None, "--backend", help="generation backend (default from config: hf)"),
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
        dataset: DatasetName = _GEN_OPTS["dataset"], path: Optional[str] = _GEN_OPTS["path"],
        patch: Optional[str] = _GEN_OPTS["patch"], k: int = _GEN_OPTS["k"], seed: int = _GEN_OPTS["seed"],
        protocol: Protocol = _GEN_OPTS["protocol"], backend: Optional[Backend] = _GEN_OPTS["backend"],
        model: Optional[str] = _GEN_OPTS["model"], config: Optional[Path] = _GEN_OPTS["config"],
        cache_dir: Optional[str] = _GEN_OPTS["cache_dir"], batch_size: Optional[int] = _GEN_OPTS["batch_size"],
        concurrency: Optional[int] = _GEN_OPTS["concurrency"],
        max_new_tokens: Optional[int] = typer.Option(
            None, "--max-new-tokens", help="new tokens per explanation (default edkg.max_new_tokens: 1024)"),
        temperature: Optional[float] = _GEN_OPTS["temperature"], base_url: Optional[str] = _GEN_OPTS["base_url"],
        set_: Optional[list[str]] = _GEN_OPTS["set_"], out: Path = _GEN_OPTS["out"]) -> None:
    """EDKG: explain every golden K-shot example with the LLM -> OUT/explanations.parquet."""
    from tkre.store.manifest import write_stage_manifest
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
        dataset: DatasetName = _GEN_OPTS["dataset"], path: Optional[str] = _GEN_OPTS["path"],
        patch: Optional[str] = _GEN_OPTS["patch"], k: int = _GEN_OPTS["k"], seed: int = _GEN_OPTS["seed"],
        protocol: Protocol = _GEN_OPTS["protocol"], backend: Optional[Backend] = _GEN_OPTS["backend"],
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
    from tkre.store.manifest import write_stage_manifest
    from tkre.data import relation_type_schema
    from tkre.generate import generate_synthetic
    from tkre.overrides import parse_assignments

    split, cfg = _generation_inputs(
        "scdg", dataset, path, patch, k, seed, protocol, config,
        {"backend": backend, "model": model, "cache_dir": cache_dir, "batch_size": batch_size,
         "concurrency": concurrency, "sampling.temperature": temperature, "openai.base_url": base_url},
        {"max_new_tokens": max_new_tokens, "samples_per_relation": samples_per_relation,
         "samples_per_prompt": samples_per_prompt, "max_rounds": max_rounds, **parse_assignments(set_)})
    n = cfg.samples_per_relation
    m = write_stage_manifest(out, "scdg", lambda: generate_synthetic(
        split.train, relation_type_schema(split.train), cfg, out), cfg.model_dump(mode="json"))
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
