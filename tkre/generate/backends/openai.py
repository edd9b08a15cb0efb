"""OpenAI-compatible chat-completions backend (hosted OpenAI, `vllm serve`, any compatible server).

Requests go through the official `openai` package's `AsyncOpenAI`: it retries 408/409/429/5xx,
time-outs and connection errors with exponential back-off, honours `Retry-After` / `retry-after-ms`,
and applies the time-out. tkre keeps what the client does not do: its own Ray Data actor pool (the same
`map_batches` pool as the hf backend, tkre/generate/run.py), a bound on requests in flight per actor,
and an error per row instead of an exception for the batch (ray#59194).

Why not Ray's `HttpRequestProcessorConfig`: in Ray 2.60 its HTTP stage retries only 408/429/502/503/504
(not 500), and a row that exhausts its retries raises for the whole batch.

Constrained SCDG rows (tkre/generate/schema.py) are sent with `response_format={"type": "json_schema"}`.
A server that refuses it (HTTP 400 naming response_format / json_schema / structured output) gets the
row again without it, and this actor stops asking; a server that ignores it answers text that is not
JSON. Either way the row comes back with `constrained=False`: the SCDG summary counts such rows as
`unconstrained` and their text goes through the free-text parser.

The API key is read from the environment variable named in `openai.api_key_env`, held in a
`pydantic.SecretStr` (masked in reprs and logs), and reaches only the client's Authorization header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from urllib.parse import urlparse

from pydantic import SecretStr

from tkre.config import DecodingConfig, GeneratorConfig
from tkre.errors import ConfigError
from tkre.generate.backends.base import Backend, BackendSpec, RowResult
from tkre.generate.prompts import chat_messages

log = logging.getLogger(__name__)

#: a 400 whose message matches this is "structured outputs not supported", not a bad request
_NO_STRUCTURED = re.compile(r"response_format|json_schema|structured|guided|grammar", re.IGNORECASE)
#: sent as the key to servers that need none (the client always sends an Authorization header)
NO_KEY = "EMPTY"


def spec(cfg: GeneratorConfig) -> BackendSpec:
    o = cfg.openai
    key = os.environ.get(o.api_key_env) or None
    host = urlparse(o.base_url).hostname or ""
    if key is None and host.endswith("openai.com"):
        raise ConfigError(f"the openai backend needs an API key: set the environment variable {o.api_key_env} "
                          f"(the generator's openai.api_key_env names it)")
    return BackendSpec(
        name="openai", cls="tkre.generate.backends.openai:OpenAIBackend",
        init_kwargs={"base_url": o.base_url, "model": cfg.model, "api_key": SecretStr(key or ""),
                     "timeout_s": o.timeout_s, "max_retries": o.max_retries, "concurrency": o.concurrency,
                     "system": cfg.system_prompt},
        model_id=cfg.model, revision=f"{o.base_url}|{cfg.revision or ''}", generator=f"openai:{cfg.model}",
        num_cpus=0.5)


def response_format(schema_text: str) -> dict:
    """The chat-completions `response_format` for one SCDG schema (strict structured outputs)."""
    return {"type": "json_schema",
            "json_schema": {"name": "scdg_samples", "schema": json.loads(schema_text), "strict": True}}


class OpenAIBackend(Backend):
    def __init__(self, base_url: str, model: str, *, api_key: SecretStr | None = None, timeout_s: float = 60.0,
                 max_retries: int = 5, concurrency: int = 4, system: str | None = None):
        self.base_url, self.model, self.system = base_url, model, system
        self.api_key = api_key or SecretStr("")
        self.timeout_s, self.max_retries, self.concurrency = timeout_s, max_retries, concurrency
        self.requests = 0  # HTTP requests sent, retries included (tests and logs)
        self.rows = 0  # rows asked for
        self.structured = True  # False once the server has refused response_format

    @property
    def retries(self) -> int:
        return self.requests - self.rows

    def _generate_batch(self, prompts: list[str], sampling: DecodingConfig, seeds: list[int],
                        schemas: list[str | None]) -> list[RowResult]:
        return asyncio.run(self._all(prompts, sampling, seeds, schemas))

    async def _all(self, prompts, sampling, seeds, schemas) -> list[RowResult]:
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        async def count(request) -> None:
            self.requests += 1

        sem = asyncio.Semaphore(self.concurrency)
        http = DefaultAsyncHttpxClient(event_hooks={"request": [count]})
        async with AsyncOpenAI(base_url=self.base_url, api_key=self.api_key.get_secret_value() or NO_KEY,
                               max_retries=self.max_retries, timeout=self.timeout_s,
                               http_client=http) as client:
            async def one(prompt: str, seed: int, schema: str | None) -> RowResult:
                async with sem:
                    return await self._request(client, prompt, sampling, seed, schema)
            return list(await asyncio.gather(*(one(p, s, x) for p, s, x in zip(prompts, seeds, schemas))))

    async def _request(self, client, prompt: str, sampling: DecodingConfig, seed: int,
                       schema: str | None) -> RowResult:
        import openai

        kwargs = {"model": self.model, "messages": chat_messages(prompt, self.system),
                  "temperature": sampling.temperature, "top_p": sampling.top_p,
                  "max_tokens": sampling.max_new_tokens, "seed": seed, "n": 1}
        self.rows += 1
        use_schema = bool(schema) and self.structured
        try:
            try:
                resp = await client.chat.completions.create(
                    **kwargs, **({"response_format": response_format(schema)} if use_schema else {}))
            except openai.BadRequestError as e:
                if not (use_schema and _NO_STRUCTURED.search(str(e))):
                    raise
                if self.structured:
                    log.warning("the server at %s refused response_format (%s); constrained rows are sent as "
                                "free text and parsed by the free-text parser", self.base_url, str(e)[:200])
                self.structured, use_schema = False, False
                self.rows += 1
                resp = await client.chat.completions.create(**kwargs)
        except openai.APIStatusError as e:
            retried = e.status_code in (408, 409, 429) or e.status_code >= 500
            detail = f"gave up after {self.max_retries} retries: " if retried else ""
            return RowResult(None, 0, f"{detail}HTTP {e.status_code}: {str(e)[:200]}")
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            return RowResult(None, 0, f"gave up after {self.max_retries} retries: {type(e).__name__}: {e}"[:300])
        except openai.OpenAIError as e:  # malformed response bodies and the like
            return RowResult(None, 0, f"{type(e).__name__}: {e}"[:300])
        return _row(resp, constrained=use_schema)


def _row(resp, *, constrained: bool) -> RowResult:
    try:
        text = resp.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return RowResult(None, 0, "malformed response: no choices[0].message.content")
    if not isinstance(text, str):
        return RowResult(None, 0, "malformed response: content is not a string")
    text = text.strip()
    usage = getattr(resp, "usage", None)
    tokens, read = getattr(usage, "completion_tokens", None), getattr(usage, "prompt_tokens", None)
    # a server that ignored response_format answers text that is not JSON at all
    constrained = constrained and text.lstrip("`json \n").startswith(("{", "["))
    return RowResult(text, int(tokens) if isinstance(tokens, int) else len(text.split()),
                     input_tokens=int(read) if isinstance(read, int) else 0, constrained=constrained)
