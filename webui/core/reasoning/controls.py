"""Which thinking controls a chat template reads: the variables behind the page's Think switch and effort choice.

Families take thinking switches under different names (Qwen3 and SmolLM3 ``enable_thinking``, Granite 3.2/3.3 and
DeepSeek V3.1 ``thinking``, gpt-oss ``reasoning_effort``, Seed ``thinking_budget``). The page shows a control only
when the loaded model's template reads its variable, so the template itself is asked: the names it reads without
setting them are found with Jinja's own analysis of the parsed template, never by the model's file name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jinja2 import meta

from webui.core.templates.sandbox import Sandbox
from webui.core.templates.store import MAX_SOURCE_CHARS

# The variables a template may read to switch thinking on or off, and those that pick a level or a budget.
SWITCHES = ("enable_thinking", "thinking")
LEVELS = ("reasoning_effort",)
BUDGETS = ("thinking_budget",)
# The levels gpt-oss documents; a template that compares against other words offers those instead.
DEFAULT_LEVELS = ("low", "medium", "high")
_COMPARED = r"{name}\s*(?:==|!=)\s*['\"]([a-z]+)['\"]|['\"]([a-z]+)['\"]\s*(?:==|!=)\s*{name}"


@dataclass(frozen=True)
class ThinkingControls:
    """What a template lets the user choose about thinking (all empty: nothing to show)."""

    switch: str | None = None  # the variable that turns thinking on or off
    effort: str | None = None  # the variable that takes a level
    levels: tuple[str, ...] = ()  # the levels ``effort`` takes
    budget: str | None = None  # the variable that takes a number of thinking tokens

    @property
    def any(self) -> bool:
        return bool(self.switch or self.effort or self.budget)


def thinking_controls(template: str | None) -> ThinkingControls:
    """The thinking controls ``template`` reads; none for no template or one that does not parse."""
    if not template or len(template) > MAX_SOURCE_CHARS:
        return ThinkingControls()
    # Nothing is rendered; the analysis generates code, where Jinja folds filters on constants: in the sandbox,
    # with its limits, as every template here.
    env = Sandbox()
    try:
        read = meta.find_undeclared_variables(env.parse(template))
    except Exception:  # broken or hostile: it offers no controls (rendering it reports the error)
        return ThinkingControls()
    finally:
        env.release()
    switch = next((name for name in SWITCHES if name in read), None)
    effort = next((name for name in LEVELS if name in read), None)
    budget = next((name for name in BUDGETS if name in read), None)
    return ThinkingControls(switch, effort, _levels(template, effort) if effort else (), budget)


def _levels(template: str, variable: str) -> tuple[str, ...]:
    """The words ``variable`` is compared against in ``template``, in order; gpt-oss's three by default."""
    found: list[str] = []
    for match in re.finditer(_COMPARED.format(name=re.escape(variable)), template):
        word = match.group(1) or match.group(2)
        if word not in found:
            found.append(word)
    return tuple(found) or DEFAULT_LEVELS
