"""The OpenAI-compatible routes: /v1/models, /v1/completions and /v1/chat/completions (HTTP and SSE only).

Translation to the core is in serving.py; errors are answered in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` with 400 / 403 / 404 / 500.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from webui.api.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessageOut,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    GenerationRequest,
    ModelCard,
    ModelList,
    ResponseFormat,
    Usage,
)
from webui.api.serving import (
    ApiError,
    Caller,
    Run,
    Serving,
    Started,
    api_error,
    apply_overrides,
    base_params,
    chat_message,
    chat_settings,
    check_supported,
    follow,
    json_grammar,
    load_character,
    public_finish_reason,
    sampler_extras,
    warnings_body,
    warnings_headers,
)
from webui.core.loader import Chunk, LoaderError
from webui.core.models import ModelEntry
from webui.core.params import GenerationParams
from webui.core.service import LoadedState
from webui.core.templates import InstructionTemplate, TemplateError

log = logging.getLogger(__name__)
Handler = Callable[[Request], Coroutine[Any, Any, Response]]
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in ((400, "Bad request"), (403, "Needs an admin key"), (404, "Unknown model"))
}
# With ``stream: true`` the same 200 is server-sent events: ``data: {chunk}`` lines, then ``data: [DONE]``.
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/event-stream": {
                "schema": {"type": "object", "properties": {"data": {"type": "string"}}},
            }
        }
    },
}


# -- errors --------------------------------------------------------------------------------------------------


def validation_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's 422 as OpenAI's 400, naming the first bad field."""
    problems: list[str] = []
    param: str | None = None
    for item in exc.errors():
        loc = [str(part) for part in item.get("loc", ()) if part != "body"]
        if item.get("type") == "json_invalid":
            detail = item.get("ctx", {}).get("error", "")
            return ApiError(400, f"The request body is not valid JSON: {detail}.")
        where = ".".join(loc) or "body"
        param = param or (loc[0] if loc else None)
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return ApiError(400, "Invalid request: " + "; ".join(problems), param=param)


def openai_error(error: ApiError) -> JSONResponse:
    body = error.openai_body()
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _read_body_as_json(request: Request) -> None:
    """Treat every POST body as JSON, as OpenAI's and Ollama's servers do (``curl -d`` sends a form type)."""
    if request.method != "POST":
        return
    headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
    request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
    request.__dict__.pop("_headers", None)  # starlette caches the parsed headers


def error_catching_route(render: Callable[[ApiError], Response]) -> type[APIRoute]:
    """A route class answering bad requests, ApiErrors and crashes with ``render`` (this router only)."""

    class ErrorCatchingRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                _read_body_as_json(request)
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    return render(validation_error(exc))
                except ApiError as exc:
                    return render(exc)
                except HTTPException as exc:  # FastAPI's own refusals, e.g. a body that is not UTF-8
                    return render(ApiError(exc.status_code, str(exc.detail)))
                except Exception as exc:
                    log.exception("API request %s failed", request.url.path)
                    return render(api_error(exc))

            return route

    return ErrorCatchingRoute


# -- helpers -------------------------------------------------------------------------------------------------


def is_admin(request: Request) -> bool:
    """Set by the auth middleware; True when no admin key is configured."""
    return bool(getattr(request.state, "admin", True))


def track(request: Request, request_id: str, started: Started) -> Callable[[], None]:
    """Register the request's jobs, owned by its caller's key, for /v1/internal/stop and the queue view;
    returns the function that forgets them."""
    jobs = getattr(request.app.state, "api_jobs", None)
    if jobs is None:
        return lambda: None
    jobs.add(request_id, started, owner=Caller.of(request.state).client)
    return lambda: jobs.discard(request_id)


def model_card(entry: ModelEntry, loaded: LoadedState | None) -> ModelCard:
    try:
        created = int(entry.path.stat().st_mtime)
    except OSError:
        created = 0  # a remote server's model has no file
    return ModelCard(id=entry.name, created=created, loaded=loaded is not None and loaded.entry == entry)


def sse(payload: BaseModel | dict[str, Any]) -> str:
    body = payload.model_dump_json() if isinstance(payload, BaseModel) else _json(payload)
    return f"data: {body}\n\n"


def _json(payload: dict[str, Any]) -> str:
    import json

    return json.dumps(payload, ensure_ascii=False)


def usage_of(started: Started) -> Usage:
    prompt, completion = started.usage()
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def openai_overrides(
    body: GenerationRequest, max_tokens: tuple[str, int | None]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The request's sampler values by GenerationParams name, and which request field each came from."""
    overrides = sampler_extras(body.model_extra)
    sources = {key: key for key in overrides}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "logit_bias"):
        value = getattr(body, name)
        if value is not None:
            overrides[name] = value
            sources[name] = name
    if body.stop is not None:
        overrides["stop"] = [body.stop] if isinstance(body.stop, str) else body.stop
        sources["stop"] = "stop"
    source, limit = max_tokens
    if limit is not None:
        overrides["max_new_tokens"] = limit
        sources["max_new_tokens"] = source
    return overrides, sources


def request_template(source: str | None) -> InstructionTemplate | None:
    """The request's own ``instruction_template_str``, parsed (a 400 naming the line if it does not parse)."""
    if source is None:
        return None
    try:
        return InstructionTemplate("instruction_template_str", source, "custom")
    except TemplateError as exc:
        raise ApiError(400, str(exc), param="instruction_template_str") from exc


def format_grammar(response_format: ResponseFormat | None, params: GenerationParams) -> str | None:
    """The grammar a response_format asks for (None for plain text)."""
    if response_format is None or response_format.type == "text":
        return None
    if params.grammar:
        raise ApiError(400, "Give either response_format or grammar, not both.", param="response_format")
    schema = response_format.json_schema.schema_ if response_format.json_schema else None
    if response_format.type == "json_schema" and schema is None:
        raise ApiError(400, "response_format json_schema needs json_schema.schema.", param="response_format")
    return json_grammar(schema)


async def first_and_rest(
    events: AsyncIterator[tuple[Run, Chunk]],
) -> tuple[tuple[Run, Chunk] | None, AsyncIterator[tuple[Run, Chunk]]]:
    """Wait for the first chunk before answering, so that an early failure gets its own status code."""
    try:
        return await anext(events), events
    except StopAsyncIteration:
        return None, events


async def chained(
    first: tuple[Run, Chunk] | None, rest: AsyncIterator[tuple[Run, Chunk]]
) -> AsyncIterator[tuple[Run, Chunk]]:
    if first is not None:
        yield first
    async for item in rest:
        yield item


async def collect(started: Started, events: AsyncIterator[tuple[Run, Chunk]]) -> dict[int, str]:
    """The whole text of every choice."""
    texts = {run.index: run.prefix for run in started.runs}
    async for run, chunk in events:
        texts[run.index] += chunk.text
    return texts


def _prompts(prompt: str | list[str] | list[int] | list[list[int]], state: LoadedState) -> list[str]:
    """Completion prompts as text; token ids are turned back into text with the model's tokenizer."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise ApiError(400, "prompt is empty.", param="prompt")
    if all(isinstance(item, str) for item in prompt):
        return [str(item) for item in prompt]
    lists: list[list[int]] = (
        [list(prompt)] if all(isinstance(item, int) for item in prompt) else list(prompt)  # type: ignore[arg-type]
    )
    try:
        return [state.model.detokenize(ids) for ids in lists]
    except (LoaderError, ValueError, IndexError, OverflowError) as exc:  # ids outside the vocabulary
        message = f"The prompt's token ids are not in the model's vocabulary: {exc}"
        raise ApiError(400, message, param="prompt") from exc


# -- routes --------------------------------------------------------------------------------------------------


def install_openai_routes(app: FastAPI, serving: Serving) -> None:
    """Add the ``/v1`` OpenAI-compatible router to ``app``."""
    router = APIRouter(
        prefix="/v1",
        tags=["openai"],
        route_class=error_catching_route(openai_error),
        strict_content_type=False,  # curl -d sends form content type: read the body as JSON anyway
        responses=ERRORS,
    )
    service = serving.service

    @router.api_route("/models", methods=["GET", "HEAD"], response_model=ModelList)
    def list_models() -> ModelList:
        loaded = serving.loaded()
        return ModelList(data=[model_card(entry, loaded) for entry in serving.entries()])

    @router.get("/models/{model_id:path}", response_model=ModelCard)
    def get_model(model_id: str) -> ModelCard:
        return model_card(serving.find(model_id), serving.loaded())

    @router.post("/completions", response_model=CompletionResponse, responses=STREAMED)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """Continue raw text; ``stream`` answers with server-sent events ending in ``data: [DONE]``."""
        if body.suffix:
            raise ApiError(400, "suffix (fill in the middle) is not supported.", param="suffix")
        if body.best_of not in (None, 1, body.n):
            raise ApiError(400, "best_of is not supported (use n).", param="best_of")

        request_id = f"cmpl-{uuid.uuid4().hex[:24]}"

        def start() -> Started:
            overrides, sources = openai_overrides(body, ("max_tokens", body.max_tokens))
            params = apply_overrides(base_params(service, body.preset, None), overrides, sources)
            grammar = format_grammar(body.response_format, params)

            def submit(state: LoadedState) -> list[Run]:
                check_supported(
                    state,
                    grammar=bool(grammar or params.grammar),
                    logprobs=bool(body.logprobs),
                    grammar_param="response_format" if grammar else "grammar",
                )
                chosen = params.overlay({"grammar": grammar}) if grammar else params
                return serving.completion_runs(_prompts(body.prompt, state), chosen, body.n, echo=body.echo)

            return serving.start(body.model, is_admin(request), submit, request_id)

        started = await run_in_threadpool(start)
        forget = track(request, request_id, started)
        created = int(time.time())
        events = follow(started, request.is_disconnected)
        if not body.stream:
            try:
                texts = await collect(started, events)
            finally:
                started.cancel()
                forget()
            choices = [
                CompletionChoice(
                    index=run.index,
                    text=texts[run.index],
                    finish_reason=public_finish_reason(run.job.finish_reason),
                )
                for run in started.runs
            ]
            warnings = started.warnings()  # the extensions' errors, also in the server log
            return JSONResponse(
                CompletionResponse(
                    id=request_id,
                    created=created,
                    model=started.model,
                    choices=choices,
                    usage=usage_of(started),
                ).model_dump()
                | warnings_body(warnings),
                headers=warnings_headers(warnings),
            )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(index: int, text: str, finish: str | None = None, warnings: Sequence[str] = ()) -> str:
            choice = CompletionChoice(index=index, text=text, finish_reason=finish)
            payload = CompletionResponse(
                id=request_id, created=created, model=started.model, choices=[choice]
            )
            return sse(payload.model_dump() | warnings_body(warnings) if warnings else payload)

        async def stream(
            first: tuple[Run, Chunk] | None, rest: AsyncIterator[tuple[Run, Chunk]]
        ) -> AsyncIterator[str]:
            begun: set[int] = set()
            try:
                async for run, piece in chained(first, rest):
                    text = piece.text
                    if run.index not in begun:
                        begun.add(run.index)
                        text = run.prefix + text
                    finish = public_finish_reason(piece.finish_reason) if piece.finish_reason else None
                    if text or finish:
                        # The choice's last chunk carries the extensions' errors (complete by now).
                        yield chunk(run.index, text, finish, run.warnings if finish else ())
                if include_usage:
                    yield sse(
                        CompletionResponse(
                            id=request_id,
                            created=created,
                            model=started.model,
                            choices=[],
                            usage=usage_of(started),
                        )
                    )
            except ApiError as exc:
                yield sse(exc.openai_body())
            finally:
                started.cancel()
                forget()
                await rest.aclose()  # type: ignore[attr-defined]
            yield "data: [DONE]\n\n"

        return await _streaming(started, events, stream, forget)

    @router.post("/chat/completions", response_model=ChatCompletionResponse, responses=STREAMED)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """Reply to a conversation, with the model's instruction template (or ``mode`` chat / chat-instruct)."""
        if body.tools and body.tool_choice != "none":
            raise ApiError(400, "Tools (function calling) are not supported.", param="tools")
        history = [chat_message(m.role, _content(m.content)) for m in body.messages]

        request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"

        def start() -> Started:
            character = load_character(service, body.character)
            settings = chat_settings(
                service,
                mode=body.mode,
                character=character,
                template=request_template(body.instruction_template_str) or body.instruction_template,
                user_name=body.user_name,
            )
            limit = (
                ("max_completion_tokens", body.max_completion_tokens)
                if body.max_completion_tokens is not None
                else ("max_tokens", body.max_tokens)
            )
            overrides, sources = openai_overrides(body, limit)
            params = apply_overrides(base_params(service, body.preset, character), overrides, sources)
            grammar = format_grammar(body.response_format, params)

            def submit(state: LoadedState) -> list[Run]:
                check_supported(
                    state,
                    grammar=bool(grammar or params.grammar),
                    logprobs=bool(body.logprobs or body.top_logprobs),
                    grammar_param="response_format" if grammar else "grammar",
                )
                chosen = params.overlay({"grammar": grammar}) if grammar else params
                return serving.chat_runs(history, settings, chosen, body.n)

            return serving.start(body.model, is_admin(request), submit, request_id)

        started = await run_in_threadpool(start)
        forget = track(request, request_id, started)
        created = int(time.time())
        events = follow(started, request.is_disconnected)
        if not body.stream:
            try:
                texts = await collect(started, events)
            finally:
                started.cancel()
                forget()
            choices = [
                ChatChoice(
                    index=run.index,
                    message=ChatMessageOut(content=texts[run.index]),
                    finish_reason=public_finish_reason(run.job.finish_reason),
                )
                for run in started.runs
            ]
            warnings = started.warnings()  # the extensions' errors, also in the server log
            return JSONResponse(
                ChatCompletionResponse(
                    id=request_id,
                    created=created,
                    model=started.model,
                    choices=choices,
                    usage=usage_of(started),
                ).model_dump()
                | warnings_body(warnings),
                headers=warnings_headers(warnings),
            )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(
            choices: list[ChatChunkChoice], usage: Usage | None = None, warnings: Sequence[str] = ()
        ) -> str:
            payload = ChatCompletionChunk(
                id=request_id, created=created, model=started.model, choices=choices, usage=usage
            ).model_dump() | warnings_body(warnings)
            for choice in payload["choices"]:  # a delta carries only what changed, as OpenAI's do
                choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
            return sse(payload)

        async def stream(
            first: tuple[Run, Chunk] | None, rest: AsyncIterator[tuple[Run, Chunk]]
        ) -> AsyncIterator[str]:
            begun: set[int] = set()
            try:
                async for run, piece in chained(first, rest):
                    if run.index not in begun:
                        begun.add(run.index)
                        opening = ChatDelta(role="assistant", content="")
                        yield chunk([ChatChunkChoice(index=run.index, delta=opening)])
                    if piece.text:
                        yield chunk([ChatChunkChoice(index=run.index, delta=ChatDelta(content=piece.text))])
                    if piece.finish_reason:
                        finish = public_finish_reason(piece.finish_reason)
                        # The choice's last chunk carries the extensions' errors (complete by now).
                        yield chunk(
                            [ChatChunkChoice(index=run.index, delta=ChatDelta(), finish_reason=finish)],
                            warnings=run.warnings,
                        )
                if include_usage:
                    yield chunk([], usage_of(started))
            except ApiError as exc:
                yield sse(exc.openai_body())
            finally:
                started.cancel()
                forget()
                await rest.aclose()  # type: ignore[attr-defined]
            yield "data: [DONE]\n\n"

        return await _streaming(started, events, stream, forget)

    app.include_router(router)


def _content(content: Any) -> str | Sequence[dict[str, Any]] | None:
    if content is None or isinstance(content, str):
        return content
    return [part.model_dump() for part in content]


async def _streaming(
    started: Started,
    events: AsyncIterator[tuple[Run, Chunk]],
    body: Callable[[tuple[Run, Chunk] | None, AsyncIterator[tuple[Run, Chunk]]], AsyncIterator[str]],
    forget: Callable[[], None],
) -> Response:
    """An SSE response; the first chunk is awaited first so an early failure is answered with its status."""
    try:
        first, rest = await first_and_rest(events)
    except BaseException:
        started.cancel()
        forget()
        raise
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(first, rest), media_type="text/event-stream", headers=headers)
