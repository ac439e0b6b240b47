"""A personality ("character"): the Character model, its file form, and its conversion to and from a
Character Card V2 and an Ollama Modelfile. Stored, imported and exported by webui.core.characters.store.

A personality file is YAML (or JSON) in ``characters/`` (bundled, never written) or ``user_data/characters/``
(the user's; a user file overrides a bundled one of the same name)::

    name: Coder                       # the character's name in the chat; files are saved as <name>.yaml
    greeting: What are we building?   # first message of a new chat ({{char}} / {{user}} are filled in)
    context: You are a helpful ...    # persona / system text
    user_name: Ada                    # optional: the user's name for this personality
    parameters: {temperature: 0.01}   # optional: GenerationParams keys, validated
    instruction_template: ChatML      # optional: instruction template for instruct / chat-instruct
    avatar: Coder.png                 # optional: an image next to the file
    tools: [calculator, read_file]    # optional: the page tools it may use (default: all enabled ones)
    knowledge: [handbook]             # optional: document collections searched for every message

Character Card V2 fields (description, personality, scenario, mes_example, creator_notes, system_prompt,
post_history_instructions, alternate_greetings, character_book, tags, creator, character_version, extensions)
are kept as they were so that card import -> export is lossless; unknown card keys are kept in
``card_extra``. How ``context`` relates to them: on card import ``context`` is
``cards.compose_context(data)`` (system prompt, description, ``{{char}}'s personality: ...``, ``Scenario:
...``, blank-line separated). On card export, if ``context`` is still exactly that, the card fields are written
unchanged; if it differs (a native personality, or a context edited after import), ``description`` carries the
context and ``system_prompt``, ``personality`` and ``scenario`` are written empty, so that importing the card
again gives the same context. ``mes_example`` (the card's example dialogue) is not part of ``context``;
``context_for()`` appends it. Palabre-only settings travel in a card under ``extensions.palabre``.

From an Ollama Modelfile come ``model`` (FROM), ``loader_settings`` (``num_ctx`` -> ``n_ctx``, ...),
``example_messages`` (MESSAGE lines: like Ollama, a front end puts them at the start of the conversation)
and ``modelfile`` (the Go TEMPLATE as written, unused PARAMETERs, LICENSE, ADAPTER, ...), all written back
on Modelfile export.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from webui.core.characters import cards, modelfile
from webui.core.params import PARAM_NAMES, GenerationParams, describe_validation_error
from webui.core.paths import validate_name

DEFAULT_CHARACTER = "Assistant"
DEFAULT_USER_NAME = "You"
AVATAR_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
MODELFILE_PLACEHOLDER_MODEL = "llama3.2"
_PLACEHOLDER = re.compile(r"\{\{(char|user)\}\}|<BOT>|<USER>", re.IGNORECASE)
# Palabre-only settings; a card carries them in extensions.palabre.
_PALABRE_ONLY: tuple[str, ...] = (
    "user_name",
    "parameters",
    "instruction_template",
    "model",
    "loader_settings",
)
_PALABRE_ONLY += ("example_messages", "modelfile", "tools", "knowledge")
_LEGACY_KEYS = {  # old text-generation-webui / Pygmalion personality keys
    "char_name": "name",
    "char_greeting": "greeting",
    "first_mes": "greeting",
    "your_name": "user_name",
    "char_persona": "description",
    "world_scenario": "scenario",
    "example_dialogue": "mes_example",
}


class CharacterError(ValueError):
    """A personality that cannot be read, saved, imported or exported; the message is meant for the user."""


def fill_placeholders(text: str, character_name: str, user_name: str) -> str:
    """Replace ``{{char}}`` / ``<BOT>`` with the character's name and ``{{user}}`` / ``<USER>`` with the user's."""

    def value(match: re.Match[str]) -> str:
        return character_name if match.group(0).lower() in ("{{char}}", "<bot>") else user_name

    return _PLACEHOLDER.sub(value, text)


class ExampleMessage(BaseModel):
    """One example message (an Ollama MESSAGE line)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ModelfileExtras(BaseModel):
    """What an Ollama Modelfile had that Palabre keeps only to write it back on export."""

    model_config = ConfigDict(extra="forbid")

    template: str | None = None  # the Go TEMPLATE exactly as written
    parameters: list[tuple[str, str]] = Field(default_factory=list)  # PARAMETERs Palabre has no setting for
    license: list[str] = Field(default_factory=list)
    adapter: list[str] = Field(default_factory=list)
    other: list[tuple[str, str]] = Field(default_factory=list)  # DRAFT / RENDERER / PARSER / REQUIRES


class Character(BaseModel):
    """A personality: see the module docstring for every field and how the card fields relate to ``context``."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str
    greeting: str = ""
    context: str = ""
    user_name: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    instruction_template: str | None = None
    avatar: str | None = None
    model: str | None = None
    loader_settings: dict[str, Any] = Field(default_factory=dict)
    example_messages: list[ExampleMessage] = Field(default_factory=list)
    modelfile: ModelfileExtras = Field(default_factory=ModelfileExtras)
    # The tools (page tool names) this personality may use; None: every tool enabled in the Tools panel.
    # Names only narrow what the user enabled: a personality can never add a tool or an MCP server.
    tools: list[str] | None = None
    # Document collections (Knowledge tab) whose passages answer every message of its chats, cited as [n].
    knowledge: list[str] = Field(default_factory=list)
    # Character Card V2 fields (first_mes is ``greeting``)
    description: str = ""
    personality: str = ""
    scenario: str = ""
    mes_example: str = ""
    creator_notes: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    alternate_greetings: list[str] = Field(default_factory=list)
    character_book: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    creator: str = ""
    character_version: str = ""
    extensions: dict[str, Any] = Field(default_factory=dict)
    card_extra: dict[str, Any] = Field(default_factory=dict)  # card keys Palabre does not know, kept as-is

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for old, new in _LEGACY_KEYS.items():
                if old in data and new not in data:
                    data[new] = data.pop(old)
            if "context" not in data:
                data["context"] = cards.compose_context(data)
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the name must not be empty")
        return value

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key not in PARAM_NAMES:
                close = difflib.get_close_matches(str(key), sorted(PARAM_NAMES), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{key!r} is not a sampler setting{hint}")
        try:
            GenerationParams.model_validate(value)
        except ValidationError as exc:
            raise ValueError(describe_validation_error(exc)) from None
        return value

    @field_validator("avatar")
    @classmethod
    def _avatar(cls, value: str | None) -> str | None:
        if value is not None:
            validate_name(value, what="avatar file name")
            if not value.lower().endswith(AVATAR_SUFFIXES):
                raise ValueError(f"the avatar must be an image file ({', '.join(AVATAR_SUFFIXES)})")
        return value

    # -- what a chat uses
    def _user(self, user_name: str | None) -> str:
        return user_name or self.user_name or DEFAULT_USER_NAME

    def context_for(self, user_name: str | None = None, *, include_examples: bool = True) -> str:
        """The context with placeholders filled, followed by the example dialogue (``mes_example``)."""
        context = fill_placeholders(self.context, self.name, self._user(user_name))
        examples = self.example_dialogue_for(user_name) if include_examples else ""
        if not examples:
            return context
        return f"{context.rstrip()}\n\n{examples}" if context.strip() else examples

    def greeting_for(self, user_name: str | None = None) -> str:
        """The first message of a new chat, placeholders filled."""
        return fill_placeholders(self.greeting, self.name, self._user(user_name))

    def example_dialogue_for(self, user_name: str | None = None) -> str:
        """``mes_example`` without its ``<START>`` lines (blocks separated by a blank line), placeholders filled."""
        blocks = re.split(r"^\s*<START>\s*$", self.mes_example, flags=re.IGNORECASE | re.MULTILINE)
        text = "\n\n".join(block.strip("\n") for block in blocks if block.strip())
        return fill_placeholders(text, self.name, self._user(user_name)).strip()

    def example_messages_for(self, user_name: str | None = None) -> list[ExampleMessage]:
        """The Modelfile MESSAGEs with placeholders filled: put them before the conversation, as Ollama does."""
        user = self._user(user_name)
        return [
            ExampleMessage(role=m.role, content=fill_placeholders(m.content, self.name, user))
            for m in self.example_messages
        ]

    def params_overlay(self) -> dict[str, Any]:
        """The validated sampler settings this personality sets (apply them over the chosen preset)."""
        validated = GenerationParams.model_validate(self.parameters)
        return {key: getattr(validated, key) for key in self.parameters}

    def file_data(self) -> dict[str, Any]:
        """What a personality file holds: name, greeting and context, then every field that is not empty."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        return {"name": self.name, "greeting": self.greeting, "context": self.context, **data}

    # -- Character Card V2 and Ollama Modelfile
    def _palabre_only(self) -> dict[str, Any]:
        own = self.model_dump(mode="json", exclude_defaults=True)
        return {key: own[key] for key in _PALABRE_ONLY if key in own}

    @classmethod
    def from_card(cls, data: dict[str, Any]) -> Character:
        """A personality from card ``data`` (see ``cards.card_data``); ``context`` is composed from it."""
        return cls.model_validate(cards.fields_from_card(data, _PALABRE_ONLY))

    def to_card(self) -> dict[str, Any]:
        """A complete Character Card V2 (``spec``, ``spec_version``, ``data``); see the module docstring."""
        return cards.card_from_fields(self.model_dump(), self._palabre_only())

    def to_modelfile(self) -> str:
        """An Ollama Modelfile: FROM, PARAMETERs, TEMPLATE (the original Go text), SYSTEM, MESSAGEs, ...

        SYSTEM is the context with placeholders filled; the MESSAGEs are ``example_messages`` (or, if there
        are none, the card's example dialogue); settings Ollama has no PARAMETER for become comments."""
        user = self._user(None)
        examples = [m.model_dump() for m in self.example_messages] or cards.parse_examples(self.mes_example)
        try:
            return modelfile.export_text(
                name=self.name,
                model=self.model,
                sampler=self.params_overlay(),
                loader=self.loader_settings,
                extras=self.modelfile.model_dump(),
                system=fill_placeholders(self.context, self.name, user),
                messages=[
                    {**m, "content": fill_placeholders(m["content"], self.name, user)} for m in examples
                ],
                greeting=self.greeting_for(),
                instruction_template=self.instruction_template,
                placeholder_model=MODELFILE_PLACEHOLDER_MODEL,
            )
        except modelfile.ModelfileError as exc:
            raise CharacterError(
                f'Personality "{self.name}" cannot be written as a Modelfile: {exc}'
            ) from None


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so personality files stay readable."""


_LiteralDumper.add_representer(
    str,
    lambda dumper, data: dumper.represent_scalar(
        "tag:yaml.org,2002:str", data, style="|" if "\n" in data else None
    ),
)


def character_yaml(character: Character) -> str:
    """The personality file text; never something that would read back differently."""
    data = character.file_data()
    for dumper in (_LiteralDumper, yaml.SafeDumper):
        text = yaml.dump(data, Dumper=dumper, allow_unicode=True, sort_keys=False)
        if yaml.safe_load(text) == data:
            return text
    raise CharacterError(f'Personality "{character.name}" cannot be stored as YAML without changing it.')
