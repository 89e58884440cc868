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


def _contains(text, literal: str):
    """Whether each string holds a match of ``literal`` (a pattern starting with a literal).

    RE2 finds a leading literal with ``memchr`` instead of stepping its DFA
    through every byte, so one non-global replace and two lengths cost
    ~0.7 us per 1.2 kB document, where ``regex_full_match("(?s).*&.*")``
    cost ~2.5 us (it scans every byte): on synthetic documents, gating the
    HTML passes with full-match tests was slower than not gating them at all
    (9.0 vs 7.1 us per document), with this test it is faster (5.3).
    """
    tf = _tensorflow()
    first_removed = tf.strings.regex_replace(text, literal, "", replace_global=False)
    return tf.strings.length(first_removed) < tf.strings.length(text)


def _is_ascii(text):
    """Whether each (valid UTF-8) string is pure ASCII: as many characters as bytes.

    Counting characters touches each byte once (~0.4 us per document),
    much cheaper than a regex over the text.
    """
    tf = _tensorflow()
    return tf.equal(tf.strings.length(text), tf.strings.length(text, unit="UTF8_CHAR"))


def _only_where(text, hit, transform):
    """Applies ``transform`` only to the strings where ``hit`` is true.

    The others must be left unchanged by ``transform`` (the callers' hit
    tests are true wherever a pattern of the transform can match), so the
    result is that of ``transform(text)``, without the passes over the
    strings that cannot change.
    """
    tf = _tensorflow()
    flat = tf.reshape(text, [-1])
    where = tf.where(tf.reshape(hit, [-1]))
    changed = transform(tf.gather_nd(flat, where))
    return tf.reshape(tf.tensor_scatter_nd_update(flat, where, changed), tf.shape(text))


_URL = r"(?i)(?:https?://|ftp://|www\.)\S+"


def remove_urls(text):
    """Replaces http(s)/ftp URLs and bare www. hosts with a space.

    Only strings holding ``://`` or ``www.`` (any case) can match; the URL
    pattern has no literal prefix, so RE2 steps through every byte of every
    document (~4.6 us), while the two literal tests find the few candidates
    for less (4.1 us per synthetic document, 7% of which hold a URL).
    """
    tf = _tensorflow()
    hit = tf.logical_or(_contains(text, "://"), _contains(text, r"(?i)www\."))
    return _only_where(text, hit, lambda t: tf.strings.regex_replace(t, _URL, " "))


# Entities grouped by what they decode to, in the order of the original ten
# passes (``&lt;``, ``&gt;``, ``&quot;``, ``&#0*34;``, ``&apos;``, ``&#0*39;``,
# ``&nbsp;``, ``&#0*160;``, other numeric entities, ``&amp;``). Grouping is
# exact: every entity match runs from an ``&`` to the first ``;`` after it with
# neither inside, so matches never overlap, and no decoded character but the
# last pass' ``&`` can be part of an entity; a span that two patterns match
# (``&#34;`` is also "other numeric") is decoded by the earlier group, as it
# was by the earlier pass. Six passes instead of ten.
_HTML_ENTITIES = (
    ("&lt;", "<"),
    ("&gt;", ">"),
    ("&quot;|&#0*34;", '"'),
    ("&apos;|&#0*39;", "'"),
    # other numeric entities: no TF op decodes them generally
    ("&nbsp;|&#0*160;|&#[xX]?[0-9a-fA-F]+;", " "),
    ("&amp;", "&"),  # last, so "&amp;lt;" decodes once, as a browser would
)
_HTML_TAGS = ((r"<!--.*?-->", " "), (r"<[A-Za-z/!][^>]*>", " "))


def strip_html(text):
    """Removes HTML/XML tags, then decodes the common entities.

    Tags are removed before entities are decoded so that escaped markup in
    the text (``&lt;b&gt;``) stays text, as BeautifulSoup's get_text() does.
    Tag passes run only on strings holding ``<``, entity passes only on
    strings holding ``&`` (a third and a seventh of synthetic documents):
    7.1 -> 5.3 us per synthetic document, 5.3 -> 2.8 on Reuters.
    """
    text = _only_where(text, _contains(text, "<"), lambda t: _replace_all(t, _HTML_TAGS))
    return _only_where(text, _contains(text, "&"), lambda t: _replace_all(t, _HTML_ENTITIES))


def lowercase(text):
    """Unicode-aware lowercasing (``ÉCOLE`` -> ``école``).

    The UTF-8 lowercasing goes through ICU (~7 us per document); on ASCII
    text it equals ASCII lowercasing (~0.5 us), so only the documents with
    other characters take the ICU path: 6.2 -> 2.5 us per synthetic
    document, 6.9 -> 2.3 on Reuters.
    """
    tf = _tensorflow()
    lowered = tf.strings.lower(text)
    unicode = tf.logical_not(_is_ascii(text))
    return _only_where(lowered, unicode, lambda t: tf.strings.lower(t, encoding="utf-8"))


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
_WHOLE_WORDS = _CONTRACTIONS[1:6]  # start with \b: RE2 cannot skip ahead to them
_SUFFIXES = _CONTRACTIONS[6:]  # start with a literal: RE2 skips ahead with memchr
# Whether any whole-word contraction occurs. None of their rewrites creates
# another, so where none occurs all five passes leave the text unchanged.
_ANY_WHOLE_WORD = r"(?is).*\b(?:won't|can't|shan't|ain't|let's)\b.*"


def _normalize_apostrophes(text):
    """Every apostrophe-like character becomes ``'``.

    The backtick is the only ASCII one and a literal (a fast pass); the
    three others are looked for only in documents that are not ASCII.
    """
    tf = _tensorflow()
    text = tf.strings.regex_replace(text, "`", "'")
    return _only_where(
        text,
        tf.logical_not(_is_ascii(text)),
        lambda t: tf.strings.regex_replace(t, "[\u2018\u2019\u02bc]", "'"),
    )


def _expand_apostrophes(text):
    """The twelve contraction passes, the five that scan every byte only where needed."""
    tf = _tensorflow()
    whole = tf.strings.regex_full_match(text, _ANY_WHOLE_WORD)
    text = _only_where(text, whole, lambda t: _replace_all(t, _WHOLE_WORDS))
    return _replace_all(text, _SUFFIXES)


def expand_contractions(text):
    r"""Expands English contractions (``don't`` -> ``do not``).

    Every pattern holds ``'``, so only documents holding one (~30% of
    synthetic documents) are rewritten, and among them the five
    whole-word patterns (``\bwon't\b``: RE2 steps through every byte
    for a pattern starting with ``\b``) only where one of them occurs:
    13.0 -> 8.2 us per synthetic document, 13.1 -> 6.6 on Reuters.
    """
    text = _normalize_apostrophes(text)
    return _only_where(text, _contains(text, "'"), _expand_apostrophes)


def drop_tokens_with_digits(text):
    """Removes every whitespace-delimited token that contains a digit."""
    return _replace_all(text, [(r"\S*\p{Nd}\S*", " ")])


def letters_only(text):
    """Replaces every run of non-letters (keeping combining marks) with a space."""
    return _replace_all(text, [(r"[^\p{L}\p{M}\s]+", " ")])


def _drop_tokens_with_digits_then_letters_only(text):
    """`drop_tokens_with_digits` then `letters_only`, in one pass.

    Exact: a token holding a digit can match the first alternative from its
    first character on, which is the leftmost start any match inside it can
    have, and at equal starts RE2 prefers the first alternative, so the
    whole token goes, as the digit pass removes it; tokens without a digit
    only match the second alternative, as in the letters pass. One scan
    less: 8.4 -> 5.8 us per synthetic document, 9.4 -> 8.1 on Reuters.
    """
    return _replace_all(text, [(r"\S*\p{Nd}\S*|[^\p{L}\p{M}\s]+", " ")])


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
    return _remove_stopwords_before_fold(tf.strings.regex_replace(text, r"[\t\n\f\r]", " "))


def _remove_stopwords_before_fold(text):
    r"""`remove_stopwords` when the final whitespace fold comes right after it.

    The stop pattern treats every ``\s`` character alike, so the matches
    are the same with or without turning tabs and newlines into spaces
    first, and the fold then turns each of them, alone or in a run, into
    one space either way: that pass (~3 us per document) is skipped.
    """
    tf = _tensorflow()
    return tf.strings.regex_replace(tf.strings.join([" ", text, " "]), _STOP_PATTERN, " ")


# After `letters_only` a text holds letters, marks and ``\s`` characters
# only, so the final fold has nothing to do but whitespace runs: this pattern
# removes the stop-word runs with the whitespace around them (first
# alternative) and folds the other runs that are not a single space (second
# and third), in one pass instead of two.
_STOP_AND_FOLD_PATTERN = (
    r"(?i)\s+(?:(?:" + "|".join(ENGLISH_STOP_WORDS) + r")\s+)+|\s{2,}|[\t\n\f\r]"
)


def _remove_stopwords_and_fold(text):
    r"""`remove_stopwords` and the final fold, right after `letters_only`.

    Exact: a token (a run of non-``\s``) goes when it is a stop word, as
    before, because a run of stop words is matched from the first
    whitespace character before it to the last one after it; every other
    run of whitespace becomes one space, which is what the fold made of it
    (the text holds no ``\p{Z}`` or ``\p{C}`` character but the ``\s``
    ones). The fold's scan is saved: 18.8 -> 15.9 us per synthetic
    document, 16.9 -> 15.4 on Reuters (stop words and fold together).
    """
    tf = _tensorflow()
    padded = tf.strings.join([" ", text, " "])
    return tf.strings.regex_replace(padded, _STOP_AND_FOLD_PATTERN, " ")


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


def _passes(steps: Sequence[str]) -> tuple[list[Callable], bool]:
    """The functions that apply ``steps`` in order, adjacent steps fused where exact.

    ``drop_tokens_with_digits`` right before ``letters_only`` becomes one
    pass; ``remove_stopwords`` as the last step skips its whitespace pass,
    which the fold after it makes redundant, and right after
    ``letters_only`` it does the fold itself (see each function).

    Returns:
        The passes, and whether the final whitespace fold is still needed.
    """
    passes: list[Callable] = []
    i = 0
    while i < len(steps):
        step, after = steps[i], steps[i + 1 : i + 2]
        if step == "drop_tokens_with_digits" and after == ["letters_only"]:
            passes.append(_drop_tokens_with_digits_then_letters_only)
            i += 2
            continue
        if step == "remove_stopwords" and not after:
            if i > 0 and steps[i - 1] == "letters_only":
                passes.append(_remove_stopwords_and_fold)
                return passes, False
            passes.append(_remove_stopwords_before_fold)
        else:
            passes.append(CLEANING_STEPS[step])
        i += 1
    return passes, True


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
    passes, fold = _passes(list(steps))
    for apply in passes:
        text = apply(text)
    if fold:
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
