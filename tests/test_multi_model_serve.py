"""Several models at once through the real `webui serve` and the real default model (and a second copy of it
under another name): the page (real Chromium) and the API (official openai and ollama clients) take turns on
two loaded models without a load in between; a small --model-memory-budget makes the least recently used one
make room, and only then."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.page import send_and_watch, set_max_new_tokens
from tests.support.servers import Server, open_page
from webui.core.hardware.estimates import gb
from webui.provision import DEFAULT_MODEL_FILE

SECOND = "Second-SmolLM2-135M-Instruct.Q4_1.gguf"  # the default model's file under another name
HI = [{"role": "user", "content": "Say hi."}]


def start(root: Path, default_model_path: Path, *extra: str) -> Server:
    server = Server(root, default_model_path, extra_args=list(extra))
    (server.config.models_dir / SECOND).symlink_to(default_model_path)
    server.start()
    return server


def slug(name: str) -> str:
    """The Model tab's element id part for a model name."""
    return "".join(c if c.isalnum() else "-" for c in name)


def model_info(server: Server) -> dict[str, Any]:
    info: dict[str, Any] = httpx.get(f"{server.url}v1/internal/model", timeout=30).json()
    return info


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    server = start(tmp_path_factory.mktemp("multi-model"), default_model_path)
    yield server
    server.stop()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    with open_page(browser, server.url) as page:
        page.wait_for_selector("#chat-input textarea")
        set_max_new_tokens(page, 6)
        yield page


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_and_the_api_take_turns_on_two_loaded_models_without_a_reload(
    server: Server, page: Page
) -> None:
    chat = openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)
    local = ollama.Client(host=server.url.rstrip("/"))
    assert model_info(server)["loads"] == 1  # the page's model, loaded at start

    _, first = send_and_watch(page, "Hello!")
    assert first
    # An API request for another model loads it beside the page's model.
    other = chat.chat.completions.create(model=SECOND, messages=HI, max_tokens=6)  # type: ignore[arg-type]
    assert other.model == SECOND and other.choices[0].message.content
    info = model_info(server)
    assert info["loads"] == 2 and info["evictions"] == 0
    assert info["name"] == DEFAULT_MODEL_FILE  # the page keeps its model
    assert [(m["name"], m["page"]) for m in info["models"]] == [(DEFAULT_MODEL_FILE, True), (SECOND, False)]
    assert all(m["memory_bytes"] > 0 for m in info["models"])

    # Interleaved: page, API on the second model, page, Ollama on the second, API on the page's model.
    _, again = send_and_watch(page, "And again?")
    assert again
    assert chat.chat.completions.create(model=SECOND, messages=HI, max_tokens=4).choices[0].message.content  # type: ignore[arg-type]
    _, third = send_and_watch(page, "Once more.")
    assert third
    assert local.chat(model=SECOND, messages=HI, options={"num_predict": 4}).message.content
    completion = chat.completions.create(model=DEFAULT_MODEL_FILE, prompt="The sky is", max_tokens=4)
    assert completion.model == DEFAULT_MODEL_FILE
    info = model_info(server)
    assert (info["loads"], info["evictions"]) == (2, 0)  # no load (and no eviction) between the turns

    # /api/ps lists both, each with its memory and its own expiry, the page's first.
    running = local.ps().models
    assert [m.model for m in running] == [DEFAULT_MODEL_FILE, SECOND]
    assert all(m.size and m.size > 0 and m.size_vram == 0 and m.expires_at for m in running)

    # The Model tab lists both with their memory; its Unload button for the second unloads only that one.
    page.get_by_role("tab", name="Model").click()
    first, second = slug(DEFAULT_MODEL_FILE), slug(SECOND)
    page.wait_for_selector(f"#loaded-{second}")
    assert "this page's model" in page.locator(f"#loaded-{first}").inner_text()
    memory = {m["name"]: m["memory_bytes"] for m in model_info(server)["models"]}
    # Its fit estimate: the default model under another name, with its own 8192-token context (and the
    # automatic parallel setting's 4 slots, each with that context, on any machine that runs the tests).
    assert memory[SECOND] > 4 * 8192 * 23_040
    assert {m["name"]: m["slots"] for m in model_info(server)["models"]} == {DEFAULT_MODEL_FILE: 4, SECOND: 4}
    # The list follows each model's activity without a click: an API reply can end just after it was drawn.
    listed = page.locator(f"#loaded-{second}")
    expect(listed).to_contain_text(f"{gb(memory[SECOND])} · idle", timeout=20_000)
    long_reply = chat.chat.completions.create(
        model=SECOND, messages=HI, max_tokens=400, stream=True, extra_body={"ban_eos_token": True}
    )  # type: ignore[call-overload]
    with long_reply:
        next(iter(long_reply))
        expect(listed).to_contain_text("· generating", timeout=20_000)
        assert sum(1 for _ in long_reply) > 1
    expect(listed).to_contain_text("· idle", timeout=20_000)
    held = gb(sum(memory.values()))
    assert f"Memory budget: {held} of" in page.locator("#loaded-models-budget").inner_text()
    page.locator(f"#unload-{second}").click()
    page.wait_for_selector(f"#loaded-{second}", state="detached")
    assert [m.model for m in local.ps().models] == [DEFAULT_MODEL_FILE]
    assert model_info(server)["name"] == DEFAULT_MODEL_FILE


@pytest.mark.slow
def test_a_small_budget_makes_the_least_recently_used_model_make_room(
    tmp_path: Path, default_model_path: Path
) -> None:
    # The page's model (n_ctx 2048) is estimated at about 0.56 GB with 4 slots, the second (its own 8192 context)
    # at 1.2 GB with 4 slots, 0.62 GB with one: the automatic parallel setting gives it one slot, as 4 would
    # not fit the budget; 800 MiB then holds either, not both.
    server = start(tmp_path, default_model_path, "--model-memory-budget", "800MiB")
    try:
        chat = openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)
        local = ollama.Client(host=server.url.rstrip("/"))
        info = model_info(server)
        assert info["memory_budget_bytes"] == 800 * 2**20
        assert [m["name"] for m in info["models"]] == [DEFAULT_MODEL_FILE]
        # A reply on the page's model: it stays loaded, nothing is evicted.
        assert chat.chat.completions.create(model=DEFAULT_MODEL_FILE, messages=HI, max_tokens=3)  # type: ignore[arg-type]
        assert model_info(server)["evictions"] == 0
        # The second model does not fit beside it: the least recently used (the only other) makes room.
        assert local.generate(model=SECOND, prompt="Hi", options={"num_predict": 3}).response is not None
        info = model_info(server)
        assert (info["loads"], info["evictions"]) == (2, 1)
        assert (
            info["models"][0]["memory_bytes"] < 800 * 2**20 and info["models"][0]["slots"] == 1
        )  # four would not fit
        assert [m.model for m in local.ps().models] == [SECOND]
        # A load bigger than the whole budget is refused before anything is unloaded.
        too_big = httpx.post(
            f"{server.url}v1/internal/model/load",
            json={"model": DEFAULT_MODEL_FILE, "settings": {"n_ctx": 32768}},
            timeout=60,
        )
        assert too_big.status_code >= 400 and "memory budget" in too_big.text
        assert [m.model for m in local.ps().models] == [SECOND]
        # The unload endpoint names the model to unload; the others would stay.
        unloaded = httpx.post(f"{server.url}v1/internal/model/unload", json={"model": SECOND}, timeout=60)
        assert unloaded.json() == {"unloaded": SECOND}
        assert local.ps().models == []
    finally:
        server.stop()
