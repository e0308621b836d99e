"""Token data as numpy arrays inside the pydantic contracts: `TokenIds` and `Logprobs`.

A batch's token ids and logprobs are its bulk (a real model's step holds about a million of
each), so they travel as flat numpy arrays, not tuples of Python ints and floats:
- the rollout worker validates a whole array at once (dtype, shape, range), not element by element;
- the object store ships the array buffers as they are, and the receiver reads them without
  building a Python object per token (Ray hands numpy buffers over zero-copy);
- the learner collates them into padded tensors with array copies (learner/collate.py).

Each field accepts any 1-D sequence (a list, a tuple, an array) and stores a read-only array of
the field's dtype (int32 ids, float32 logprobs), so a frozen model stays immutable. JSON (the
in-flight steps a checkpoint saves) writes them as plain lists, and reading the JSON back gives
the arrays again. Equality of models holding arrays is by value (`fields_equal`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

_INT32_MAX = np.iinfo(np.int32).max


def _one_dimensional(value: Any, dtype: type, what: str) -> np.ndarray:
    if isinstance(value, str | bytes):
        raise ValueError(f"{what} must be a sequence of numbers, got {type(value).__name__}")
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a 1-D sequence of numbers: {exc}") from exc
    if raw.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {raw.shape}")
    if raw.size == 0:
        return _frozen(np.zeros(0, dtype=dtype))
    if raw.dtype == object or raw.dtype.kind not in "biuf":
        items = list(value)
        first = next((i for i, x in enumerate(items) if not isinstance(x, numbers.Real)), 0)
        raise ValueError(f"{what} must hold numbers; item {first} is {items[first]!r}")
    return raw


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _owned(raw: np.ndarray, dtype: type) -> np.ndarray:
    """`raw` itself when it is already a read-only array of `dtype` (nobody can change it, so
    rollouts may share it: the K samples of a prompt share its ids); otherwise a read-only copy,
    so the caller's buffer is never aliased."""
    if raw.dtype == dtype and not raw.flags.writeable:
        return raw
    return _frozen(raw.astype(dtype))


def token_ids(value: Any) -> np.ndarray:
    """A read-only int32 array of token ids; refuses non-integers and ids outside [0, 2**31)."""
    raw = _one_dimensional(value, np.int32, "token ids")
    if raw.dtype.kind not in "iu":
        raise ValueError(f"token ids must be integers, got dtype {raw.dtype}")
    # one reduction checks both bounds: read as unsigned, a negative id is larger than any valid one
    if raw.size and int(raw.view(f"u{raw.dtype.itemsize}").max()) > _INT32_MAX:
        if raw.dtype.kind == "i" and int(raw.min()) < 0:
            raise ValueError(f"token ids must be >= 0, got {int(raw.min())}")
        raise ValueError(f"token ids must be < 2**31, got {int(raw.max())}")
    return _owned(raw, np.int32)


def prompt_token_ids(value: Any) -> np.ndarray:
    """`token_ids`, refusing an empty sequence (the first response token is scored after a prompt token)."""
    array = token_ids(value)
    if not array.size:
        raise ValueError("a prompt needs at least one token")
    return array


def logprobs(value: Any) -> np.ndarray:
    """A read-only float32 array of logprobs: each <= 0 (up to 1e-6 of float noise), none NaN."""
    raw = _one_dimensional(value, np.float32, "logprobs")
    array = _owned(raw, np.float32)
    if array.size and not array.max() <= 1e-6:  # a NaN makes the max NaN, which fails the comparison
        bad = array[~(array <= 1e-6)]
        raise ValueError(f"logprobs must be <= 0 and not NaN, got {[round(float(x), 6) for x in bad[:3]]}")
    return array


def _as_list(array: np.ndarray) -> list[int] | list[float]:
    values: list[int] | list[float] = array.tolist()
    return values


TokenIds = Annotated[
    np.ndarray,
    PlainValidator(token_ids),
    PlainSerializer(_as_list, when_used="json"),
    WithJsonSchema({"type": "array", "items": {"type": "integer", "minimum": 0}}),
]
PromptTokenIds = Annotated[
    np.ndarray,
    PlainValidator(prompt_token_ids),
    PlainSerializer(_as_list, when_used="json"),
    WithJsonSchema({"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}),
]
Logprobs = Annotated[
    np.ndarray,
    PlainValidator(logprobs),
    PlainSerializer(_as_list, when_used="json"),
    WithJsonSchema({"type": "array", "items": {"type": "number", "maximum": 0}}),
]


def fields_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two models' field dicts compared by value, arrays element by element (with their dtypes'
    values: an int32 array equals the same ids given as a tuple)."""
    if a.keys() != b.keys():
        return False
    for name, x in a.items():
        y = b[name]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not np.array_equal(np.asarray(x), np.asarray(y)):
                return False
        elif x != y:
            return False
    return True


def pack_token_arrays(rows: Sequence[Sequence[np.ndarray]]) -> tuple[list[np.ndarray], np.ndarray]:
    """Rows of arrays (at least one row, one per rollout, the same fields in each) -> one flat array
    per field and the [rows + 1, fields] offsets into them, for a single buffer per field on the wire."""
    lengths = np.array([[len(a) for a in row] for row in rows], dtype=np.int64)
    offsets = np.zeros((len(rows) + 1, lengths.shape[1]), dtype=np.int64)
    np.cumsum(lengths, axis=0, out=offsets[1:])
    return [np.concatenate(column) for column in zip(*rows, strict=True)], offsets


def unpack_token_arrays(flats: Sequence[np.ndarray], offsets: np.ndarray) -> list[list[np.ndarray]]:
    """The inverse of `pack_token_arrays`: per row, read-only views into the flat arrays (no copy)."""
    for flat in flats:
        flat.flags.writeable = False  # views made afterwards are read-only too
    bounds = offsets.tolist()
    return [
        [flat[start[j] : stop[j]] for j, flat in enumerate(flats)] for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
    ]
