"""`tkre sweep` (and its `--plan`), `tkre report`, `tkre quickstart` and `tkre compare-generators`:
sweeps from the command line. Parse options, call the sweep or report function, print.

While a sweep runs, Ray's and Tune's own output goes to a log file that the console names
(`tkre.cluster.quiet`); `--verbose` keeps it on the terminal."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tkre.cli.options import console, err_console

VERBOSE = typer.Option(False, "--verbose", help="keep Ray's and Tune's own warnings and boxes on the console "
                                                "(default: in a log file the console names)")


def _quiet(verbose: bool, sweep_file: str, storage: Optional[str]):
    """The command's body runs in this: Ray's and Tune's output to the sweep's log file unless --verbose."""
    from tkre.cluster.quiet import quiet_console
    from tkre.sweep.run import console_log_path

    return quiet_console(None if verbose else console_log_path(sweep_file, storage), consoles=(console, err_console))


def sweep_cmd(sweep_file: str = typer.Argument(..., help="sweeps/<name>.yaml or a shipped sweep's name"),
              resume: bool = typer.Option(False, "--resume", help="continue an interrupted sweep"),
              address: Optional[str] = typer.Option(None, "--address", help="Ray address, e.g. auto (cluster)"),
              storage: Optional[str] = typer.Option(None, "--storage", help="override storage_path"),
              plan: bool = typer.Option(False, "--plan", help="print every trial, shared artifacts and resources; "
                                                              "run nothing (no Ray)"),
              as_json: bool = typer.Option(False, "--json", help="with --plan: one JSON object per trial and line "
                                                                 "(name, variant, resolved experiment config)"),
              verbose: bool = VERBOSE) -> None:
    """Run a sweep with Ray Tune (grid, Optuna + ASHA search, evaluate-best), resumable."""
    if plan or as_json:
        return print_plan(sweep_file, storage, as_json)
    from tkre.sweep.run import run_sweep

    with _quiet(verbose, sweep_file, storage):
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


def report_cmd(sweep_dir: str = typer.Argument(..., help="a sweep directory (holds results.parquet)"),
               out: Optional[str] = typer.Option(None, "--out", help="report folder (default: <sweep-dir>/report)")) -> None:
    """Tables (mean +- std over seeds, paper numbers side by side), PNG plots and a Markdown report."""
    from tkre.report.tables import write_report

    rep = write_report(sweep_dir, out)
    console.print(rep.markdown_text_tables, soft_wrap=True, markup=False, highlight=False)  # tables stay whole in logs
    console.print(f"report: {rep.markdown_path}" + (f" (uploaded to {rep.published})" if rep.published else ""))


def quickstart_cmd(storage: Optional[str] = typer.Option(None, "--storage", help="override storage_path"),
                   address: Optional[str] = typer.Option(None, "--address", help="Ray address"),
                   verbose: bool = VERBOSE) -> None:
    """`tkre sweep quickstart` + `tkre report`: golden-only vs TKRE on SemEval 8-shot."""
    from tkre.report.tables import write_report
    from tkre.sweep.run import run_sweep

    with _quiet(verbose, "quickstart", storage):
        out = run_sweep("quickstart", resume=True, address=address, storage_path=storage)
        _exit_if_all_trials_failed(out)
        rep = write_report(out.sweep_dir)
    console.print(rep.markdown_text_tables, soft_wrap=True, markup=False, highlight=False)  # tables stay whole in logs
    for line in quickstart_lines(out.rows):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    console.print(f"{len(out.rows)} trials in {out.seconds:.0f}s; report: {rep.markdown_path}")


STUDY_POINTER = ("One seed is not an answer: the K-shot split alone moves test micro-F1 by several points. "
                 "The five-seed CPU study (docs/studies.md, results/cpu_semeval/README.md) found TKRE's gain over "
                 "golden-only vanish once both took the same optimizer steps.")


def quickstart_lines(rows) -> list[str]:
    """What the quickstart prints after its tables: the fine-tuning steps each arm took (a fair comparison
    gives both the same, or trains both to convergence) and that one seed is not an answer."""
    lines = []
    for _, r in rows[rows["status"] == "ok"].sort_values("variant").iterrows():
        steps = r.get("finetune_steps")
        took = "steps unknown" if steps is None or steps != steps else f"{int(steps)} optimizer steps"
        conv = r.get("stopped_on_patience")
        converged = ", stopped on patience" if conv is not None and conv == conv and bool(conv) else ""
        lines.append(f"fine-tuning {r['variant']}: {took} (budget: {r.get('finetune_budget')}{converged})")
    return lines + [STUDY_POINTER]


def compare_generators_cmd(
        sweep_file: str = typer.Argument("generators_compare", help="a sweep whose variants are generator settings"),
        resume: bool = typer.Option(False, "--resume", help="continue an interrupted comparison"),
        storage: Optional[str] = typer.Option(None, "--storage", help="override storage_path"),
        verbose: bool = VERBOSE) -> None:
    """Run generator settings side by side (starting `tkre serve` for loopback openai ones) and report
    acceptance, reject reasons, tokens, tokens/s, cost, diversity and novelty per setting."""
    from tkre.sweep.compare_generators import compare_generators

    with _quiet(verbose, sweep_file, storage):
        out, rep = compare_generators(sweep_file, resume=resume, storage_path=storage)
    failed = out.rows[out.rows["status"] == "error"]
    for _, r in failed.iterrows():
        console.print(f"  failed {r['trial_id']} ({r.get('variant')}): {str(r['error']).splitlines()[0][:200]}")
    console.print(f"{len(out.rows)} settings in {out.seconds:.0f}s; report: {rep.markdown_path}")


def print_plan(sweep_file: str, storage: Optional[str], as_json: bool) -> None:
    from tkre.sweep.config import load_sweep, resolve_sweep_file
    from tkre.sweep.plan import (gpu_memory_lines, plan_json_lines, plan_trials, resource_lines, search_lines,
                                 shared_artifacts, trial_summary)

    sweep = load_sweep(resolve_sweep_file(sweep_file))
    if storage:
        sweep = sweep.model_copy(update={"storage_path": storage})
    if as_json:
        for obj in plan_json_lines(sweep):
            print(json.dumps(obj, sort_keys=True, default=str))
        return
    trials = plan_trials(sweep)
    rows = [trial_summary(t) for t in trials]
    table = Table(title=f"sweep {sweep.name}: {len(trials)} trial(s) (stages: edkg, scdg, pre-training s1/s2; "
                        "synth/rel: synthetic samples asked per relation; source: scdg.source; cap: fine-tuning's cap per "
                        "relation; budget: fine-tuning's)")
    for name in rows[0]:
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(*("-" if v is None else str(v) for v in r.values()))
    out = console if console.is_terminal else Console(width=200)  # a plan piped to a file keeps its table whole
    out.print(table)
    for line in search_lines(sweep):
        out.print(f"  {line}")
    out.print("[bold]artifacts[/bold] (stage: distinct artifacts; those that trials share)")
    for stage, groups in shared_artifacts(trials).items():
        shared = [(key, names) for key, names in groups if len(names) > 1]
        out.print(f"  {stage}: {len(groups)} for {sum(len(n) for _, n in groups)} trial(s)"
                  + "".join(f"\n    {key} shared by {len(names)}: {', '.join(names[:8])}"
                            f"{' ...' if len(names) > 8 else ''}" for key, names in shared))
    out.print("[bold]resources[/bold] (per trial)")
    for line in resource_lines(sweep, trials):
        out.print(f"  {line}")
    memory = gpu_memory_lines(trials)
    if memory:
        out.print("[bold]GPU memory[/bold] (vLLM generators: weights per GPU against the accelerator's memory)")
        for line in memory:
            out.print(f"  {line}", style="bold red" if "DOES NOT FIT" in line else None)
