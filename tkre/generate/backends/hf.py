"""transformers backend: left-padded batches, decoded by `hf_decoding.decode` (a finished row leaves the
batch at once), CPU or GPU.

The embedded default `embedded:smollm2` ships as a GGUF file (shared/models.md). Dequantising it
takes ~27 s on 2 cores, so the first use converts it once into a plain HF folder under
`$TKRE_MODEL_CACHE` (default `~/.cache/tkre/model_sources`); a file lock makes concurrent first uses
(several sweep trials) convert only once, and the folder appears by atomic rename.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from tkre.cluster import cpu_share
from tkre.config import EMBEDDED_GENERATOR, DecodingConfig, GeneratorConfig
from tkre.errors import ConfigError
from tkre.generate.backends.base import Backend, BackendSpec, RowResult
from tkre.generate.prompts import as_chat_text
from tkre.io import atomic_path, atomic_write_json

if TYPE_CHECKING:
    from tkre.config import ExperimentConfig

log = logging.getLogger(__name__)

MARKER = "tkre-converted.json"
#: the top-k transformers' own sampling applies when a model's generation config leaves it unset (4.x:
#: GenerationConfig's default; 5.x: the defaults `generate` fills in, the config itself holding None)
DEFAULT_TOP_K = 50


def model_cache_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get("TKRE_MODEL_CACHE", "~/.cache/tkre/model_sources")))


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise a GGUF causal LM once into a plain HF folder (model + tokenizer) at `target`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting the same model
        if (target / MARKER).is_file():
            return target
        log.info("converting %s into %s (once)", gguf.name, target)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict())
        plain.generation_config = loaded.generation_config
        with atomic_path(target) as tmp:
            plain.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            atomic_write_json(tmp / MARKER, {"source": str(gguf), "source_size": gguf.stat().st_size})
    return target


def resolve_generator(name: str) -> tuple[str, str]:
    """(what `from_pretrained` loads, revision for cache keys). Embedded -> converted local folder."""
    from tkre.model_sources import EMBEDDED, embedded_file

    if name == EMBEDDED_GENERATOR:
        gguf = embedded_file(name)
        sha = EMBEDDED[name]["sha256"]
        return str(convert_gguf(gguf, model_cache_dir() / f"smollm2-135m-instruct-hf-{sha[:12]}")), sha
    looks_local = name.startswith(("/", "./", "../", "~")) or os.path.exists(os.path.expanduser(name))
    if looks_local:
        path = Path(os.path.expanduser(name))
        if not (path / "config.json").is_file():
            raise ConfigError(f"generation model {name}: no such model folder (no config.json there); set "
                              f"--model to a local HF folder, a Hub id, or {EMBEDDED_GENERATOR}")
        return str(path), local_revision(path)
    return name, ""


def convert_in_background(experiments: Iterable["ExperimentConfig"]) -> threading.Thread | None:
    """Start converting the embedded generator, if an experiment's EDKG or SCDG runs it on the hf
    backend, in a daemon thread (a sweep driver, while Ray and Tune start): the trial that needs it then
    waits on the file lock for a conversion already under way (or finds it done) instead of starting
    it. Failures are left to that trial, which converts again and reports them."""
    todo = sorted({gen.model for cfg in experiments
                   for on, gen in ((cfg.stages.edkg, cfg.edkg.generator), (cfg.stages.scdg, cfg.scdg.generator))
                   if on and gen is not None and gen.backend == "hf" and gen.model == EMBEDDED_GENERATOR})
    if not todo:
        return None

    def convert() -> None:
        for name in todo:
            try:
                resolve_generator(name)
            except Exception as e:  # noqa: BLE001 -- the trial that needs the model reports it
                log.debug("converting %s ahead of the trials failed: %s", name, e)

    thread = threading.Thread(target=convert, name="tkre-convert-generators", daemon=True)
    thread.start()
    return thread


def local_revision(path: Path) -> str:
    """A content fingerprint of a local model folder (names, sizes, mtimes of its files)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            st = p.stat()
            h.update(f"{p.relative_to(path)}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


def _check_hub_model(name: str, revision: str | None) -> None:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name, revision=revision)
    except Exception as e:  # noqa: BLE001 -- any load failure is a user-fixable model name
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ConfigError(f"generation model {name!r} cannot be loaded ({type(e).__name__}); "
                          + ("the Hub is offline (HF_HUB_OFFLINE=1): " if offline else "")
                          + f"use a local model folder or {EMBEDDED_GENERATOR}") from None


def default_threads(concurrency: int) -> int:
    """Torch threads per actor when not configured and not in a sweep trial: the CPUs free for the pool
    / its actors.

    Each actor reserves exactly as many Ray CPUs as it runs torch threads, so the reservation and the
    work agree; the CPUs counted are the free ones of a running Ray cluster (what a sweep trial leaves),
    else this machine's cores (a local Ray started later gets them all)."""
    cpus = float(os.cpu_count() or 1)
    try:
        import ray

        if ray.is_initialized():
            cpus = float(ray.available_resources().get("CPU", 1.0))
    except Exception:  # noqa: BLE001 -- no Ray or no cluster view: count this machine's cores
        pass
    return max(1, int(cpus) // max(1, concurrency))


def cpu_threads(cfg: GeneratorConfig) -> tuple[int, float]:
    """(torch threads, Ray CPUs) per CPU actor: `threads_per_actor` if set (and `cpus_per_actor`, else
    the same number); inside a sweep trial, the trial's fixed share (`tkre.cluster.cpu_share`); else the
    free CPUs / actors (both)."""
    if cfg.threads_per_actor:
        return cfg.threads_per_actor, cfg.fixed_actor_cpus()
    share = cpu_share.current()
    if share is not None:
        return share.threads(cfg.concurrency), share.reservation(cfg.concurrency)
    threads = default_threads(cfg.concurrency)
    return threads, float(threads)


def spec(cfg: GeneratorConfig) -> BackendSpec:
    import torch

    path, revision = resolve_generator(cfg.model)
    if not revision:
        _check_hub_model(path, cfg.revision)
        revision = cfg.revision or "main"
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    threads, reserve = cpu_threads(cfg)
    return BackendSpec(
        name="hf", cls="tkre.generate.backends.hf:HFBackend",
        init_kwargs={"model": path, "revision": cfg.revision, "device": "cuda" if use_cuda else "cpu",
                     "threads": threads, "system": cfg.system_prompt},
        model_id=cfg.model, revision=revision, generator=f"hf:{_short(cfg.model)}",
        num_cpus=reserve if not use_cuda else 1.0, num_gpus=1.0 if use_cuda else 0.0,
        replicas=cfg.concurrency, batch_size=cfg.batch_size)


def _short(name: str) -> str:
    return Path(name).name if os.path.sep in name and os.path.exists(os.path.expanduser(name)) else name


class HFBackend(Backend):
    """One model load per instance (one per Ray actor); batches are left-padded."""

    def __init__(self, model: str, *, revision: str | None = None, device: str = "cpu", threads: int | None = None,
                 system: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads and device == "cpu":
            torch.set_num_threads(threads)
        self.device, self.system = device, system
        self.tokenizer = AutoTokenizer.from_pretrained(model, revision=revision)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.float16 if device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model, revision=revision, dtype=dtype).to(device).eval()
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.top_k = sampling_top_k(self.model.generation_config)
        self._llt = None  # llguidance tokenizer, built on the first constrained batch
        self._grammars: dict[str, str] = {}  # schema text -> compiled grammar

    def _generate_batch(self, prompts: list[str], sampling: DecodingConfig, seeds: list[int],
                        schemas: list[str | None]) -> list[RowResult]:
        from tkre.generate.backends import hf_decoding

        inputs = [as_chat_text(self.tokenizer, p, self.system) for p in prompts]
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        enc = self.tokenizer(inputs, return_tensors="pt", padding=True,
                             add_special_tokens=not templated).to(self.device)
        mask = None
        if any(schemas):
            grammars = [self._grammar(s) if s else None for s in schemas]
            mask = hf_decoding.SchemaMask(self._ll_tokenizer(), grammars, self.eos_ids)
        procs = hf_decoding.processors(temperature=sampling.temperature, top_p=sampling.top_p, top_k=self.top_k,
                                       seeds=seeds, mask=mask)
        # greedy search over the processors' output (sampling happens per row in RowSampler), finished
        # rows leaving the batch
        new = hf_decoding.decode(self.model, enc["input_ids"], enc["attention_mask"],
                                 max_new_tokens=sampling.max_new_tokens, eos_ids=self.eos_ids, procs=procs)
        read = enc["attention_mask"].sum(dim=1).tolist()  # prompt tokens per row (left padding excluded)
        results = []
        for i, (ids, n_in) in enumerate(zip(new, read)):  # `decode` ends each row at its EOS
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            if mask is not None and mask.errors[i]:
                log.warning("schema matcher stopped on row %d: %s", i, mask.errors[i])
            results.append(RowResult(text, len(ids), input_tokens=int(n_in), constrained=bool(schemas[i])))
        return results

    def _grammar(self, schema: str) -> str:
        if schema not in self._grammars:
            from tkre.generate.backends.hf_decoding import compile_schema

            self._grammars[schema] = compile_schema(schema, self._ll_tokenizer())
        return self._grammars[schema]

    def _ll_tokenizer(self):
        if self._llt is None:
            from tkre.generate.backends.hf_decoding import ll_tokenizer

            self._llt = ll_tokenizer(self.tokenizer, self.model.config.vocab_size)
        return self._llt


def sampling_top_k(generation_config) -> int:
    """The top-k `generate(do_sample=True)` would use with this generation config (0 = none)."""
    top_k = getattr(generation_config, "top_k", None)
    return DEFAULT_TOP_K if top_k is None else int(top_k)


def _eos_ids(model, tokenizer) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
