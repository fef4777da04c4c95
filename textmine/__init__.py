"""Text mining: label mentions in report sentences and their relation to the bookmarked lesion.

Modules:

* ``pipeline`` — :class:`~textmine.pipeline.LabelMiner`, the API (texts -> mined sentences).
* ``tokens`` — spaCy blank English + scispacy tokenizer rules, cut into matchable pieces.
* ``lexicon`` — ontology names/synonyms + ``data/lexicon.yaml``; normalisation and matching.
* ``context`` — rules engine: bookmark attribution and ConText (``data/context_cues.yaml``).
* ``relcnn`` / ``training`` — learned engine: the CNN relation classifier and its training.
* ``records`` / ``jobs`` — JSONL input/output, bad-record handling, batch runs.
* ``evaluate`` — scores against hand-labeled JSON or relation JSONL gold.
* ``split`` — mined sentences -> the official label/split JSON.

See docs/textmine.md.
"""
