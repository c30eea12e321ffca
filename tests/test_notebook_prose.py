"""Numbers in prose come from the run: a result that depends on the run (an accuracy, a share of tokens, a speed-up)
is printed by code, never typed into markdown, where it goes stale with the next run. So the markdown of every
committed notebook (the numbered ones, the instructor sources of the assignments, the solutions) may hold a
percentage (``90.5 %``, ``12%``, ``3 percent``) or a multiplier (``28×``, ``3.1x``, ``4-fold``, ``2.5 times as``) only

- in a sentence, or a row of a markdown table, that cites its source by author and year (``Maas et al. 2011``,
  ``(Howard & Ruder 2018)``, ``Blitzer, Dredze & Pereira, ACL 2007``): a figure from the literature; or
- inside LaTeX math (``$...$``, ``$$...$$``) or a fenced code block: a formula or code, not a claim; or
- as a confidence level (``a 95 % interval``, ``95 % confidence``): a convention, not a result.

Everything else is reported with its notebook, cell and sentence. The fix is to print the number from the run (an
f-string, or ``IPython.display.Markdown`` built from metrics.json) or to say what holds for every run in words.
"""

import re

import nbformat
import pytest

from conftest import REPO

NOTEBOOKS = REPO / "notebooks"
SCANNED = sorted(path for path in NOTEBOOKS.rglob("*.ipynb")  # not .ipynb_checkpoints/ and the like
                 if not any(part.startswith(".") for part in path.relative_to(NOTEBOOKS).parts))

_NUMBER = r"(?<![\w.,])\d[\d,]*(?:\.\d+)?"
PERCENTAGE = re.compile(rf"(?:{_NUMBER}\s?[–-]\s?)?{_NUMBER}\s?(?:%|percent\b|per cent\b)")
MULTIPLIER = re.compile(
    rf"{_NUMBER}\s?[×x](?![\w×])(?!\s*\d)"  # 28×, 3.1x; not 64x64 nor 50,000 × 100 (a product)
    rf"|{_NUMBER}[- ]fold\b"
    rf"|{_NUMBER}\s+times\s+(?:as|more|less|fewer|faster|slower|larger|smaller|higher|lower|longer|shorter|over)\b")

_NAME = r"[A-Z][A-Za-z'’\-]+"
CITATION = re.compile(rf"\b(?P<name>{_NAME})(?:\s+et\s+al\.?|(?:,\s*{_NAME})*\s*(?:&|and)\s+{_NAME})?,?\s*\(?"
                      rf"(?:[A-Z][A-Za-z\-]*\s+)?(?:19|20)\d\d[a-z]?\b")
#: Capitalised words before a year that are no author: "In 2011", "Since 2018", "March 2026".
NOT_AUTHORS = {"In", "Since", "From", "Until", "Before", "After", "By", "At", "On", "The", "Of", "To", "For", "As",
               "And", "Or", "A", "An", "Its", "This", "That", "These", "Than", "Up", "Around", "About", "January",
               "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
               "December"}

_NOT_PROSE = re.compile(r"```.*?```|\$\$.*?\$\$|(?<!\\)\$[^$\n]+?(?<!\\)\$|<!--.*?-->"
                        r"|\b\d+(?:\.\d+)?\s?%(?=\s(?:confidence|interval|CI)\b)", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z*_(\[`\"'])")
_BLOCK_START = re.compile(r"^\s*(?:#{1,6}\s|[-*+]\s|\d+\.\s|>\s?)")


def cites(text: str) -> bool:
    return any(match.group("name") not in NOT_AUTHORS for match in CITATION.finditer(text))


def units(markdown: str) -> list[str]:
    """The pieces of a markdown cell a citation must share with a number: each table row, and each sentence of the
    paragraphs, headings and list items (math and fenced code removed first)."""
    pieces, paragraph = [], []

    def flush():
        if paragraph:
            pieces.extend(_SENTENCE_END.split(" ".join(paragraph)))
            paragraph.clear()

    for line in _NOT_PROSE.sub(" ", markdown).splitlines():
        if line.lstrip().startswith("|"):
            flush()
            pieces.append(line.strip())
        elif not line.strip() or _BLOCK_START.match(line):
            flush()
            if line.strip():
                paragraph.append(line.strip())
        else:
            paragraph.append(line.strip())
    flush()
    return pieces


def uncited_numbers(markdown: str) -> list[tuple[str, str]]:
    """(number, the sentence or row it is in) for each percentage or multiplier without a citation beside it."""
    found = []
    for unit in units(markdown):
        if cites(unit):
            continue
        for pattern in (PERCENTAGE, MULTIPLIER):
            found += [(match.group(0).strip(), unit) for match in pattern.finditer(unit)]
    return found


def excerpt(unit: str, number: str, width: int = 110) -> str:
    where = unit.find(number)
    start = max(0, min(where - width // 2, len(unit) - width))
    return ("…" if start else "") + unit[start:start + width] + ("…" if start + width < len(unit) else "")


def notebook_findings(path) -> list[str]:
    findings = []
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type == "markdown":
            findings += [f"cell {index}: {number!r} in “{excerpt(unit, number)}”"
                         for number, unit in uncited_numbers(cell.source)]
    return findings


@pytest.mark.parametrize("markdown, numbers", [
    ("The model reaches 90.5 % on the test set.", ["90.5 %"]),
    ("It keeps 12% of the tokens and is 28× faster, then 3.1x.", ["12%", "28×", "3.1x"]),
    ("Stages reach 82.8–84.3 % here; a four-fold gain, 2.5 times as many labels, 4-fold.",
     ["82.8–84.3 %", "2.5 times as", "4-fold"]),
    ("Maas et al. 2011 report 88.89 %. Ours is 90 %.", ["90 %"]),
    ("ULMFiT needs 100 labels to match 10,000 from scratch, a 100× saving (Howard & Ruder 2018).", []),
    ("| model | accuracy | source |\n|---|---|---|\n| LSTM | 86.5 % | Dai & Le 2015 |\n| ours | 90.6 % | this run |",
     ["90.6 %"]),
    ("| dataset | cite |\n|---|---|\n| Amazon, 20 % test | Blitzer, Dredze & Pereira, ACL 2007 |", []),
    ("Word vectors (Mikolov et al., 2013) and the rest: 5 % of them.", []),
    ("In 2011 the share was 40 %.", ["40 %"]),
    ("The loss is $\\mathcal{L} = 0.5\\%$ of\n$$x = 3\\times$$\n```\nprint(f'{x:.1%}')\n```\nnothing else.", []),
    ("A 64x64 image, 50,000 × 100 floats, the $4H$ gates, `max_len=256`, 2048², 1e-5.", []),
    ("- first item 30 %\n- second item (Howard & Ruder 2018) 40 %", ["30 %"]),
    ("400 test reviews give a 95 % interval of about ±4.5 points; 95 % confidence; 95 % of the time.", ["95 %"]),
])
def test_the_scanner_finds_uncited_numbers_and_only_those(markdown, numbers):
    assert [number for number, _ in uncited_numbers(markdown)] == numbers


@pytest.mark.parametrize("path", SCANNED, ids=[str(path.relative_to(NOTEBOOKS)) for path in SCANNED])
def test_numbers_in_markdown_are_cited_or_printed_by_code(path):
    findings = notebook_findings(path)
    assert not findings, (
        f"{path.relative_to(REPO)}: percentages or multipliers typed into markdown, with no citation (author and "
        "year) in the same sentence or table row:\n  " + "\n  ".join(findings) + "\nPrint a number that comes from "
        "the run with code (an f-string, or IPython.display.Markdown built from metrics.json), cite a figure from "
        "the literature beside it, or say in words what holds for every run.")
