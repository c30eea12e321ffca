"""The course website: how its source is assembled (run everywhere), and the built site (``make book``) in a real
browser: every page opened in headless Chromium (marked ``browser``).

Run the browser tests with ``make test-book`` (builds the site, installs Chromium when missing) or
``pytest -m browser`` after ``make book``. Screenshots of the landing page and of a chapter go to
build/book/screenshots/.
"""

import functools
import http.server
import json
import re
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest

from tl_core import book
from tl_core.course import find_course

HTML = book.build_dir() / "html"
SCREENSHOTS = book.build_dir() / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless Chromium on a machine without a display, a sandbox or a network: no request may leave loopback.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# ---- the site's source ------------------------------------------------------------------------------------------

def write_notebook(path: Path, cells: list[dict]) -> Path:
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def code_cell(source: str, execution_count=None, outputs=(), tags=()) -> dict:
    return {"cell_type": "code", "source": source, "execution_count": execution_count, "outputs": list(outputs),
            "metadata": {"tags": list(tags)}}


def test_an_unexecuted_notebook_is_refused_with_what_to_do(tmp_path):
    notebook = write_notebook(tmp_path / "07_new.ipynb", [
        {"cell_type": "markdown", "source": "# 07 · New", "metadata": {}},
        code_cell("x = 1", execution_count=1), code_cell("print(x)")])
    with pytest.raises(book.BookError, match=r"07_new.ipynb is not executed \(1 of 2 code cells have never run.*"
                                             r"jupyter nbconvert --to notebook --execute --inplace 07_new.ipynb"):
        book.check_executed(notebook)
    book.check_executed(write_notebook(tmp_path / "08_done.ipynb", [code_cell("x = 1", execution_count=1)]))


def test_every_committed_notebook_is_executed_and_named_in_order():
    notebooks = book.discover_notebooks()
    assert [path.name[:2] for path in notebooks] == [f"{number:02d}" for number in range(len(notebooks))], \
        "numbered 00, 01, ... without a gap or a repeat"
    for notebook in notebooks:
        book.check_executed(notebook)
        assert book.title_of(notebook).startswith(notebook.name[:2])


def test_a_chapter_links_its_notebook_and_the_modules_it_imports():
    paths = book.source_files(find_course() / "notebooks" / "01_data.ipynb")
    assert paths[0] == "notebooks/01_data.ipynb"
    assert {"tl_core/data.py", "tl_core/text.py", "tl_core/artifacts.py"} <= set(paths)
    assert all((find_course() / path).is_file() for path in paths)
    package = book.source_files(find_course() / "notebooks" / "06_transfer.ipynb")  # a package: every file of it
    assert {"tl_core/transfer/__init__.py", "tl_core/transfer/grid.py", "tl_core/transfer/results.py"} <= set(package)
    assert all((find_course() / path).is_file() for path in package)


def test_the_results_page_from_a_run_directory_and_without_one(tmp_path):
    run_dir = tmp_path / "runs" / "quick"
    run_dir.mkdir(parents=True)
    (run_dir / "01_lengths.png").write_bytes(b"\x89PNG fake")
    (run_dir / "report.md").write_text("# Run report: `quick`\n\n| notebook | rendering |\n|---|---|\n"
                                       "| 01_data | [html](html/01_data.html) |\n\n"
                                       "![01_lengths.png](01_lengths.png)\n")
    page = book.results_page(tmp_path / "src", run_dir).read_text()
    assert page.startswith("# Results of the run `quick`")
    assert "](results_figures/01_lengths.png)" in page and "html/01_data.html" not in page
    assert "| 01_data | [chapter](01_data.ipynb) |" in page
    assert (tmp_path / "src" / "results_figures" / "01_lengths.png").read_bytes() == b"\x89PNG fake"

    with pytest.raises(book.BookError, match="holds neither report.md nor metrics.json"):
        book.results_page(tmp_path / "src", tmp_path)

    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
    notebook = write_notebook(tmp_path / "01_data.ipynb", [
        {"cell_type": "markdown", "source": "# 01 · Data", "metadata": {}},
        code_cell("run()", 1, [{"output_type": "stream", "name": "stdout", "text": "dataset   texts\n"},
                               {"output_type": "stream", "name": "stdout", "text": "imdb     25,000\n"},
                               {"output_type": "display_data", "data": {"image/png": pixel}, "metadata": {}}],
                  ["headline"]),
        code_cell("other()", 2, [{"output_type": "stream", "name": "stdout", "text": "not a headline\n"}])])
    page = book.results_page(tmp_path / "src", None, [notebook]).read_text()
    assert "## [01 · Data](01_data.ipynb)" in page and "```text\ndataset   texts\nimdb     25,000\n```" in page
    assert "not a headline" not in page
    figures = re.findall(r"\]\((results_figures/[^)]+\.png)\)", page)
    assert len(figures) == 1 and (tmp_path / "src" / figures[0]).read_bytes()[:4] == b"\x89PNG"


# ---- the built site in Chromium -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").exists():
        pytest.skip("the site is not built: `make book` (or `make test-book`, which builds it first)")
    return HTML


@pytest.fixture(scope="module")
def server(site):
    """The site over HTTP on loopback, as a reader's browser would get it from any static host."""
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="`make test-book` installs playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed: `make test-book` installs Debian's chromium")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900})
        yield context
        context.close()


def site_pages(site: Path) -> list[str]:
    return sorted(path.name for path in site.glob("*.html"))


def chapter_pages(site: Path) -> list[str]:
    return [page for page in site_pages(site) if page[:2].isdigit() and page[2] == "_"]


def notebook_has_figure(stem: str) -> bool:
    notebook = json.loads((find_course() / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    return any("image/png" in output.get("data", {})
               for cell in notebook["cells"] for output in cell.get("outputs", []))


class PageVisit:
    """One page loaded in the browser, with everything that went wrong while it loaded."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda message: message.type == "error" and self.problems.append(
            f"console error: {message.text}"))
        self.page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        self.page.on("requestfailed", lambda request: self.problems.append(
            f"request failed: {request.url} ({request.failure})"))
        self.page.on("response", lambda response: response.status >= 400 and self.problems.append(
            f"HTTP {response.status}: {response.url}"))
        self.page.goto(url, wait_until="networkidle")

    def close(self):
        self.page.close()


@pytest.mark.browser
def test_the_site_has_the_landing_page_every_notebook_and_the_results(site):
    pages = site_pages(site)
    assert "index.html" in pages and "results.html" in pages
    assert [page[:-5] for page in chapter_pages(site)] == [path.stem for path in book.discover_notebooks()]


@pytest.mark.browser
def test_the_site_offers_the_exercises_but_never_their_solutions(site):
    from tl_core import classroom

    for source in classroom.discover_sources():
        page = re.sub(r"<[^>]+>", "", (site / f"{source.stem}.html").read_text(encoding="utf-8"))
        assert f"exercises: {source.name} (student version)" in " ".join(page.split())
    for path in site.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".ipynb", ".txt", ".js", ".py"):
            text = path.read_text(encoding="utf-8", errors="replace")
            assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, path


@pytest.mark.browser
def test_every_page_loads_without_errors_broken_links_or_images(site, server, browser):
    broken = {}
    for name in site_pages(site):
        visit = PageVisit(browser, server + name)
        problems = list(visit.problems)
        images = visit.page.eval_on_selector_all(
            "img", "images => images.map(i => [i.currentSrc || i.src, i.complete && i.naturalWidth > 0])")
        problems += [f"image not loaded: {src}" for src, loaded in images if not loaded]
        for href in visit.page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"):
            problem = internal_link_problem(site, server, href)
            if problem:
                problems.append(problem)
        visit.close()
        if problems:
            broken[name] = sorted(set(problems))
    assert not broken, json.dumps(broken, indent=1)


@functools.lru_cache(maxsize=None)
def _ids(path: Path) -> frozenset:
    return frozenset(re.findall(r'\sid="([^"]+)"', path.read_text(encoding="utf-8", errors="replace")))


def internal_link_problem(site: Path, server: str, href: str) -> str | None:
    """Why an internal link is broken (a missing file or a missing #anchor), or None; external links are not ours."""
    if not href.startswith(server):
        return None
    parsed = urllib.parse.urlparse(href)
    target = site / urllib.parse.unquote(parsed.path.lstrip("/"))
    if target.is_dir():
        target = target / "index.html"
    if not target.exists():
        return f"broken link: {href}"
    if parsed.fragment and target.suffix == ".html" and urllib.parse.unquote(parsed.fragment) not in _ids(target):
        return f"broken anchor: {href}"
    return None


@pytest.mark.browser
def test_each_chapter_shows_its_first_figure(site, server, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    chapters_with_figures = [page for page in chapter_pages(site) if notebook_has_figure(page[:-5])]
    assert chapters_with_figures, "the committed notebooks hold figures, so some chapter must show one"
    for name in chapters_with_figures:
        visit = PageVisit(browser, server + name)
        figure = visit.page.locator("article img").first
        figure.scroll_into_view_if_needed()
        box = figure.bounding_box()
        loaded = figure.evaluate("img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0")
        assert figure.is_visible() and loaded, f"{name}: its first figure is not shown"
        assert box and box["width"] > 100 and box["height"] > 50, f"{name}: its first figure is {box}"
        if name == chapters_with_figures[0]:
            visit.page.screenshot(path=str(SCREENSHOTS / "chapter-figure.png"))
            visit.page.evaluate("window.scrollTo(0, 0)")
            visit.page.screenshot(path=str(SCREENSHOTS / "chapter.png"))
        visit.close()


@pytest.mark.browser
def test_screenshot_of_the_landing_page(site, server, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    visit = PageVisit(browser, server + "index.html")
    navigation = visit.page.locator("nav.bd-links a").all_inner_texts()
    stems = [path.stem for path in book.discover_notebooks()]
    assert len([text for text in navigation if text[:2].isdigit()]) == len(stems), navigation
    visit.page.screenshot(path=str(SCREENSHOTS / "landing.png"))
    visit.close()
    assert (SCREENSHOTS / "landing.png").stat().st_size > 10_000
