"""`tkre serve`: a small OpenAI-compatible chat-completions server over the `hf` backend.

    tkre serve --model embedded:smollm2 --port 8765      # http://127.0.0.1:8765/v1/chat/completions

What it is for: running tkre's `openai` backend offline against a local model (the generator
comparison's third setting, tests, demos). What it is not: a production server -- use `vllm serve`
for that. It listens on 127.0.0.1 unless told otherwise (a non-loopback host is refused without
`allow_remote`, since the server has no authentication).

Requests are micro-batched: the requests that arrive while a batch is being generated, or within
50 ms of the first one, are taken together (up to `batch_size`, grouped by sampling parameters and
system message) and run as one left-padded `generate` in a worker thread, so a client with several requests in flight gets the
batching the in-process `hf` backend has. Each response carries `usage` (prompt and completion
tokens). `response_format: {"type": "json_schema", ...}` is enforced while decoding, as the hf
backend enforces SCDG's schema (so tkre's openai backend gets structured outputs from it); other
formats (json_object) and `n` > 1 are refused with HTTP 400.

Written with aiohttp (already a dependency for tests' fixture and the client side); a full serving
stack (vLLM's server, TGI) needs a GPU or far more setup than a CPU test machine has.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    prompt: str
    system: str | None
    params: tuple  # (temperature, top_p, max_tokens)
    seed: int
    schema: str | None  # JSON schema text (response_format json_schema): enforced while decoding
    future: asyncio.Future = field(repr=False)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_messages(messages: Any) -> tuple[str, str | None]:
    """(the user prompt, the system message) of a chat-completions request; ValueError when malformed."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    system, user = None, None
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ValueError("every message needs a string 'content'")
        if m.get("role") == "system":
            system = m["content"]
        elif m.get("role") == "user":
            user = m["content"]
    if user is None:
        raise ValueError("no user message")
    return user, system


class Server:
    """The hf backend behind an aiohttp app (`app()`), with a micro-batching worker."""

    def __init__(self, model: str, *, threads: int | None = None, batch_size: int = 16, device: str = "cpu"):
        from tkre.config import GeneratorConfig
        from tkre.generate.backends import backend_spec

        spec = backend_spec(GeneratorConfig(backend="hf", model=model, device=device, threads_per_actor=threads))
        self.backend = spec.build()
        self.model_name = model
        self.batch_size = batch_size
        self.gather_s = 0.05
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.counters = {"requests": 0, "completions": 0, "batches": 0, "rejected": 0}

    async def _worker(self) -> None:
        from tkre.config import DecodingConfig

        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            await asyncio.sleep(self.gather_s)  # requests sent together arrive a few ms apart: take them together
            while len(batch) < self.batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            # a client that gave up (time-out, disconnect) cancelled its future: do not generate for it
            batch = [p for p in batch if not p.future.done()]
            groups: dict[tuple, list[_Pending]] = {}
            for p in batch:
                groups.setdefault((p.params, p.system), []).append(p)
            for ((temperature, top_p, max_tokens), system), items in groups.items():
                decoding = DecodingConfig(temperature=temperature, top_p=top_p, max_new_tokens=max_tokens)

                def run(items=items, decoding=decoding, system=system):
                    self.backend.system = system
                    return self.backend.generate_rows([p.prompt for p in items], decoding, [p.seed for p in items],
                                                      [p.schema for p in items])

                try:
                    results = await loop.run_in_executor(None, run)
                except Exception as e:  # noqa: BLE001 -- answer every waiting request
                    results = [None] * len(items)
                    for p in items:
                        if not p.future.done():
                            p.future.set_exception(e)
                self.counters["batches"] += 1
                for p, r in zip(items, results):
                    if r is not None and not p.future.done():
                        p.future.set_result(r)

    async def chat(self, request):
        from aiohttp import web

        self.counters["requests"] += 1
        try:
            body = await request.json()
            prompt, system = split_messages(body.get("messages"))
            fmt = body.get("response_format") or {"type": "text"}
            schema = None
            if fmt.get("type") == "json_schema":
                schema = json.dumps((fmt.get("json_schema") or {}).get("schema") or {})
            elif fmt.get("type") != "text":
                raise ValueError(f"response_format {fmt.get('type')!r} is not supported by tkre serve "
                                 f"(text and json_schema are)")
            if int(body.get("n") or 1) != 1:
                raise ValueError("n > 1 is not supported by tkre serve")
            params = (float(body.get("temperature") if body.get("temperature") is not None else 1.0),
                      float(body.get("top_p") if body.get("top_p") is not None else 1.0),
                      int(body.get("max_tokens") or body.get("max_completion_tokens") or 256))
            seed = int(body.get("seed") or 0)
        except (ValueError, TypeError, AttributeError) as e:
            self.counters["rejected"] += 1
            return web.json_response({"error": {"message": str(e), "type": "invalid_request_error"}}, status=400)
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(prompt, system, params, seed, schema, future))
        try:
            r = await future
        except Exception as e:  # noqa: BLE001
            return web.json_response({"error": {"message": f"{type(e).__name__}: {e}"}}, status=500)
        if r.error is not None:
            return web.json_response({"error": {"message": r.error}}, status=500)
        self.counters["completions"] += 1
        finish = "length" if r.tokens >= params[2] else "stop"
        return web.json_response({
            "id": f"chatcmpl-tkre-{self.counters['completions']}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model") or self.model_name,
            "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": r.text}}],
            "usage": {"prompt_tokens": r.input_tokens, "completion_tokens": r.tokens,
                      "total_tokens": r.input_tokens + r.tokens}})

    def app(self):
        from aiohttp import web

        async def models(request):
            return web.json_response({"object": "list", "data": [{"id": self.model_name, "object": "model"}]})

        async def stats(request):
            return web.json_response(self.counters)

        async def start_worker(app):
            app["worker"] = asyncio.create_task(self._worker())

        async def stop_worker(app):
            app["worker"].cancel()

        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", models)
        app.router.add_get("/stats", stats)
        app.on_startup.append(start_worker)
        app.on_cleanup.append(stop_worker)
        return app


async def _serve(server: Server, host: str, port: int, ready) -> None:
    from aiohttp import web

    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1] if port == 0 else port
    ready(f"http://{host}:{bound}/v1")
    try:
        while True:
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8765, threads: int | None = None,
          batch_size: int = 16, allow_remote: bool = False, ready=print) -> None:
    """Serve `model` until interrupted; `ready(base_url)` is called once the port is open."""
    from tkre.errors import ConfigError

    if not is_loopback(host) and not allow_remote:
        raise ConfigError(f"tkre serve: host {host!r} is not a loopback address; the server has no "
                          f"authentication, so it listens on 127.0.0.1 unless --allow-remote is given")
    server = Server(model, threads=threads, batch_size=batch_size)
    asyncio.run(_serve(server, host, port, ready))
