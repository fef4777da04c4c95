"""The lesion browser of ``kg serve`` in a real headless browser (Debian's chromium and
chromium-driver, driven by Selenium).

A real ``cli.py kg serve`` on a free loopback port over a small store (8 predicted
lesions, 2 mined sentences), a patch cache written in its documented format and an
evaluation file: open a lesion page, follow a label link, search by description, run a
SPARQL query from the page; check what the browser shows (text, table rows, images that
loaded). Screenshots of each page type go under the test's temporary folder, and with
``LESANET_DOC_SCREENSHOTS=1`` also to ``docs/browser-*.png`` (small PNGs).
"""

from __future__ import annotations

import gc
import io
import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from test_kg import make_predictions, make_sentences

from conftest import require_program
from kg.store import LesionStore

ROOT = Path(__file__).resolve().parents[1]
N_LESIONS = 8
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,1000",
)
DOC_WIDTH = 900  # docs/browser-*.png are scaled to this width


@pytest.fixture(scope="module")
def site(tmp_path_factory, shipped_ontology) -> dict:
    """A store, a patch cache, an evaluation file and the prediction records behind them."""
    root = tmp_path_factory.mktemp("browser")
    records = make_predictions(shipped_ontology, n=N_LESIONS, seed=3)
    del records[-1]["source"]["file"]  # predicted from a cache or a volume: no source slice file
    store = LesionStore(root / "store")
    store.load_ontology(shipped_ontology)
    store.load_records(records, shipped_ontology)
    store.load_sentences(make_sentences(), shipped_ontology)
    store.optimize()
    del store
    gc.collect()  # release the database before the server opens it
    cache = root / "cache"
    cache.mkdir()
    yy, xx = np.mgrid[:120, :120]
    patches = np.full((N_LESIONS, 3, 120, 120), 60, np.uint8)
    lesions = []
    for i in range(N_LESIONS):
        radius = 8 + 2 * i
        patches[i][:, (xx - 60) ** 2 + (yy - 60) ** 2 < radius**2] = 160
        lesions.append(
            {
                "row": i,
                "lesion_idx": i,
                "split": "test",
                "box": [60 - radius, 60 - radius, 60 + radius, 60 + radius],
                "relevant": [],
                "uncertain": [],
                "irrelevant": [],
                "truth": None,
                "sentence": None,
            }
        )
    np.save(cache / "patches.npy", patches)
    (cache / "index.json").write_text(
        json.dumps(
            {
                "format": "lesanet-patch-cache",
                "version": 1,
                "term_list": shipped_ontology.label_set("lesanet171"),
                "ontology_version": shipped_ontology.version,
                "patch_size": 120,
                "lesions": lesions,
            }
        )
    )
    evaluation = root / "eval.json"
    evaluation.write_text(
        json.dumps(
            {
                "sets": [
                    {
                        "name": "test",
                        "labels": [
                            {"label": name, "auc": 0.9, "f1": 0.75, "precision": 0.7, "recall": 0.8, "threshold": 0.45}
                            for name in shipped_ontology.label_set("lesanet171")
                        ],
                    }
                ]
            }
        )
    )
    return {"root": root, "store": root / "store", "cache": cache, "evaluation": evaluation, "records": records}


@pytest.fixture(scope="module")
def server(site):
    log = site["root"] / "serve.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "cli.py"),
                "kg",
                "serve",
                "--store",
                str(site["store"]),
                "--port",
                "0",
                "--cache",
                str(site["cache"]),
                "--evaluation",
                str(site["evaluation"]),
                "--timeout",
                "10",
                "--max-rows",
                "5000",
            ],
            stdout=subprocess.PIPE,
            stderr=handle,
            text=True,
        )
    try:
        first = process.stdout.readline()
        browser = process.stdout.readline()
        assert first.startswith("serving http://127.0.0.1:"), (first, log.read_text())
        assert browser.startswith("lesion browser at http://127.0.0.1:"), (browser, log.read_text())
        yield {"url": browser.split()[-1].rstrip("/"), "pid": process.pid, "log": log}
    finally:
        os.kill(process.pid, signal.SIGTERM)  # stopped by its PID
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    text = log.read_text()
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = require_program("chromium", "chromium")
    chromedriver = require_program("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def decided(record: dict) -> set[str]:
    return {entry["label"] for entry in record["labels"] if entry["decision"]}


def image_width(driver, element) -> int:
    """The decoded width of an <img>, 0 when it did not load."""
    return int(driver.execute_script("return arguments[0].complete ? arguments[0].naturalWidth : 0;", element))


def screenshot(driver, name: str, folder: Path) -> Path:
    path = folder / f"browser-{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("LESANET_DOC_SCREENSHOTS"):
        from PIL import Image

        with Image.open(path) as image:
            height = round(image.height * DOC_WIDTH / image.width)
            small = image.convert("RGB").resize((DOC_WIDTH, height), Image.Resampling.LANCZOS)
            small.quantize(colors=96, method=Image.Quantize.FASTOCTREE).save(ROOT / "docs" / path.name, optimize=True)
    return path


def test_browse_lesion_label_search_and_sparql(server, browser, site, shipped_ontology, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    onto = shipped_ontology
    records = {r["lesion_id"]: r for r in site["records"]}
    base = server["url"]

    # A lesion page: its patch, its decided labels grouped by category, its sentence, its neighbours.
    lesion_id = "deeplesion/3"
    browser.get(f"{base}/lesion?id={urllib.parse.quote(lesion_id, safe='')}")
    assert browser.find_element(By.ID, "lesion-id").text == lesion_id
    assert image_width(browser, browser.find_element(By.ID, "patch")) == 240  # the 120 px patch at 2x
    shown = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "#decided a.label")}
    assert shown == decided(records[lesion_id])
    rows = browser.find_elements(By.CSS_SELECTOR, "#decided tbody tr")
    assert len(rows) == len(decided(records[lesion_id]))
    assert (
        "BOOKMARK a tiny lung nodule in the right lung."
        in browser.find_element(By.CSS_SELECTOR, "blockquote.sentence").text
    )
    neighbours = browser.find_elements(By.CSS_SELECTOR, "#similar img.thumb")
    assert len(neighbours) == 3 and all(image_width(browser, img) == 240 for img in neighbours)
    screenshot(browser, "lesion", tmp_path)

    # Follow a label link: the label page lists this lesion among those with it or a subclass.
    link = browser.find_element(By.CSS_SELECTOR, "#decided a.label")
    label = link.text
    link.click()
    assert browser.find_element(By.ID, "label-name").text == label
    with_label = {lid for lid, r in records.items() if decided(r) & ({label} | onto.descendants(label))}
    cards = {e.text for e in browser.find_elements(By.CSS_SELECTOR, "#lesions .id")}
    assert cards == with_label and lesion_id in cards
    assert browser.find_element(By.ID, "count").text.startswith(f"{len(with_label)} lesion")
    assert "AUC (test)" in browser.find_element(By.ID, "figures").text
    assert all(image_width(browser, img) > 0 for img in browser.find_elements(By.CSS_SELECTOR, "#lesions img.thumb"))
    screenshot(browser, "label", tmp_path)

    # Search by description: the page says which labels it understood, then lists the lesions.
    browser.get(f"{base}/search")
    Select(browser.find_element(By.CSS_SELECTOR, "#search-form select[name=by]")).select_by_value("description")
    box = browser.find_element(By.ID, "q")
    box.send_keys("cyst in the kidney")
    browser.find_element(By.ID, "go").click()
    understood = browser.find_element(By.ID, "understood").text
    assert "kidney" in understood and "cyst" in understood
    required = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#query-labels a")]
    assert set(required) >= {"kidney", "cyst"}
    expected = {
        lid for lid, r in records.items() if all(decided(r) & ({name} | onto.descendants(name)) for name in required)
    }
    found = {e.text for e in browser.find_elements(By.CSS_SELECTOR, "#lesions .id")}
    assert found == expected and expected, (required, found)
    screenshot(browser, "search", tmp_path)

    # A SPARQL query typed into the page: a table with one row per lesion.
    browser.get(f"{base}/sparql")
    limits = browser.find_element(By.ID, "limits").text  # the server's own limits, stated
    assert "10 s" in limits and "5,000 rows" in limits and "SERVICE is refused" in limits
    area = browser.find_element(By.ID, "query")
    area.clear()
    area.send_keys("SELECT DISTINCT ?lesion ?id WHERE { ?lesion kg:keyRegion ?r ; kg:lesionId ?id } ORDER BY ?id")
    browser.find_element(By.ID, "run").click()
    # the result page comes after the query ran in a worker: wait for it on a busy machine
    WebDriverWait(browser, 60).until(
        lambda b: b.find_elements(By.ID, "row-count") or "error" in b.find_element(By.TAG_NAME, "body").text.lower()
    )
    table_rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert len(table_rows) == N_LESIONS, browser.find_element(By.TAG_NAME, "body").text[:2000]
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in table_rows] == sorted(records)
    assert browser.find_element(By.ID, "row-count").text == f"{N_LESIONS} rows"
    screenshot(browser, "sparql", tmp_path)
    # Each lesion cell links back to its page.
    table_rows[0].find_element(By.TAG_NAME, "a").click()
    assert browser.find_element(By.ID, "lesion-id").text == sorted(records)[0]

    for name in ("lesion", "label", "search", "sparql"):
        assert (tmp_path / f"browser-{name}.png").stat().st_size > 10_000


def post(url: str, fields: dict) -> tuple[int, dict, bytes]:
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_sparql_page_downloads_refusals_and_escaping(server, site):
    base = server["url"]
    query = "SELECT DISTINCT ?id WHERE { ?lesion kg:keyRegion ?r ; kg:lesionId ?id } ORDER BY ?id"
    status, headers, body = post(f"{base}/sparql", {"query": query, "format": "csv"})
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    assert body.decode().splitlines() == ["id", *sorted(r["lesion_id"] for r in site["records"])]
    status, headers, body = post(f"{base}/sparql", {"query": query, "format": "json"})
    assert status == 200 and len(json.loads(body)["results"]["bindings"]) == N_LESIONS
    # Read-only: an update is not a query; SERVICE is refused; the page says why.
    status, _, body = post(f"{base}/sparql", {"query": "INSERT DATA { <urn:a> <urn:b> <urn:c> }"})
    assert status == 400 and b"SPARQL syntax error" in body
    status, _, body = post(f"{base}/sparql", {"query": "SELECT * WHERE { SERVICE <http://127.0.0.1:9/> { ?s ?p ?o } }"})
    assert status == 403 and b"SERVICE is refused" in body
    # Request text comes back escaped, never as markup.
    status, _, body = post(f"{base}/sparql", {"query": "SELECT * WHERE { <script>alert(1)</script> }"})
    assert b"<script>" not in body and b"&lt;script&gt;" in body
    with urllib.request.urlopen(f"{base}/search?by=label&q=%3Cb%3Elugn", timeout=30) as response:
        page = response.read()
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert b"<b>lugn" not in page and b"&lt;b&gt;lugn" in page
    # A lesion without a source slice file (as the demo predicts from its cache) has a page.
    lesion_id = site["records"][-1]["lesion_id"]
    with urllib.request.urlopen(f"{base}/lesion?id={urllib.parse.quote(lesion_id, safe='')}", timeout=30) as response:
        assert response.status == 200 and b"source slice" not in response.read()
    # An unknown lesion is a 404 page naming it.
    try:
        urllib.request.urlopen(f"{base}/lesion?id=deeplesion%2F999", timeout=30)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404 and b"no lesion &#39;deeplesion/999&#39; in the store" in exc.read()


def test_patches_from_a_source_slice_stay_inside_the_images_folder(tmp_path):
    """Without a cached patch, the DeepLesion 16-bit slice is cropped around the box; a
    path from the store that leads outside --images is refused, not opened."""
    from PIL import Image

    from kg.web.patches import Box, PatchError, PatchRequest, PatchSource

    images = tmp_path / "dl"
    (images / "Images_png" / "000001_01_01").mkdir(parents=True)
    hu = np.full((256, 256), -1000, np.int32)
    hu[100:140, 80:130] = 40  # soft tissue in the box, air around it
    Image.fromarray((hu + 32768).astype(np.uint16)).save(images / "Images_png" / "000001_01_01" / "045.png")
    source = PatchSource(images=images)
    png = source.png(PatchRequest("deeplesion/1", None, "Images_png/000001_01_01/045.png", Box(80, 100, 130, 140)))
    with Image.open(io.BytesIO(png)) as shown:
        pixels = np.asarray(shown.convert("L"))
    # The crop is centred on the box: its middle is tissue (brighter), its corner air.
    assert pixels[pixels.shape[0] // 2, pixels.shape[1] // 2] > pixels[2, 2] + 20
    outside = tmp_path / "secret.png"
    outside.write_bytes(png)
    with pytest.raises(PatchError, match="outside --images"):
        source.png(PatchRequest("deeplesion/2", None, "../secret.png", Box(0, 0, 10, 10)))
    with pytest.raises(PatchError, match="not in the cache and no source slice"):
        PatchSource().png(PatchRequest("deeplesion/3", 3, None, None))


def test_a_malformed_cache_or_evaluation_is_refused_at_start_up(tmp_path):
    from kg.web import EvaluationError, PatchError, PatchSource, load_evaluation

    (tmp_path / "index.json").write_text('{"format": "something else"}')
    np.save(tmp_path / "patches.npy", np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(PatchError, match="not a patch cache index"):
        PatchSource(tmp_path)
    (tmp_path / "eval.json").write_text('{"averages": {}}')
    with pytest.raises(EvaluationError, match="no sets\\[0\\].labels"):
        load_evaluation(evaluation_file=tmp_path / "eval.json")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "kg",
            "serve",
            "--store",
            str(tmp_path),
            "--port",
            "0",
            "--cache",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "not a patch cache index" in done.stderr and "Traceback" not in done.stderr
