"""Untrusted templates: server-side template injection through every way a template reaches Palabre.

Entry points: template files in the user's folder (TemplateStore), a chat template inside a GGUF file's metadata
(read by the real header reader, detected and rendered by the real service and server), and a request's
``instruction_template_str`` on the real server. A payload that would run code writes a canary file or sets an
environment variable; neither may ever appear, every payload gives a clear error, and the server keeps serving.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gguf import GGUFWriter

from tests.support import hostile_files as hostile
from tests.support.servers import Server
from webui.core.models.discovery import gguf_metadata
from webui.core.templates import store as templates_module
from webui.core.templates.sandbox import MAX_RENDER_BYTES
from webui.core.templates.store import (
    MAX_RENDER_SECONDS,
    InstructionTemplate,
    TemplateError,
    TemplateStore,
    detect_template,
)
from webui.provision import DEFAULT_MODEL_FILE

BUNDLED = Path(__file__).resolve().parent.parent / "instruction-templates"
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
ALL_PAYLOADS = hostile.ESCAPE_PAYLOADS + hostile.EXHAUSTION_PAYLOADS


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    """A path that a payload which runs code would create; the environment canary is checked too."""
    marker = tmp_path / "outside" / "pwned"
    marker.parent.mkdir()
    os.environ.pop(hostile.CANARY_ENV, None)
    yield marker
    assert not marker.exists(), "a template ran a command"
    assert hostile.CANARY_ENV not in os.environ, "a template changed the environment"


def assert_stopped(run: object, name: str) -> TemplateError:
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        run()  # type: ignore[operator]
    # Every render stays within its time limit (with room for a loaded machine), never runs on.
    assert time.monotonic() - started < 2 * MAX_RENDER_SECONDS
    assert f'"{name}"' in str(caught.value)
    return caught.value


@pytest.mark.parametrize("payload", ALL_PAYLOADS)
def test_payload_in_a_user_template_file_is_refused(tmp_path: Path, canary: Path, payload: str) -> None:
    store = TemplateStore(BUNDLED, tmp_path / "user")
    store.user_dir.mkdir()
    source = payload.replace("{marker}", str(canary))
    (store.user_dir / "hostile.jinja").write_text(source, encoding="utf-8")

    def render() -> str:
        return store.get("hostile").render(CHAT, bos_token="<s>", eos_token="</s>")

    assert_stopped(render, "hostile")


@pytest.mark.parametrize("payload", ALL_PAYLOADS)
def test_payload_saved_as_yaml_template_is_refused_when_rendered(
    tmp_path: Path, canary: Path, payload: str
) -> None:
    store = TemplateStore(BUNDLED, tmp_path / "user")
    source = payload.replace("{marker}", str(canary))
    try:
        store.save("saved", source)  # parsing is all saving does: it must not run the template
    except TemplateError:
        return
    assert_stopped(lambda: store.get("saved").render(CHAT), "saved")


def test_unsafe_attributes_are_an_error_not_an_empty_string() -> None:
    # Jinja's default would print "" for a refused attribute and hide the attempt.
    with pytest.raises(TemplateError, match=r"unsafe operation.*__class__"):
        InstructionTemplate("probe", "{{ ''.__class__ }}").render(CHAT)
    with pytest.raises(TemplateError, match=r"unsafe operation.*__globals__"):
        InstructionTemplate("probe", "{{ raise_exception.__globals__ }}").render(CHAT)


@pytest.mark.parametrize("payload", hostile.DEEP_PAYLOADS)
def test_deeply_nested_template_is_refused_with_a_clear_error(payload: str) -> None:
    with pytest.raises(TemplateError, match='Template "deep"'):
        InstructionTemplate("deep", payload).render(CHAT)


def test_nested_loops_stop_at_the_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates_module, "MAX_RENDER_SECONDS", 0.5)
    started = time.monotonic()
    with pytest.raises(TemplateError, match="time limit"):
        InstructionTemplate("slow", hostile.SLOW_PAYLOAD).render(CHAT)
    assert time.monotonic() - started < 4 * 0.5


@pytest.mark.parametrize("payload", hostile.ESCAPE_PAYLOADS)
def test_payload_in_gguf_metadata_is_never_used(tmp_path: Path, canary: Path, payload: str) -> None:
    """The real header reader and detection: a metadata template that attacks is set aside with a note."""
    source = payload.replace("{marker}", str(canary))
    model = tmp_path / "hostile-chat.Q4_0.gguf"
    writer = GGUFWriter(model, "llama")  # the reference writer from llama.cpp's gguf package
    writer.add_chat_template(source)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    metadata = gguf_metadata(model)
    assert metadata.chat_template == source
    store = TemplateStore(BUNDLED, tmp_path / "user")
    detection = detect_template(store, model_name=model.name, metadata_template=metadata.chat_template)
    assert detection.reason == "fallback"
    assert "could not be used" in detection.message()
    assert detection.template.render(CHAT)  # the fallback renders


# -- through the real server --------------------------------------------------------------------------------


def trigger_template(marker: Path) -> tuple[str, list[str]]:
    """A ChatML-like template that behaves until a message says ``p<i>``, then runs payload ``i``.

    It renders the probe differently from the bundled ChatML, so detection keeps it as the model's own.
    """
    chosen = [
        p.replace("{marker}", str(marker))
        for p in ALL_PAYLOADS
        if not any(tag in p for tag in ("{% macro", "{% extends", "{% include", "{% import"))
    ]
    branches = "".join(
        f"{{%- {'if' if i == 0 else 'elif'} t == 'p{i}' -%}}{payload}" for i, payload in enumerate(chosen)
    )
    source = (
        "[metadata]{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        "{%- set t = messages[-1].content -%}" + branches + "{%- endif -%}"
    )
    return source, [f"p{i}" for i in range(len(chosen))]


@pytest.fixture(scope="module")
def server_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ssti-server")


@pytest.fixture(scope="module")
def server(server_root: Path, default_model_path: Path) -> Iterator[Server]:
    marker = server_root / "pwned"
    server = Server(server_root, model=default_model_path)
    source, _ = trigger_template(marker)
    hostile.retemplate_gguf(default_model_path, server.config.models_dir / "hostile-chat.gguf", source)
    always = "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}"
    hostile.retemplate_gguf(default_model_path, server.config.models_dir / "always-hostile.gguf", always)
    broken = "{% if %}{{ 'a' * 10**10 }}"  # does not parse; llama-cpp-python alone would refuse the file
    hostile.retemplate_gguf(default_model_path, server.config.models_dir / "broken-template.gguf", broken)
    server.start()
    yield server
    server.stop()
    assert not marker.exists(), "a template ran a command inside the server"


def chat(server: Server, content: str, **extra: object) -> httpx.Response:
    body = {"model": "", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}
    return httpx.post(f"{server.url}v1/chat/completions", json=body, timeout=60)


def load(server: Server, name: str) -> httpx.Response:
    body = {"model": name, "settings": {"n_ctx": 2048}}
    return httpx.post(f"{server.url}v1/internal/model/load", json=body, timeout=120)


def assert_clear_error(response: httpx.Response, payload: str) -> None:
    assert response.status_code == 400, (payload, response.status_code, response.text[:500])
    message = response.json()["error"]["message"]
    # A template error names the template; one that would build more text than any context window is
    # reported by the prompt builder as a prompt that does not fit.
    assert "Template" in message or "does not fit" in message, (payload, message)


@pytest.mark.slow
def test_gguf_metadata_template_payloads_through_the_real_server(server: Server, server_root: Path) -> None:
    response = load(server, "hostile-chat.gguf")
    assert response.status_code == 200, response.text
    assert response.json()["template"] == templates_module.METADATA_CUSTOM_NAME
    _, triggers = trigger_template(server_root / "pwned")
    for trigger in triggers:
        assert_clear_error(chat(server, trigger), trigger)
    assert not (server_root / "pwned").exists()
    answer = chat(server, "Hello")  # the model's template still works for a normal conversation
    assert answer.status_code == 200, answer.text
    prompt = httpx.post(
        f"{server.url}v1/internal/chat-prompt", json={"messages": [{"role": "user", "content": "Hi"}]}
    )
    assert prompt.json()["prompt"].startswith("[metadata]")


@pytest.mark.slow
def test_gguf_whose_template_always_attacks_loads_with_the_fallback(
    server: Server, server_root: Path
) -> None:
    for name in ("always-hostile.gguf", "broken-template.gguf"):
        response = load(server, name)
        assert response.status_code == 200, response.text
        assert "could not be used" in response.json()["message"]
        assert response.json()["template"] != templates_module.METADATA_CUSTOM_NAME
        answer = chat(server, "Hello")
        assert answer.status_code == 200, answer.text
    assert not (server_root / "pwned").exists()


@pytest.mark.slow
def test_instruction_template_str_payloads_through_the_real_server(server: Server, server_root: Path) -> None:
    assert load(server, DEFAULT_MODEL_FILE).status_code == 200
    marker = server_root / "pwned"
    sent = [p.replace("{marker}", str(marker)) for p in ALL_PAYLOADS + hostile.DEEP_PAYLOADS]
    sent.append(hostile.SLOW_PAYLOAD)
    for payload in sent:
        started = time.monotonic()
        response = chat(server, "Hello", instruction_template_str=payload)
        assert time.monotonic() - started < 3 * MAX_RENDER_SECONDS
        assert_clear_error(response, payload[:200])
        assert httpx.get(f"{server.url}health").status_code == 200
    assert not marker.exists()
    fine = chat(
        server, "Hello", instruction_template_str="{% for m in messages %}{{ m.content }}\n{% endfor %}"
    )
    assert fine.status_code == 200, fine.text
    assert fine.json()["choices"][0]["message"]["content"] is not None


@pytest.mark.slow
def test_ollama_go_template_cannot_smuggle_jinja(server: Server, server_root: Path) -> None:
    """An Ollama request's Go ``template`` is converted to Jinja with its text escaped: Jinja syntax in it is
    text, and Go actions outside the supported set are refused."""
    assert load(server, DEFAULT_MODEL_FILE).status_code == 200
    marker = server_root / "pwned"
    # Go reads all of this as text; were it Jinja, it would loop 10^9 times and run a command.
    smuggled = (
        f"{{% for i in range(10**9) %}}{{% set x = cycler.__init__.__globals__.os.popen('touch {marker}') %}}"
    )
    smuggled += "{% endfor %}"
    body = {"model": DEFAULT_MODEL_FILE, "stream": False, "options": {"num_predict": 1, "temperature": 0}}
    shown = httpx.post(
        f"{server.url}api/generate",
        json={**body, "prompt": "Hi", "template": smuggled + "{{ .Prompt }}"},
        timeout=60,
    )
    assert shown.status_code == 200, shown.text  # the braces were plain text in the prompt
    for action in ("{{ cycler }}", '{{ .Prompt | printf "%s" }}', '{{ template "x" }}', "{{ $x := 1 }}"):
        refused = httpx.post(
            f"{server.url}api/generate", json={**body, "prompt": "Hi", "template": action}, timeout=60
        )
        assert refused.status_code == 400, (action, refused.text)
        assert "cannot be used" in refused.json()["error"]
    assert not marker.exists()


# -- memory: the per-render budget, through the real server --------------------------------------------------

# Forty strings of 4M characters, each under the per-value cap, kept in variables: 160 MB in all.
MEMORY_HOG = "".join(f"{{% set v{i} = 'x' * 4000000 ~ {i} %}}" for i in range(40)) + "{{ v0|length }}"
# Within the budget (40 MB), then an error: what the render held must not outlive the request.
HOLD_THEN_FAIL = "".join(f"{{% set v{i} = 'x' * 4000000 ~ {i} %}}" for i in range(10)) + "{{ 1 / 0 }}"
MIB = 2**20


def server_memory_mib(server: Server, field: str = "VmRSS") -> float:
    """The server's resident memory ("VmRSS") or its peak since reset_server_peak ("VmHWM"), in MiB."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for the server's process")


def reset_server_peak(server: Server) -> None:
    assert server.process is not None
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # VmHWM starts again from VmRSS


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads the server's memory from /proc")
def test_a_template_that_holds_too_much_memory_is_refused_and_the_memory_comes_back(server: Server) -> None:
    assert load(server, DEFAULT_MODEL_FILE).status_code == 200
    budget = MAX_RENDER_BYTES / MIB
    for _ in range(2):  # warm up: code paths, the allocator's arenas in the request threads
        chat(server, "Hello", instruction_template_str=MEMORY_HOG, mode="instruct")
        assert chat(server, "Hello", instruction_template_str="{{ messages[0].content }}").status_code == 200
    start = server_memory_mib(server)

    reset_server_peak(server)
    response = chat(server, "Hello", instruction_template_str=MEMORY_HOG, mode="instruct")
    peak, after = server_memory_mib(server, "VmHWM") - start, server_memory_mib(server) - start
    print(f"\nserver at {start:.0f} MiB; one request: +{peak:.1f} MiB at the peak, {after:+.1f} MiB after")
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert 'Template "instruction_template_str"' in message and f"{budget:g} MiB" in message, message
    assert peak <= budget + 32  # the budget, plus what the allocator and one value's pre-check let through
    assert after <= 8  # given back at once, not at the next garbage collection

    reset_server_peak(server)
    for _ in range(20):
        response = chat(server, "Hello", instruction_template_str=MEMORY_HOG, mode="instruct")
        assert response.status_code == 400, response.text
    peak, after = server_memory_mib(server, "VmHWM") - start, server_memory_mib(server) - start
    print(f"20 requests in a row: +{peak:.1f} MiB at the peak, {after:+.1f} MiB after")
    assert peak <= budget + 32  # requests one after another do not stack up
    assert after <= 16

    for _ in range(20):
        response = chat(server, "Hello", instruction_template_str=HOLD_THEN_FAIL, mode="instruct")
        assert response.status_code == 400 and "division by zero" in response.text, response.text
    after = server_memory_mib(server) - start
    print(f"20 renders that hold 40 MB then fail: {after:+.1f} MiB after")
    assert after <= 16
    fine = chat(
        server, "Hello", instruction_template_str="{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    assert fine.status_code == 200, fine.text
