"""The course website: a static, book-style site of the committed, executed notebooks (``make book``).

    python -m tl_core.book build                        # build/book/html/index.html, from notebooks/ as committed
    python -m tl_core.book build --run-dir runs/quick   # the results page from that run's report.md
    python -m tl_core.book results --run-dir runs/quick # only (re)write the results page's source

Three steps, each a function:

1. :func:`assemble` writes the site's source into ``build/book/src/``: the README as the landing page, one page per
   notebook ``notebooks/NN_topic.ipynb`` (discovered, in notebook order) with a line of downloads under its title
   (the notebook, the ``tl_core`` modules it imports, the student version of its exercises, made by nbgrader:
   never the instructor source), a results page, ``conf.py``. Nothing is executed: a notebook without stored
   outputs is an error that says so.
2. :func:`results_page` is the run's headline table, kept separate so that it can be pointed at any run: with a
   run directory, that run's ``report.md`` (written by ``python -m tl_core.run``; rebuilt from its
   ``metrics.json`` if missing) and its figures; without one, what each cell a notebook tags ``headline`` printed
   or drew, as committed.
3. :func:`build_html` runs Sphinx (myst-nb, ``nb_execution_mode = "off"``, the book theme) into
   ``build/book/html/``. Everything the pages load is local (MathJax included), so the site works offline.

``tests/test_book.py`` opens every page in headless Chromium (``make test-book``).
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .course import CourseNotFoundError, find_course, find_notebooks, profiles_of, runs_in_profile

PACKAGE = Path(__file__).resolve().parent  # tl_core's own files, offered for download beside the chapters
NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
HEADLINE_TAG = "headline"
RESULTS_PAGE = "results.md"
SOURCES_DIR = "sources"  # where the pages' source files are copied, to be downloaded from the site
TITLE = "Transfer learning for NLP"
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><rect width="64" height="64" rx="12" '
           'fill="#2a5a8c"/><text x="32" y="43" font-family="sans-serif" font-size="30" font-weight="bold" '
           'text-anchor="middle" fill="#fff">TL</text></svg>\n')

CONF_PY = '''\
# Sphinx configuration of the course website, written by `python -m tl_core.book` (do not edit: rebuild).
project = {title!r}
extensions = ["myst_nb"]
master_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "{sources}/**"]
# The committed notebooks are already executed: never run them here.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
html_theme = "sphinx_book_theme"
html_title = {title!r}
html_theme_options = {{
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
    "navbar_persistent": [],
    "footer_content_items": [],
{repository}}}
html_favicon = "_static/favicon.svg"
html_context = {{"default_mode": "light"}}
html_static_path = ["_static"]
html_last_updated_fmt = None
# MathJax 2 from the pinned jupyter-server-mathjax package, copied into _static: no request leaves the site.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
# That package ships the STIX-Web fonts only (as Jupyter's classic notebook used them).
mathjax2_config = {{
    "tex2jax": {{"inlineMath": [["\\\\(", "\\\\)"]], "displayMath": [["\\\\[", "\\\\]"]],
                "processRefs": False, "processEnvironments": False}},
    "HTML-CSS": {{"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None}},
    "SVG": {{"font": "STIX-Web"}},
}}
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
'''


class BookError(RuntimeError):
    """The site cannot be built: notebooks not executed, a run directory without results, Sphinx failed."""


def build_dir() -> Path:
    """The site's build folder: ``build/book/`` of the course folder."""
    return find_course() / "build" / "book"


def _source_path(path: str) -> Path:
    """Where a file that :func:`source_files` names lives: the package's own files wherever it is installed, the
    rest in the course folder."""
    return PACKAGE.parent / path if path.startswith("tl_core/") else find_course() / path


def discover_notebooks(notebooks_dir: str | os.PathLike | None = None) -> list[Path]:
    """The numbered notebooks ``NN_topic.ipynb`` in notebook order that the quick profile runs: the committed,
    executed ones. An appendix that only larger profiles run (``metadata.tl_course.profiles``, e.g.
    08_more_strategies) is committed unexecuted and stays off the site."""
    folder = find_notebooks(notebooks_dir)
    found = [path for path in sorted(folder.glob(NOTEBOOK_PATTERN)) if runs_in_profile(profiles_of(path), "quick")]
    if not found:
        raise BookError(f"no notebooks named NN_topic.ipynb in {folder}")
    return found


def _read(notebook: Path) -> dict:
    return json.loads(Path(notebook).read_text(encoding="utf-8"))


def check_executed(notebook: Path) -> None:
    """A notebook whose code cells were not all run (no execution count) is refused with what to do."""
    cells = [cell for cell in _read(notebook)["cells"]
             if cell["cell_type"] == "code" and "".join(cell["source"]).strip()]
    not_run = [index for index, cell in enumerate(cells, 1) if cell.get("execution_count") is None]
    if not cells or not_run:
        raise BookError(
            f"{Path(notebook).name} is not executed ({len(not_run)} of {len(cells)} code cells have never run, "
            f"e.g. code cell {not_run[0] if not_run else 1}): the site shows the committed outputs and runs "
            f"nothing. Execute it first, e.g. `cd notebooks && jupyter nbconvert --to notebook --execute --inplace "
            f"{Path(notebook).name}` (or take the executed copy from a run directory of `make run`), then rebuild.")


def title_of(notebook: Path) -> str:
    """The first markdown heading of a notebook (its chapter title)."""
    for cell in _read(notebook)["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return Path(notebook).stem


def source_files(notebook: Path) -> list[str]:
    """Repository paths a chapter is made of: the notebook and the ``tl_core`` modules it imports (all files of
    a package such as ``tl_core/transfer/``)."""
    modules: list[str] = []
    for cell in _read(notebook)["cells"]:
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse("\n".join(line for line in "".join(cell["source"]).splitlines()
                                       if not line.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tl_core":
                names = [node.module.split(".")[1]] if "." in node.module else [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name.split(".")[1] for alias in node.names if alias.name.startswith("tl_core.")]
            modules += [name for name in names if (PACKAGE / f"{name}.py").exists()
                        or (PACKAGE / name / "__init__.py").is_file()]
    paths = [Path(notebook).resolve().relative_to(find_course()).as_posix()]
    for name in dict.fromkeys(modules):  # a module's file, or every file of a package (tl_core/transfer/)
        package = PACKAGE / name
        if package.is_dir():
            paths += [path.relative_to(PACKAGE.parent).as_posix() for path in sorted(package.glob("*.py"))]
        else:
            paths.append(f"tl_core/{name}.py")
    return paths


def _chapter(notebook: Path, target: Path, downloads: list[tuple[str, str]]) -> None:
    """The notebook as committed, with a line of download links (label, file in the site's source) under its
    title."""
    content = _read(notebook)
    links = " · ".join(f"{{download}}`{label} <{path}>`" for label, path in downloads)
    for cell in content["cells"]:
        if cell["cell_type"] == "markdown":
            lines = "".join(cell["source"]).splitlines()
            title = next((i for i, line in enumerate(lines) if line.startswith("# ")), -1)
            cell["source"] = "\n".join(lines[:title + 1] + ["", f"*Downloads:* {links}", ""] + lines[title + 1:])
            break
    target.write_text(json.dumps(content, ensure_ascii=False, indent=1), encoding="utf-8")


def _landing_page(chapters: list[tuple[str, str]]) -> str:
    readme = (find_course() / "README.md").read_text(encoding="utf-8")
    toctree = "\n".join(["```{toctree}", ":hidden:", ":caption: Notebooks", ""] + [stem for stem, _ in chapters]
                        + ["```", "", "```{toctree}", ":hidden:", ":caption: Results", "", "results", "```"])
    contents = "\n".join(f"{number + 1}. [{title}]({stem}.ipynb)" for number, (stem, title) in enumerate(chapters))
    return (f"{readme.rstrip()}\n\n## The book\n\nThe notebooks as committed, executed, one page each:\n\n"
            f"{contents}\n\n"
            f"The headline numbers of the run are on the [results page](results.md).\n\n{toctree}\n")


def _headline_outputs(notebook: Path, figures_dir: Path) -> list[str]:
    """Markdown for each cell tagged ``headline``: its printed text as one block, its figures saved into
    ``figures_dir`` and linked (relative to the page)."""
    blocks = []
    for index, cell in enumerate(_read(notebook)["cells"]):
        if cell["cell_type"] != "code" or HEADLINE_TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        text = "".join("".join(output.get("text", "")) for output in cell.get("outputs", [])
                       if output.get("output_type") == "stream" and output.get("name") == "stdout").rstrip()
        if text:
            blocks.append(f"```text\n{text}\n```")
        for number, output in enumerate(cell.get("outputs", [])):
            image = output.get("data", {}).get("image/png")
            if image:
                figure = figures_dir / f"{Path(notebook).stem}_cell{index}_{number}.png"
                figure.parent.mkdir(parents=True, exist_ok=True)
                figure.write_bytes(base64.b64decode("".join(image)))
                label = f"{Path(notebook).stem}: headline figure"
                blocks.append(f"![{label}]({figures_dir.name}/{figure.name})")
    return blocks


def results_page(src: Path, run_dir: str | os.PathLike | None = None,
                 notebooks: list[Path] | None = None) -> Path:
    """Write ``results.md`` into ``src``: the run's headline table.

    With ``run_dir``: that run's ``report.md`` (rebuilt from ``metrics.json`` by :mod:`tl_core.report` if the run
    has none), its figures copied beside it. Without: what every cell tagged ``headline`` in the committed
    notebooks printed or drew, one section per notebook that has one.
    """
    src = Path(src)
    src.mkdir(parents=True, exist_ok=True)
    notebooks = discover_notebooks() if notebooks is None else notebooks
    if run_dir is not None:
        run_dir = Path(run_dir)
        report = run_dir / "report.md"
        if report.exists():
            body = report.read_text(encoding="utf-8")
        elif (run_dir / "metrics.json").exists():
            from .report import build_report
            body = build_report(run_dir)
        else:
            raise BookError(f"{run_dir} holds neither report.md nor metrics.json: give the run directory of "
                            "`make run` (e.g. runs/quick), or leave --run-dir out to use the committed notebooks")
        # the run's own HTML renderings are not part of the site: link the chapter's page instead
        stems = {notebook.stem for notebook in notebooks}
        body = re.sub(r"\[html\]\(html/([^)]+)\.html\)",
                      lambda match: f"[chapter]({match.group(1)}.ipynb)" if match.group(1) in stems else "", body)
        figures = sorted(set(re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", body)))
        for figure in figures:
            if (run_dir / figure).exists():
                (src / "results_figures" / figure).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run_dir / figure, src / "results_figures" / figure)
                body = body.replace(f"]({figure})", f"](results_figures/{figure})")
        body = re.sub(r"^# .*$", f"# Results of the run `{run_dir.name}`", body, count=1, flags=re.M)
        page = body
    else:
        sections = []
        for notebook in notebooks:
            blocks = _headline_outputs(notebook, src / "results_figures")
            if blocks:
                sections.append(f"## [{title_of(notebook)}]({notebook.stem}.ipynb)\n\n" + "\n\n".join(blocks))
        page = ("# Results\n\nThe headline numbers as the committed notebooks recorded them: what each cell "
                f"tagged `{HEADLINE_TAG}` printed or drew, in notebook order. `make book RUN_DIR=runs/quick` shows a run's "
                "own report (`report.md`) here instead.\n\n")
        page += "\n\n".join(sections) if sections else "No notebook has a cell tagged `headline` yet."
    target = src / RESULTS_PAGE
    target.write_text(page.rstrip() + "\n", encoding="utf-8")
    return target


def _mathjax_static() -> Path:
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise BookError("jupyter-server-mathjax is not installed: `make book` installs "
                        "requirements-classroom.txt") from None
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def _exercises(folder: Path, course_dir: Path) -> dict[str, Path]:
    """The student versions of the assignments (nbgrader, :mod:`tl_core.classroom`), never the instructor
    sources: the site must not hand out solutions and hidden tests. notebook stem -> file in ``folder``."""
    from . import classroom

    sources = classroom.discover_sources()
    if not sources:
        return {}
    try:
        released = classroom.release(course_dir, sources)
    except classroom.AssignmentError as error:
        raise BookError(f"the exercises' student versions: {error}") from None
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for path in released:
        found[path.stem] = folder / path.name
        shutil.copyfile(path, found[path.stem])
    return found


def assemble(src: str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None,
             repository_url: str | None = None) -> Path:
    """Write the site's source (pages, results, ``conf.py``, static files) into ``src`` (default: ``src/`` of
    :func:`build_dir`), replacing what was there."""
    src = Path(src or build_dir() / "src")
    notebooks = discover_notebooks()
    for notebook in notebooks:
        check_executed(notebook)
    if src.exists():
        shutil.rmtree(src)
    (src / "_static").mkdir(parents=True)
    shutil.copytree(_mathjax_static(), src / "_static" / "mathjax")
    (src / "_static" / "favicon.svg").write_text(FAVICON, encoding="utf-8")
    exercises = _exercises(src / SOURCES_DIR / "exercises", src.parent / "classroom")
    chapters = []
    for notebook in notebooks:
        downloads = []
        for path in source_files(notebook):
            (src / SOURCES_DIR / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_source_path(path), src / SOURCES_DIR / path)
            downloads.append((path, f"{SOURCES_DIR}/{path}"))
        if notebook.stem in exercises:
            downloads.append((f"exercises: {notebook.name} (student version)",
                              exercises[notebook.stem].relative_to(src).as_posix()))
        _chapter(notebook, src / notebook.name, downloads)
        chapters.append((notebook.stem, title_of(notebook)))
    (src / "index.md").write_text(_landing_page(chapters), encoding="utf-8")
    results_page(src, run_dir, notebooks)
    repository = (f'    "repository_url": {repository_url!r},\n    "use_repository_button": True,\n'
                  f'    "path_to_docs": "notebooks",\n' if repository_url else "")
    conf = CONF_PY.format(title=TITLE, repository=repository, sources=SOURCES_DIR)
    (src / "conf.py").write_text(conf, encoding="utf-8")
    return src


def build_html(src: str | os.PathLike | None = None, out: str | os.PathLike | None = None) -> Path:
    """Sphinx, from ``src`` into ``out`` (default: ``src/`` and ``html/`` of :func:`build_dir`; a fresh build each
    time; warnings are printed, not fatal)."""
    src = Path(src or build_dir() / "src")
    try:
        import myst_nb  # noqa: F401
        import sphinx_book_theme  # noqa: F401
    except ImportError:
        raise BookError("Sphinx, myst-nb and sphinx-book-theme are not installed: `make book` installs "
                        "requirements-classroom.txt") from None
    out = Path(out or build_dir() / "html")
    if out.exists():
        shutil.rmtree(out)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "-d", str(Path(src) / ".doctrees"),
               str(src), str(out)]
    result = subprocess.run(command, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.stdout.strip():
        print(result.stdout.rstrip())
    if result.returncode != 0:
        raise BookError(f"sphinx-build failed (exit {result.returncode})")
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tl_core.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "results"], help="build: the whole site; results: only "
                        "the results page's source")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="the run directory whose report.md is the results page (default: the committed "
                             "notebooks' cells tagged headline)")
    parser.add_argument("--out", type=Path, default=None, help="the build folder (default: build/book of the course)")
    parser.add_argument("--repository-url", default=os.environ.get("BOOK_REPOSITORY_URL") or None,
                        help="a public repository to link from every page (default: $BOOK_REPOSITORY_URL, or none)")
    arguments = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        arguments.out = arguments.out or build_dir()
        if arguments.command == "results":
            print(f"wrote {results_page(arguments.out / 'src', arguments.run_dir)}")
            return 0
        src = assemble(arguments.out / "src", arguments.run_dir, arguments.repository_url)
        index = build_html(src, arguments.out / "html")
    except (BookError, CourseNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"built {index} in {time.perf_counter() - started:.0f} s; open it in a browser "
          f"(file://{index.resolve()}) or serve it: python -m http.server -d {index.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
