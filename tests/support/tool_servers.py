"""What the API tool and thinking tests share: the weather tool, a ChatML template that renders tools and opens
a thought while thinking is on (so that the default model, SmolLM2, reasons and calls), loading the model of a
`webui serve` with it, and a transport that adds Palabre's ``tool_choice`` to the Ollama client's requests."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.servers import Server

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city's name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
}
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather of a city.",
        "parameters": WEATHER_PARAMETERS,
    },
}

# ChatML with tools in Hermes' <tool_call> form (results come back as <tool_response> in a user turn, as Qwen's
# templates do), and ``<think>`` opened after the assistant's header while enable_thinking is on.
TOOLS_THINK_TEMPLATE = "ChatML-tools-think"
TOOLS_THINK_YAML = """\
instruction_template: |-
  {%- if tools %}
  {{- '<|im_start|>system\\nYou can call these tools:\\n' }}
  {%- for tool in tools %}
  {{- tool.function | tojson + '\\n' }}
  {%- endfor %}
  {{- 'To call one, reply with <tool_call>\\n{"name": <name>, "arguments": <arguments>}\\n</tool_call><|im_end|>\\n' }}
  {%- endif %}
  {%- for message in messages %}
  {%- if message.role == 'assistant' and message.tool_calls %}
  {{- '<|im_start|>assistant\\n' }}
  {%- for call in message.tool_calls %}
  {{- '<tool_call>\\n' + {"name": call.function.name, "arguments": call.function.arguments} | tojson + '\\n</tool_call>' }}
  {%- endfor %}
  {{- '<|im_end|>\\n' }}
  {%- elif message.role == 'tool' %}
  {{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}
  {%- else %}
  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
  {%- endif %}
  {%- endfor %}
  {%- if add_generation_prompt %}
  {{- '<|im_start|>assistant\\n' }}
  {%- if enable_thinking %}
  {{- '<think>\\n' }}
  {%- endif %}
  {%- endif %}
"""


def add_tools_think_template(server: Server) -> None:
    """Put the template among the server's user templates (before it starts)."""
    folder = server.config.user_templates_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TOOLS_THINK_TEMPLATE}.yaml").write_text(TOOLS_THINK_YAML)


def load_with_template(server: Server, template: str | None) -> None:
    """Load the server's default model again with ``template`` (None: the one detected from its file)."""
    assert server.model is not None
    body = {"model": server.model.name, "settings": {"n_ctx": 2048}, "instruction_template": template}
    response = httpx.post(f"{server.url}v1/internal/model/load", json=body, timeout=120)
    assert response.status_code == 200, response.text


class ToolChoiceTransport(httpx.HTTPTransport):
    """Adds ``tool_choice`` to /api/chat requests: Ollama's API has no such field (Palabre takes it), and the
    Ollama client sends none; SmolLM2 calls a tool only when made to."""

    def __init__(self, choice: str) -> None:
        super().__init__()
        self.choice = choice

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/chat":
            body = json.loads(request.read() or b"{}")
            if body.get("tools"):
                body["tool_choice"] = self.choice
                headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
                request = httpx.Request(request.method, request.url, headers=headers, json=body)
        return super().handle_request(request)
