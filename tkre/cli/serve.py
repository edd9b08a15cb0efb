"""`tkre serve`: a small OpenAI-compatible server over the hf backend, for the openai backend offline."""

from __future__ import annotations

from typing import Optional

import typer

from tkre.cli.options import console


def serve_cmd(model: str = typer.Option("embedded:smollm2", "--model", help="HF id, local folder or embedded:smollm2"),
              host: str = typer.Option("127.0.0.1", "--host", help="listen address (loopback unless --allow-remote)"),
              port: int = typer.Option(8765, "--port", help="port (0 = any free one)"),
              threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: all cores)"),
              batch_size: int = typer.Option(16, "--batch-size", help="requests generated together at most"),
              allow_remote: bool = typer.Option(False, "--allow-remote", help="listen on a non-loopback host "
                                                                              "(no authentication!)")) -> None:
    """A small OpenAI-compatible chat-completions server over the hf backend (for the openai backend offline)."""
    from tkre.generate.serve import serve

    serve(model, host=host, port=port, threads=threads, batch_size=batch_size, allow_remote=allow_remote,
          ready=lambda url: console.print(f"serving {model} at {url}", highlight=False))
