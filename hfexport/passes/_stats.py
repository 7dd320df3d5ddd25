"""The graph facts export, optimize and quantize report on their progress line (after the size)."""

from __future__ import annotations


def graph_stats_parts(stats: dict) -> list[str]:
    """Node counts, fused operators and quantised nodes, in the words of the build's progress lines."""
    parts = []
    if "nodes" in stats:
        before = stats.get("nodes_before")
        parts.append(f"{before} -> {stats['nodes']} nodes" if before else f"{stats['nodes']} nodes")
    if stats.get("fused_operators"):
        parts.append("fused " + ", ".join(f"{k} x{v}" for k, v in stats["fused_operators"].items()))
    if "quantized_nodes" in stats:
        parts.append(f"{stats['quantized_nodes']} {stats.get('precision', 'int8')} nodes "
                     f"({stats.get('isa') or stats.get('algorithm')})")
    if stats.get("float_fallback"):
        parts.append(f"{len(stats['float_fallback'])} MatMuls kept in float (largest int8 error)")
    if isinstance(stats.get("attention_int8"), list):
        chosen, total = len(stats["attention_int8"]), len(stats["attention_int8"]) + len(stats["attention_float"])
        parts.append(f"Attention in int8: {chosen} of {total} (measured on calibration text)")
    return parts
