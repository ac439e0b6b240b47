"""``/v1/internal/*``: tokens, the chat prompt without generating, model info / load / unload, the preset,
template and personality lists, and stopping the API's generations.

Each handler hands its request to the InternalServing object built once per app
(``app.state.internal_serving``); loading and unloading need ``request.state.admin`` (set by
webui/api/auth.py). Bad input is a 4xx in OpenAI's error shape, never a 500. Plain ``def`` handlers: FastAPI
runs them in its thread pool, so a tokenizer or a load never blocks the event loop (and with it the page).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from webui.api import internal_protocol as wire
from webui.api.errors import InternalApiError
from webui.api.http import install_router, serving_of
from webui.api.internal_serving import InternalServing
from webui.api.jobs import Caller
from webui.api.serving import Serving

router = APIRouter(prefix="/v1/internal", tags=["internal"])


def install_internal_routes(app: FastAPI, serving: Serving) -> None:
    """Build the app's InternalServing on ``serving``, and add the ``/v1/internal`` router and its error
    handler."""

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InternalApiError)
        return JSONResponse(exc.openai_body(), status_code=exc.status)

    app.add_exception_handler(InternalApiError, on_error)
    install_router(app, router, InternalServing(serving))


def internal(request: Request) -> InternalServing:
    return serving_of(request, InternalServing)


@router.post("/tokenize", response_model=wire.TokenizeResponse)
def tokenize(body: wire.TokenizeRequest, request: Request) -> wire.TokenizeResponse:
    return internal(request).tokenize(body)


@router.post("/detokenize", response_model=wire.DetokenizeResponse)
def detokenize(body: wire.DetokenizeRequest, request: Request) -> wire.DetokenizeResponse:
    return internal(request).detokenize(body)


@router.post("/token-count", response_model=wire.TokenCountResponse)
def token_count(body: wire.TokenizeRequest, request: Request) -> wire.TokenCountResponse:
    return internal(request).token_count(body)


@router.post("/chat-prompt", response_model=wire.ChatPromptResponse)
def chat_prompt(body: wire.ChatPromptRequest, request: Request) -> wire.ChatPromptResponse:
    return internal(request).chat_prompt(body)


@router.get("/model", response_model=wire.ModelInfo)
def get_model(request: Request) -> wire.ModelInfo:
    return internal(request).model_info()


@router.post("/model/load", response_model=wire.LoadModelResponse)
def load_model(body: wire.LoadModelRequest, request: Request) -> wire.LoadModelResponse:
    return internal(request).load_model(body, Caller.of(request.state))


@router.post("/model/unload", response_model=wire.UnloadModelResponse)
def unload_model(request: Request, body: wire.UnloadModelRequest | None = None) -> wire.UnloadModelResponse:
    return internal(request).unload_model(Caller.of(request.state), body.model if body else None)


@router.get("/presets", response_model=wire.PresetList)
def presets(request: Request) -> wire.PresetList:
    return internal(request).presets()


@router.get("/templates", response_model=wire.TemplateList)
def templates(request: Request) -> wire.TemplateList:
    return internal(request).templates()


@router.get("/characters", response_model=wire.CharacterList)
def characters(request: Request) -> wire.CharacterList:
    return internal(request).characters()


@router.get("/queue", response_model=wire.QueueResponse)
def engine_queue(request: Request) -> wire.QueueResponse:
    """The running generation and the waiting ones, in order; request ids of the caller's own jobs
    (every job's for an admin)."""
    return internal(request).queue(Caller.of(request.state))


@router.post("/stop", response_model=wire.StopResponse)
def stop(request: Request, body: wire.StopRequest | None = None) -> wire.StopResponse:
    """Cancel the caller's API generations (an admin's: anyone's); another client's id counts 0, as an
    unknown one does, so that nobody learns which ids exist."""
    return internal(request).stop(body, Caller.of(request.state))
