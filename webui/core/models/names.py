"""What a model's file name says: base name, version, size, fine-tune, quantization, split part.

GGUF files follow a loose convention (``<base>-<version>-<size>-<finetune>.<quant>-00001-of-00003.gguf``) with
many local variations (dots or dashes before the quantization, lower case, ``v0.1`` versions, ``8x7B`` MoE
sizes). Decoding is best effort: anything not recognised stays in the base name, nothing raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ggml tensor types: id -> (name, weights per block, bytes per block). From ggml.h / ggml.c type traits.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}

# llama.cpp's general.file_type values (enum llama_ftype) -> the quantization name used in file names.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}

# Average bits per weight of a whole file at each quantization (llama.cpp's quantize table, 7B-class models).
BITS_PER_WEIGHT: dict[str, float] = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_1": 6.0,
    "Q5_K_M": 5.7,
    "Q5_K_S": 5.54,
    "Q5_0": 5.5,
    "Q4_1": 5.0,
    "Q4_K_M": 4.89,
    "Q4_K_S": 4.58,
    "Q4_0": 4.5,
    "IQ4_NL": 4.5,
    "IQ4_XS": 4.25,
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "Q3_K_S": 3.5,
    "IQ3_M": 3.66,
    "IQ3_S": 3.44,
    "IQ3_XS": 3.3,
    "IQ3_XXS": 3.06,
    "Q2_K": 3.35,
    "Q2_K_S": 2.96,
    "IQ2_M": 2.7,
    "IQ2_S": 2.5,
    "IQ2_XS": 2.31,
    "IQ2_XXS": 2.06,
    "IQ1_M": 1.75,
    "IQ1_S": 1.56,
    "TQ2_0": 2.06,
    "TQ1_0": 1.69,
    "MXFP4_MOE": 4.25,
}

# What people usually pick, best quality first: the ladder "try a smaller quantization" walks down.
SUGGESTED_QUANTS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "IQ3_XXS", "Q2_K", "IQ2_XS")

_SIZES = {"S": "small", "M": "medium", "L": "large", "XL": "extra large"}
_IQ_SIZES = {"XXS": "extra-extra-small", "XS": "extra-small", "S": "small", "M": "medium", "NL": "non-linear"}

_QUANT = (
    r"(?:UD-)?(?:IQ[1-4]_(?:XXS|XS|S|M|NL)|Q[2-8]_K(?:_(?:S|M|L|XL))?|Q[4-8]_[01]|TQ[12]_0|MXFP4(?:_MOE)?"
    r"|BF16|FP16|F16|FP32|F32)"
)
_QUANT_AT_END = re.compile(rf"[-._](?P<quant>{_QUANT})$", re.IGNORECASE)
_SPLIT = re.compile(r"-(?P<part>\d{5})-of-(?P<total>\d{5})$", re.IGNORECASE)
# Parameter counts: 135M, 1.5B, 8x7B. "4k"/"128k" are context lengths, so K is not a parameter unit here.
_SIZE = re.compile(
    r"(?<![A-Za-z0-9.])(?:(?P<experts>\d+)x)?(?P<number>\d+(?:\.\d+)?)(?P<unit>[MBT])(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_VERSION = re.compile(r"^(?:v\d+(?:\.\d+)*|\d+(?:\.\d+)+|\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class DecodedName:
    """The parts of a model file name; None where the name does not say."""

    file_name: str
    base: str
    version: str | None = None
    parameters: str | None = None  # "13B", "135M", "8x7B"
    finetune: str | None = None
    quantization: str | None = None  # canonical upper case: "Q5_K_M", "F16"
    quantization_description: str | None = None
    split_part: int | None = None
    split_total: int | None = None

    @property
    def parameter_count(self) -> float | None:
        """The parameter count the name claims (8x7B counts 56e9: a rough upper bound for MoE)."""
        return parse_size_label(self.parameters) if self.parameters else None


def parse_size_label(label: str) -> float | None:
    """'135M' -> 1.35e8, '8x7B' -> 5.6e10; None if not a size label."""
    match = _SIZE.fullmatch(label.strip())
    if not match:
        return None
    scale = {"M": 1e6, "B": 1e9, "T": 1e12}[match["unit"].upper()]
    experts = int(match["experts"]) if match["experts"] else 1
    return experts * float(match["number"]) * scale


def canonical_quant(name: str) -> str:
    """'q4_k_m' -> 'Q4_K_M'; 'fp16' -> 'F16'; 'UD-Q4_K_XL' -> 'Q4_K_XL'."""
    quant = name.upper().removeprefix("UD-")
    return {"FP16": "F16", "FP32": "F32"}.get(quant, quant)


def describe_quant(quant: str) -> str:
    """A short human description of a quantization name, e.g. Q5_K_M -> '5-bit K-quant, medium'."""
    q = canonical_quant(quant)
    fixed = {
        "F32": "32-bit float (unquantized)",
        "F16": "16-bit float (unquantized)",
        "BF16": "bfloat16 (unquantized)",
        "Q8_0": "8-bit, round-to-nearest",
        "MXFP4": "4-bit microscaling float",
        "MXFP4_MOE": "4-bit microscaling float (MoE experts)",
        "TQ1_0": "ternary (1.69-bit)",
        "TQ2_0": "ternary (2-bit packing)",
    }
    if q in fixed:
        return fixed[q]
    legacy = re.fullmatch(r"Q(\d)_([01])", q)
    if legacy:
        kind = "legacy quant, scale only" if legacy[2] == "0" else "legacy quant, scale and offset"
        return f"{legacy[1]}-bit {kind}"
    kquant = re.fullmatch(r"Q(\d)_K(?:_(S|M|L|XL))?", q)
    if kquant:
        size = f", {_SIZES[kquant[2]]}" if kquant[2] else ""
        return f"{kquant[1]}-bit K-quant{size}"
    iquant = re.fullmatch(r"IQ(\d)_(XXS|XS|S|M|NL)", q)
    if iquant:
        return f"{iquant[1]}-bit i-quant, {_IQ_SIZES[iquant[2]]}"
    return q


def _split_version(tokens: list[str]) -> tuple[list[str], str | None]:
    """Trailing version tokens ("3.1", "v0.1", "3") come off a list of name tokens."""
    version: list[str] = []
    while len(tokens) > 1 and _VERSION.match(tokens[-1]):
        version.insert(0, tokens.pop())
    return tokens, ".".join(version) if version else None


def decode_model_name(file_name: str) -> DecodedName:
    """Decode a GGUF (or folder) name, e.g. ``codellama-13b-instruct.Q5_K_M.gguf``."""
    stem = re.sub(r"\.gguf$", "", file_name.rsplit("/", 1)[-1], flags=re.IGNORECASE)
    part = total = None
    split = _SPLIT.search(stem)
    if split:
        part, total = int(split["part"]), int(split["total"])
        stem = stem[: split.start()]
    quant = None
    found = _QUANT_AT_END.search(stem)
    if found:
        quant = canonical_quant(found["quant"])
        stem = stem[: found.start()]
    parameters = finetune = version = None
    size = None
    for candidate in _SIZE.finditer(stem):
        size = candidate  # the last size-looking token: earlier ones are usually part of the name
    if size is not None:
        experts = f"{size['experts']}x" if size["experts"] else ""
        parameters = f"{experts}{size['number']}{size['unit'].upper()}"
        head = [t for t in re.split(r"[-_ ]+", stem[: size.start()].strip("-_. ")) if t]
        tail = [t for t in re.split(r"[-_ .]+(?![0-9])", stem[size.end() :].strip("-_. ")) if t]
        head, version = _split_version(head) if head else ([], None)
        rest: list[str] = []
        for token in tail:
            if _VERSION.match(token) and version is None:
                version = token
            else:
                rest.append(token)
        finetune = "-".join(rest) or None
        base = "-".join(head) or stem
    else:
        tokens = [t for t in re.split(r"[-_ ]+", stem.strip("-_. ")) if t]
        tokens, version = _split_version(tokens)
        base = "-".join(tokens) or stem
    return DecodedName(
        file_name=file_name,
        base=base,
        version=version,
        parameters=parameters,
        finetune=finetune,
        quantization=quant,
        quantization_description=describe_quant(quant) if quant else None,
        split_part=part,
        split_total=total,
    )
