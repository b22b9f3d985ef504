#!/usr/bin/env python3
"""Extract the King James Bible corpus (`assets/corpus-kjv/`) from Debian's bible-kjv packages.

The text comes from Debian's `bible-kjv-text` (the data) and `bible-kjv` (the `bible` reader
that decodes it), version 4.38 (bookworm). Both packages' SHA-256 are pinned below; the reader
prints every verse as `<Book><chapter>:<verse> <text>` and this script turns that into the
project's corpus format. The output is byte-identical for the same packages (sorted input, no
gzip timestamp or file name).

Usage (from the repository root, on an amd64 Debian or Ubuntu machine, as any user):

    mkdir -p /tmp/kjv && cd /tmp/kjv && apt-get download bible-kjv-text=4.38 bible-kjv=4.38
    cd - && python3 scripts/extract_kjv.py /tmp/kjv

Output format (as `assets/corpus/`, docs/data.md): UTF-8 plain text, one document per book (66),
documents separated by a line holding a single form feed (U+000C); within a book, each chapter
is a block (blocks separated by one blank line) and each verse a line, verse numbers dropped.

Split (fixed, deterministic): for each book, the trailing verses that make up the last 5% of its
characters go to `valid`, the rest to `train`, so every book contributes to both splits.
"""

import gzip
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = {
    "bible-kjv-text_4.38_all.deb": "d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a",
    "bible-kjv_4.38_amd64.deb": "75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d",
}
VALID_FRACTION = 0.05
DOC_SEPARATOR = "\n\f\n"
VERSE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")


def sha256(path: Path) -> str:
    """SHA-256 of a file, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_verses(debs: Path) -> list[tuple[str, int, str]]:
    """Every verse, Genesis 1:1 to Revelation 22:21, as (book, chapter, text)."""
    for name, want in PACKAGES.items():
        got = sha256(debs / name)
        if got != want:
            sys.exit(f"{debs / name}: SHA-256 {got}, expected {want}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(PACKAGES):
            subprocess.run(["dpkg", "-x", str(debs / name), tmp], check=True)
        out = subprocess.run(
            [f"{tmp}/usr/bin/bible", "-p", f"{tmp}/usr/lib", "-f", "gen1:1-rev22:21"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    verses = []
    for line in out.splitlines():
        if not line.strip():
            continue
        m = VERSE.match(line)
        if not m:
            sys.exit(f"unexpected line from the bible reader: {line!r}")
        book, chapter, _, text = m.groups()
        verses.append((book, int(chapter), " ".join(text.split())))
    return verses


def books(verses: list[tuple[str, int, str]]) -> list[list[tuple[int, str]]]:
    """Verses grouped by book, in canonical order."""
    grouped: list[list[tuple[int, str]]] = []
    last = None
    for book, chapter, text in verses:
        if book != last:
            grouped.append([])
            last = book
        grouped[-1].append((chapter, text))
    return grouped


def render(verses: list[tuple[int, str]]) -> str:
    """A run of verses as text: a block per chapter, a line per verse."""
    out: list[str] = []
    last = None
    for chapter, text in verses:
        if last is not None and chapter != last:
            out.append("")
        out.append(text)
        last = chapter
    return "\n".join(out)


def cut_index(book: list[tuple[int, str]]) -> int:
    """Where a book's held-out tail (the verses of its last 5% of characters) begins."""
    total = sum(len(t) + 1 for _, t in book)
    tail = 0
    cut = len(book)
    while cut > 1 and tail < VALID_FRACTION * total:
        cut -= 1
        tail += len(book[cut][1]) + 1
    return cut


def split(book: list[tuple[int, str]]) -> tuple[str, str]:
    """A book's training text and its held-out tail (the last 5% of its characters)."""
    cut = cut_index(book)
    return render(book[:cut]), render(book[cut:])


def write(path: Path, docs: list[str]) -> None:
    """Gzip with no timestamp or name, so the bytes depend on the text only."""
    data = DOC_SEPARATOR.join(docs).encode("utf-8") + b"\n"
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(data)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: extract_kjv.py DEB_FOLDER")
    grouped = books(read_verses(Path(sys.argv[1])))
    if len(grouped) != 66:
        sys.exit(f"expected 66 books, found {len(grouped)}")
    train, valid = zip(*(split(b) for b in grouped))
    out = Path(__file__).resolve().parent.parent / "assets" / "corpus-kjv"
    out.mkdir(parents=True, exist_ok=True)
    write(out / "train.txt.gz", list(train))
    write(out / "valid.txt.gz", list(valid))
    chars = [sum(map(len, s)) for s in (train, valid)]
    print(f"{len(grouped)} books; train {chars[0]} characters, valid {chars[1]}")


if __name__ == "__main__":
    main()
