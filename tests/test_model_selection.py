"""model.family: auto: candidates, cross-fitted choice on validation, budget, one export."""

import json
import os
import shutil

import keras
import numpy as np
import pytest

from doctags.cli import main
from doctags_core.config import Config, ConfigError, load_config
from doctags_core.tagger import Tagger
from serving.loader_check import check_export
from tests.conftest import small_config
from trainer import data as data_lib
from trainer import selection
from trainer.thresholds import cross_fitted_decisions, fold_of

AUTO = {"family": "auto"}
FAST = {"epochs": 1}
TEXTS = [
    "Crude oil prices rose sharply",
    "Net profit 5 mln dlrs vs 3 mln",
    "Wheat exports fell",
    "",
]


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory, reuters_slice):
    tmp = tmp_path_factory.mktemp("auto")
    config = small_config(tmp, reuters_slice, model=AUTO, training=FAST)
    assert main(["preprocess", "--config", config]) == 0
    return tmp, reuters_slice, load_config(config).data_dir


def _config(preprocessed, name, **sections):
    tmp, corpus, data_dir = preprocessed
    (tmp / name / "run").mkdir(parents=True)
    os.symlink(data_dir, tmp / name / "run" / "data")
    sections.setdefault("model", AUTO)
    sections.setdefault("training", FAST)
    return small_config(tmp / name, corpus, **sections)


@pytest.fixture(scope="module")
def auto_run(preprocessed):
    """One auto run with the test split moved away while it trains."""
    config = _config(preprocessed, "run1")
    cfg = load_config(config)
    test_dir = os.path.join(cfg.data_dir, "test")
    hidden = test_dir + ".hidden"
    shutil.move(test_dir, hidden)  # nothing is chosen on test: it is not even there
    try:
        assert main(["train", "--config", config]) == 0
    finally:
        shutil.move(hidden, test_dir)
    return config, cfg


def test_auto_trains_every_candidate_and_chooses_by_the_rule_on_validation(auto_run):
    _, cfg = auto_run
    chosen_file = os.path.join(cfg.model_dir, "selection.json")
    saved = json.load(open(chosen_file))
    assert saved["split"] == "validation" and saved["rule"] == "mean_f1"
    assert [c["name"] for c in saved["candidates"]] == ["tfidf_mlp", "cnn"]
    assert all(c["status"] == "trained" for c in saved["candidates"])
    names = {(o["name"], o["policy"]) for o in saved["options"]}
    for option in ("tfidf_mlp", "cnn", "ensemble(tfidf_mlp + cnn)"):
        assert {(option, "global"), (option, "per_label")} <= names
    for o in saved["options"]:
        assert o["score"] == pytest.approx((o["micro_f1"] + o["macro_f1"]) / 2)
    best = max(o["score"] for o in saved["options"])
    chosen = [o for o in saved["options"] if o["name"] == saved["chosen"]["name"]]
    assert any(o["policy"] == saved["chosen"]["policy"] and o["score"] == best for o in chosen)
    thresholds = json.load(open(os.path.join(cfg.model_dir, "thresholds.json")))
    assert thresholds["split"] == "validation"
    assert thresholds["policy"] == saved["chosen"]["policy"]
    assert "chosen" in saved["table"] or "<-" in saved["table"]


def test_the_choice_exports_as_one_model_that_tf_serving_loads(auto_run):
    config, cfg = auto_run
    assert main(["export", "--config", config]) == 0
    result = check_export(cfg.export_dir)
    assert result["max_abs_diff"] <= 1e-6 and result["warmup_replayed"] == 3
    meta = json.load(open(os.path.join(cfg.export_dir, "assets.extra", "model_metadata.json")))
    saved = json.load(open(os.path.join(cfg.model_dir, "selection.json")))
    assert [m["name"] for m in meta["members"]] == [m["name"] for m in saved["chosen"]["members"]]


def test_an_ensemble_export_serves_the_weighted_sum_of_its_members(auto_run, tmp_path):
    import dataclasses

    config, cfg = auto_run
    path = os.path.join(cfg.model_dir, "selection.json")
    saved = json.load(open(path))
    original = json.dumps(saved)
    members = [
        {"name": name, "weight": w, "model_dir": os.path.join(cfg.model_dir, "candidates", name)}
        for name, w in (("tfidf_mlp", 0.25), ("cnn", 0.75))
    ]
    saved["chosen"] = {"name": "ensemble", "policy": "global", "members": members}
    with open(path, "w") as f:
        json.dump(saved, f)
    try:
        other = dataclasses.replace(
            cfg, export=dataclasses.replace(cfg.export, base_dir=str(tmp_path), version=3)
        )
        from trainer.export import export_model

        export_dir = export_model(other)
    finally:
        with open(path, "w") as f:
            f.write(original)
    assert check_export(export_dir)["max_abs_diff"] <= 1e-6
    tagger = Tagger(export_dir)
    served = tagger.raw(TEXTS)["scores"]
    cleaned = tagger.tokenize(TEXTS)["cleaned"]
    expected = 0
    for member in members:
        mcfg = load_config(os.path.join(member["model_dir"], "config.yaml"), check_inputs=False)
        model = keras.models.load_model(os.path.join(member["model_dir"], "model.keras"))
        vectorizer = data_lib.make_model_vectorizer(mcfg)
        expected = expected + member["weight"] * model(vectorizer(cleaned), training=False).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)


def test_a_finished_candidate_is_reused_when_training_again(auto_run, capsys):
    config, cfg = auto_run
    assert main(["train", "--config", config]) == 0
    saved = json.load(open(os.path.join(cfg.model_dir, "selection.json")))
    assert [c["status"] for c in saved["candidates"]] == ["reused", "reused"]
    assert "model selection on the validation split" in capsys.readouterr().out


def test_the_budget_stops_a_candidate_and_skips_the_rest(preprocessed):
    config = _config(preprocessed, "budget", training={"epochs": 3, "budget_minutes": 0.0001})
    assert main(["train", "--config", config]) == 0
    cfg = load_config(config)
    saved = json.load(open(os.path.join(cfg.model_dir, "selection.json")))
    statuses = [c["status"] for c in saved["candidates"]]
    assert statuses == ["stopped by budget", "skipped (budget)"]
    assert saved["candidates"][0]["epochs"] == 1  # the first candidate trains one epoch
    assert saved["chosen"]["name"] == "tfidf_mlp"


def test_cross_fitting_never_judges_thresholds_on_their_own_documents():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < 0.2).astype(np.int32)
    scores = np.clip(y * 0.6 + rng.random((200, 5)) * 0.5, 0, 1).astype(np.float32)
    cfg = Config()
    folds = fold_of(200, 2, cfg.training.seed)
    assert sorted(np.bincount(folds)) == [100, 100]
    pred = cross_fitted_decisions("per_label", y, scores, cfg, 2)
    assert pred.shape == y.shape and 0 < pred.sum() < pred.size
    # Changing the labels of fold 0 cannot change fold 0's decisions (only fold 1's).
    y2 = y.copy()
    y2[folds == 0] = 1 - y2[folds == 0]
    pred2 = cross_fitted_decisions("per_label", y2, scores, cfg, 2)
    np.testing.assert_array_equal(pred[folds == 0] == pred2[folds == 0], True)
    assert not np.array_equal(pred[folds == 1], pred2[folds == 1])


def test_choose_prefers_the_earlier_option_on_ties():
    a = selection.Option((("tfidf_mlp", 1.0),), "global", 0.5, 0.3, 0.4)
    b = selection.Option((("cnn", 1.0),), "global", 0.3, 0.5, 0.4)
    c = selection.Option((("cnn", 1.0),), "per_label", 0.3, 0.4, 0.35)
    assert selection.choose([a, b, c]) is a
    assert selection.choose([c, b, a]) is b


@pytest.mark.parametrize(
    "sections,key",
    [
        ({"selection": {"candidates": ["svm"]}}, "selection.candidates[0]"),
        ({"selection": {"folds": 1}}, "selection.folds"),
        ({"selection": {"threshold_policies": ["magic"]}}, "selection.threshold_policies[0]"),
        ({"training": {"budget_minutes": 0}}, "training.budget_minutes"),
    ],
)
def test_selection_settings_are_validated(tmp_path, reuters_slice, sections, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(small_config(tmp_path, reuters_slice, **sections))
