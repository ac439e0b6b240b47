"""Extensions on raw completions (Default / Notebook tabs, /v1/completions, Ollama's raw /api/generate).

The test extension ``completer`` (tests/data/extensions/completer) expands ``{{capital}}`` in the prompt, caps
the length, upper-cases the streamed text and appends a mark, for completions only; a prompt holding
``EXPLODE`` makes its params hook fail. Everything runs with the real default model: in-process through the
Service and the Default / Notebook handlers, then through the real ``webui serve`` with the OpenAI and Ollama
client libraries.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import make_config
from tests.support.servers import Server
from webui.app import build_service
from webui.core.params import GenerationParams, field_specs
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings, Service
from webui.provision import DEFAULT_MODEL_FILE

COMPLETER = Path(__file__).parent / "data" / "extensions" / "completer"
EXPANSION = "The capital of France is"  # what the extension puts for {{capital}}
CAP = 8  # the extension's limit on new tokens
END_MARK = " [done]"
FAILED = 'Extension "completer" failed in modify_completion_params: RuntimeError: completer went boom'
# A second user extension: rewrites a completion's text once it has streamed (which cannot be applied).
REWRITER = '''
"""Rewriter: lower-cases a completion after it streamed."""
from webui.core.extensions.api import hookimpl


@hookimpl
def palabre_modify_reply(text, kind):
    return text.lower() if kind == "completion" else None
'''


def greedy(max_new_tokens: int) -> GenerationParams:
    return GenerationParams(temperature=0, max_new_tokens=max_new_tokens)


def shouted(text: str) -> bool:
    """Whether ``text`` is the extension's: upper case (with letters), then its end mark."""
    body = text.removesuffix(END_MARK)
    return text.endswith(END_MARK) and any(c.isalpha() for c in body) and body == body.upper()


def install(user_data: Path) -> None:
    extensions = user_data / "extensions"
    shutil.copytree(COMPLETER, extensions / "completer")
    (extensions / "rewriter").mkdir(parents=True)
    (extensions / "rewriter" / "__init__.py").write_text(textwrap.dedent(REWRITER))


# -- in-process, with the real model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Service]:
    """A Service with the default model and ``completer`` enabled (each test leaves it so)."""
    root = tmp_path_factory.mktemp("completions-live")
    config = replace(make_config(root / "user_data", default_model_path), extensions=("completer",))
    install(config.user_data_dir)
    service = build_service(config)
    service.load_model(DEFAULT_MODEL_FILE, settings={"n_ctx": 2048})
    assert service.extensions.enabled == ("completer",)
    yield service
    service.close()


def test_completion_hooks_change_the_prompt_the_params_and_the_streamed_text(service: Service) -> None:
    stream = service.stream_completion("{{capital}}", greedy(30))
    chunks = list(stream)
    text = "".join(chunk.text for chunk in chunks)
    assert stream.prompt == EXPANSION and stream.params.max_new_tokens == CAP
    assert "PARIS" in text and shouted(text), text
    assert stream.stats is not None and stream.stats.new_tokens <= CAP
    assert chunks[-1].finish_reason is not None and chunks[-1].text.endswith(END_MARK)  # the last piece
    assert stream.warnings == []

    service.extensions.set_enabled([])
    try:
        plain = service.stream_completion(EXPANSION, greedy(CAP)).text()
    finally:
        service.extensions.set_enabled(["completer"])
    assert text == plain.upper() + END_MARK  # nothing else changed: the leading space, the new lines


def test_chat_replies_are_left_alone_by_an_extension_that_opts_out(service: Service) -> None:
    reply = service.stream_chat_reply(
        [ChatMessage("user", "Say hello.")], ChatSettings(template="ChatML"), greedy(8)
    )
    text = "".join(chunk.text for chunk in reply)
    assert text and not text.endswith(END_MARK) and text != text.upper()
    assert reply.warnings == []


def test_a_failing_completion_hook_is_named_and_the_completion_still_completes(service: Service) -> None:
    stream = service.stream_completion("EXPLODE {{capital}}", greedy(10))
    text = stream.text()
    assert [warning.split(" (")[0] for warning in stream.warnings] == [FAILED]
    assert stream.params.max_new_tokens == 10  # the failed hook's effect was skipped
    assert stream.prompt == f"EXPLODE {EXPANSION}"  # the next hook still ran
    assert shouted(text) and stream.finish_reason in ("stop", "length")


def test_a_reply_hook_can_only_append_to_a_completion_that_has_streamed(service: Service) -> None:
    assert service.extensions.set_enabled(["completer", "rewriter"]) == []
    try:
        stream = service.stream_completion("{{capital}}", greedy(CAP))
        text = stream.text()
    finally:
        service.extensions.set_enabled(["completer"])
    # The reply pipeline's result (completer's mark, then rewriter's lower case) no longer starts with what
    # streamed: none of it can be applied, the text stays as streamed, and the user is told.
    assert text == text.upper() and "PARIS" in text and not text.endswith(END_MARK)
    assert len(stream.warnings) == 1 and "after it had streamed" in stream.warnings[0]


def test_the_notebook_and_default_tabs_show_the_effect_and_a_failing_extensions_name(
    service: Service,
) -> None:
    from webui.ui.convert import widget_values
    from webui.ui.parameters_tab import ParametersTab
    from webui.ui.state import SessionJobs
    from webui.ui.text_tabs import TextHandlers

    handlers = TextHandlers(service, ParametersTab(service))
    values = widget_values(field_specs(), greedy(CAP))
    *_, (text, status, _, _) = handlers.notebook("{{capital}}", SessionJobs(), *values)
    assert text.startswith("{{capital}}") and shouted(text.removeprefix("{{capital}}"))  # as typed + mark
    assert "PARIS" in text and "⚠️" not in status

    with pytest.warns(UserWarning, match='Extension "completer" failed in modify_completion_params'):
        *_, (output, status, _) = handlers.default("EXPLODE {{capital}}", SessionJobs(), *values)
    assert shouted(output)  # the completion completed
    assert status.startswith(f"⚠️ {FAILED}") and "Loaded:" in status


# -- through the real server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    """``webui serve --extensions completer``."""
    server = Server(
        tmp_path_factory.mktemp("completions-server"),
        default_model_path,
        extra_args=["--extensions", "completer"],
    )
    install(server.config.user_data_dir)
    server.start()
    yield server
    server.stop()


def test_v1_completions_show_the_hooks_effect_streamed_or_not_with_echo_and_n(server: Server) -> None:
    import openai

    client = openai.OpenAI(api_key="unused", base_url=f"{server.url}v1", max_retries=0)
    raw = client.completions.with_raw_response.create(
        model="", prompt="{{capital}}", max_tokens=30, temperature=0, echo=True, n=2
    )
    answer = raw.parse()
    texts = [choice.text for choice in answer.choices]
    assert [choice.index for choice in answer.choices] == [0, 1]
    for text in texts:
        assert text.startswith("{{capital}}")  # the echo is the prompt as sent
        assert "PARIS" in text and shouted(text.removeprefix("{{capital}}")), text
    assert answer.usage is not None and answer.usage.completion_tokens <= 2 * CAP
    assert "X-Palabre-Warnings" not in raw.headers and "palabre_warnings" not in (answer.model_extra or {})

    chunks = list(
        client.completions.create(model="", prompt="{{capital}}", max_tokens=30, temperature=0, stream=True)
    )
    streamed = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert streamed == texts[0].removeprefix("{{capital}}")
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].choices[0].text.endswith(END_MARK)
    assert all("palabre_warnings" not in (chunk.model_extra or {}) for chunk in chunks)


def test_a_failing_hook_reaches_api_clients_and_the_completion_still_completes(server: Server) -> None:
    import ollama
    import openai

    client = openai.OpenAI(api_key="unused", base_url=f"{server.url}v1", max_retries=0)
    request: Any = {"model": "", "prompt": "EXPLODE {{capital}}", "max_tokens": 6, "temperature": 0}
    raw = client.completions.with_raw_response.create(**request)
    answer = raw.parse()
    assert shouted(answer.choices[0].text)  # it completed, through the other hooks
    (warning,) = (answer.model_extra or {})["palabre_warnings"]
    assert warning.startswith(FAILED)
    assert json.loads(raw.headers["X-Palabre-Warnings"]) == [warning]
    chunks = list(client.completions.create(**request, stream=True))
    assert chunks[-1].choices[0].finish_reason and (chunks[-1].model_extra or {})["palabre_warnings"] == [
        warning
    ]
    assert all("palabre_warnings" not in (chunk.model_extra or {}) for chunk in chunks[:-1])

    ollama_client = ollama.Client(host=server.url.rstrip("/"))
    generated = ollama_client.generate(
        model="default", prompt="{{capital}}", raw=True, options={"num_predict": 30, "temperature": 0}
    )
    assert generated.done and "PARIS" in generated.response and shouted(generated.response)
    once = {
        "model": "default",
        "prompt": "EXPLODE {{capital}}",
        "raw": True,
        "stream": False,
        "options": {"num_predict": 6, "temperature": 0},
    }
    with urllib.request.urlopen(post(server.url + "api/generate", once), timeout=120) as response:
        body = json.loads(response.read())
        assert json.loads(response.headers["X-Palabre-Warnings"]) == [warning]
    assert body["palabre_warnings"] == [warning] and shouted(body["response"])
    lines = [
        json.loads(line)
        for line in urllib.request.urlopen(post(server.url + "api/generate", {**once, "stream": True}))
    ]
    assert lines[-1]["done"] and lines[-1]["palabre_warnings"] == [warning]
    assert shouted("".join(line["response"] for line in lines))


def post(url: str, body: dict[str, Any]) -> urllib.request.Request:
    return urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )


@pytest.mark.browser
def test_the_notebook_tab_shows_the_extensions_effect(server: Server, browser: Any) -> None:
    from tests.support.servers import open_page

    with open_page(browser, server.url) as page:
        page.get_by_role("tab", name="Notebook").click()
        box = page.locator("#notebook-text textarea")
        box.fill("{{capital}}")
        page.locator("#notebook-generate").click()
        page.wait_for_function(
            "() => document.querySelector('#notebook-status')?.innerText.includes('tokens/s')"
        )  # the completion ended
        text = box.input_value()
    assert text.startswith("{{capital}}") and shouted(text.removeprefix("{{capital}}")), text
