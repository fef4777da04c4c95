"""Predictions as RDF (W3C Web Annotation + PROV-O), a SPARQL store and canned queries.

Modules: :mod:`kg.rdf` (records -> RDF, files), :mod:`kg.store` (pyoxigraph store on
disk; rdflib twin), :mod:`kg.canned` (canned queries in ``kg/queries/*.rq``),
:mod:`kg.binding` (safe parameter binding), :mod:`kg.endpoint` (remote SPARQL 1.1
servers), :mod:`kg.server` (``lesanet kg serve``), :mod:`kg.guard` (checks and limits
for user SPARQL), :mod:`kg.pool` / :mod:`kg.worker` (user queries in killable worker
processes), :mod:`kg.validate` (SHACL with ``kg/shapes.ttl``), :mod:`kg.web` (the lesion
browser on ``kg serve``). See docs/kg.md.
"""
