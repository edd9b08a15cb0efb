"""`tkre serve` (a small OpenAI-compatible server over the hf backend) and `tkre compare-generators`
(generator settings side by side, starting that server for loopback openai ones). Registered on the
main command by tkre/cli.py; like it, no logic: parse, call one function, print.
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

console = Console()


def compare_generators_cmd(
        sweep_file: str = typer.Argument("generators_compare", help="a sweep whose variants are generator settings"),
        resume: bool = typer.Option(False, "--resume", help="continue an interrupted comparison"),
        storage: Optional[str] = typer.Option(None, "--storage", help="override storage_path")) -> None:
    """Run generator settings side by side (starting `tkre serve` for loopback openai ones) and report
    acceptance, reject reasons, tokens, tokens/s, cost, diversity and novelty per setting."""
    from tkre.compare import compare_generators

    out, rep = compare_generators(sweep_file, resume=resume, storage_path=storage)
    failed = out.rows[out.rows["status"] == "error"]
    for _, r in failed.iterrows():
        console.print(f"  failed {r['trial_id']} ({r.get('variant')}): {str(r['error']).splitlines()[0][:200]}")
    console.print(f"{len(out.rows)} settings in {out.seconds:.0f}s; report: {rep.markdown_path}")


def serve_cmd(model: str = typer.Option("embedded:smollm2", "--model", help="HF id, local folder or embedded:smollm2"),
              host: str = typer.Option("127.0.0.1", "--host", help="listen address (loopback unless --allow-remote)"),
              port: int = typer.Option(8765, "--port", help="port (0 = any free one)"),
              threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: all cores)"),
              batch_size: int = typer.Option(16, "--batch-size", help="requests generated together at most"),
              allow_remote: bool = typer.Option(False, "--allow-remote", help="listen on a non-loopback host "
                                                                              "(no authentication!)")) -> None:
    """A small OpenAI-compatible chat-completions server over the hf backend (for the openai backend offline)."""
    from tkre.serve import serve

    serve(model, host=host, port=port, threads=threads, batch_size=batch_size, allow_remote=allow_remote,
          ready=lambda url: console.print(f"serving {model} at {url}", highlight=False))
