"""Numbers typed into a notebook's markdown must come from that notebook's run, or carry a source.

A measured-looking number in the prose (two or more decimals such as .0755 or 0.33, thousands
with commas such as 74,498, a percentage with decimals such as 97.5%, an approximate one such as
"about 1%") is backed when the executed copy of the same notebook prints it: some number in its
outputs (stdout, results, tables) equals it once rounded to the digits typed (0.07549 backs .0755;
a fraction 0.012 backs "about 1%"). Signs are ignored. A paragraph that cites a source (a paper,
"published", "et al.", a README, a tool's default, a link) is not checked; neither are formulas
($...$), inline code, quoted sayings ("...") nor settings to try in an exercise (a paragraph that
asks a question, or the cells of an "Exercises" section, in which "Change X to 0.25" is
not a claim).

The outputs come from executed notebooks, e.g. ``build/notebooks`` after ``make course`` (the cpu
profile, whose numbers the prose quotes); the text from the committed notebooks, so a sentence
edited after that run is checked against it.

    python tools/typed_numbers.py build/notebooks                 # every executed notebook
    python tools/typed_numbers.py build/notebooks 05_pretrained_bert.ipynb
    python tools/typed_numbers.py --own-text build/notebooks      # the executed copies' own text

Exit status 1 when some number is not backed.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TYPED_NUMBER = re.compile(r"(?<![\w.$])(\d*\.\d{2,}|\d{1,3}(?:,\d{3})+|\d+\.\d+\s?%)(?![\w%])"
                          r"|(?:about|around|roughly|nearly|almost|only|~)\s+(\d+(?:\.\d+)?\s?%)", re.I)
CITATION = re.compile(r"published|paper|README|et al\.|default|https?://", re.I)
PRINTED_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d*\.\d+|\d+)(\s?%)?")
EXERCISES = re.compile(r"^#+\s*Exercises?\b", re.I | re.M)
# Paragraphs, list items and table rows are judged one by one: a citation covers only its own.
PARAGRAPH = re.compile(r"\n\s*\n|\n\s*[-*] |\n\s*\d\. |\n\|")


def _decimal(text: str) -> Decimal:
    return Decimal(re.sub(r"[,\s%]", "", text))


def typed_numbers(nb: dict) -> list[tuple[str, str]]:
    """(number as typed, its paragraph) for every measured-looking number in ``nb``'s markdown."""
    found, exercises = [], False
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"])
        if source.lstrip().startswith("#"):  # a new section: exercises until the next heading
            exercises = bool(EXERCISES.match(source.lstrip()))
        if exercises:
            continue
        text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`|\"[^\"\n]*\"", " ", source, flags=re.S)
        for paragraph in PARAGRAPH.split(text):
            if CITATION.search(paragraph) or paragraph.rstrip().endswith("?"):
                continue
            for match in TYPED_NUMBER.finditer(paragraph):
                found.append((match.group(1) or match.group(2), " ".join(paragraph.split())))
    return found


def output_text(nb: dict) -> str:
    """Everything ``nb``'s code cells printed or displayed, as text (HTML tables without tags)."""
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                parts.append("".join(out["text"]))
            elif out["output_type"] in ("execute_result", "display_data"):
                data = out.get("data", {})
                parts.append("".join(data.get("text/plain", "")))
                parts.append(html.unescape(re.sub(r"<[^>]+>", " ", "".join(data.get("text/html", "")))))
    return "\n".join(parts)


def printed_numbers(text: str) -> list[tuple[Decimal, bool]]:
    """(value, printed as a percentage) for every number in ``text``."""
    numbers = []
    for match in PRINTED_NUMBER.finditer(text):
        try:
            numbers.append((_decimal(match.group(1)), bool(match.group(2))))
        except InvalidOperation:
            continue
    return numbers


def backs(typed: str, printed: list[tuple[Decimal, bool]]) -> bool:
    """Whether some printed number, rounded to the digits typed, equals ``typed``."""
    value = _decimal(typed)
    step = Decimal(1).scaleb(value.as_tuple().exponent)  # 0.0001 for .0755, 1 for 74,498
    for number, is_percent in printed:
        candidates = [number * 100] if "%" in typed and not is_percent else [number]
        for candidate in candidates:
            if candidate.as_tuple().exponent > value.as_tuple().exponent and candidate != value:
                continue  # fewer digits printed than typed: 0.08 does not back .0755
            if any(candidate.quantize(step, rounding=mode) == value for mode in (ROUND_HALF_UP, ROUND_HALF_EVEN)):
                return True
    return False


def unbacked(text_nb: dict, executed_nb: dict) -> list[str]:
    """Numbers typed in ``text_nb``'s markdown that ``executed_nb``'s outputs do not print."""
    printed = printed_numbers(output_text(executed_nb))
    return [f"{number!r} in: {paragraph[:140]}" for number, paragraph in typed_numbers(text_nb)
            if not backs(number, printed)]


def check(executed_dir: Path, names: list[str] | None = None, own_text: bool = False) -> dict[str, list[str]]:
    """{notebook name: unbacked numbers} over the executed notebooks in ``executed_dir``."""
    paths = [executed_dir / n for n in names] if names else sorted(executed_dir.glob("[0-9][0-9]_*.ipynb"))
    report = {}
    for path in paths:
        executed = json.loads(path.read_text())
        committed = ROOT / "notebooks" / path.name
        text = executed if own_text or not committed.exists() else json.loads(committed.read_text())
        report[path.name] = unbacked(text, executed)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("executed", type=Path, help="folder of executed notebooks (build/notebooks)")
    parser.add_argument("names", nargs="*", help="notebook file names (default: all in the folder)")
    parser.add_argument("--own-text", action="store_true", help="check the executed copies' own markdown")
    args = parser.parse_args(argv)
    report = check(args.executed, args.names or None, args.own_text)
    for name, problems in report.items():
        print(f"{name}: {len(problems)} typed number(s) its run does not print")
        for problem in problems:
            print("   ", problem)
    return 1 if any(report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
