"""Thinking formats by model family, and choosing one from a chat template's text (never from a file name)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Phase(Enum):
    """Where a reply stream stands: before any marker, inside reasoning, or in the answer."""

    AWAIT = "await"
    REASONING = "reasoning"
    ANSWER = "answer"


@dataclass(frozen=True)
class ReasoningFormat:
    """The markers one family's model emits around its reasoning and its answer."""

    name: str
    open_markers: tuple[str, ...] = ()
    close_markers: tuple[str, ...] = ()
    # Wrappers around the answer (Granite 3.3 <response>, Command's response tokens, harmony's final header):
    # they carry no text of their own, so they are dropped rather than shown.
    answer_markers: tuple[str, ...] = ()
    # gpt-oss may open several analysis messages in one reply; for the other families an opening tag after the
    # answer began is literal text the model chose to write.
    reopens: bool = False
    # What ends the reasoning when a thinking budget runs out: appended to the text so far, the answer follows.
    forced_close: str = ""

    @property
    def thinks(self) -> bool:
        """Whether this format has reasoning at all."""
        return bool(self.open_markers or self.close_markers)


NONE = ReasoningFormat("none")
THINK = ReasoningFormat("think", ("<think>",), ("</think>",), forced_close="\n</think>\n\n")
HARMONY = ReasoningFormat(
    "harmony",
    # A later analysis message arrives with its own header; matching it whole keeps <|start|>assistant out.
    ("<|channel|>analysis<|message|>", "<|start|>assistant<|channel|>analysis<|message|>"),
    # A final header straight after analysis ends it too: gpt-oss sometimes skips <|end|> (llama.cpp #15789).
    ("<|end|>", "<|start|>assistant<|channel|>final<|message|>", "<|channel|>final<|message|>"),
    # The full header first: a bare <|start|>assistant is kept, since a tool call's header follows it.
    ("<|start|>assistant<|channel|>final<|message|>", "<|channel|>final<|message|>", "<|return|>", "<|end|>"),
    reopens=True,
    forced_close="<|end|><|start|>assistant<|channel|>final<|message|>",
)
MISTRAL = ReasoningFormat("mistral", ("[THINK]",), ("[/THINK]",), forced_close="[/THINK]")
SEED = ReasoningFormat("seed", ("<seed:think>",), ("</seed:think>",), forced_close="</seed:think>\n\n")
GRANITE_32 = ReasoningFormat(
    "granite-3.2",
    ("Here is my thought process:",),
    ("Here is my response:",),
    forced_close="\n\nHere is my response:\n",
)
GRANITE_33 = ReasoningFormat(
    "granite-3.3",
    ("<think>",),
    ("</think>",),
    ("<response>", "</response>"),
    forced_close="</think>\n<response>",
)
COMMAND = ReasoningFormat(
    "command",
    ("<|START_THINKING|>",),
    ("<|END_THINKING|>",),
    ("<|START_RESPONSE|>", "<|END_RESPONSE|>", "<|START_TEXT|>", "<|END_TEXT|>"),
    forced_close="<|END_THINKING|><|START_RESPONSE|>",
)
GEMMA4 = ReasoningFormat("gemma4", ("<|channel>thought",), ("<channel|>",), forced_close="<channel|>")

FORMATS: dict[str, ReasoningFormat] = {
    f.name: f for f in (NONE, THINK, HARMONY, MISTRAL, SEED, GRANITE_32, GRANITE_33, COMMAND, GEMMA4)
}

# Checked in order: the specific families first, since several of their templates also mention a bare <think>
# (Granite 3.3's system prompt, Seed's docs) and the generic <think> check would otherwise claim them.
_DETECTION: tuple[tuple[tuple[str, ...], ReasoningFormat], ...] = (
    (("<|channel|>", "analysis"), HARMONY),
    (("<|channel>",), GEMMA4),
    (("[THINK]",), MISTRAL),
    (("<seed:think>",), SEED),
    (("<|START_THINKING|>",), COMMAND),
    (("Here is my thought process:",), GRANITE_32),
    (("<think>", "<response>"), GRANITE_33),
    (("<think>",), THINK),
    (("</think>",), THINK),
)


def detect_reasoning_format(template: str, special_tokens: tuple[str, ...] = ()) -> ReasoningFormat:
    """The thinking format a chat template (plus the tokenizer's special tokens) implies; ``NONE`` if it has none."""
    # Special tokens count too: a vocabulary holding [THINK] or <think> means the model can emit them even when
    # the template only wraps them in a variable.
    text = template + "\n" + "\n".join(special_tokens)
    for needles, fmt in _DETECTION:
        if all(n in text for n in needles):
            return fmt
    return NONE


def initial_phase(fmt: ReasoningFormat, prompt: str = "") -> Phase:
    """Where the reply starts given the rendered prompt: inside reasoning when the prompt ends in an opening tag."""
    if not fmt.thinks:
        return Phase.ANSWER
    tail = prompt.rstrip()
    # A prompt ending in a closing marker (Qwen3 with thinking off: "<think>\n\n</think>\n\n") starts the answer.
    if any(tail.endswith(m) for m in fmt.close_markers):
        return Phase.ANSWER
    if any(tail.endswith(m) for m in fmt.open_markers):
        return Phase.REASONING
    return Phase.AWAIT
