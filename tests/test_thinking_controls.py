"""Which thinking controls a template reads (webui/core/reasoning/controls.py), from real-shaped excerpts."""

from __future__ import annotations

from webui.core.reasoning import ThinkingControls, thinking_controls

QWEN3 = (
    "{%- for message in messages %}{{ message.content }}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{%- endif %}"
    "{%- endif %}"
)
GRANITE = (
    "{%- if thinking %}You are a helpful AI assistant. Respond after thinking.{%- endif %}"
    "{%- for message in messages %}<|start_of_role|>{{ message.role }}<|end_of_role|>{{ message.content }}"
    "<|end_of_text|>{%- endfor %}"
)
GPT_OSS = (
    "{%- if reasoning_effort is not defined %}{%- set reasoning_effort = 'medium' %}{%- endif %}"
    "Reasoning: {{ reasoning_effort }}\n"
)
GPT_OSS_COMPARED = "{% if reasoning_effort == 'low' %}a{% elif reasoning_effort == 'high' %}b{% endif %}"
SEED = "{%- if thinking_budget is defined %}<seed:cot_budget_reflect>{{ thinking_budget }}{%- endif %}"
CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def test_each_familys_switch_level_and_budget_are_found_in_its_template() -> None:
    assert thinking_controls(QWEN3) == ThinkingControls(switch="enable_thinking")
    assert thinking_controls(GRANITE) == ThinkingControls(switch="thinking")
    gpt_oss = thinking_controls(GPT_OSS)
    assert gpt_oss.effort == "reasoning_effort" and gpt_oss.levels == ("low", "medium", "high")
    assert thinking_controls(GPT_OSS_COMPARED).levels == ("low", "high")
    assert thinking_controls(SEED) == ThinkingControls(budget="thinking_budget")


def test_templates_without_thinking_offer_nothing() -> None:
    for template in (CHATML, None, "", "{% set enable_thinking = true %}{{ enable_thinking }}"):
        controls = thinking_controls(template)
        assert controls == ThinkingControls() and not controls.any


def test_broken_templates_offer_nothing_and_hostile_ones_are_only_analysed() -> None:
    for template in ("{% if enable_thinking %}", "{{" * 20000):
        assert thinking_controls(template) == ThinkingControls()
    # Nothing is rendered (Jinja folds constants while analysing, in the sandbox): the 160 MB is never built.
    hostile = "{{ ('x'|center(4000000)) * 40 }}{% if thinking %}{% endif %}"
    assert thinking_controls(hostile) == ThinkingControls(switch="thinking")
