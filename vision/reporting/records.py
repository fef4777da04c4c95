"""Prediction records as text a person reads (``lesanet predict`` without --json).

JSON, JSONL and RDF always carry every label; the table shows the decided ones first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def records_table(records: Iterable[Mapping[str, Any]], top: int = 10) -> str:
    """A readable table: per lesion at most ``top`` labels, decided ones first (most specific
    first), then the best undecided ones; JSON / JSONL / RDF always carry every label."""
    lines = []
    for record in records:
        lines.append(f"{record['lesion_id']}  ({_source_text(record['source'])})")
        decided = [e for e in record["labels"] if e["decision"]]
        undecided = [e for e in record["labels"] if not e["decision"]]
        shown = max(0, top)
        lines.append(f"  {'label':<32} {'score':>6} {'thr':>6}  decision")
        for entry in decided[:shown]:
            # a decision below its threshold was implied by a decided descendant (expansion)
            how = "yes" if entry["score"] >= entry["threshold"] else "yes (implied)"
            lines.append(f"  {entry['label']:<32} {entry['score']:6.3f} {entry['threshold']:6.3f}  {how}")
        for entry in undecided[: max(0, shown - len(decided))]:
            lines.append(f"  {entry['label']:<32} {entry['score']:6.3f} {entry['threshold']:6.3f}  no")
        if len(decided) > shown:
            lines.append(f"  ... and {len(decided) - shown} more decided labels (--top N shows more, --json all)")
        if record.get("neighbors"):
            near = ", ".join(f"{n['lesion_id']} ({n['distance']:.3f})" for n in record["neighbors"])
            lines.append(f"  nearest lesions: {near}")
        lines.append("")
    return "\n".join(lines)


def _source_text(source: Mapping[str, Any]) -> str:
    parts = [str(source.get("dataset", ""))]
    if source.get("row") is not None:
        parts.append(f"row {source['row']}")
    if source.get("file"):
        parts.append(str(source["file"]))
    if source.get("slice") is not None:
        parts.append(f"slice {source['slice']}")
    if source.get("box_px"):
        parts.append("box " + ",".join(f"{v:g}" for v in source["box_px"]))
    if source.get("center_mm"):
        parts.append("centre " + ",".join(f"{v:g}" for v in source["center_mm"]) + " mm LPS")
    return ", ".join(p for p in parts if p)
