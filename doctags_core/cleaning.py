"""The ONE definition of text cleaning, written in TensorFlow ops.

The Beam job applies `clean_text` to batches of documents before counting
tokens and writing TFRecords; the exported SavedModel applies the very same
function inside its serving graph. Because both run the same TF ops, the
tokens seen in training and in serving cannot drift apart (a test checks this
on every document of the Reuters test split).

Only core TensorFlow string ops are used (RegexReplace, StringLower,
UnicodeTranscode, StringJoin, StringStrip), all of which TensorFlow Serving
links, so the exported graph loads there without tensorflow-text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from doctags_core.stopwords import ENGLISH_STOP_WORDS

# Lazily imported so that importing the config module stays cheap.
_tf = None


def _tensorflow():
    global _tf
    if _tf is None:
        import tensorflow as tf

        _tf = tf
    return _tf


def _replace_all(text, rules: Sequence[tuple[str, str]]):
    tf = _tensorflow()
    for pattern, rewrite in rules:
        text = tf.strings.regex_replace(text, pattern, rewrite)
    return text


def remove_urls(text):
    """Replaces http(s)/ftp URLs and bare www. hosts with a space."""
    return _replace_all(text, [(r"(?i)(?:https?://|ftp://|www\.)\S+", " ")])


_HTML_ENTITIES = (
    ("&lt;", "<"),
    ("&gt;", ">"),
    ("&quot;", '"'),
    ("&#0*34;", '"'),
    ("&apos;", "'"),
    ("&#0*39;", "'"),
    ("&nbsp;", " "),
    ("&#0*160;", " "),
    ("&#[xX]?[0-9a-fA-F]+;", " "),  # other numeric entities: no TF op decodes them generally
    ("&amp;", "&"),  # last, so "&amp;lt;" decodes once, as a browser would
)


def strip_html(text):
    """Removes HTML/XML tags, then decodes the common entities.

    Tags are removed before entities are decoded so that escaped markup in
    the text (``&lt;b&gt;``) stays text, as BeautifulSoup's get_text() does.
    """
    text = _replace_all(text, [(r"<!--.*?-->", " "), (r"<[A-Za-z/!][^>]*>", " ")])
    return _replace_all(text, [(p, r) for p, r in _HTML_ENTITIES])


def lowercase(text):
    """Unicode-aware lowercasing (``ÉCOLE`` -> ``école``)."""
    return _tensorflow().strings.lower(text, encoding="utf-8")


_CONTRACTIONS = (
    ("[\u2018\u2019\u02bc`]", "'"),  # curly and modifier apostrophes
    (r"(?i)\bwon't\b", "will not"),
    (r"(?i)\bcan't\b", "can not"),
    (r"(?i)\bshan't\b", "shall not"),
    (r"(?i)\bain't\b", "is not"),
    (r"(?i)\blet's\b", "let us"),
    (r"(?i)n't\b", " not"),
    (r"(?i)'re\b", " are"),
    (r"(?i)'ll\b", " will"),
    (r"(?i)'ve\b", " have"),
    (r"(?i)'d\b", " would"),
    (r"(?i)'m\b", " am"),
    (r"(?i)'s\b", ""),  # possessive or "is": dropped, as the seeds did
)


def expand_contractions(text):
    """Expands English contractions (``don't`` -> ``do not``)."""
    return _replace_all(text, _CONTRACTIONS)


def drop_tokens_with_digits(text):
    """Removes every whitespace-delimited token that contains a digit."""
    return _replace_all(text, [(r"\S*\p{Nd}\S*", " ")])


def letters_only(text):
    """Replaces every run of non-letters (keeping combining marks) with a space."""
    return _replace_all(text, [(r"[^\p{L}\p{M}\s]+", " ")])


_STOP_PATTERN = "(?i) (?:" + "|".join(ENGLISH_STOP_WORDS) + ") "


def remove_stopwords(text):
    """Removes English stop words.

    RE2 has no look-around, and adjacent stop words share the space between
    them, so every token is first given spaces of its own (single spaces
    doubled, text padded): then `` the `` matches each stop word exactly once.
    """
    tf = _tensorflow()
    padded = tf.strings.join([" ", tf.strings.regex_replace(text, r"\s+", "  "), " "])
    return tf.strings.regex_replace(padded, _STOP_PATTERN, " ")


CLEANING_STEPS: dict[str, Callable] = {
    "remove_urls": remove_urls,
    "strip_html": strip_html,
    "lowercase": lowercase,
    "expand_contractions": expand_contractions,
    "drop_tokens_with_digits": drop_tokens_with_digits,
    "letters_only": letters_only,
    "remove_stopwords": remove_stopwords,
}


def clean_text(text, steps: Sequence[str]):
    """Cleans a string tensor of any shape with the given ordered steps.

    Invalid UTF-8 is first replaced (U+FFFD) so that no later op fails on it,
    and all whitespace, separators and control characters are finally folded
    into single spaces, so that splitting on whitespace gives the tokens.

    Args:
        text: A ``tf.string`` tensor (usually a 1-D batch of documents).
        steps: Names from `CLEANING_STEPS`, applied in order.

    Returns:
        A ``tf.string`` tensor of the same shape with the cleaned text.
    """
    tf = _tensorflow()
    unknown = [s for s in steps if s not in CLEANING_STEPS]
    if unknown:
        raise ValueError(f"unknown cleaning step(s) {unknown}; known: {list(CLEANING_STEPS)}")
    text = tf.strings.unicode_transcode(
        text, input_encoding="UTF-8", output_encoding="UTF-8", errors="replace"
    )
    for step in steps:
        text = CLEANING_STEPS[step](text)
    text = tf.strings.regex_replace(text, r"[\s\p{Z}\p{C}]+", " ")
    return tf.strings.strip(text)


def tokenize(cleaned):
    """Splits cleaned text into tokens, exactly as TextVectorization does.

    Keras' ``split="whitespace"`` calls ``tf.strings.split(x)``; using the
    same op here makes the Beam tokens identical to the serving tokens.
    """
    return _tensorflow().strings.split(cleaned)


def make_batch_cleaner(steps: Sequence[str]):
    """A traced ``tf.function`` cleaning a 1-D batch, for the Beam workers.

    Tracing once and reusing the graph avoids paying eager dispatch for each
    of the ~20 regex ops on every batch.
    """
    tf = _tensorflow()
    steps = tuple(steps)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def clean_and_tokenize(batch):
        tokens = tokenize(clean_text(batch, steps))
        return tokens.values, tokens.row_splits

    return clean_and_tokenize
