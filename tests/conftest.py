"""Shared test fixtures.

``lesanet_data`` is the one way tests find the official LesaNet release files in
``../shared/data/lesanet/``. In CI (``CI`` set) a missing folder is a failure; elsewhere
the tests that need it are skipped with a note on where to get the files.
"""

from __future__ import annotations

import locale
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


@pytest.fixture(autouse=True)
def _keep_locale():
    """Put the process locale back after every test.

    GDCM's DICOM writer (SimpleITK, in the test fixtures that write DICOM series) switches
    the process to the "C" locale, so every later ``read_text()`` would decode ASCII and
    unrelated tests would fail depending on their order."""
    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)


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
    how = (
        f"`{program}` not found: install Debian's {debian_package} "
        f"(sudo apt-get install {debian_package}, or list it in .ci/debian-packages.txt)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"missing in CI: {how}")
    pytest.skip(how)


# The OWL API (Protégé's library) from Debian's libowlapi-java, driven by tests/owlapi/OwlTool.java.
OWLAPI_PACKAGE = "libowlapi-java"
# Several SLF4J bindings ship in libslf4j-java; two on one class path make the OWL API fail.
_SLF4J_KEEP = {"slf4j-api.jar", "slf4j-nop.jar"}


def owlapi_classpath() -> list[str]:
    """Jars of libowlapi-java and the Debian packages it depends on (empty when not installed)."""
    import subprocess

    def package_jars(package: str) -> list[str]:
        listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
        return [
            f
            for f in listing.stdout.split()
            if f.startswith("/usr/share/java/")
            and f.endswith(".jar")
            and ("slf4j" not in Path(f).name or Path(f).name in _SLF4J_KEEP)
        ]

    import shutil

    if shutil.which("dpkg-query") is None:
        return []
    depends = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", OWLAPI_PACKAGE], capture_output=True, text=True)
    if depends.returncode != 0 or not Path("/usr/share/java/owlapi-distribution.jar").is_file():
        return []
    jars = ["/usr/share/java/owlapi-distribution.jar"]
    for dependency in depends.stdout.split(","):
        jars += package_jars(dependency.strip().split(" ")[0])
    return list(dict.fromkeys(jars))


@pytest.fixture(scope="session")
def owl_tool(tmp_path_factory):
    """Run ``OwlTool`` (compiled once into a temp dir): ``owl_tool("profile", path)`` -> stdout."""
    import subprocess

    javac = require_program("javac", "default-jdk-headless")
    jars = owlapi_classpath()
    if not jars:
        how = f"the OWL API jars are missing: install Debian's {OWLAPI_PACKAGE} (sudo apt-get install {OWLAPI_PACKAGE})"
        if os.environ.get("CI"):
            pytest.fail(f"missing in CI: {how}")
        pytest.skip(how)
    classes = tmp_path_factory.mktemp("owlapi")
    classpath = ":".join(jars)
    subprocess.run(
        [javac, "-d", str(classes), "-cp", classpath, str(ROOT / "tests" / "owlapi" / "OwlTool.java")],
        check=True,
        capture_output=True,
        text=True,
    )
    java = str(Path(javac).with_name("java"))

    def run(*args: object) -> str:
        done = subprocess.run(
            [java, "-cp", f"{classes}:{classpath}", "OwlTool", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    return run
