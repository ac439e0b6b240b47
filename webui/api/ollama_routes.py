"""The Ollama-compatible routes: /api/tags, /api/version, /api/show, /api/ps, /api/generate, /api/chat.

Replies stream as NDJSON by default (``"stream": false`` for one object), as Ollama's do; the last object has
``done: true``, ``done_reason`` and the counts and durations (nanoseconds). Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from webui import __version__
from webui.api.ollama_protocol import (
    OLLAMA_VERSION,
    ChatRequest,
    GenerateRequest,
    ShowRequest,
    allowed_keep_alive,
    ollama_overrides,
    unloads,
)
from webui.api.openai_routes import chained, error_catching_route, first_and_rest, is_admin, track
from webui.api.serving import (
    ApiError,
    Run,
    Serving,
    Started,
    apply_overrides,
    base_params,
    chat_message,
    chat_settings,
    check_supported,
    follow,
    public_finish_reason,
    warnings_body,
    warnings_headers,
)
from webui.core import grammar
from webui.core.go_template import convert_go_template
from webui.core.model_names import decode_model_name
from webui.core.modelfile import PARAM_TO_OLLAMA, Modelfile, format_modelfile, parameter_lines
from webui.core.models import ModelEntry, ModelFileError, ModelMetadata, model_metadata
from webui.core.params import GenerationParams
from webui.core.presets import DEFAULT_PRESET
from webui.core.prompts import ChatMessage
from webui.core.service import EngineError, LoadedState
from webui.core.templates import InstructionTemplate, TemplateError

NS = 1_000_000_000
# With ``stream`` (Ollama's default) the answer is one JSON object a line, the last with ``done: true``.
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "application/x-ndjson": {
                "schema": {"type": "object", "properties": {"done": {"type": "boolean"}}},
            }
        }
    },
}


def ollama_error(error: ApiError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _mtime(entry: ModelEntry) -> datetime:
    try:
        return datetime.fromtimestamp(entry.path.stat().st_mtime, UTC)
    except OSError:
        return datetime.now(UTC)  # a remote server's model has no file


def _digest(entry: ModelEntry) -> str:
    """Stands in for Ollama's manifest digest: it changes when the file changes (hashing gigabytes per
    listing would be too slow)."""
    mark = f"{entry.path}:{entry.size_bytes}:{_mtime(entry).timestamp()}"
    return hashlib.sha256(mark.encode()).hexdigest()


def _metadata(entry: ModelEntry) -> ModelMetadata | None:
    if entry.kind == "remote":
        return None
    try:
        return model_metadata(entry)
    except (ModelFileError, OSError, ValueError):
        return None  # an unreadable file is still listed; loading it reports the problem


def details(entry: ModelEntry) -> dict[str, Any]:
    meta = _metadata(entry)
    decoded = decode_model_name(entry.path.name)
    family = (meta.architecture if meta else None) or ""
    return {
        "parent_model": "",
        "format": {"gguf": "gguf", "folder": "safetensors"}.get(entry.kind, entry.kind),
        "family": family,
        "families": [family] if family else None,
        "parameter_size": (meta.size_label if meta else None) or decoded.parameters or "",
        "quantization_level": decoded.quantization or (meta.quant_method if meta else None) or "",
    }


def tag(entry: ModelEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "model": entry.name,
        "modified_at": _mtime(entry).isoformat(),
        "size": entry.size_bytes,
        "digest": _digest(entry),
        "details": details(entry),
    }


def default_parameters() -> list[tuple[str, str, int]]:
    """What requests get when they set no option: the Default preset, as Modelfile PARAMETER lines."""
    defaults = GenerationParams().model_dump()
    sampler = {key: defaults[key] for key in PARAM_TO_OLLAMA if key != "stop" or defaults[key]}
    lines, _ = parameter_lines(sampler, {}, [])
    return lines


def stats_fields(started: Started) -> dict[str, Any]:
    """Ollama's counts and durations (ns) for the request's one run."""
    run = started.runs[0] if started.runs else None
    stats = run.stats if run else None
    load_ns = int(started.load_seconds * NS)
    fields: dict[str, Any] = {
        "total_duration": int((time.perf_counter() - started.started_at) * NS) + load_ns,
        "load_duration": load_ns,
    }
    if stats is not None:
        fields.update(
            prompt_eval_count=stats.prompt_tokens,
            prompt_eval_duration=int(stats.time_to_first_token_s * NS),
            eval_count=stats.new_tokens,
            eval_duration=int(max(stats.total_s - stats.time_to_first_token_s, 0.0) * NS),
        )
    return fields


def format_grammar(fmt: str | dict[str, Any] | None) -> str | None:
    """Ollama's ``format``: "json" or a JSON schema."""
    try:
        return grammar.format_grammar(fmt)
    except grammar.GrammarError as exc:
        raise ApiError(400, str(exc), param="response_format") from exc


def _ndjson(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False) + "\n"


def request_template(source: str) -> InstructionTemplate:
    """A request's own Go template, converted to the Jinja the prompt builder renders."""
    conversion = convert_go_template(source)
    if conversion.jinja is None:
        raise ApiError(400, f"The template cannot be used: {conversion.problem}", param="template")
    try:
        return InstructionTemplate("request template", conversion.jinja)
    except TemplateError as exc:
        raise ApiError(400, f"The template cannot be used: {exc}", param="template") from exc


def install_ollama_routes(app: FastAPI, serving: Serving) -> None:
    """Add the ``/api`` Ollama-compatible router to ``app``."""
    router = APIRouter(
        prefix="/api",
        tags=["ollama"],
        route_class=error_catching_route(ollama_error),
        strict_content_type=False,
    )
    service = serving.service

    @router.api_route("/version", methods=["GET", "HEAD"])  # HEAD: clients check that the server is up
    def version() -> dict[str, str]:
        return {"version": OLLAMA_VERSION, "palabre": __version__}

    @router.api_route("/tags", methods=["GET", "HEAD"])
    def tags() -> dict[str, Any]:
        return {"models": [tag(entry) for entry in serving.entries()]}

    @router.get("/ps")
    def ps() -> dict[str, Any]:
        state = serving.loaded()
        if state is None:
            return {"models": []}
        model = tag(state.entry)
        del model["modified_at"]
        # Without an idle limit the model stays until another is loaded: as Ollama's keep_alive -1.
        expires_in = serving.idle.expires_in()
        lasts = timedelta(days=365 * 100) if expires_in is None else timedelta(seconds=expires_in)
        model["expires_at"] = (datetime.now(UTC) + lasts).isoformat()
        model["size_vram"] = 0
        model["context_length"] = state.model.facts.context_length
        return {"models": [model]}

    @router.post("/show")
    def show(body: ShowRequest) -> dict[str, Any]:
        name = body.model or body.name
        if not name:
            raise ApiError(400, "model is required.", param="model")
        try:
            entry = serving.find(name)
        except ApiError as exc:
            if exc.status == 404:
                raise ApiError(404, f"model '{name}' not found") from exc
            raise
        state = serving.loaded()
        meta = _metadata(entry)
        template = None
        if state is not None and state.entry == entry:
            template = state.model.facts.chat_template
        elif meta is not None:
            template = meta.chat_template
        arch = meta.architecture if meta else None
        info: dict[str, Any] = {
            "general.architecture": arch,
            "general.name": meta.display_name if meta else None,
        }
        if arch and meta and meta.context_length:
            info[f"{arch}.context_length"] = meta.context_length
        lines = default_parameters()
        modelfile = format_modelfile(
            Modelfile(
                model=str(entry.path),
                parameters=lines,
                comments=[
                    f"Modelfile generated by Palabre for {entry.name} (the {DEFAULT_PRESET} preset's values).",
                    "The model's chat template is Jinja, shown in `template`; Ollama would need a Go TEMPLATE.",
                ],
            )
        )
        return {
            "modelfile": modelfile,
            "parameters": "\n".join(f"{name} {value}" for name, value, _ in lines),
            "template": template or "",
            "details": details(entry),
            "model_info": info,
            "capabilities": ["completion"],
            "modified_at": _mtime(entry).isoformat(),
        }

    async def answer(
        body: GenerateRequest | ChatRequest,
        request: Request,
        start: Callable[[], Started | str],
        piece: Callable[[str], dict[str, Any]],
        request_id: str,
    ) -> Response:
        """Run ``start`` off the event loop, then answer as NDJSON or one object; ``piece`` shapes a delta."""
        # Refused (403 for a non-admin, 400 for a bad value) before anything starts or loads.
        keep_alive = allowed_keep_alive(body.keep_alive, is_admin(request))
        outcome = await run_in_threadpool(start)
        if outcome != "unload":
            serving.idle.keep_alive(keep_alive)  # the idle time after this request, as in Ollama
        if isinstance(outcome, str):  # a load or an unload, no generation (Ollama's empty prompt)
            return JSONResponse(
                {"model": body.model, "created_at": _now(), **piece(""), "done": True, "done_reason": outcome}
            )
        started = outcome
        forget = track(request, request_id, started)
        events = follow(started, request.is_disconnected)

        def final(text: str) -> dict[str, Any]:
            run = started.runs[0]
            return {
                "model": started.model,
                "created_at": _now(),
                **piece(text),
                "done": True,
                "done_reason": public_finish_reason(run.job.finish_reason),
                **stats_fields(started),
                **warnings_body(started.warnings()),  # the extensions' errors, complete once done
            }

        if not body.stream:
            text = ""
            try:
                async for _run, chunk in events:
                    text += chunk.text
            finally:
                started.cancel()
                forget()
            return JSONResponse(final(text), headers=warnings_headers(started.warnings()))
        try:
            first, rest = await first_and_rest(events)
        except BaseException:
            started.cancel()
            forget()
            raise

        async def lines() -> AsyncIterator[str]:
            try:
                async for _run, chunk in chained(first, rest):
                    if chunk.text:
                        yield _ndjson(
                            {"model": started.model, "created_at": _now(), **piece(chunk.text), "done": False}
                        )
                yield _ndjson(final(""))
            except ApiError as exc:
                yield _ndjson({"error": exc.message})
            finally:
                started.cancel()
                forget()
                await rest.aclose()  # type: ignore[attr-defined]

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    def load_or_unload(model: str, keep_alive: float | str | None, admin: bool) -> str:
        """Ollama's empty request: load the model (another one only for an admin), or unload it when
        keep_alive is 0 (only an admin: answer() refuses anybody else's keep_alive first)."""
        if unloads(keep_alive):
            entry = serving.find(model)
            state = serving.loaded()
            if state is not None and state.entry == entry:
                if not admin:  # unreachable through answer(); kept so that no other caller can unload
                    raise ApiError(403, "Unloading the model needs an admin key.", kind="permission_error")
                try:
                    service.unload_model()
                except EngineError as exc:
                    raise ApiError(500, str(exc), kind="server_error") from exc
            return "unload"
        serving.start(model, admin, lambda state: [])
        return "load"

    def sampler(options: dict[str, Any] | None, fmt: str | dict[str, Any] | None) -> GenerationParams:
        """The Default preset with the request's options and its ``format`` as a grammar."""
        overrides, sources = ollama_overrides(options)
        params = apply_overrides(base_params(service, None, None), overrides, sources)
        grammar = format_grammar(fmt)
        return params.overlay({"grammar": grammar}) if grammar else params

    @router.post("/generate", responses=STREAMED)
    async def generate(body: GenerateRequest, request: Request) -> Response:
        """Complete ``prompt`` through the model's template (``raw``: as is); an empty prompt loads the model."""
        if body.images:
            raise ApiError(400, "Images are not supported.", param="images")
        if body.suffix:
            raise ApiError(400, "suffix (fill in the middle) is not supported.", param="suffix")
        admin = is_admin(request)
        request_id = f"ollama-{uuid.uuid4().hex[:24]}"

        def start() -> Started | str:
            if not body.prompt:
                return load_or_unload(body.model, body.keep_alive, admin)
            params = sampler(body.options, body.format)
            prompt = body.prompt
            if body.raw:

                def submit(state: LoadedState) -> list[Run]:
                    check_supported(
                        state, grammar=bool(params.grammar), logprobs=False, grammar_param="format"
                    )
                    return serving.completion_runs([prompt], params)

                return serving.start(body.model, admin, submit, request_id)
            template = request_template(body.template) if body.template else None
            settings = chat_settings(service, mode="instruct", character=None, template=template)
            history = [ChatMessage("system", body.system)] if body.system else []
            history.append(ChatMessage("user", prompt))

            def submit_chat(state: LoadedState) -> list[Run]:
                check_supported(state, grammar=bool(params.grammar), logprobs=False, grammar_param="format")
                return serving.chat_runs(history, settings, params)

            return serving.start(body.model, admin, submit_chat, request_id)

        return await answer(body, request, start, lambda text: {"response": text}, request_id)

    @router.post("/chat", responses=STREAMED)
    async def chat(body: ChatRequest, request: Request) -> Response:
        """Reply to ``messages`` with the model's template; no messages loads the model."""
        if body.tools:
            raise ApiError(400, "Tools (function calling) are not supported.", param="tools")
        if any(message.images for message in body.messages):
            raise ApiError(400, "Images are not supported.", param="images")
        history = [chat_message(message.role, message.content) for message in body.messages]
        admin = is_admin(request)
        request_id = f"ollama-{uuid.uuid4().hex[:24]}"

        def start() -> Started | str:
            if not history:
                return load_or_unload(body.model, body.keep_alive, admin)
            params = sampler(body.options, body.format)
            settings = chat_settings(service, mode="instruct", character=None, template=None)

            def submit(state: LoadedState) -> list[Run]:
                check_supported(state, grammar=bool(params.grammar), logprobs=False, grammar_param="format")
                return serving.chat_runs(history, settings, params)

            return serving.start(body.model, admin, submit, request_id)

        return await answer(
            body, request, start, lambda text: {"message": {"role": "assistant", "content": text}}, request_id
        )

    app.include_router(router)
