"""The optimised cleaning gives exactly the output of the frozen reference.

`doctags_core.cleaning` gates its passes on cheap presence tests, merges
entity passes and fuses adjacent steps; `tests/reference_cleaning.py` is the
implementation before that work. Both must agree byte for byte on every
document of the bundled Reuters corpus, on synthetic documents, on
adversarial strings and on random mixtures of them, in the default step
order and in others (where other fusions apply or none does).
"""

import random

import pytest
import tensorflow as tf

import tests.reference_cleaning as reference
from doctags_core import cleaning, synth
from tests.conftest import reuters_records

DEFAULT = list(cleaning.DEFAULT_STEPS)
assert DEFAULT == list(reference.DEFAULT_STEPS)

ADVERSARIAL = [
    # entities: grouped passes, order, lone and unterminated ampersands
    "&lt;b&gt; &amp;lt; &amp;amp; &quot;q&quot; &apos;a&apos;",
    "&#34; &#034; &#0034; &#x22; &#X22; &#39; &#0039; &#x27; &#160; &#xA0; &nbsp;x",
    "&#12345678; &#xFFFFFFFFF; &#; &#x; &#xg; &lt &gt; &&lt;; a&b & ; &;",
    "AT&T; R&D &amp;amp;lt; &LT; &Amp; &#-1; &#x-1;",
    # tags: nested, unterminated, comments, lone brackets
    "<b><i>x</i></b> <a href='<b>'>y</a> <!-- c <b> -->z <!---->w",
    '<a title="<!--">x --> <!-- unterminated <p',
    "<<b>> < b> <3 a<b x>y </ <!DOCTYPE html> <?xml?> <1a>",
    "<p>Hello</p>\n<br/>World<BR>&nbsp;<script>var a = 1 < 2;</script>",
    # URLs at the edges of strings and tokens
    "http://x.com",
    "see www.x.com",
    "HTTPS://A.B/c?d=1 and FTP://f.g",
    "WWW.X wWw.y.z www. http:// :// x://y",
    "(http://x.com/a) <http://y.org>, &lt;www.z.net&gt;",
    "httpſ://x.org ſtop",
    # contractions, curly and modifier apostrophes, word boundaries
    "don’t WON'T swon't can`t Let's LET’S ʼre it's 's n't ain't shan't",
    "I'd've you'll they're we've I'm she's o'clock rock'n'roll '' ' `",
    "can't_x won't2 2won't _can't ain't. (shan't)",
    # digits, including non-ASCII decimal digits
    "abc1 １２３ ٣ a.1.b x\u00a01 1st 3.5% $4.2 2,500 Q3 ½ ² Ⅻ",
    # non-ASCII letters and case: ICU vs RE2 folding
    "ÉCOLE Straße İstanbul ΑΒΓ Σσς thiſ THE Kelvin K and ǅ ﬁ ǈ",
    "e\u0301cole cafe\u0301 na\u0308ive \u0345 Å",
    # whitespace of every kind, control characters
    "the\u00a0cat\u2028a\u2029the\u3000dog\u200bof\u0085x\x1cy\x7fz",
    "\t\v\f\r\n the \t a \v an \f of \r to \n",
    "a\ta\na the\tthe\nthe THE The tHe",
    "the,the.the (the) cat; a-the b/the",
    "",
    " ",
    "\n",
    "\u00a0",
    "!!!",
    "123",
]


def _pieces() -> list[str]:
    """Fragments the random mixtures are made of."""
    words = ["the", "The", "cat", "oil", "naïve", "ÉTÉ", "of", "A", "prices", "won"]
    separators = [" ", "  ", "\n", "\t", "\u00a0", "\u2028", "", ".", ",", "-", "/"]
    noise = [
        "&amp;",
        "&lt;",
        "&gt;",
        "&#39;",
        "&#x41;",
        "&",
        ";",
        "#",
        "<",
        ">",
        "<b>",
        "</b>",
        "<!--",
        "-->",
        "http://",
        "www.",
        "://",
        "'",
        "’",
        "`",
        "n't",
        "'s",
        "won't",
        "can't",
        "let's",
        "1",
        "٣",
        "ſ",
        "K",
        "\x01",
    ]
    return words + separators + noise


def _random_strings(n: int, seed: int = 14) -> list[str]:
    rng = random.Random(seed)
    pieces = _pieces()
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def _synthetic_texts(n: int) -> list[str]:
    spec = synth.SynthSpec(documents=n, documents_per_shard=n, seed=5)
    return [d["title"] + "\n" + d["text"] for d in synth.generate_shard(spec, 0)]


def _cleaners(steps, assume_valid_utf8=True):
    spec = [tf.TensorSpec([None], tf.string)]
    steps = tuple(steps)

    @tf.function(input_signature=spec, autograph=False)
    def new(text):
        return cleaning.clean_text(text, steps, assume_valid_utf8)

    @tf.function(input_signature=spec, autograph=False)
    def old(text):
        return reference.clean_text(text, steps, assume_valid_utf8)

    return new, old


def _differences(texts, steps, assume_valid_utf8=True, batch=512):
    new, old = _cleaners(steps, assume_valid_utf8)
    different = []
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        ours, theirs = new(tf.constant(chunk)).numpy(), old(tf.constant(chunk)).numpy()
        different += [(t, a, b) for t, a, b in zip(chunk, ours, theirs) if a != b]
    return different


def test_every_reuters_document_cleans_as_before():
    texts = [r["text"] for r in reuters_records()]
    assert len(texts) == 10789
    assert _differences(texts, DEFAULT) == []


def test_synthetic_documents_clean_as_before():
    texts = _synthetic_texts(3000)
    # the noise the gates look for is there, and not everywhere
    for literal in ("&", "<", "://", "'", "1"):
        assert 0.01 < sum(literal in t for t in texts) / len(texts) < 0.9, literal
    assert _differences(texts, DEFAULT) == []


@pytest.mark.parametrize("assume_valid_utf8", [True, False])
def test_adversarial_and_random_strings_clean_as_before(assume_valid_utf8):
    texts = ADVERSARIAL + _random_strings(3000)
    assert _differences(texts, DEFAULT, assume_valid_utf8) == []


def test_invalid_utf8_cleans_as_before_in_the_exported_model_path():
    raw = [b"ok \xff\xfe bytes", b"\xc3 lone lead", b"&amp;\xe2\x80 <b>cut", b"THE \xed\xa0\x80 x"]
    new, old = _cleaners(DEFAULT, assume_valid_utf8=False)
    assert new(tf.constant(raw)).numpy().tolist() == old(tf.constant(raw)).numpy().tolist()


@pytest.mark.parametrize(
    "steps",
    [
        list(reversed(DEFAULT)),  # stop words first: no fusion applies
        ["drop_tokens_with_digits", "letters_only"],  # fused, stop words absent
        ["letters_only", "drop_tokens_with_digits", "remove_stopwords"],  # not adjacent in order
        ["remove_stopwords", "strip_html", "lowercase"],  # whitespace kinds matter later
        ["lowercase", "remove_stopwords", "expand_contractions", "remove_urls"],
        ["strip_html", "drop_tokens_with_digits", "letters_only", "remove_stopwords"],
        ["lowercase", "letters_only", "remove_stopwords"],  # stop words fold, no digit pass
    ],
)
def test_other_step_orders_clean_as_before(steps):
    texts = ADVERSARIAL + _random_strings(1500, seed=len(steps)) + _synthetic_texts(300)
    assert _differences(texts, steps) == []


@pytest.mark.parametrize("step", DEFAULT)
def test_each_step_alone_matches_the_reference_step(step):
    """The registry's functions themselves (used one by one) are unchanged too."""
    texts = ADVERSARIAL + _random_strings(1000, seed=7)
    spec = [tf.TensorSpec([None], tf.string)]
    new = tf.function(cleaning.CLEANING_STEPS[step], input_signature=spec, autograph=False)
    old = tf.function(reference.CLEANING_STEPS[step], input_signature=spec, autograph=False)
    batch = tf.constant(texts)
    assert new(batch).numpy().tolist() == old(batch).numpy().tolist()
