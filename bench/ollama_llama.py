"""A loopback Ollama over llama.cpp: a real local model behind Ollama's wire API, for benchmarks.

No Ollama server can be installed on these machines, so the diagnosis benchmark puts the
GGUF model (bench/llm_model.py) behind this server and lets the product's real `ollama`
AsyncClient talk to it. It speaks what that client and the product use:

- GET /api/tags, POST /api/show (the served model, with its `tools` capability);
- POST /api/chat: the messages (and `tools`) rendered through the model's own chat template
  (the GGUF's `tokenizer.chat_template`, as Ollama renders its Go port of it); `format` ("json"
  or a JSON schema) becomes llama.cpp's grammar-constrained sampling; Qwen2.5's
  `<tool_call>{json}</tool_call>` blocks come back as `message.tool_calls`, as Ollama parses
  them; `options.num_ctx` (a change reloads the model, as Ollama does), `num_predict`,
  `temperature`, `top_k`, `top_p`, `repeat_penalty`, `seed`; NDJSON streaming (or one object
  with `stream: false`) whose last line (`done: true`) carries `prompt_eval_count`,
  `eval_count`, `done_reason` and the durations in nanoseconds.

A prompt longer than the context drops the oldest non-system messages until it fits, as
Ollama does (logged). One model, one thread (n_threads=1: two collapse under load on these
2-core machines), requests served one at a time. The model object is kept between requests,
so llama.cpp reuses the KV cache of the longest common prefix with the previous prompt;
every request logs how many prompt tokens it reused and how many it evaluated, and
`requests` keeps those figures for the caller.

    .venv/bin/python bench/ollama_llama.py --model bench/out/llm-cache/<model>.gguf [--port 11434]

Needs the `bench-llm` extra (llama-cpp-python); the product, its tests and CI never do.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2.sandbox import ImmutableSandboxedEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.loopback_thread import LoopbackServer

log = logging.getLogger("bench.ollama_llama")

SERVED_MODEL = "qwen2.5-coder:1.5b"
# Ollama's context when a request sets no num_ctx (OLLAMA_CONTEXT_LENGTH's default).
OLLAMA_DEFAULT_NUM_CTX = 4096
# Ollama's sampling defaults for what a request leaves out.
OLLAMA_DEFAULTS: dict[str, Any] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "repeat_penalty": 1.1,
    "num_predict": -1,
}
TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
END_MARKERS = ("<|im_end|>", "<|endoftext|>")
CLIENT_CHECK_S = 1.0
PROMPT_SLICE = 128  # prompt tokens evaluated between checks that the client is still there


class ClientLeft(Exception):
    """The request's client disconnected (a timeout, a terminated incident): stop working."""


@dataclass
class ChatStats:
    """What one /api/chat cost, as its log line says it."""

    prompt_tokens: int
    reused_tokens: int
    evaluated_tokens: int
    output_tokens: int
    prompt_s: float
    generate_s: float
    done_reason: str
    tools_offered: int
    tool_calls: int
    constrained: bool
    dropped_messages: int = 0
    started: float = field(default_factory=time.time)


def render_template(template: str) -> Any:
    """The GGUF's Jinja chat template, compiled the way Hugging Face's tokenizers compile it."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def tojson(value: Any, indent: int | None = None) -> str:
        return json.dumps(value, ensure_ascii=False, indent=indent)

    def raise_exception(message: str) -> None:
        raise ValueError(f"chat template: {message}")

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama's wire messages in the shape the Hugging Face template reads (tool call
    arguments as objects, a tool result as a `tool` message)."""
    shaped = []
    for message in messages:
        entry = {"role": message["role"], "content": message.get("content") or ""}
        calls = message.get("tool_calls") or []
        if calls:
            entry["tool_calls"] = [
                {
                    "type": "function",
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": call["function"].get("arguments") or {},
                    },
                }
                for call in calls
            ]
        shaped.append(entry)
    return shaped


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Qwen2.5's `<tool_call>{"name": .., "arguments": {..}}</tool_call>` blocks as Ollama's
    `tool_calls`, and the text left around them. A block that is not such an object stays text,
    as Ollama leaves output it cannot parse."""
    calls: list[dict[str, Any]] = []

    def take(match: re.Match[str]) -> str:
        try:
            call = json.loads(match.group(1))
        except json.JSONDecodeError:
            return match.group(0)
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return match.group(0)
        arguments = call.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return match.group(0)
        if not isinstance(arguments, dict):
            return match.group(0)
        calls.append({"function": {"name": call["name"], "arguments": arguments}})
        return ""

    rest = TOOL_CALL.sub(take, text)
    return (rest.strip() if calls else text), calls


class LlamaModel:
    """One llama.cpp model, one thread; `generate` runs in a worker thread, one at a time."""

    def __init__(self, path: Path, *, default_num_ctx: int = OLLAMA_DEFAULT_NUM_CTX) -> None:
        import llama_cpp  # the bench-llm extra; never imported by the product

        self._llama_cpp = llama_cpp
        self.path = path
        self.default_num_ctx = default_num_ctx
        self.lock = threading.Lock()
        self.llm: Any = None
        self.n_ctx = 0
        self._load(default_num_ctx)
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise SystemExit(f"{path} carries no tokenizer.chat_template")
        self.template_source = template
        self.template = render_template(template)
        self.end_tokens = {self.llm.token_eos()}
        for marker in END_MARKERS:
            ids = self.llm.tokenize(marker.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                self.end_tokens.add(ids[0])

    def _load(self, n_ctx: int) -> None:
        if self.llm is not None and n_ctx == self.n_ctx:
            return
        started = time.perf_counter()
        self.llm = None  # free the old context before the new one is allocated
        self.llm = self._llama_cpp.Llama(
            model_path=str(self.path),
            n_ctx=n_ctx,
            n_threads=1,
            n_threads_batch=1,
            n_batch=512,
            verbose=False,
        )
        self.n_ctx = n_ctx
        log.info("loaded %s with num_ctx %d in %.1fs", self.path.name, n_ctx,
                 time.perf_counter() - started)  # fmt: skip

    def prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        rendered: str = self.template.render(
            messages=template_messages(messages),
            tools=tools or None,
            add_generation_prompt=True,
            bos_token="",
            eos_token="<|im_end|>",
        )
        return rendered

    def fit(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> tuple[list[int], int]:
        """The prompt's tokens, dropping the oldest non-system messages (never the last) until
        it fits the context, as Ollama does; and how many were dropped."""
        dropped = 0
        kept = list(messages)
        while True:
            text = self.prompt(kept, tools)
            tokens: list[int] = self.llm.tokenize(text.encode(), add_bos=False, special=True)
            droppable = [i for i, m in enumerate(kept[:-1]) if m["role"] != "system"]
            if len(tokens) < self.n_ctx or not droppable:
                return tokens[-(self.n_ctx - 1) :], dropped
            del kept[droppable[0]]
            dropped += 1

    def generate(
        self,
        body: dict[str, Any],
        emit: Any,
        cancelled: threading.Event,
    ) -> tuple[str, ChatStats]:
        """Answer one chat: call `emit(text)` with each piece of output as it is decoded."""
        options = {**OLLAMA_DEFAULTS, **(body.get("options") or {})}
        tools = body.get("tools") or None
        with self.lock:
            self._load(int(options.get("num_ctx") or self.default_num_ctx))
            tokens, dropped = self.fit(body["messages"], tools)
            if dropped:
                log.warning("prompt over num_ctx %d: dropped the %d oldest messages",
                            self.n_ctx, dropped)  # fmt: skip
            grammar = self._grammar(body.get("format"))
            # The KV cache keeps the longest common prefix with the previous prompt; the rest
            # is evaluated in slices, so a client that leaves stops it (as Ollama stops), and
            # generate() then finds all but the last token cached and evaluates that one.
            cached = self.llm.input_ids[: self.llm.n_tokens].tolist()
            reused = 0
            for had, wanted in zip(cached, tokens[:-1], strict=False):
                if had != wanted:
                    break
                reused += 1
            log.info("chat started: prompt %d tokens, %d reused, %d to evaluate",
                     len(tokens), reused, len(tokens) - reused)  # fmt: skip
            began = time.perf_counter()
            self.llm.n_tokens = reused
            for at in range(reused, len(tokens) - 1, PROMPT_SLICE):
                if cancelled.is_set():
                    raise ClientLeft(f"client left after {at - reused} prompt tokens")
                self.llm.eval(tokens[at : min(at + PROMPT_SLICE, len(tokens) - 1)])
            limit = self.n_ctx - len(tokens)
            if int(options["num_predict"]) >= 0:
                limit = min(limit, int(options["num_predict"]))
            if "seed" in options:
                self.llm.set_seed(int(options["seed"]))
            first_token_at: float | None = None
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            pieces: list[str] = []
            output_tokens = 0
            done_reason = "length"
            stream: Iterator[int] = self.llm.generate(
                tokens,
                temp=float(options["temperature"]),
                top_k=int(options["top_k"]),
                top_p=float(options["top_p"]),
                min_p=0.0,
                repeat_penalty=float(options["repeat_penalty"]),
                grammar=grammar,
                reset=True,
            )
            if limit > 0:
                for token in stream:
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                    if token in self.end_tokens:
                        done_reason = "stop"
                        break
                    output_tokens += 1
                    piece = decoder.decode(self.llm.detokenize([token], special=False))
                    if piece:
                        pieces.append(piece)
                        emit(piece)
                    if cancelled.is_set():
                        done_reason = "cancelled"
                        break
                    if output_tokens >= limit:
                        break
            ended = time.perf_counter()
            if first_token_at is None:
                first_token_at = ended
            if tail := decoder.decode(b"", final=True):
                pieces.append(tail)
                emit(tail)
        text = "".join(pieces)
        stats = ChatStats(
            prompt_tokens=len(tokens),
            reused_tokens=reused,
            evaluated_tokens=len(tokens) - reused,
            output_tokens=output_tokens,
            prompt_s=first_token_at - began,
            generate_s=ended - first_token_at,
            done_reason=done_reason,
            tools_offered=len(tools or []),
            tool_calls=0,
            constrained=grammar is not None,
            dropped_messages=dropped,
        )
        return text, stats

    def _grammar(self, format_: Any) -> Any:
        grammar = self._llama_cpp.LlamaGrammar
        if not format_:
            return None
        if format_ == "json":
            return grammar.from_string(self._llama_cpp.llama_grammar.JSON_GBNF, verbose=False)
        if isinstance(format_, dict):
            return grammar.from_json_schema(json.dumps(format_), verbose=False)
        raise ValueError(f'format must be "json" or a JSON schema, not {format_!r}')


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class OllamaLlama(LoopbackServer):
    """The server; `with OllamaLlama(model) as server:` runs it on a loop of its own in a
    thread (`server.url`), or `routes` serves it from `web.run_app`."""

    def __init__(self, model: LlamaModel, *, name: str = SERVED_MODEL) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.requests: list[ChatStats] = []
        self._serial = asyncio.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._root)
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/show", self._show)
        app.router.add_post("/api/chat", self._chat)

    def _served(self, model: Any) -> bool:
        return model in {self.name, f"{self.name}:latest"} or f"{model}:latest" == self.name

    def _details(self) -> dict[str, Any]:
        return {
            "format": "gguf",
            "family": "qwen2",
            "families": ["qwen2"],
            "parameter_size": "1.5B",
            "quantization_level": "Q4_K_M",
        }

    async def _root(self, _: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, _: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.0"})

    async def _tags(self, _: web.Request) -> web.Response:
        entry = {
            "name": self.name,
            "model": self.name,
            "modified_at": _now(),
            "size": self.model.path.stat().st_size,
            "digest": "0" * 64,
            "details": self._details(),
        }
        return web.json_response({"models": [entry]})

    async def _show(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self._served(body.get("model") or body.get("name")):
            return web.json_response(
                {"error": f"model '{body.get('model')}' not found"}, status=404
            )
        return web.json_response(
            {
                "modelfile": f"FROM {self.model.path}",
                "parameters": f"num_ctx {self.model.default_num_ctx}",
                "template": self.model.template_source,
                "details": self._details(),
                "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768},
                "capabilities": ["completion", "tools"],
                "modified_at": _now(),
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"error": "invalid JSON body"}, status=400)
        model = body.get("model")
        if not self._served(model):
            return web.json_response(
                {"error": f'model "{model}" not found, try pulling it first'}, status=404
            )
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return web.json_response({"error": "messages is required"}, status=400)
        stream = body.get("stream", True)
        tools = body.get("tools") or []
        async with self._serial:
            return await self._answer(request, body, model, stream=stream, buffer=bool(tools))

    async def _answer(
        self, request: web.Request, body: dict[str, Any], model: str, *, stream: bool, buffer: bool
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(piece: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        started = time.perf_counter()
        work = loop.run_in_executor(None, self.model.generate, body, emit, cancelled)
        work.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
        response: web.StreamResponse | None = None
        try:
            # Tool calls are parsed from the whole answer, so with tools nothing streams early
            # (Ollama, too, holds back output that may be a tool call).
            if stream and not buffer:
                response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
                await response.prepare(request)
            while True:
                try:
                    piece = await asyncio.wait_for(pieces.get(), CLIENT_CHECK_S)
                except TimeoutError:
                    piece = ""
                if request.transport is None or request.transport.is_closing():
                    cancelled.set()  # the client left: stop evaluating and generating
                if piece is None:
                    break
                if piece and response is not None:
                    await response.write(self._line(model, {"role": "assistant", "content": piece}))
            text, stats = await work
        except ClientLeft as left:
            log.info("chat abandoned: %s", left)
            return response if response is not None else web.Response(status=499)
        except (ConnectionResetError, asyncio.CancelledError):
            cancelled.set()
            raise
        except ValueError as exc:  # a template or grammar llama.cpp could not take
            cancelled.set()
            if response is not None:
                await response.write(json.dumps({"error": str(exc)}).encode() + b"\n")
                return response
            return web.json_response({"error": str(exc)}, status=400)
        content, calls = parse_tool_calls(text) if body.get("tools") else (text, [])
        stats.tool_calls = len(calls)
        self.requests.append(stats)
        log.info(
            "chat: prompt %d tokens (%d reused, %d evaluated in %.1fs), %d generated in %.1fs "
            "(%.1f tok/s), %s, %d tools offered, %d called%s%s",
            stats.prompt_tokens, stats.reused_tokens, stats.evaluated_tokens, stats.prompt_s,
            stats.output_tokens, stats.generate_s,
            stats.output_tokens / stats.generate_s if stats.generate_s else 0.0,
            stats.done_reason, stats.tools_offered, stats.tool_calls,
            ", schema-constrained" if stats.constrained else "",
            f", {stats.dropped_messages} messages dropped" if stats.dropped_messages else "",
        )  # fmt: skip
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        final = {
            "model": model,
            "created_at": _now(),
            "done": True,
            "done_reason": "stop" if stats.done_reason == "stop" else "length",
            "total_duration": int((time.perf_counter() - started) * 1e9),
            "load_duration": 0,
            "prompt_eval_count": stats.evaluated_tokens,
            "prompt_eval_duration": int(stats.prompt_s * 1e9),
            "eval_count": stats.output_tokens,
            "eval_duration": int(stats.generate_s * 1e9),
        }
        if not stream:
            return web.json_response({**final, "message": message})
        if response is None:
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            await response.write(self._line(model, message))
        await response.write(
            json.dumps({**final, "message": {"role": "assistant", "content": ""}}).encode() + b"\n"
        )
        await response.write_eof()
        return response

    @staticmethod
    def _line(model: str, message: dict[str, Any]) -> bytes:
        chunk = {"model": model, "created_at": _now(), "message": message, "done": False}
        return json.dumps(chunk).encode() + b"\n"

    def stats(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.requests]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the GGUF file")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--name", default=SERVED_MODEL, help="the model name it serves")
    parser.add_argument(
        "--default-num-ctx",
        type=int,
        default=OLLAMA_DEFAULT_NUM_CTX,
        help="context for requests that set no num_ctx (Ollama's OLLAMA_CONTEXT_LENGTH)",
    )
    arguments = parser.parse_args()
    if not arguments.model.is_file():
        raise SystemExit(f"--model: no file {arguments.model}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = OllamaLlama(
        LlamaModel(arguments.model, default_num_ctx=arguments.default_num_ctx), name=arguments.name
    )
    app = web.Application()
    server.routes(app)
    web.run_app(app, host="127.0.0.1", port=arguments.port)


if __name__ == "__main__":
    main()
