"""The candidates of ``model.family: auto``: named config changes, cheapest first.

Each candidate is a family with the settings it trains best with, as a set
of dotted config overrides (the ``--set`` form) applied on top of the
experiment's config. Config validation reads the names from here, and
`trainer.selection` trains them in ``selection.candidates`` order within
``training.budget_minutes``, then chooses on the validation split among
them, their ensemble and the threshold policies.
"""

from __future__ import annotations

CANDIDATES: dict[str, dict[str, object]] = {
    # Bag of words over TF-IDF with IDF from the Beam counts: strong on short
    # texts and many labels, and the cheapest to train.
    "tfidf_mlp": {"model.family": "tfidf_mlp", "model.hidden_units": 512},
    # The Kim CNN over word ids: strong where word order and longer texts help.
    "cnn": {"model.family": "cnn"},
}
