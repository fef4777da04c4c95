"""Shared test fixtures.

``lesanet_data`` is the one way tests find the official LesaNet release files in
``../shared/data/lesanet/``. In CI (``CI`` set) a missing folder is a failure; elsewhere
the tests that need it are skipped with a note on where to get the files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "lesanet"
HOW_TO_GET = (
    "the official LesaNet release files (lesion_ontology_181022.xlsx, "
    "text_mined_labels_171_and_split.json, hand_labeled_dev.json) belong in "
    f"{SHARED_DATA}; get them from github.com/rsummers11/CADLab, folder LesaNet/program_data"
)


@pytest.fixture(scope="session")
def lesanet_data() -> Path:
    """Folder with the official LesaNet files; fails in CI when missing, skips elsewhere."""
    required = ["lesion_ontology_181022.xlsx", "text_mined_labels_171_and_split.json"]
    if SHARED_DATA.is_dir() and all((SHARED_DATA / name).exists() for name in required):
        return SHARED_DATA
    if os.environ.get("CI"):
        pytest.fail(f"missing in CI: {HOW_TO_GET}")
    pytest.skip(HOW_TO_GET)


@pytest.fixture(scope="session")
def shipped_ontology():
    """The committed ontology, loaded once per test session."""
    from ontology import load_ontology

    return load_ontology()


def require_program(program: str, debian_package: str) -> str:
    """Path of an external program a test drives; fails in CI when missing, skips elsewhere.

    ``make test`` installs the packages of ``.ci/debian-packages.txt`` where apt is there.
    """
    import shutil

    path = shutil.which(program)
    if path:
        return path
    how = (f"`{program}` not found: install Debian's {debian_package} "
           f"(sudo apt-get install {debian_package}, or list it in .ci/debian-packages.txt)")
    if os.environ.get("CI"):
        pytest.fail(f"missing in CI: {how}")
    pytest.skip(how)
