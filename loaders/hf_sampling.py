"""GenerationParams -> a transformers GenerationConfig plus an ordered list of logits processors.

Transformers has temperature, top-k, top-p, min-p and typical-p warpers but no penalty window, presence/frequency
penalties, logit bias as a simple map, DRY, XTC, top-n-sigma or dynamic temperature; the small processors below
add those. The whole chain is built here in llama.cpp's order (penalties, DRY, then top-n-sigma, top-k, typical,
top-p, min-p, XTC, temperature) so both loaders sample the same way, and the GenerationConfig's own sampler
fields are set to neutral values so transformers adds nothing behind our back.

Imported only by the transformers-based loaders, after torch is already needed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from webui.core.params import PARAM_NAMES, GenerationParams

# Mirostat and GBNF grammars have no transformers implementation here: the page marks them as not applicable.
UNSUPPORTED_PARAMS = frozenset(
    {"mirostat_mode", "mirostat_tau", "mirostat_eta", "grammar", "grammar_triggers"}
)
HONOURED_PARAMS = frozenset(PARAM_NAMES - UNSUPPORTED_PARAMS)

# DRY: longer matches are capped so base ** length cannot overflow (text-generation-webui uses the same cap).
DRY_MAX_MATCH = 50


def _window(input_ids: torch.LongTensor, size: int) -> torch.Tensor:
    """The last ``size`` tokens (-1 = all of them)."""
    return input_ids if size < 0 else input_ids[:, -size:]


class PenaltyProcessor(LogitsProcessor):
    """Repetition, frequency and presence penalties over the last ``window`` tokens, as llama.cpp applies them."""

    def __init__(self, repetition: float, frequency: float, presence: float, window: int) -> None:
        self.repetition = repetition
        self.frequency = frequency
        self.presence = presence
        self.window = window

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        recent = _window(input_ids, self.window)
        result = scores.clone()
        for row in range(result.shape[0]):
            tokens, counts = torch.unique(recent[row], return_counts=True)
            logits = result[row, tokens]
            if self.repetition != 1.0:
                logits = torch.where(logits > 0, logits / self.repetition, logits * self.repetition)
            logits = logits - counts.to(logits.dtype) * self.frequency - self.presence
            result[row, tokens] = logits
        return result  # type: ignore[return-value]


class LogitBiasProcessor(LogitsProcessor):
    """Adds a fixed bias per token id; -inf bans a token (ban_eos_token uses that)."""

    def __init__(self, bias: dict[int, float], vocab_size: int) -> None:
        self.bias = {t: b for t, b in bias.items() if 0 <= t < vocab_size}
        self._vector: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.bias:
            return scores
        if self._vector is None or self._vector.device != scores.device:
            vector = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
            for token, value in self.bias.items():
                if token < vector.shape[0]:
                    vector[token] = value
            self._vector = vector
        return scores + self._vector  # type: ignore[return-value]


class DryProcessor(LogitsProcessor):
    """DRY ("don't repeat yourself"): penalize the token that would extend a sequence already seen in the text.

    Same algorithm as text-generation-webui's and llama.cpp's: for every earlier occurrence of the last token,
    measure how far the match extends backwards; the token that followed it gets
    ``multiplier * base ** (length - allowed_length)`` subtracted once ``length >= allowed_length``.
    """

    def __init__(
        self, multiplier: float, base: float, allowed_length: int, breakers: set[int], window: int
    ) -> None:
        self.multiplier = multiplier
        self.base = base
        self.allowed_length = allowed_length
        self.breakers = breakers
        self.window = window

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        recent = _window(input_ids, self.window)
        result = scores.clone()
        for row in range(result.shape[0]):
            ids: list[int] = recent[row].tolist()
            for token, length in self._match_lengths(ids).items():
                if length >= self.allowed_length:
                    result[row, token] -= self.multiplier * self.base ** (length - self.allowed_length)
        return result  # type: ignore[return-value]

    def _match_lengths(self, ids: list[int]) -> dict[int, int]:
        if not ids or ids[-1] in self.breakers:
            return {}
        last = ids[-1]
        lengths: dict[int, int] = {}
        for i in range(len(ids) - 1):
            if ids[i] != last:
                continue
            following = ids[i + 1]
            if following in self.breakers:
                continue
            length = 1
            while length < DRY_MAX_MATCH:
                j = i - length
                if j < 0:
                    break
                previous = ids[-(length + 1)]
                if ids[j] != previous or previous in self.breakers:
                    break
                length += 1
            lengths[following] = max(lengths.get(following, 0), length)
        return lengths


class TopNSigmaProcessor(LogitsProcessor):
    """Keep only tokens whose logit is within ``n`` standard deviations of the top logit."""

    def __init__(self, n: float) -> None:
        self.n = n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        finite = torch.isfinite(scores)
        masked = torch.where(finite, scores, torch.zeros_like(scores))
        count = finite.sum(dim=-1, keepdim=True).clamp(min=1)
        mean = masked.sum(dim=-1, keepdim=True) / count
        variance = (torch.where(finite, scores - mean, torch.zeros_like(scores)) ** 2).sum(
            -1, keepdim=True
        ) / count
        top = scores.max(dim=-1, keepdim=True).values
        threshold = top - self.n * variance.sqrt()
        return scores.masked_fill(scores < threshold, -math.inf)  # type: ignore[return-value]


class XtcProcessor(LogitsProcessor):
    """XTC ("exclude top choices"): with ``probability``, remove every token above ``threshold`` but the least
    likely of them. Never fires when that would remove an end or newline token (text-generation-webui's rule)."""

    def __init__(
        self, threshold: float, probability: float, protected: Sequence[int], generator: torch.Generator
    ) -> None:
        self.threshold = threshold
        self.probability = probability
        self.protected = list(protected)
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if torch.rand(1, generator=self.generator).item() >= self.probability:
            return scores
        sorted_logits, sorted_indices = torch.sort(scores, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        remove_sorted = torch.zeros_like(probs, dtype=torch.bool)
        # True where the *next* token is still above the threshold: all above it except the least likely one.
        remove_sorted[..., :-1] = probs[..., 1:] >= self.threshold
        remove = remove_sorted.scatter(1, sorted_indices, remove_sorted)
        if self.protected and remove[:, self.protected].any():
            return scores
        return scores.masked_fill(remove, -math.inf)  # type: ignore[return-value]


class DynamicTemperatureProcessor(LogitsProcessor):
    """Temperature between ``temperature - range`` and ``temperature + range``, higher when the distribution's
    normalized entropy is higher (text-generation-webui's "dynatemp")."""

    def __init__(self, temperature: float, spread: float, exponent: float) -> None:
        self.low = max(0.0, temperature - spread)
        self.high = temperature + spread
        self.exponent = exponent

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = []
        for row in scores:
            probs = torch.softmax(row.float(), dim=-1)
            entropy = -torch.where(probs > 0, probs * torch.log(probs), torch.zeros_like(probs)).sum()
            valid = int(torch.isfinite(row).sum().item())
            max_entropy = math.log(valid) if valid > 1 else 1e-10
            normalized = float(entropy.item()) / max_entropy
            temperature = self.low + (self.high - self.low) * normalized**self.exponent
            rows.append(row / max(temperature, 1e-4))
        return torch.stack(rows)  # type: ignore[return-value]


def breaker_token_ids(tokenizer: Any, breakers: Iterable[str]) -> set[int]:
    """Token ids that end a DRY match: the last token of each breaker string written after a letter."""
    ids: set[int] = set()
    for breaker in breakers:
        encoded = tokenizer.encode(f"a{breaker}", add_special_tokens=False)
        if encoded:
            ids.add(int(encoded[-1]))
    return ids


def build_generation(
    params: GenerationParams,
    *,
    base: GenerationConfig,
    tokenizer: Any,
    vocab_size: int,
    eos_ids: Sequence[int],
    max_new_tokens: int,
    seed: int,
) -> tuple[GenerationConfig, LogitsProcessorList]:
    """The GenerationConfig (neutral sampler fields) and our ordered processor chain for one generation."""
    config = copy.deepcopy(base)
    greedy = params.temperature <= 0
    config.update(
        do_sample=not greedy,
        max_new_tokens=max_new_tokens,
        min_new_tokens=None,
        min_length=0,
        num_beams=1,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        sequence_bias=None,
        renormalize_logits=False,
    )
    if not greedy:
        # Unset fields would be filled from the model's generation_config and transformers' global defaults
        # (top_k=50), adding warpers nobody asked for; our own chain below replaces them all.
        config.update(
            temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0
        )
    processors = LogitsProcessorList()
    bias = dict(params.logit_bias)
    if params.ban_eos_token:
        bias.update(dict.fromkeys(eos_ids, -math.inf))
    if bias:
        processors.append(LogitBiasProcessor(bias, vocab_size))
    window = params.repetition_penalty_range
    penalties_on = params.repetition_penalty != 1.0 or params.frequency_penalty or params.presence_penalty
    if penalties_on and window != 0:
        processors.append(
            PenaltyProcessor(
                params.repetition_penalty, params.frequency_penalty, params.presence_penalty, window
            )
        )
    if params.dry_multiplier > 0:
        processors.append(
            DryProcessor(
                params.dry_multiplier,
                params.dry_base,
                params.dry_allowed_length,
                breaker_token_ids(tokenizer, params.dry_sequence_breakers),
                window if window != 0 else -1,
            )
        )
    if greedy:
        return config, processors
    if params.top_n_sigma > 0:
        processors.append(TopNSigmaProcessor(params.top_n_sigma))
    if params.top_k > 0:
        processors.append(TopKLogitsWarper(top_k=params.top_k))
    if params.typical_p < 1.0:
        processors.append(TypicalLogitsWarper(mass=params.typical_p))
    if params.top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=params.top_p))
    if params.min_p > 0:
        processors.append(MinPLogitsWarper(min_p=params.min_p))
    if params.xtc_probability > 0:
        newline = tokenizer.encode("\n", add_special_tokens=False)
        generator = torch.Generator().manual_seed(seed)
        protected = [*eos_ids, *newline[-1:]]
        processors.append(XtcProcessor(params.xtc_threshold, params.xtc_probability, protected, generator))
    if params.dynatemp_range > 0:
        processors.append(
            DynamicTemperatureProcessor(params.temperature, params.dynatemp_range, params.dynatemp_exponent)
        )
    elif params.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(params.temperature))
    return config, processors
