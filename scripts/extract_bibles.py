#!/usr/bin/env python3
"""Build the two-translation Bible corpus (`assets/corpus-bibles/`): the King James Version and
the World English Bible, both from Debian packages.

Why: the BERT regime experiment (docs/experiment.md) needs target runs longer than four epochs of
the King James text allow. The World English Bible (a public-domain modern translation, with
deuterocanonical books) keeps the plain, formulaic register that made the King James corpus work
for a masked-LM source, and doubles the text.

Inputs, SHA-256 pinned below: Debian's `bible-kjv-text` 4.38 and `bible-kjv` 4.38 (as
scripts/extract_kjv.py; its reader decodes the text) and `sword-text-web` 426.0-1 (a SWORD zText
module, read with pysword 0.2.8 from PyPI, MIT). The output is byte-identical for the same inputs.

Usage (from the repository root, on an amd64 Debian or Ubuntu machine):

    mkdir -p /tmp/bibles && cd /tmp/bibles
    apt-get download bible-kjv-text=4.38 bible-kjv=4.38 sword-text-web=426.0-1
    pip download --no-deps pysword==0.2.8 && tar xzf pysword-0.2.8.tar.gz
    cd - && PYTHONPATH=/tmp/bibles/pysword-0.2.8 python3 scripts/extract_bibles.py /tmp/bibles

Format: as `assets/corpus/` (docs/data.md): one document per book and translation (the 66 King
James books, then the World English Bible's 66 and 14 deuterocanonical books: the module's
other three, Prayer of Azariah, Susanna and Bel and the Dragon, hold no verses), a block per
chapter, a line per verse, verse numbers dropped. The World English Bible's OSIS markup is
removed with its footnotes and psalm titles (the King James text has neither), its curly quotes
become ASCII ones (as in the King James text), and whitespace is collapsed.

Split (fixed): each King James book is split exactly as in `assets/corpus-kjv/` (its trailing
5% of characters held out). A World English Bible book shared with it holds out the same
verses by reference (chapter and verse), so no passage is trained on in one translation and
scored in the other; a deuterocanonical book holds out its own trailing 5%.
"""

import hashlib
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WEB_DEB = "sword-text-web_426.0-1_all.deb"
WEB_SHA256 = "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1"
WEB_MODULE = "engWEB2015eb"
# The 66 books shared with the King James text are the first 39 of the module's Old Testament
# and its whole New Testament; the 17 between are deuterocanonical.
SHARED_OT = 39

NOTE = re.compile(r"<note\b.*?</note>", re.S)
TITLE = re.compile(r"<title\b.*?</title>", re.S)
TAG = re.compile(r"<[^>]*>")
# The module appends its glossary to the last verse of Revelation.
GLOSSARY = re.compile(r"<div\b[^>]*type=\"glossary\".*", re.S)
DOXOLOGY = "Now to him who is able to establish you"
QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def load_extract_kjv():
    """scripts/extract_kjv.py as a module: the King James text and split come from there."""
    spec = importlib.util.spec_from_file_location("extract_kjv", HERE / "extract_kjv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean(osis: str) -> str:
    """A verse's OSIS markup as plain text: no footnotes, titles or tags, ASCII quotes."""
    # A footnote sits between two words with no space around it ("God<note>..</note>created"):
    # it becomes a marker that turns into a space, or into nothing before punctuation.
    text = NOTE.sub("\0", TITLE.sub("", GLOSSARY.sub("", osis)))
    text = TAG.sub("", text).translate(QUOTES)
    text = re.sub(r"\s*\0+\s*(?=[,.;:!?'\")\]]|$)", "", text)
    text = re.sub(r"\s*\0+\s*", " ", text)
    if "&" in text or "<" in text or ">" in text:
        sys.exit(f"markup left in a verse after cleaning: {text!r}")
    return " ".join(text.split())


def web_books(debs: Path) -> list[tuple[str, list[tuple[int, int, str]]]]:
    """The World English Bible's books in module order, as (name, [(chapter, verse, text)])."""
    from pysword.modules import SwordModules  # pysword 0.2.8, see the module docstring

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg", "-x", str(debs / WEB_DEB), tmp], check=True)
        modules = SwordModules(f"{tmp}/usr/share/sword")
        modules.parse_modules()
        bible = modules.get_bible_from_module(WEB_MODULE)
        structure = bible.get_structure().get_books()
        out = []
        for book in structure["ot"] + structure["nt"]:
            verses = []
            for chapter in range(1, book.num_chapters + 1):
                texts = bible.get_iter(books=[book.name], chapters=[chapter], clean=False)
                for verse, osis in enumerate(texts, start=1):
                    text = clean(osis)
                    if text:  # the versification has slots this translation leaves empty
                        verses.append((chapter, verse, text))
            out.append((book.name, verses))
    return out


def with_verse_numbers(book: list[tuple[int, str]]) -> list[tuple[int, int, str]]:
    """A King James book's verses with their numbers (the reader prints every verse, from 1)."""
    out = []
    for chapter, text in book:
        verse = out[-1][1] + 1 if out and out[-1][0] == chapter else 1
        out.append((chapter, verse, text))
    return out


def move_doxology(
    train: list[tuple[int, str]], valid: list[tuple[int, str]]
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Romans' closing doxology, which this module prints at the end of 14:23 and the King James
    text as 16:25-27 (held out), moved from the training part to the held-out end."""
    hits = [i for i, (_, x) in enumerate(train) if DOXOLOGY in x]
    if len(hits) != 1:
        sys.exit(f"Romans: expected the doxology once in the training part, found {len(hits)}")
    chapter, text = train[hits[0]]
    at = text.index(DOXOLOGY)
    train = train[: hits[0]] + [(chapter, text[:at].rstrip())] + train[hits[0] + 1 :]
    return train, valid + [(valid[-1][0], text[at:])]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: extract_bibles.py DEB_FOLDER")
    debs = Path(sys.argv[1])
    got = hashlib.sha256((debs / WEB_DEB).read_bytes()).hexdigest()
    if got != WEB_SHA256:
        sys.exit(f"{debs / WEB_DEB}: SHA-256 {got}, expected {WEB_SHA256}")
    kjv = load_extract_kjv()
    kjv_books = kjv.books(kjv.read_verses(debs))
    web = web_books(debs)
    shared = web[:SHARED_OT] + web[-27:]
    # The module's Prayer of Azariah, Susanna and Bel and the Dragon hold no verses.
    extra = [(name, verses) for name, verses in web[SHARED_OT:-27] if verses]
    if len(kjv_books) != 66 or len(shared) != 66 or len(extra) != 14:
        sys.exit(f"unexpected book counts: {len(kjv_books)} KJV, {len(web)} WEB")
    # King James books first, then their World English twins, each cut where the King James
    # book's held-out tail begins (by chapter and verse).
    kjv_parts, web_parts = [], []
    for book, (name, verses) in zip(kjv_books, shared):
        at = kjv.cut_index(book)
        kjv_parts.append((kjv.render(book[:at]), kjv.render(book[at:])))
        chapter, verse, _ = with_verse_numbers(book)[at]
        web_train = [(c, x) for c, n, x in verses if (c, n) < (chapter, verse)]
        web_valid = [(c, x) for c, n, x in verses if (c, n) >= (chapter, verse)]
        if not web_train or not web_valid:
            sys.exit(f"{name}: the King James cut {chapter}:{verse} leaves an empty split")
        if name == "Romans":
            web_train, web_valid = move_doxology(web_train, web_valid)
        web_parts.append((kjv.render(web_train), kjv.render(web_valid)))
    extra_parts = [kjv.split([(c, x) for c, _, x in verses]) for _, verses in extra]
    train, valid = (list(side) for side in zip(*kjv_parts, *web_parts, *extra_parts))
    out = HERE.parent / "assets" / "corpus-bibles"
    out.mkdir(parents=True, exist_ok=True)
    kjv.write(out / "train.txt.gz", train)
    kjv.write(out / "valid.txt.gz", valid)
    chars = [sum(map(len, s)) for s in (train, valid)]
    print(f"{len(train)} documents; train {chars[0]} characters, valid {chars[1]}")


if __name__ == "__main__":
    main()
