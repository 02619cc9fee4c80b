"""Encoding: tokenize texts, plan forward passes by a padded-token budget, pad each pass into tensors.

A text longer than the model takes is cut (TRIAGE_TRUNCATION): `head` keeps its start; `head_tail`
keeps the first quarter of the budget and the last three quarters (128 and 382 word pieces for 512,
Sun et al. 2019), since the end of a long review often holds its verdict.

Texts are sorted by length and cut into passes whose padded size (texts x longest) fits
`max_batch_tokens`, with at most `max_batch_size` texts, where the cut costs least (see `planning`).
This is CPU work only, kept apart from the forward pass so the worker can prepare the next batch
while the device runs this one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from worker.model.planning import PassCost, plan

if TYPE_CHECKING:  # the cached ONNX path encodes with neither torch nor transformers imported
    from transformers import PreTrainedTokenizerBase

UNBOUNDED_LENGTH = 1_000_000  # tokenizers without a limit report a huge sentinel
# Padded tokens per forward pass when not configured, measured with `triage-worker bench` on the
# worker's own 64-event micro-batches: on the CPU small, tightly sorted passes win (cache-sized
# activations, little padding: 2,048 beat 4,096 by 11% on MiniLM and 13% on BERT-base); on a GPU
# large ones do (the H100 anchor is 131k tokens).
DEFAULT_BATCH_TOKENS = {"cpu": 2_048, "cuda": 131_072}
# Events per micro-batch when not configured: on the CPU a batch of BERT-base takes seconds, and a
# rebalance or a stop waits for the batches in flight; on a GPU 64 leaves it idle (the H100 runs of
# the benchmark used 1,024).
DEFAULT_BATCH_SIZE = {"cpu": 64, "cuda": 1_024}

Truncation = Literal["head", "head_tail"]
TRUNCATIONS: tuple[Truncation, ...] = ("head", "head_tail")
# head_tail's split of the content budget: Sun et al.'s 128 head + 382 tail of BERT's 510.
HEAD_SHARE = (128, 510)


@dataclass(frozen=True)
class Encoded:
    """Texts tokenized and cut into padded forward passes, ready for the device."""

    ids: list[list[int]]
    lengths: list[int]
    passes: list[tuple[list[int], dict[str, Any]]]  # (text indexes, padded tensors or arrays) per pass


def max_length_of(tokenizer: PreTrainedTokenizerBase, max_position_embeddings: int | None) -> int:
    """The longest input the model takes: the position table's size, or the tokenizer's limit if lower."""
    limits = [max_position_embeddings or UNBOUNDED_LENGTH]
    if tokenizer.model_max_length < UNBOUNDED_LENGTH:
        limits.append(tokenizer.model_max_length)
    return int(min(limits))


class Encoder:
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int,
        max_batch_size: int,
        max_batch_tokens: int,
        cost: PassCost | None,
        pad_multiple: int | None,
        pin_memory: bool,
        truncation: Truncation = "head_tail",
        tensors: Literal["torch", "numpy"] = "torch",
    ) -> None:
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.cost = cost  # None: fill each pass to the budget (see planning)
        self.pad_multiple = pad_multiple
        self.pin_memory = pin_memory
        self.truncation = truncation
        self.tensors = tensors  # torch tensors for a torch model, numpy arrays for ONNX Runtime
        # The tensors each pass holds: token types (all 0 for a single text) only where the model takes them.
        with_types = "token_type_ids" in tokenizer.model_input_names
        self.input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else [])
        # head_tail cuts in Python, so the tokenizer must hand over whole texts.
        self._backend = truncating_backend(tokenizer, None if truncation == "head_tail" else max_length)
        self._specials = special_token_counts(tokenizer)

    def encode(self, texts: Sequence[str]) -> Encoded:
        if not texts:
            return Encoded([], [], [])
        ids = self.token_ids(texts)
        lengths = [len(row) for row in ids]
        passes = [
            (indexes, self.pad([ids[i] for i in indexes]))
            for indexes in plan(lengths, self.max_batch_size, self.max_batch_tokens, self.cost)
        ]
        return Encoded(ids, lengths, passes)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, with special tokens, cut to `max_length` by the truncation strategy."""
        ids = self._tokenize(texts)
        if self.truncation == "head_tail":
            limit = self.max_length
            return [row if len(row) <= limit else self._head_and_tail(row) for row in ids]
        return ids

    def _head_and_tail(self, row: list[int]) -> list[int]:
        front, back = self._specials
        content = self.max_length - front - back
        head = content * HEAD_SHARE[0] // HEAD_SHARE[1]
        tail = content - head
        return row[: front + head] + row[len(row) - back - tail :]

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Only the ids cross from the Rust tokenizer into Python: the attention mask follows from the
        lengths, and token types are all 0 for single texts. A fast tokenizer is called directly
        (`encode_batch_fast`, which skips the character offsets): 20% less time than through
        transformers' wrapper, which gives the same ids (tested).
        """
        if self._backend is None:
            head = self.truncation == "head"
            return self.tokenizer(  # type: ignore[no-any-return]
                list(texts),
                truncation=head,
                max_length=self.max_length if head else None,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
        encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
        return [encoding.ids for encoding in encode(list(texts))]

    def pad(self, ids: list[list[int]]) -> dict[str, Any]:
        """Pad one forward pass to its longest text (rounded up to `pad_multiple` when set): torch
        tensors (pinned when `pin_memory`), or numpy arrays with `tensors="numpy"`."""
        longest = max(len(row) for row in ids)
        if self.pad_multiple:
            longest = -(-longest // self.pad_multiple) * self.pad_multiple
        input_ids = np.full((len(ids), longest), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros((len(ids), longest), dtype=np.int64)
        left = self.tokenizer.padding_side == "left"
        for row, values in enumerate(ids):
            span = slice(longest - len(values), longest) if left else slice(0, len(values))
            input_ids[row, span] = values
            mask[row, span] = 1
        arrays = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            arrays["token_type_ids"] = np.zeros_like(input_ids)
        if self.tensors == "numpy":
            return arrays
        import torch

        tensors = {name: torch.from_numpy(a) for name, a in arrays.items()}
        return {name: t.pin_memory() for name, t in tensors.items()} if self.pin_memory else tensors


def truncating_backend(tokenizer: PreTrainedTokenizerBase, max_length: int | None) -> Any | None:
    """A private copy of a fast tokenizer's Rust backend that truncates at `max_length` (None: not
    at all) and never pads; None for a slow (pure Python) tokenizer, called through transformers."""
    backend = rust_backend(tokenizer)
    if backend is None:
        return None
    backend = copy.deepcopy(backend)  # transformers re-sets the shared one's truncation on each call
    backend.no_padding()
    if max_length is None:
        backend.no_truncation()
    else:
        backend.enable_truncation(max_length)
    return backend


def rust_backend(tokenizer: PreTrainedTokenizerBase) -> Any | None:
    """A fast tokenizer's Rust backend (shared, not a copy); None for a slow (pure Python) tokenizer."""
    return getattr(tokenizer, "backend_tokenizer", None) if tokenizer.is_fast else None


def special_token_counts(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a text ([CLS] ... [SEP]: 1, 1)."""
    probe = "hello world"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for front in range(len(full) - len(plain) + 1):
        if full[front : front + len(plain)] == plain:
            return front, len(full) - front - len(plain)
    raise ValueError("cannot find where the tokenizer puts the text among its special tokens")
