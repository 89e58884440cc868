"""Optional subword tokenization: WordPiece learned from the Beam word counts.

The Beam job already counted every word of the train split; tensorflow-text's
WordPiece learner turns those counts into a subword vocabulary without another
pass over the corpus. The same `WordpieceSplitter` splits words into pieces in
the tf.data pipeline and inside the exported graph (WordpieceTokenizeWithOffsets
is a tensorflow-text op that TF Serving links), so there is no skew.
"""

from __future__ import annotations

import tensorflow as tf

UNKNOWN = "[UNK]"


def learn_vocabulary(word_counts: list[tuple[str, int]], size: int) -> list[str]:
    """A WordPiece vocabulary of at most ``size`` pieces (``##`` marks continuations).

    The reserved padding ("") and OOV entries are TextVectorization's, so the
    learner reserves only ``[UNK]``, which the tokenizer emits for words it
    cannot split; it is then dropped (TextVectorization maps it to OOV).
    """
    from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

    vocab = learner.learn(
        word_counts,
        vocab_size=size,
        reserved_tokens=[UNKNOWN],
        lower_thresh=2,
        max_input_tokens=-1,
    )
    return [piece for piece in vocab if piece not in (UNKNOWN, "")]


class WordpieceSplitter(tf.Module):
    """Splits whitespace-separated words into WordPiece strings, batch-wise.

    A tf.Module so that its lookup table is tracked and saved with the model.
    """

    def __init__(self, vocabulary: list[str]):
        super().__init__(name="wordpiece")
        import tensorflow_text as tf_text

        table = tf.lookup.StaticVocabularyTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(vocabulary + [UNKNOWN]),
                tf.range(len(vocabulary) + 1, dtype=tf.int64),
            ),
            num_oov_buckets=1,
        )
        self.tokenizer = tf_text.WordpieceTokenizer(
            table, token_out_type=tf.string, unknown_token=UNKNOWN
        )

    def __call__(self, text):
        words = tf.strings.split(text)
        return self.tokenizer.tokenize(words).merge_dims(-2, -1)
