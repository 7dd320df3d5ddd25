"""The arithmetic of weight-only blocks, shared by the quantiser and the int4 search: which weights there are
(`WeightMatrix`), uint8 rows for embedding tables, symmetric int8 per channel, and the float weight a quantised
node computes with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WeightMatrix:
    """One quantisable weight: a MatMul's constant B [K, N] or the embedding Gather's table [vocab, hidden]."""

    node: str
    weight: str  # initializer name
    op: str  # "MatMul" or "Gather"
    role: str  # "block", "lm_head" or "embedding"
    params: int



def symmetric_int8(weight: np.ndarray, over: int | None, limit: float = 127.0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8: (codes int8, scales float32), one scale per slice left after reducing `over` (0: one per
    column, 1: one per row, None: one for the tensor), kept as a broadcastable dimension; max |w| -> `limit` (63
    for 7-bit `reduce_range` weights); an all-zero slice keeps scale 1."""
    peak = np.abs(weight).max(axis=over, keepdims=True).astype(np.float32)
    scales = np.where(peak > 0, peak / np.float32(limit), np.float32(1.0))
    codes = np.clip(np.round(weight / scales), -limit, limit).astype(np.int8)
    return codes, scales


def quantize_rows_uint8(table: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric uint8 blocks of `group_size` along each row, MLAS's rule (the range always holds 0):
    (codes [rows, cols] uint8, scales [rows, blocks] float32, zero points [rows, blocks] uint8)."""
    rows, cols = table.shape
    blocks = -(-cols // group_size)
    padded = np.zeros((rows, blocks * group_size), np.float32)
    padded[:, :cols] = table
    grouped = padded.reshape(rows, blocks, group_size)
    low = np.minimum(grouped.min(-1), 0.0)
    high = np.maximum(grouped.max(-1), 0.0)
    scales = ((high - low) / 255.0).astype(np.float32)
    scales[scales == 0] = 1.0
    zero_points = np.clip(np.round(-low / scales), 0, 255).astype(np.uint8)
    codes = np.clip(np.round(grouped / scales[..., None]) + zero_points[..., None], 0, 255).astype(np.uint8)
    return codes.reshape(rows, -1)[:, :cols], scales, zero_points


def dequantized(weight: np.ndarray, matrix: WeightMatrix, precision: str, group_size: int,
                symmetric: bool = False) -> np.ndarray:
    """The float weight the quantised node computes with: the same quantiser calls as `_apply`, undone."""
    return rounded(weight, matrix, precision, group_size, symmetric).values()


@dataclass(frozen=True)
class Rounded:
    """A weight as the quantised node stores it, one uint8 code per value (a quarter of the float's bytes):
    what the int4 search keeps between trials instead of the float it computes with."""

    codes: np.ndarray  # [rows, cols] uint8
    scales: np.ndarray
    zero_points: np.ndarray
    group_size: int
    shape: tuple[int, ...]  # the weight's
    transposed: bool  # MatMul: rows are B's columns

    def values(self) -> np.ndarray:
        undone = _undo(self.codes, self.scales, self.zero_points, self.group_size)
        if self.transposed:
            return np.ascontiguousarray(undone[:, :self.shape[-2]].T).reshape(self.shape)
        return undone.astype(np.float32, copy=False).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scales.nbytes + self.zero_points.nbytes


def rounded(weight: np.ndarray, matrix: WeightMatrix, precision: str, group_size: int,
            symmetric: bool = False) -> Rounded:
    """`weight` quantised as `_apply` will: MatMulNBits' blocks (MatMul; `symmetric`: no zero points, the
    kernel's implied midpoint 8 or 128), GatherBlockQuantized's rows (Gather, always asymmetric)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    if matrix.op == "Gather":
        if precision == "int8":
            codes, scales, zero_points = quantize_rows_uint8(np.asarray(weight, np.float32), group_size)
        else:
            packed, scales, zero_points = DefaultWeightOnlyQuantizer.quantize_ndarray(
                np.asarray(weight, np.float32), 1, group_size, False)
            # packed over the flattened table, so pairs can straddle rows: unpack flat, then reshape
            codes = _unpack4(packed[None], weight.size).reshape(weight.shape)
            zero_points = _unpack4(zero_points[None], scales.size).reshape(scales.shape)
        return Rounded(codes, scales, zero_points, group_size, tuple(weight.shape), False)
    bits = int(precision[3:])
    b = np.asarray(weight, np.float32).reshape(weight.shape[-2:])
    config = DefaultWeightOnlyQuantConfig(block_size=group_size, is_symmetric=symmetric, bits=bits)
    packed, scales, zero_points = DefaultWeightOnlyQuantizer(config).qbits_block_quant(b)
    if symmetric:  # the quantiser returns zeros; the node has no zero points and centres codes on the midpoint
        zero_points = np.full(zero_points.shape, 0x88 if bits == 4 else 0x80, np.uint8)
    columns, blocks = scales.shape  # one row of blocks per output column: B transposed
    if bits == 4:
        codes = _unpack4(packed.reshape(columns, -1), blocks * group_size)
        zero_points = _unpack4(zero_points, blocks)
    else:
        codes, zero_points = packed.reshape(columns, -1), zero_points[:, :blocks]
    return Rounded(np.ascontiguousarray(codes), scales, np.ascontiguousarray(zero_points), group_size,
                   tuple(weight.shape), True)


def _unpack4(packed: np.ndarray, count: int) -> np.ndarray:
    """Two 4-bit codes per byte, low nibble first, `count` per row."""
    rows = packed.shape[0]
    pairs = np.stack([packed & 0x0F, packed >> 4], -1).reshape(rows, -1)
    return pairs[:, :count]


def _undo(codes, scales, zero_points, group_size) -> np.ndarray:
    rows, cols = codes.shape
    blocks = scales.shape[1]
    padded = np.zeros((rows, blocks * group_size), np.float32)
    padded[:, :cols] = codes
    values = (padded.reshape(rows, blocks, group_size) - zero_points[..., None].astype(np.float32)) * scales[..., None]
    return values.reshape(rows, -1)[:, :cols]
