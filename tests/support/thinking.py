"""Instruction templates that make an ordinary ChatML model a thinking one, for the page's thinking tests.

``THINKING_CHATML`` opens every reply inside a ``<think>`` block (as Qwen3 and SmolLM3 do with thinking on), so
whatever the model writes first is its reasoning; with a thinking budget the engine closes the block after that
many tokens and the model goes on with its answer. It reads ``enable_thinking`` (the page's Think switch):
switched off, the block is opened and closed empty, as Qwen3's template does.

``EFFORT_CHATML`` is the same with a ``reasoning_effort`` variable taking three levels (gpt-oss style).
"""

from __future__ import annotations

THINKING_TEMPLATE_NAME = "ChatML-thinking"
EFFORT_TEMPLATE_NAME = "ChatML-effort"

THINKING_CHATML = """{%- for message in messages %}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and not enable_thinking %}{{- '<think>\\n\\n</think>\\n\\n' }}
{%- else %}{{- '<think>\\n' }}{%- endif %}
{%- endif %}"""

EFFORT_CHATML = """{%- for message in messages %}
{%- if loop.first and reasoning_effort is defined %}
{{- '<|im_start|>system\\nReasoning: ' + reasoning_effort + '<|im_end|>\\n' }}
{%- endif %}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\\n<think>\\n' }}
{%- endif %}
{%- if reasoning_effort == 'low' or reasoning_effort == 'medium' or reasoning_effort == 'high' %}{%- endif %}"""


def assert_markers_stay_out(reasoning: str, answer: str) -> None:
    """What the server guarantees whatever a sampled small model writes: no ``<think>``/``</think>`` in the
    reasoning (a repeated opening tag is dropped, the first closing one ends it), and in the answer a closing
    tag only after an opening one the model wrote there as text. That pair stays the model's text, as in
    llama.cpp's and Ollama's parsers; a lone closing tag (a small model repeating the forced one) is dropped."""
    assert "<think>" not in reasoning and "</think>" not in reasoning, reasoning
    close = answer.find("</think>")
    assert close < 0 or "<think>" in answer[:close], answer
