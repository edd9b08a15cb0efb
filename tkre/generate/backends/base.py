"""The backend interface and the per-row error capture every backend gets for free."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Sequence

from tkre.config import DecodingConfig
from tkre.errors import TkreError

log = logging.getLogger(__name__)


class GenerationFailed(TkreError):
    """At least one prompt could not be completed (the message lists the first errors)."""


@dataclass
class RowResult:
    """One completion: its text and generated-token count, or the error that prevented it."""

    text: str | None
    tokens: int = 0
    error: str | None = None
    input_tokens: int = 0  # prompt tokens the model read (cost reports); 0 when the backend cannot tell
    constrained: bool = False  # the schema was enforced while decoding this row
    dialect: str = ""  # how the schema reached the server (openai: json_schema, json_object+schema, ..., text)


@dataclass
class BackendSpec:
    """How to build a backend once per Ray actor, plus the identity that goes into cache keys."""

    name: str
    cls: str | type  # "module:Class", or the class itself
    init_kwargs: dict[str, Any]
    model_id: str
    revision: str
    generator: str  # short name written into outputs, e.g. "hf:embedded:smollm2"
    num_cpus: float = 1.0  # per engine actor (tkre/generate/engines.py)
    num_gpus: float = 0.0
    replicas: int = 1  # engine actors of a generation job
    batch_size: int = 16  # rows per batch sent to an engine actor
    accelerator_type: str | None = None  # the GPU type every replica needs (None: any)
    #: a replica's placement group bundles (vllm at TP>1: one GPU each, filled by vLLM's Ray workers);
    #: None: the actor reserves num_cpus/num_gpus itself
    bundles: list[dict[str, float]] | None = None
    #: "module:function(spec) -> (spec, report)", run once in the driver before constrained rows go out
    #: (openai: find the server's structured-output dialect); None = nothing to find out
    prepare: str | None = None

    def build(self) -> "Backend":
        if isinstance(self.cls, type):
            return self.cls(**self.init_kwargs)
        module, name = self.cls.split(":")
        return getattr(importlib.import_module(module), name)(**self.init_kwargs)

    def prepared(self) -> tuple["BackendSpec", dict[str, Any] | None]:
        """This spec made ready for constrained rows, and what was found out (None: nothing to do)."""
        if not self.prepare:
            return self, None
        module, name = self.prepare.split(":")
        return getattr(importlib.import_module(module), name)(self)


class Backend:
    """prompts (plain user messages) -> completions. Subclasses implement `_generate_batch`."""

    #: when a batch raises, try each of its rows alone (False: the batch's exception propagates)
    retry_rows_alone = True

    def generate(self, prompts: Sequence[str], sampling: DecodingConfig,
                 seeds: Sequence[int] | None = None, schemas: Sequence[str | None] | None = None) -> list[str]:
        """Texts for `prompts`, in order; raises GenerationFailed if any prompt failed."""
        results = self.generate_rows(prompts, sampling, seeds, schemas)
        errors = [f"prompt {i}: {r.error}" for i, r in enumerate(results) if r.error is not None]
        if errors:
            raise GenerationFailed(f"{len(errors)} of {len(results)} prompts failed: " + "; ".join(errors[:3]))
        return [r.text or "" for r in results]

    def generate_rows(self, prompts: Sequence[str], sampling: DecodingConfig,
                      seeds: Sequence[int] | None = None,
                      schemas: Sequence[str | None] | None = None) -> list[RowResult]:
        """One RowResult per prompt; never raises for a bad row (ray#59194: one bad row must not
        fail its batch). Empty prompts fail alone; if the batch fails, each row is retried alone.

        `schemas[i]`: the JSON schema (text, tkre/generate/schema.py) row i must follow, enforced
        while decoding; None = free text."""
        seeds = list(seeds) if seeds is not None else [sampling.seed + i for i in range(len(prompts))]
        schemas = list(schemas) if schemas is not None else [None] * len(prompts)
        results: list[RowResult | None] = [None] * len(prompts)
        todo = []
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                results[i] = RowResult(None, 0, "empty prompt")
            else:
                todo.append(i)
        if todo:
            try:
                batch = self._generate_batch([prompts[i] for i in todo], sampling, [seeds[i] for i in todo],
                                             [schemas[i] for i in todo])
                for i, r in zip(todo, batch):
                    results[i] = r
            except Exception as e:  # noqa: BLE001 -- isolate the bad row(s) below
                if not self.retry_rows_alone:
                    raise
                log.warning("batch of %d failed (%s: %s); retrying row by row", len(todo), type(e).__name__, e)
                for i in todo:
                    try:
                        results[i] = self._generate_batch([prompts[i]], sampling, [seeds[i]], [schemas[i]])[0]
                    except Exception as row_error:  # noqa: BLE001
                        results[i] = RowResult(None, 0, f"{type(row_error).__name__}: {row_error}")
        return [r if r is not None else RowResult(None, 0, "no result") for r in results]

    def _generate_batch(self, prompts: list[str], sampling: DecodingConfig, seeds: list[int],
                        schemas: list[str | None]) -> list[RowResult]:
        raise NotImplementedError
