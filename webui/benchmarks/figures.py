"""Figures, targets and medians: what every benchmark section returns, and the table / JSON they print as."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TargetKind = Literal["ratio_at_least", "ratio_at_most", "value_at_most", "excess_at_most"]


@dataclass(frozen=True)
class Target:
    """A goal for one figure.

    ``ratio_at_least`` / ``ratio_at_most``: value / reference against ``limit``; ``value_at_most``: the value
    itself; ``excess_at_most``: value - reference (an allowance, e.g. 150 ms, or 400 MB).
    """

    kind: TargetKind
    limit: float

    def holds(self, value: float, reference: float | None) -> bool | None:
        if self.kind == "value_at_most":
            return value <= self.limit
        if reference is None:
            return None
        if self.kind == "excess_at_most":
            return value - reference <= self.limit
        if reference == 0:
            return None
        ratio = value / reference
        return ratio >= self.limit if self.kind == "ratio_at_least" else ratio <= self.limit

    def describe(self, unit: str) -> str:
        if self.kind == "ratio_at_least":
            return f"ratio >= {self.limit:g}"
        if self.kind == "ratio_at_most":
            return f"ratio <= {self.limit:g}"
        if self.kind == "value_at_most":
            return f"<= {self.limit:g} {unit}"
        return f"<= reference + {self.limit:g} {unit}"


@dataclass(frozen=True)
class Figure:
    """One measured median, what it is compared with, and whether its target holds."""

    section: str
    name: str
    value: float
    unit: str
    reference: float | None = None
    reference_name: str = ""
    ratio: float | None = None
    target: str = ""
    holds: bool | None = None
    samples: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def figure(
    section: str,
    name: str,
    value: float,
    unit: str,
    *,
    reference: float | None = None,
    reference_name: str = "",
    target: Target | None = None,
    samples: int = 0,
    note: str = "",
    paired_ratio: float | None = None,
) -> Figure:
    """A Figure with its ratio and target verdict filled in.

    ``paired_ratio``: the median of per-round ratios, when both sides ran back to back in each round; it
    cancels load that drifts between rounds better than the ratio of the two medians, so it is used instead.
    """
    ratio = paired_ratio if paired_ratio is not None else (value / reference if reference else None)
    holds = None
    if target is not None:
        if paired_ratio is not None and target.kind in ("ratio_at_least", "ratio_at_most"):
            holds = target.holds(paired_ratio, 1.0)
        else:
            holds = target.holds(value, reference)
    return Figure(
        section=section,
        name=name,
        value=value,
        unit=unit,
        reference=reference,
        reference_name=reference_name,
        ratio=ratio,
        target=target.describe(unit) if target else "",
        holds=holds,
        samples=samples,
        note=note,
    )


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else 0.0


def paired_ratio(runs: Mapping[str, Sequence[Mapping[str, float]]], side: str, base: str, key: str) -> float:
    """Median over rounds of ``side[key] / base[key]`` (rounds where the base is 0 are left out)."""
    ratios = [s[key] / b[key] for s, b in zip(runs[side], runs[base], strict=True) if b[key]]
    return median(ratios) if ratios else 0.0


def medians(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per key, the median over ``runs`` (each a mapping of the same keys)."""
    if not runs:
        return {}
    return {key: median(run[key] for run in runs) for key in runs[0]}


def interleave(
    sides: Mapping[str, Callable[[int], Mapping[str, float]]], rounds: int
) -> dict[str, list[Mapping[str, float]]]:
    """Run every side once per round, in turn (A B C A B C ...), so drifting machine load hits them alike.

    Each side is called with the round number (to vary its prompt so no cache carries over between rounds).
    """
    results: dict[str, list[Mapping[str, float]]] = {name: [] for name in sides}
    for number in range(rounds):
        for name, run in sides.items():
            results[name].append(run(number))
    return results


@dataclass
class Report:
    """Everything one ``webui bench`` run measured."""

    settings: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        verdicts = [f.holds for f in self.figures if f.holds is not None]
        return {
            "settings": self.settings,
            "figures": [f.as_dict() for f in self.figures],
            "targets_met": sum(1 for v in verdicts if v),
            "targets_total": len(verdicts),
            "all_targets_hold": all(verdicts) and not self.errors,
            "details": self.details,
            "errors": self.errors,
        }


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "s" and abs(value) < 0.01:
        return f"{value:.4f}"
    if unit == "s" and abs(value) < 10:
        return f"{value:.3f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def table(report: Report) -> str:
    """The figures as a Markdown table (the README's Performance section prints this)."""
    lines = [
        "| section | figure | Palabre | reference | ratio | target | holds |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for f in report.figures:
        reference = f"{_number(f.reference, f.unit)} ({f.reference_name})" if f.reference is not None else "-"
        holds = {True: "yes", False: "**no**", None: ""}[f.holds]
        ratio = f"{f.ratio:.3f}" if f.ratio is not None else "-"
        lines.append(
            f"| {f.section} | {f.name} | {_number(f.value, f.unit)} {f.unit} | {reference} | {ratio} "
            f"| {f.target} | {holds} |"
        )
    for section, message in report.errors.items():
        lines.append(f"| {section} | failed: {message} | | | | | **no** |")
    return "\n".join(lines)
