import pytest
import tensorflow as tf

from doctags_core.cleaning import CLEANING_STEPS, clean_text, make_batch_cleaner
from tests.conftest import reuters_records

ALL = list(CLEANING_STEPS)


def clean(text, steps=ALL):
    return clean_text(tf.constant([text]), steps).numpy()[0].decode("utf-8")


@pytest.mark.parametrize(
    "step,text,expected",
    [
        ("remove_urls", "see https://x.org/a?b=1 and www.y.com now", "see and now"),
        ("strip_html", "<p class='x'>Hi</p> &amp; &lt;b&gt; A&#39;s", "Hi & <b> A's"),
        ("lowercase", "ÉCOLE Straße ΑΒΓ", "école straße αβγ"),
        (
            "expand_contractions",
            "don't won't I'm we're it's can\u2019t",
            "do not will not I am we are it can not",
        ),
        ("drop_tokens_with_digits", "in 1987 the 3rd of 155,221 bags", "in the of bags"),
        ("letters_only", "u.s. oil-prices, 5% naïve!", "u s oil prices naïve"),
        ("remove_stopwords", "the cat and the a an dog of", "cat dog"),
    ],
)
def test_each_step(step, text, expected):
    assert clean(text, [step]) == expected


def test_all_steps_together_and_bad_utf8():
    text = "BAHIA <b>Cocoa</b> review: it's 155,221 bags at http://x.com\x03 \u00a0NAÏVE"
    assert clean(text) == "bahia cocoa review bags naïve"
    raw = tf.constant([b"ok \xff\xfe bytes"])
    assert clean_text(raw, ALL).numpy()[0] == b"ok bytes"


def test_empty_and_whitespace_only():
    assert clean("") == ""
    assert clean(" \t\n ") == ""


def test_eager_dataset_map_and_traced_agree_on_real_documents():
    texts = [r["text"] for r in reuters_records(200, 100)]
    eager = clean_text(tf.constant(texts), ALL).numpy().tolist()
    mapped = [
        x
        for batch in tf.data.Dataset.from_tensor_slices(texts)
        .batch(64)
        .map(lambda t: clean_text(t, ALL))
        for x in batch.numpy().tolist()
    ]
    values, splits = make_batch_cleaner(ALL)(tf.constant(texts))
    values, splits = values.numpy().tolist(), splits.numpy().tolist()
    traced = [b" ".join(values[splits[i] : splits[i + 1]]) for i in range(len(texts))]
    assert eager == mapped == traced
    assert sum(1 for x in eager if x) == len(texts)  # real documents keep some text


def test_unknown_step_is_rejected():
    with pytest.raises(ValueError, match="unknown cleaning step"):
        clean_text(tf.constant(["x"]), ["stem"])
