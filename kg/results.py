"""SPARQL results in one shape for every backend, and their table / CSV / JSON forms.

Cells follow the SPARQL 1.1 JSON results format (``{"type": "uri"|"literal"|"bnode",
"value": ..., "datatype"?, "xml:lang"?}``), which the endpoint client receives as is and
the embedded store converts to.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rdflib.namespace import XSD

from kg.errors import KgError
from kg.vocab import PREFIXES

Cell = dict[str, str]

_INTEGER_TYPES = {str(XSD[t]) for t in ("integer", "int", "long", "short", "nonNegativeInteger", "positiveInteger")}
_FLOAT_TYPES = {str(XSD.double), str(XSD.float), str(XSD.decimal)}


@dataclass
class QueryResult:
    """A SELECT table (``variables`` + ``rows``), an ASK ``boolean``, or CONSTRUCT ``ntriples``."""

    variables: list[str] = field(default_factory=list)
    rows: list[dict[str, Cell]] = field(default_factory=list)
    boolean: bool | None = None
    ntriples: str | None = None

    def values(self) -> list[dict[str, Any]]:
        """Rows as plain Python values: IRIs and strings as str, numbers, booleans."""
        return [{var: cell_value(row[var]) if var in row else None for var in self.variables} for row in self.rows]

    def column(self, var: str) -> list[Any]:
        return [row.get(var) for row in self.values()]

    def to_json(self) -> str:
        """SPARQL 1.1 Query Results JSON."""
        if self.boolean is not None:
            return json.dumps({"head": {}, "boolean": self.boolean}, indent=2)
        body = {"head": {"vars": self.variables}, "results": {"bindings": self.rows}}
        return json.dumps(body, indent=2, ensure_ascii=False)

    def to_csv(self) -> str:
        """SPARQL 1.1 Query Results CSV (plain values)."""
        if self.boolean is not None:
            return f"{'true' if self.boolean else 'false'}\n"
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.variables)
        for row in self.rows:
            writer.writerow([row[v]["value"] if v in row else "" for v in self.variables])
        return out.getvalue()

    def to_table(self) -> str:
        """Aligned plain-text columns with IRIs shortened by the project prefixes."""
        if self.boolean is not None:
            return "true" if self.boolean else "false"
        if self.ntriples is not None:
            return self.ntriples
        cells = [[short_form(row[v]) if v in row else "" for v in self.variables] for row in self.rows]
        widths = [max([len(v)] + [len(r[i]) for r in cells]) for i, v in enumerate(self.variables)]
        lines = ["  ".join(v.ljust(w) for v, w in zip(self.variables, widths)).rstrip()]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
        lines.append(f"({len(self.rows)} row{'s' if len(self.rows) != 1 else ''})")
        return "\n".join(lines)

    def render(self, fmt: str) -> str:
        if self.ntriples is not None:
            return self.ntriples
        if fmt == "json":
            return self.to_json()
        if fmt == "csv":
            return self.to_csv()
        if fmt == "table":
            return self.to_table()
        raise KgError(f"unknown result format {fmt!r}; use table, csv or json")


def cell_value(cell: Cell) -> Any:
    """One cell as a Python value (xsd numbers and booleans converted)."""
    value = cell["value"]
    if cell.get("type") != "literal":
        return value
    datatype = cell.get("datatype", "")
    try:
        if datatype in _INTEGER_TYPES:
            return int(value)
        if datatype in _FLOAT_TYPES:
            return float(value)
    except ValueError:
        return value
    if datatype == str(XSD.boolean):
        return value in ("true", "1")
    return value


def short_form(cell: Cell) -> str:
    value = cell["value"]
    if cell.get("type") == "uri":
        for prefix, namespace in PREFIXES.items():
            if value.startswith(namespace) and len(value) > len(namespace):
                return f"{prefix}:{value[len(namespace) :]}"
        return f"<{value}>"
    if cell.get("type") == "bnode":
        return f"_:{value}"
    return value


def parse_results(content_type: str, body: bytes) -> QueryResult:
    """A SPARQL 1.1 JSON results or N-Triples body as a :class:`QueryResult`."""
    if content_type.startswith("application/n-triples") or content_type.startswith("text/plain"):
        return QueryResult(ntriples=body.decode("utf-8"))
    data = json.loads(body)
    if "boolean" in data:
        return QueryResult(boolean=bool(data["boolean"]))
    return QueryResult(variables=list(data["head"].get("vars", [])), rows=list(data["results"]["bindings"]))


def from_rows(variables: Iterable[str], rows: Iterable[dict[str, Cell]]) -> QueryResult:
    return QueryResult(variables=list(variables), rows=list(rows))
