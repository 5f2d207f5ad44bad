"""Golden token ids for src/tokenizer.rs from the reference, HuggingFace `tokenizers`.

A dev step, not part of the build: tests/data/golden_tokens.json is its committed output, and
tests/tokenizer.rs checks that `WordPiece::encode(text, 128)` gives exactly these ids and masks.
Rerun it only when the sentences below change:

    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install tokenizers==0.22.1
    /tmp/refenv/bin/python scripts/reference/golden_tokens.py \
        cache/transformer/all-MiniLM-L6-v2/tokenizer.json > tests/data/golden_tokens.json

(scripts/fetch-transformer.sh fetches the tokenizer.json.) The tokenizer's own truncation and
padding (128, fixed) apply, as tokenizer.json sets them.

The sentences are the hard cases for a reimplementation: each step's Unicode rules (cleaning,
CJK spacing, accent stripping, lowercasing, punctuation), WordPiece's greedy pieces and its
100-char limit, added tokens written in the text, and truncation.
"""

import json
import sys

from tokenizers import Tokenizer

LONG_PARAGRAPH = (
    "WordNet is a large lexical database of English. Nouns, verbs, adjectives and adverbs are "
    "grouped into sets of cognitive synonyms (synsets), each expressing a distinct concept. "
    "Synsets are interlinked by means of conceptual-semantic and lexical relations. "
)

SENTENCES = [
    # Empty input and inputs that normalize to nothing.
    "",
    "     ",
    "\t\n\r \u00a0\u3000",
    # Plain English and WordNet-style "lemma: gloss" lines.
    "The quick brown fox jumps over the lazy dog.",
    "dog: a member of the genus Canis (probably descended from the common wolf) that has been "
    "domesticated by man since prehistoric times; occurs in many breeds",
    "entity: that which is perceived or known or inferred to have its own distinct existence "
    "(living or nonliving)",
    "hot_dog: a frankfurter served hot on a bulbous roll; Saint_Peter's_Basilica",
    # Accents: stripped after NFD, so they meet the unaccented vocabulary entries.
    "Café naïve résumé",
    "Cafe\u0301 n\u0303 Tiếng Việt có dấu",
    "Straße STRASSE ẞ İstanbul ıI",
    # Lowercasing char by char: a final capital sigma becomes 'σ', not 'ς'.
    "ΟΔΟΣ Σίσυφος",
    # Mixed case.
    "HeLLo WoRLD iPhone McDonald's NASA",
    # CJK ideographs become words of their own; kana and hangul do not.
    "我爱自然语言处理",
    "日本語のテキストです。 한국어 문장",
    # CJK Extension B, and Extension E on both sides of 0x2B920 (where the reference's range
    # starts).
    "x\U00020000y x\U0002B820y x\U0002B920y",
    # Punctuation runs, brackets, quotes.
    "Wait...what?!?! (really) [sic] {x} <y> \"quoted\" 'single'",
    "«guillemets» „Anführungszeichen“ ¿Qué? ¡Sí! 『括弧』",
    # Apostrophes, straight and curly.
    "don't can't it's O'Neill's rock 'n' roll don’t",
    # Hyphenation and dashes.
    "state-of-the-art well-known co-operate – en–dash em—dash",
    # Numbers.
    "In 1984, 3.14159 and 1,000,000 people paid $42.50 at 10:30pm on 2024-01-31.",
    # ASCII symbols that are punctuation only to BERT, and Unicode symbols that are not.
    "x^2 + y_1 = z|w ~ `tick` ≤ 5 ∑ ∞ ± × £100 ¥500 ₹20 ©2024 ™ ®",
    # URLs and addresses.
    "https://www.example.com/path/to/page?query=1&x=y#frag and user@example.org",
    # Emoji (not in the vocabulary), with a skin tone modifier and a variation selector.
    "I love it 😀🎉👍🏽 🥰 and ❤️ ok",
    # Control, format and private-use chars (dropped), U+FFFD (dropped), unassigned (kept).
    "a\x00b\x01c\x7fd\u200be\ufeff f\ufffdg \ue000h x\u0378y",
    # Every kind of whitespace, including ones that are controls (\x0b, \x0c, \x85: dropped).
    "line one\nline two\r\n\tindented\x0bvertical\x0cfeed\x85next\u00a0nbsp\u2003em\u2028ls",
    # Words of many pieces.
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    # The 100-char limit: 100 chars are tokenized, 101 are one [UNK].
    "ab" * 50,
    "ab" * 50 + "a",
    "supercalifragilisticexpialidocious" * 3,
    # Words with a char that no piece covers are one [UNK] as a whole.
    "the ☃ snowman and the helloΩ̃ word and \u2603x",
    # Added tokens in the text are matched on the raw text, case-sensitively.
    "hello [MASK] world [CLS]x[SEP] [mask] [UNK] [PAD][PAD]",
    # Other scripts.
    "Привет, мир! مرحبا بالعالم שָׁלוֹם हिन्दी ภาษาไทย",
    # Compatibility forms are not folded (no NFKC): ligatures and fullwidth letters.
    "ﬁne ﬂour ＡＢＣ１２３",
    # Letters and digits mixed.
    "COVID-19 H2O 3D mp3 4x4 1st 2nd 10x",
    # Superscripts, fractions, roman and circled numerals (no compatibility folding either).
    "x² ½ Ⅻ ① ℃",
    # Zero-width joiners (format chars, dropped) inside an emoji sequence and a word.
    "family 👨‍👩‍👧 in‍word",
    # Fullwidth CJK punctuation around ideographs.
    "（括弧）、句読点。「引用」",
    # Hashes and code.
    "#hashtag @mention ##notaprefix fn main() { println!(\"{}\", x); } // comment",
    # Exactly 126 tokens (no padding), 127 (one truncated), and a long paragraph.
    " ".join(["word"] * 126),
    " ".join(["word"] * 127),
    LONG_PARAGRAPH * 4,
]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: golden_tokens.py PATH/TO/tokenizer.json > tests/data/golden_tokens.json")
    tokenizer = Tokenizer.from_file(sys.argv[1])
    entries = []
    for text in SENTENCES:
        encoding = tokenizer.encode(text)
        entries.append(
            {"text": text, "ids": encoding.ids, "attention_mask": encoding.attention_mask}
        )
    # One entry a line: readable diffs, and a file a tenth the size of indented JSON.
    sys.stdout.write("[\n" + ",\n".join(json.dumps(entry) for entry in entries) + "\n]\n")


if __name__ == "__main__":
    main()
