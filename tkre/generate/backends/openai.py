"""OpenAI-compatible chat-completions backend (hosted OpenAI, `vllm serve`, any compatible server).

Why not Ray's `HttpRequestProcessorConfig`: in Ray 2.60 its HTTP stage retries only 408/429/502/503/504
(not 500), and a row that exhausts its retries raises for the whole batch -- exactly the failure mode
of ray#59194 that tkre must avoid. So tkre runs this backend in its own Ray Data actor pool (the same
`map_batches` pool as the hf backend, see tkre/generate/run.py), where each actor sends its batch
concurrently with aiohttp, retries 429/5xx/time-outs/connection errors with exponential back-off
(honouring `Retry-After`), and returns an error per row instead of raising.

The API key is read from the environment variable named in `cfg.openai.api_key_env`; it is held in
a `Secret` whose repr is masked, sent only in the Authorization header, never logged or written.
"""

from __future__ import annotations

import asyncio
import logging
import os
from urllib.parse import urlparse

from tkre.config import DecodingConfig, GeneratorConfig
from tkre.errors import ConfigError
from tkre.generate.backends.base import Backend, BackendSpec, RowResult
from tkre.generate.prompts import chat_messages

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429}  # plus every 5xx


class Secret:
    """A string that never shows itself in logs, reprs or tracebacks."""

    def __init__(self, value: str | None):
        self._value = value

    def get(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)" if self._value else "Secret(None)"

    __str__ = __repr__


def spec(cfg: GeneratorConfig) -> BackendSpec:
    o = cfg.openai
    key = os.environ.get(o.api_key_env) or None
    host = urlparse(o.base_url).hostname or ""
    if key is None and host.endswith("openai.com"):
        raise ConfigError(f"the openai backend needs an API key: set the environment variable {o.api_key_env} "
                          f"(the generator's openai.api_key_env names it)")
    return BackendSpec(
        name="openai", cls="tkre.generate.backends.openai:OpenAIBackend",
        init_kwargs={"base_url": o.base_url, "model": cfg.model, "api_key": Secret(key), "timeout_s": o.timeout_s,
                     "max_retries": o.max_retries, "retry_base_s": o.retry_base_s, "concurrency": o.concurrency,
                     "system": cfg.system_prompt},
        model_id=cfg.model, revision=f"{o.base_url}|{cfg.revision or ''}", generator=f"openai:{cfg.model}",
        num_cpus=0.5)


class OpenAIBackend(Backend):
    def __init__(self, base_url: str, model: str, *, api_key: Secret | None = None, timeout_s: float = 60.0,
                 max_retries: int = 5, retry_base_s: float = 0.5, concurrency: int = 4, system: str | None = None):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.system = model, api_key or Secret(None), system
        self.timeout_s, self.max_retries, self.retry_base_s = timeout_s, max_retries, retry_base_s
        self.concurrency = concurrency
        self.retries = 0  # retries done so far (for tests and logs)

    def _generate_batch(self, prompts: list[str], sampling: DecodingConfig, seeds: list[int]) -> list[RowResult]:
        return asyncio.run(self._all(prompts, sampling, seeds))

    async def _all(self, prompts, sampling, seeds) -> list[RowResult]:
        import aiohttp

        headers = {"Content-Type": "application/json"}
        if self.api_key.get():
            headers["Authorization"] = f"Bearer {self.api_key.get()}"
        sem = asyncio.Semaphore(self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            async def one(prompt: str, seed: int) -> RowResult:
                async with sem:
                    return await self._request(session, prompt, sampling, seed)
            return list(await asyncio.gather(*(one(p, s) for p, s in zip(prompts, seeds))))

    async def _request(self, session, prompt: str, sampling: DecodingConfig, seed: int) -> RowResult:
        import aiohttp

        payload = {"model": self.model, "messages": chat_messages(prompt, self.system),
                   "temperature": sampling.temperature, "top_p": sampling.top_p,
                   "max_tokens": sampling.max_new_tokens, "seed": seed, "n": 1}
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.retries += 1
            wait = self.retry_base_s * (2 ** attempt)
            try:
                async with session.post(self.url, json=payload) as resp:
                    if resp.status == 200:
                        return _parse_response(await resp.json(content_type=None))
                    body = (await resp.text())[:200]
                    last = f"HTTP {resp.status}: {body}"
                    if resp.status not in RETRY_STATUS and resp.status < 500:
                        return RowResult(None, 0, last)  # a client error will not heal by retrying
                    retry_after = resp.headers.get("Retry-After")
                    if retry_after:
                        try:
                            wait = min(max(float(retry_after), wait), 60.0)
                        except ValueError:
                            pass
            except (asyncio.TimeoutError, aiohttp.ClientError) as e:
                last = f"{type(e).__name__}: {e}"[:200]
            except ValueError as e:  # malformed JSON body
                return RowResult(None, 0, f"malformed response: {e}"[:200])
            if attempt < self.max_retries:
                log.debug("request failed (%s), retry %d in %.2fs", last, attempt + 1, wait)
                await asyncio.sleep(wait)
        return RowResult(None, 0, f"gave up after {self.max_retries} retries: {last}")


def _parse_response(data) -> RowResult:
    try:
        text = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return RowResult(None, 0, "malformed response: no choices[0].message.content")
    if not isinstance(text, str):
        return RowResult(None, 0, "malformed response: content is not a string")
    usage = data.get("usage") or {}
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    read = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return RowResult(text.strip(), int(tokens) if isinstance(tokens, int) else len(text.split()),
                     input_tokens=int(read) if isinstance(read, int) else 0)
