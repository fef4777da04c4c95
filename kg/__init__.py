"""Predictions as RDF (W3C Web Annotation + PROV-O), a SPARQL store and canned queries."""
