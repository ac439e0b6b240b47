"""GenerationParams: the one sampler schema.

Every sampler field, its default, bounds and description live here and only here. Presets, the Parameters tab
widgets, API request models, CLI flags and Ollama PARAMETER lines are derived from this model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

WidgetKind = Literal["float", "int", "bool", "text", "list", "mapping"]


def _ui(group: str, step: float | None = None) -> dict[str, Any]:
    """Extra schema data the page uses to lay out a widget (group heading and slider step)."""
    extra: dict[str, Any] = {"group": group}
    if step is not None:
        extra["step"] = step
    return extra


# What an API request asks for its own answer (logprobs), not a sampler setting: no widget, CLI flag or preset.
_PER_REQUEST: dict[str, Any] = {"per_request": True}


class GenerationParams(BaseModel):
    """Every sampler and generation setting, with its default, bounds and meaning."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_new_tokens: int = Field(
        512,
        ge=1,
        le=32768,
        description="Most tokens to generate for one reply.",
        json_schema_extra=_ui("Length", 1),
    )
    truncation_length: int = Field(
        0,
        ge=0,
        le=1048576,
        description="Prompt + reply budget in tokens; older turns are dropped to fit. 0 = the model's context.",
        json_schema_extra=_ui("Length", 256),
    )
    temperature: float = Field(
        0.7,
        ge=0.0,
        le=5.0,
        description="Randomness. 0 = always the most likely token.",
        json_schema_extra=_ui("Sampling", 0.01),
    )
    dynatemp_range: float = Field(
        0.0,
        ge=0.0,
        le=5.0,
        description="Dynamic temperature: the temperature varies by +/- this much with the entropy. 0 = off.",
        json_schema_extra=_ui("Sampling", 0.01),
    )
    dynatemp_exponent: float = Field(
        1.0,
        ge=0.0,
        le=5.0,
        description="Dynamic temperature exponent.",
        json_schema_extra=_ui("Sampling", 0.01),
    )
    top_p: float = Field(
        0.95,
        ge=0.0,
        le=1.0,
        description="Keep the smallest set of tokens whose probabilities add up to this.",
        json_schema_extra=_ui("Sampling", 0.01),
    )
    top_k: int = Field(
        40,
        ge=0,
        le=1000,
        description="Keep only the k most likely tokens. 0 = off.",
        json_schema_extra=_ui("Sampling", 1),
    )
    min_p: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Drop tokens less likely than this fraction of the most likely one. 0 = off.",
        json_schema_extra=_ui("Sampling", 0.01),
    )
    typical_p: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Locally typical sampling. 1 = off.",
        json_schema_extra=_ui("Sampling", 0.01),
    )
    top_n_sigma: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="Keep tokens within n standard deviations of the top logit. 0 = off.",
        json_schema_extra=_ui("Sampling", 0.1),
    )
    xtc_threshold: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="XTC: tokens above this probability may be excluded.",
        json_schema_extra=_ui("XTC", 0.01),
    )
    xtc_probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="XTC: chance of excluding the top choices at a step. 0 = off.",
        json_schema_extra=_ui("XTC", 0.01),
    )
    repetition_penalty: float = Field(
        1.0,
        ge=0.5,
        le=3.0,
        description="Penalize tokens already present. 1 = off.",
        json_schema_extra=_ui("Penalties", 0.01),
    )
    repetition_penalty_range: int = Field(
        1024,
        ge=-1,
        le=1048576,
        description="How many recent tokens the penalties look at. -1 = the whole context, 0 = none.",
        json_schema_extra=_ui("Penalties", 64),
    )
    frequency_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="Penalize tokens by how often they appeared.",
        json_schema_extra=_ui("Penalties", 0.01),
    )
    presence_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="Penalize tokens that appeared at all.",
        json_schema_extra=_ui("Penalties", 0.01),
    )
    dry_multiplier: float = Field(
        0.0,
        ge=0.0,
        le=5.0,
        description="DRY: strength of the penalty on repeated sequences. 0 = off.",
        json_schema_extra=_ui("DRY", 0.01),
    )
    dry_base: float = Field(
        1.75,
        ge=1.0,
        le=4.0,
        description="DRY: how fast the penalty grows with the repeat length.",
        json_schema_extra=_ui("DRY", 0.01),
    )
    dry_allowed_length: int = Field(
        2,
        ge=1,
        le=20,
        description="DRY: repeats up to this length are not penalized.",
        json_schema_extra=_ui("DRY", 1),
    )
    dry_sequence_breakers: list[str] = Field(
        default_factory=lambda: ["\n", ":", '"', "*"],
        description="DRY: strings that end a repeated sequence.",
        json_schema_extra=_ui("DRY"),
    )
    mirostat_mode: int = Field(
        0,
        ge=0,
        le=2,
        description="Mirostat: 0 = off, 1 = v1, 2 = v2 (replaces the other samplers).",
        json_schema_extra=_ui("Mirostat", 1),
    )
    mirostat_tau: float = Field(
        5.0, ge=0.0, le=20.0, description="Mirostat target entropy.", json_schema_extra=_ui("Mirostat", 0.01)
    )
    mirostat_eta: float = Field(
        0.1, ge=0.0, le=1.0, description="Mirostat learning rate.", json_schema_extra=_ui("Mirostat", 0.01)
    )
    seed: int = Field(
        -1,
        ge=-1,
        le=2**32 - 1,
        description="Random seed. -1 = a new random seed each time.",
        json_schema_extra=_ui("Control", 1),
    )
    stop: list[str] = Field(
        default_factory=list,
        description="Stop generating at any of these strings (not shown).",
        json_schema_extra=_ui("Control"),
    )
    ban_eos_token: bool = Field(
        False,
        description="Never end the reply with the end-of-sequence token.",
        json_schema_extra=_ui("Control"),
    )
    add_bos_token: bool = Field(
        True,
        description="Start the prompt with the beginning-of-sequence token.",
        json_schema_extra=_ui("Control"),
    )
    skip_special_tokens: bool = Field(
        True, description="Leave special tokens out of the shown text.", json_schema_extra=_ui("Control")
    )
    logit_bias: dict[int, float] = Field(
        default_factory=dict,
        description="Token id -> bias added to its logit (-100 bans it).",
        json_schema_extra=_ui("Control"),
    )
    grammar: str = Field(
        "", description="GBNF grammar the reply must follow. Empty = none.", json_schema_extra=_ui("Control")
    )

    grammar_triggers: list[str] = Field(
        default_factory=list,
        description="With a grammar: regular expressions; the grammar applies only from where one first "
        "matches the reply (a lazy grammar, as for tool calls). Empty = from the start.",
        json_schema_extra=_ui("Control"),
    )
    enable_thinking: bool = Field(
        True,
        description="Let a thinking model reason before it answers (for templates with a thinking switch).",
        json_schema_extra=_ui("Thinking"),
    )
    reasoning_effort: str = Field(
        "",
        max_length=16,
        pattern=r"^[a-z]*$",
        description="How hard a model that takes levels thinks (e.g. low, medium, high). Empty = its default.",
        json_schema_extra=_ui("Thinking"),
    )
    thinking_budget: int = Field(
        -1,
        ge=-1,
        le=32768,
        description="Most reasoning tokens before the answer is made to begin. -1 = no limit.",
        json_schema_extra=_ui("Thinking", 64),
    )
    logprobs: int = Field(
        -1,
        ge=-1,
        le=20,
        description="Report each generated token's log-probability, with this many most likely alternatives "
        "(0 = the token's own only). -1 = off.",
        json_schema_extra=_PER_REQUEST,
    )
    prompt_logprobs: bool = Field(
        False,
        description="Also report the log-probability of every prompt token (scoring; the prompt is evaluated "
        "in full, without reusing the cache).",
        json_schema_extra=_PER_REQUEST,
    )

    @field_validator("stop", "dry_sequence_breakers")
    @classmethod
    def _no_empty_strings(cls, value: list[str]) -> list[str]:
        return [item for item in value if item]

    def overlay(self, changes: dict[str, Any]) -> GenerationParams:
        """A copy with ``changes`` applied and validated."""
        return GenerationParams.model_validate({**self.model_dump(), **changes})

    def non_default(self) -> dict[str, Any]:
        """Only the fields that differ from the defaults (the shape of a preset file)."""
        defaults = GenerationParams().model_dump()
        return {k: v for k, v in self.model_dump().items() if defaults[k] != v}


@dataclass(frozen=True)
class FieldSpec:
    """What a front end needs to draw one sampler field."""

    name: str
    kind: WidgetKind
    default: Any
    description: str
    group: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None


_KINDS: dict[Any, WidgetKind] = {
    float: "float",
    int: "int",
    bool: "bool",
    str: "text",
    list[str]: "list",
    dict[int, float]: "mapping",
}


def field_specs() -> list[FieldSpec]:
    """Every GenerationParams field, described for widget generation, in declaration order (without the
    per-request ones: an API request's logprobs)."""
    specs: list[FieldSpec] = []
    for name, info in GenerationParams.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("per_request"):
            continue  # PER_REQUEST_NAMES
        minimum = maximum = None
        for constraint in info.metadata:
            minimum = getattr(constraint, "ge", minimum)
            maximum = getattr(constraint, "le", maximum)
        step = extra.get("step")
        specs.append(
            FieldSpec(
                name=name,
                kind=_KINDS[info.annotation],
                default=info.get_default(call_default_factory=True),
                description=info.description or "",
                group=str(extra.get("group", "Other")),
                minimum=minimum,
                maximum=maximum,
                step=float(step) if isinstance(step, (int, float)) else None,
            )
        )
    return specs


PARAM_NAMES: frozenset[str] = frozenset(GenerationParams.model_fields)
# Fields an API request sets for its own answer (logprobs): no widget, CLI flag or preset line.
PER_REQUEST_NAMES: frozenset[str] = frozenset(
    name
    for name, info in GenerationParams.model_fields.items()
    if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("per_request")
)


def describe_validation_error(error: ValidationError) -> str:
    """One readable line per invalid field, for the page, the API and the CLI."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "value"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)
