"""OpenAI-compatible chat-completions backend (hosted OpenAI, `vllm serve`, llama.cpp, Ollama, ...).

Requests go through the official `openai` package's `AsyncOpenAI`: it retries 408/409/429/5xx,
time-outs and connection errors with exponential back-off, honours `Retry-After` / `retry-after-ms`,
and applies the time-out. tkre keeps what the client does not do: its own engine actors (the same
pool as the hf backend, tkre/generate/engines.py), a bound on requests in flight per actor,
and an error per row instead of an exception for the batch (ray#59194).

Why not Ray's `HttpRequestProcessorConfig`: in Ray 2.60 its HTTP stage retries only 408/429/502/503/504
(not 500), and a row that exhausts its retries raises for the whole batch.

Structured outputs (constrained SCDG rows, tkre/generate/schema.py). Servers take the schema in
different request fields -- *dialects*, tried in this order:

  json_schema          OpenAI (also vLLM, Ollama's /v1): response_format={"type": "json_schema", ...}
  json_object+schema   llama.cpp / llama-cpp-python: response_format={"type": "json_object", "schema": ...}
                       (llama-cpp-python answers json_schema with HTTP 500 "response_format.type: Input
                       should be 'text' or 'json_object'")
  structured_outputs   vLLM >= 0.10 extra body: {"structured_outputs": {"json": schema}}
  guided_json          older vLLM extra body: {"guided_json": schema}
  format               Ollama: {"format": schema}
  text                 none of them: free text, parsed by the free-text parser (counted as unconstrained)

The dialect is found once per job, before the first constrained row goes out (`prepare`, called by
tkre/generate/run.py in the driver): a probe asks "Say hello." under a one-value schema in each dialect
until the answer is that value (the server honoured the schema). A dialect is passed over when the
server refuses it -- any HTTP status whose message names response_format / json_schema / the schema, or
a validation error -- or accepts it and answers something else (unknown fields are silently dropped by
llama-cpp-python and vLLM). The result is remembered for the process (server URL + model), handed to
every actor, and written in the SCDG summary: the probe's steps (`structured_output`), and each row's
dialect (`counts.dialects`), which the generator report shows. When the probe cannot tell (server down,
auth error), rows start with json_schema, and the first refusal of a row moves that actor to the next
dialect (the row is sent again in it). A row answered with text that is not JSON is `constrained=False`.

A deterministic error is not retried: a 5xx whose message is a validation error or names the
structured-output fields gets `x-should-retry: false` (the client's own switch) before the client sees
it. Row errors carry the server's message whole, on one line.

The API key is read from the environment variable named in `openai.api_key_env`, held in a
`pydantic.SecretStr` (masked in reprs and logs), and reaches only the client's Authorization header.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import re
from dataclasses import replace
from typing import Any
from urllib.parse import urlparse

from pydantic import SecretStr

from tkre.config import DecodingConfig, GeneratorConfig
from tkre.errors import ConfigError
from tkre.generate.backends.base import Backend, BackendSpec, RowResult
from tkre.generate.prompts import chat_messages

log = logging.getLogger(__name__)

#: structured-output dialects, in the order they are tried ("text": none)
DIALECTS = ("json_schema", "json_object+schema", "structured_outputs", "guided_json", "format", "text")
#: a refusal whose message matches this is "this dialect is not spoken here", not a bad request
_REFUSED = re.compile(r"response_format|json_schema|json_object|schema|structured|guided|grammar|\bformat\b"
                      r"|validation error|input should be|unrecognized request argument|extra (fields|inputs)",
                      re.IGNORECASE)
#: a 5xx whose message matches this is deterministic (retrying sends the same request to the same answer)
_DETERMINISTIC = re.compile(r"validation error|input should be|response_format|json_schema|schema|guided"
                            r"|structured_outputs|grammar", re.IGNORECASE)
#: sent as the key to servers that need none (the client always sends an Authorization header)
NO_KEY = "EMPTY"
#: the probe: a schema with one possible answer, and a prompt that does not ask for it
PROBE_SCHEMA = {"type": "object", "properties": {"probe": {"type": "string", "enum": ["tkre"]}},
                "required": ["probe"], "additionalProperties": False}
PROBE_PROMPT = "Say hello."
_PROBE_ANSWER = re.compile(r'^\s*(```[a-z]*\s*)?\{\s*"probe"\s*:\s*"tkre"')
#: dialects found in this process: (base_url, model) -> the probe's report
_FOUND: dict[tuple[str, str], dict[str, Any]] = {}


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
        num_cpus=0.5, replicas=cfg.concurrency, batch_size=cfg.batch_size,
        prepare="tkre.generate.backends.openai:prepare")


def response_format(schema_text: str) -> dict:
    """The chat-completions `response_format` for one SCDG schema (strict structured outputs)."""
    return {"type": "json_schema",
            "json_schema": {"name": "scdg_samples", "schema": json.loads(schema_text), "strict": True}}


def structured_kwargs(dialect: str, schema_text: str) -> dict[str, Any]:
    """The `chat.completions.create` keyword arguments that carry `schema_text` in `dialect`."""
    if dialect == "json_schema":
        return {"response_format": response_format(schema_text)}
    schema = json.loads(schema_text)
    if dialect == "json_object+schema":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if dialect == "structured_outputs":
        return {"extra_body": {"structured_outputs": {"json": schema}}}
    if dialect == "guided_json":
        return {"extra_body": {"guided_json": schema}}
    if dialect == "format":
        return {"extra_body": {"format": schema}}
    if dialect == "text":
        return {}
    raise ValueError(f"unknown structured-output dialect {dialect!r} (known: {', '.join(DIALECTS)})")


def next_dialect(dialect: str) -> str:
    return DIALECTS[min(DIALECTS.index(dialect) + 1, len(DIALECTS) - 1)]


def server_message(e: Exception) -> str:
    """The server's own error message, whole, on one line (`str(e)` of an APIStatusError is
    'Error code: N - <message>', often several lines)."""
    body = getattr(e, "body", None)
    msg = body.get("message") if isinstance(body, dict) else body if isinstance(body, str) else None
    if not isinstance(msg, str) or not msg.strip():
        msg = str(e)
    return " ".join(msg.split())


def refused(e: Exception) -> bool:
    """Is this error the server refusing a structured-output field (any HTTP status)?"""
    import openai

    return isinstance(e, openai.APIStatusError) and bool(_REFUSED.search(server_message(e)))


async def _no_retry_if_deterministic(response) -> None:
    """httpx response hook: a 5xx that is a validation error (or names the structured-output fields)
    gets `x-should-retry: false`, which the openai client obeys (it would otherwise retry it
    `max_retries` times with back-off for the same answer)."""
    if response.status_code < 500 or "x-should-retry" in response.headers:
        return
    await response.aread()
    if _DETERMINISTIC.search(response.text or ""):
        response.headers["x-should-retry"] = "false"


def prepare(spec: BackendSpec) -> tuple[BackendSpec, dict[str, Any]]:
    """The spec with the server's structured-output dialect in its init kwargs, and the probe's report
    ({"dialect", "steps": [{"dialect", "outcome", "detail"}], "remembered"}). Found once per process
    for a (server, model); a probe that could not tell (dialect None) is not remembered."""
    kw = spec.init_kwargs
    key = (str(kw["base_url"]), str(kw["model"]))
    found = _FOUND.get(key)
    if found is not None:
        found = {**found, "remembered": True}
    else:
        found = spec.build().probe()
        if found["dialect"] is not None:
            _FOUND[key] = found
    return replace(spec, init_kwargs={**kw, "dialect": found["dialect"]}), found


def forget_dialects() -> None:
    """Drop the dialects found in this process (tests; a server restarted with other options)."""
    _FOUND.clear()


def _run(coro):
    """Run a coroutine to completion from sync code, also where an event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class OpenAIBackend(Backend):
    def __init__(self, base_url: str, model: str, *, api_key: SecretStr | None = None, timeout_s: float = 60.0,
                 max_retries: int = 5, concurrency: int = 4, system: str | None = None,
                 dialect: str | None = None):
        self.base_url, self.model, self.system = base_url, model, system
        self.api_key = api_key or SecretStr("")
        self.timeout_s, self.max_retries, self.concurrency = timeout_s, max_retries, concurrency
        self.requests = 0  # HTTP requests sent, retries included (tests and logs)
        self.rows = 0  # requests tkre made (each row once, plus a resend per refused dialect)
        if dialect is not None and dialect not in DIALECTS:
            raise ValueError(f"unknown structured-output dialect {dialect!r} (known: {', '.join(DIALECTS)})")
        self.dialect = dialect or DIALECTS[0]  # the dialect constrained rows are sent in

    @property
    def structured(self) -> bool:
        """False once the server has refused every structured-output dialect."""
        return self.dialect != "text"

    @property
    def retries(self) -> int:
        return self.requests - self.rows

    def _client(self):
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        async def count(request) -> None:
            self.requests += 1

        http = DefaultAsyncHttpxClient(event_hooks={"request": [count], "response": [_no_retry_if_deterministic]})
        return AsyncOpenAI(base_url=self.base_url, api_key=self.api_key.get_secret_value() or NO_KEY,
                           max_retries=self.max_retries, timeout=self.timeout_s, http_client=http)

    # ------------------------------------------------------------------------------ the probe
    def probe(self) -> dict[str, Any]:
        """Find the dialect the server honours (see the module docstring)."""
        return _run(self._probe())

    async def _probe(self) -> dict[str, Any]:
        import openai

        steps: list[dict[str, str]] = []
        schema = json.dumps(PROBE_SCHEMA)
        async with self._client() as client:
            for dialect in DIALECTS[:-1]:
                self.rows += 1
                try:
                    resp = await client.chat.completions.create(
                        model=self.model, messages=chat_messages(PROBE_PROMPT, self.system), temperature=0.0,
                        max_tokens=48, seed=0, n=1, **structured_kwargs(dialect, schema))
                except openai.APIStatusError as e:
                    detail = f"HTTP {e.status_code}: {server_message(e)}"
                    if not refused(e):  # the server cannot answer at all: the probe cannot tell
                        steps.append({"dialect": dialect, "outcome": "error", "detail": detail})
                        return self._probed(None, steps)
                    steps.append({"dialect": dialect, "outcome": "refused", "detail": detail})
                    continue
                except openai.OpenAIError as e:
                    steps.append({"dialect": dialect, "outcome": "error", "detail": f"{type(e).__name__}: {e}"})
                    return self._probed(None, steps)
                text = _content(resp) or ""
                if _PROBE_ANSWER.match(text):
                    steps.append({"dialect": dialect, "outcome": "honoured", "detail": ""})
                    return self._probed(dialect, steps)
                steps.append({"dialect": dialect, "outcome": "ignored",
                              "detail": f"answered {' '.join(text.split())[:80]!r}"})
        return self._probed("text", steps)

    def _probed(self, dialect: str | None, steps: list[dict[str, str]]) -> dict[str, Any]:
        tried = "; ".join(f"{s['dialect']}: {s['outcome']}" + (f" ({s['detail']})" if s["detail"] else "")
                          for s in steps)
        if dialect is None:
            log.warning("could not find the structured-output dialect of the server at %s (%s); constrained rows "
                        "start with json_schema and move on when the server refuses it", self.base_url, tried)
        elif dialect == "text":
            log.warning("the server at %s honours no structured-output dialect (%s); constrained rows are sent as "
                        "free text and parsed by the free-text parser", self.base_url, tried)
        elif steps[0]["outcome"] != "honoured":
            log.warning("the server at %s speaks the structured-output dialect %s (%s)", self.base_url, dialect, tried)
        else:
            log.info("the server at %s honours structured outputs as %s", self.base_url, dialect)
        return {"dialect": dialect, "steps": steps, "remembered": False}

    # ------------------------------------------------------------------------------ rows
    def _generate_batch(self, prompts: list[str], sampling: DecodingConfig, seeds: list[int],
                        schemas: list[str | None]) -> list[RowResult]:
        return _run(self._all(prompts, sampling, seeds, schemas))

    async def _all(self, prompts, sampling, seeds, schemas) -> list[RowResult]:
        sem = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:
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
        dialect = self.dialect if schema else ""
        try:
            while True:
                self.rows += 1
                try:
                    extra = structured_kwargs(dialect, schema) if schema else {}
                    resp = await client.chat.completions.create(**kwargs, **extra)
                    break
                except openai.APIStatusError as e:
                    if not (schema and dialect != "text" and refused(e)):
                        raise
                    if self.dialect == dialect:  # the first row refused moves the actor on; the others follow
                        self.dialect = next_dialect(dialect)
                        log.warning("the server at %s refused the structured-output dialect %s (HTTP %d: %s); "
                                    "constrained rows now go out as %s", self.base_url, dialect, e.status_code,
                                    server_message(e), self.dialect)
                    dialect = self.dialect
        except openai.APIStatusError as e:
            retried = (e.status_code in (408, 409, 429) or e.status_code >= 500) \
                and e.response.headers.get("x-should-retry") != "false"
            detail = f"gave up after {self.max_retries} retries: " if retried and self.max_retries else ""
            return RowResult(None, 0, f"{detail}HTTP {e.status_code}: {server_message(e)}"[:2000])
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            return RowResult(None, 0, f"gave up after {self.max_retries} retries: {type(e).__name__}: {e}"[:300])
        except openai.OpenAIError as e:  # malformed response bodies and the like
            return RowResult(None, 0, f"{type(e).__name__}: {e}"[:300])
        return _row(resp, constrained=bool(schema) and dialect != "text", dialect=dialect)


def _content(resp) -> str | None:
    try:
        text = resp.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else None


def _row(resp, *, constrained: bool, dialect: str = "") -> RowResult:
    try:
        text = resp.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return RowResult(None, 0, "malformed response: no choices[0].message.content")
    if not isinstance(text, str):
        return RowResult(None, 0, "malformed response: content is not a string")
    text = text.strip()
    usage = getattr(resp, "usage", None)
    tokens, read = getattr(usage, "completion_tokens", None), getattr(usage, "prompt_tokens", None)
    # a server that ignored the schema answers text that is not JSON at all
    constrained = constrained and text.lstrip("`json \n").startswith(("{", "["))
    return RowResult(text, int(tokens) if isinstance(tokens, int) else len(text.split()),
                     input_tokens=int(read) if isinstance(read, int) else 0, constrained=constrained,
                     dialect=dialect)
