"""Pure ranking parts of knowledge search: a safe FTS5 query from any user text, cosine similarity over
float32 rows, and reciprocal rank fusion of ranked lists."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

RRF_K = 60  # the constant of Cormack et al. (2009), also used by Open WebUI and sqlite-vec's examples

# Words that match nearly every passage: left out of the keyword query (BM25 would weigh them low anyway,
# but OR-ing them in lets any passage with "the" into the candidates).
_STOPWORD_LIST = """a about above after again all also am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her
    here hers him his how i if in into is it its itself just me more most my no nor not now of off on once only
    or other our ours out over own same she should so some such than that the their theirs them then there these
    they this those through to too under until up very was we were what when where which while who whom why
    will with would you your yours"""
STOPWORDS = frozenset(_STOPWORD_LIST.split())
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 64


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression OR-ing the words of ``text``, each quoted (so quotes, stars, colons, column
    names, NEAR, AND/OR/NOT and brackets in the user's text are plain words); None when it has no words."""
    words = [w.lower() for w in _WORD.findall(text)]
    kept = [w for w in words if w not in STOPWORDS] or words
    unique = list(dict.fromkeys(kept))[:MAX_QUERY_TERMS]
    if not unique:
        return None
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in unique)


def to_blob(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blobs(blobs: Sequence[bytes], dimensions: int) -> npt.NDArray[np.float32]:
    """Rows of float32 BLOBs as one matrix, each row L2-normalised (cosine similarity is then a product)."""
    if not blobs:
        return np.zeros((0, dimensions), dtype=np.float32)
    matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dimensions).astype(np.float32)
    return normalise(matrix)


def normalise(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return np.asarray(matrix / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def nearest(matrix: npt.NDArray[np.float32], query: Sequence[float], limit: int) -> list[tuple[int, float]]:
    """(row, cosine similarity) of the ``limit`` rows nearest ``query``, best first (brute force)."""
    if matrix.shape[0] == 0 or limit < 1:
        return []
    q = normalise(np.asarray(query, dtype=np.float32))
    scores = matrix @ q
    limit = min(limit, scores.shape[0])
    top = np.argpartition(-scores, limit - 1)[:limit]
    ordered = top[np.argsort(-scores[top], kind="stable")]
    return [(int(row), float(scores[row])) for row in ordered]


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[int]], weights: Mapping[str, float] | None = None, k: int = RRF_K
) -> list[tuple[int, float]]:
    """(id, fused score) best first: each id scores ``Σ weight / (k + rank)`` over the lists it is in (rank
    from 1); ties keep the order of first appearance."""
    scores: dict[int, float] = {}
    for name, ranked in rankings.items():
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, item in enumerate(ranked, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
