"""A frozen copy of `doctags_core.cleaning` before its performance work (b7d79f5).

Tests only: `tests/test_cleaning_reference.py` checks that the optimised
cleaning (gated passes, merged passes, fused steps) gives exactly this
implementation's output. Never edit the cleaning rules here; a deliberate
change of the cleaning's output needs a new reference, not a silent one.

The original module docstring follows.

The ONE definition of text cleaning, written in TensorFlow ops.

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


def _only_where_contains(text, literal: str, transform):
    """Applies ``transform`` only to the strings that contain ``literal``.

    The others cannot match any of the transform's patterns, so gathering
    the candidates first skips a dozen full passes over most documents.
    """
    tf = _tensorflow()
    flat = tf.reshape(text, [-1])
    hit = tf.strings.regex_full_match(flat, "(?s).*" + literal + ".*")
    where = tf.where(hit)
    changed = transform(tf.gather_nd(flat, where))
    return tf.reshape(tf.tensor_scatter_nd_update(flat, where, changed), tf.shape(text))


def expand_contractions(text):
    """Expands English contractions (``don't`` -> ``do not``)."""
    text = _replace_all(text, _CONTRACTIONS[:1])  # every apostrophe is now "'"
    return _only_where_contains(text, "'", lambda t: _replace_all(t, _CONTRACTIONS[1:]))


def drop_tokens_with_digits(text):
    """Removes every whitespace-delimited token that contains a digit."""
    return _replace_all(text, [(r"\S*\p{Nd}\S*", " ")])


def letters_only(text):
    """Replaces every run of non-letters (keeping combining marks) with a space."""
    return _replace_all(text, [(r"[^\p{L}\p{M}\s]+", " ")])


# One match removes a whole run of stop words: each repetition consumes a
# stop word and the whitespace character after it, and the leading ``\s``
# anchors the run on a token boundary.
_STOP_PATTERN = r"(?i)\s(?:(?:" + "|".join(ENGLISH_STOP_WORDS) + r")\s)+"


def remove_stopwords(text):
    """Removes English stop words (whitespace-delimited, case-insensitive).

    RE2 has no look-around, so the text is padded with a space at each end
    and one match takes a whitespace character, then one or more
    ``stopword + whitespace`` units: consecutive stop words go in one match
    and a token is removed only when it is exactly a stop word. Only the
    amount of whitespace differs from removing tokens one by one, and the
    final whitespace fold of `clean_text` makes that invisible. Other
    whitespace characters become spaces first, as they did when this step
    doubled every whitespace run, so that later steps in a custom order see
    the same text up to the number of spaces.
    """
    tf = _tensorflow()
    text = tf.strings.regex_replace(text, r"[\t\n\f\r]", " ")
    return tf.strings.regex_replace(tf.strings.join([" ", text, " "]), _STOP_PATTERN, " ")


# The registry of steps, in the order the default config applies them (URLs
# and markup go before lowercasing, digits before letters_only, stop words
# last): config validation, the default and the config reference read it.
CLEANING_STEPS: dict[str, Callable] = {
    "remove_urls": remove_urls,
    "strip_html": strip_html,
    "lowercase": lowercase,
    "expand_contractions": expand_contractions,
    "drop_tokens_with_digits": drop_tokens_with_digits,
    "letters_only": letters_only,
    "remove_stopwords": remove_stopwords,
}
DEFAULT_STEPS: tuple[str, ...] = tuple(CLEANING_STEPS)


# Whitespace, separators and control characters are folded into one space.
# Only runs that are not already a single ASCII space need rewriting, so the
# pattern matches runs of two or more, or one character other than " "
# (``[^\P{Zs} ]`` is \p{Zs} without the space): a text of single-spaced
# words has no match at all, which makes this pass several times faster
# than rewriting every word boundary, with the same result.
_SPACE_CLASS = r"[\s\p{Z}\p{C}]"
_FOLD_PATTERN = _SPACE_CLASS + r"{2,}|[^\P{Zs} ]|[\t\n\f\r\p{C}\p{Zl}\p{Zp}]"


def clean_text(text, steps: Sequence[str], assume_valid_utf8: bool = False):
    """Cleans a string tensor of any shape with the given ordered steps.

    Invalid UTF-8 is first replaced (U+FFFD) so that no later op fails on it,
    and all whitespace, separators and control characters are finally folded
    into single spaces, so that splitting on whitespace gives the tokens.

    Args:
        text: A ``tf.string`` tensor (usually a 1-D batch of documents).
        steps: Names from `CLEANING_STEPS`, applied in order.
        assume_valid_utf8: Skip the UTF-8 repair pass. Only for callers that
            guarantee valid UTF-8 (the Beam job dead-letters anything else
            before cleaning), for which that pass is the identity.

    Returns:
        A ``tf.string`` tensor of the same shape with the cleaned text.
    """
    tf = _tensorflow()
    unknown = [s for s in steps if s not in CLEANING_STEPS]
    if unknown:
        raise ValueError(f"unknown cleaning step(s) {unknown}; known: {list(CLEANING_STEPS)}")
    if not assume_valid_utf8:
        text = tf.strings.unicode_transcode(
            text, input_encoding="UTF-8", output_encoding="UTF-8", errors="replace"
        )
    for step in steps:
        text = CLEANING_STEPS[step](text)
    text = tf.strings.regex_replace(text, _FOLD_PATTERN, " ")
    return tf.strings.strip(text)


def tokenize(cleaned):
    """Splits cleaned text into tokens, exactly as TextVectorization does.

    Keras' ``split="whitespace"`` calls ``tf.strings.split(x)``; using the
    same op here makes the Beam tokens identical to the serving tokens.
    """
    return _tensorflow().strings.split(cleaned)


def make_batch_cleaner(steps: Sequence[str], assume_valid_utf8: bool = False):
    """A traced ``tf.function`` cleaning a 1-D batch, for the Beam workers.

    Tracing once and reusing the graph avoids paying eager dispatch for each
    of the ~20 regex ops on every batch.
    """
    tf = _tensorflow()
    steps = tuple(steps)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def clean_and_tokenize(batch):
        tokens = tokenize(clean_text(batch, steps, assume_valid_utf8))
        return tokens.values, tokens.row_splits

    return clean_and_tokenize
