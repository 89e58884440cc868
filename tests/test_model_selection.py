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
from trainer import thresholds as th
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
    assert saved["split"] == "validation" and saved["rule"] == "sum_f1"
    assert [c["name"] for c in saved["candidates"]] == ["tfidf_mlp", "cnn"]
    assert all(c["status"] == "trained" for c in saved["candidates"])
    options = saved["options"]
    names = [(o["name"], o["policy"]) for o in options]
    policies = ["global", "bucket", "bucket_per_label"]
    assert names == [
        (option, policy)
        for option in ("tfidf_mlp", "cnn", "ensemble(tfidf_mlp + cnn)")
        for policy in policies
    ]
    for o in options:
        assert o["score"] == pytest.approx(o["micro_f1"] + o["macro_f1"])
    # The rule: within the tolerance of the best, simplest policy, best micro-F1, earliest.
    best = max(o["score"] for o in options)
    close = [
        (policies.index(o["policy"]), -round(o["micro_f1"], 12), i)
        for i, o in enumerate(options)
        if o["score"] >= best - saved["tolerance"] - 1e-12
    ]
    expected = options[min(close)[2]]
    assert (saved["chosen"]["name"], saved["chosen"]["policy"]) == (
        expected["name"],
        expected["policy"],
    )
    thresholds = json.load(open(os.path.join(cfg.model_dir, "thresholds.json")))
    assert thresholds["split"] == "validation"
    assert thresholds["policy"] == saved["chosen"]["policy"]
    assert "<-" in saved["table"]


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


def test_the_winner_is_refit_on_train_and_validation_and_that_is_what_is_served(auto_run, tmp_path):
    import dataclasses

    from doctags_core.data_files import read_metadata
    from trainer.export import export_model

    _, cfg = auto_run
    saved = json.load(open(os.path.join(cfg.model_dir, "selection.json")))
    chosen = [m["name"] for m in saved["chosen"]["members"]]
    assert [r["name"] for r in saved["refit"]["members"]] == chosen
    documents = read_metadata(cfg.data_dir)["documents"]
    steps_per_epoch = -(-(documents["train"] + documents["validation"]) // cfg.training.batch_size)
    for member in saved["chosen"]["members"]:
        assert member["model_dir"] == os.path.join(cfg.model_dir, "refit", member["name"])
        rcfg = load_config(os.path.join(member["model_dir"], "config.yaml"), check_inputs=False)
        assert rcfg.training.train_splits == ("train", "validation")
        assert rcfg.training.early_stopping is False
        candidate_dir = os.path.join(cfg.model_dir, "candidates", member["name"])
        candidate = json.load(open(os.path.join(candidate_dir, "training_summary.json")))
        refit = json.load(open(os.path.join(member["model_dir"], "training_summary.json")))
        assert refit["epochs_run"] == candidate["best_epoch"] + 1 == rcfg.training.epochs
        # It read every train AND validation record in each epoch.
        assert refit["steps_this_process"] == refit["epochs_run"] * steps_per_epoch
    # The export serves the refit members' weighted scores, not the candidates'.
    other = dataclasses.replace(
        cfg, export=dataclasses.replace(cfg.export, base_dir=str(tmp_path), version=7)
    )
    tagger = Tagger(export_model(other))
    served = tagger.raw(TEXTS)["scores"]
    cleaned = tagger.tokenize(TEXTS)["cleaned"]
    expected = {}
    for kind in ("refit", "candidates"):
        expected[kind] = 0
        for member in saved["chosen"]["members"]:
            mdir = os.path.join(cfg.model_dir, kind, member["name"])
            mcfg = load_config(os.path.join(mdir, "config.yaml"), check_inputs=False)
            model = keras.models.load_model(os.path.join(mdir, "model.keras"))
            vectorizer = data_lib.make_model_vectorizer(mcfg)
            scores = model(vectorizer(cleaned), training=False).numpy()
            expected[kind] = expected[kind] + member["weight"] * scores
    np.testing.assert_allclose(served, expected["refit"], rtol=1e-5, atol=1e-6)
    assert np.abs(served - expected["candidates"]).max() > 1e-4


def test_without_refit_the_candidates_themselves_are_served(preprocessed):
    config = _config(preprocessed, "norefit", selection={"refit": False})
    assert main(["train", "--config", config]) == 0
    cfg = load_config(config)
    saved = json.load(open(os.path.join(cfg.model_dir, "selection.json")))
    assert saved["refit"]["members"] == []
    for member in saved["chosen"]["members"]:
        assert member["model_dir"] == os.path.join(cfg.model_dir, "candidates", member["name"])
    assert not os.path.exists(os.path.join(cfg.model_dir, "refit"))


def test_without_early_stopping_no_epoch_stops_training_and_each_counts_as_best():
    from trainer.early_stopping import EarlyStopping

    on, off = EarlyStopping("val_loss", 0), EarlyStopping("val_loss", 0, enabled=False)
    worse = {"epoch": 1, "current": 0.9, "best": 0.1, "wait": 0}
    assert on.decide(**worse).stop and not on.decide(**worse).improved
    assert off.decide(**worse) == type(off.decide(**worse))(improved=True, wait=0, stop=False)


def test_without_early_stopping_every_epoch_runs_and_the_last_weights_are_kept(preprocessed):
    training = {"epochs": 3, "early_stopping": False, "early_stopping_patience": 0}
    config = _config(preprocessed, "no-early-stop", model={"family": "dnn"}, training=training)
    assert main(["train", "--config", config]) == 0
    cfg = load_config(config)
    summary = json.load(open(os.path.join(cfg.model_dir, "training_summary.json")))
    assert (summary["epochs_run"], summary["best_epoch"], summary["stopped_early"]) == (3, 2, False)


def test_a_finished_candidate_is_reused_when_training_again(auto_run, capsys):
    config, cfg = auto_run
    assert main(["train", "--config", config]) == 0
    saved = json.load(open(os.path.join(cfg.model_dir, "selection.json")))
    assert [c["status"] for c in saved["candidates"]] == ["reused", "reused"]
    assert {r["status"] for r in saved["refit"]["members"]} == {"reused"}
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


@pytest.mark.parametrize("policy", ["global", "bucket", "bucket_per_label", "per_label"])
def test_cross_fitting_never_judges_thresholds_on_their_own_documents(policy):
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < 0.2).astype(np.int32)
    scores = np.clip(y * 0.6 + rng.random((200, 5)) * 0.5, 0, 1).astype(np.float32)
    counts = np.array([400, 100, 30, 5, 1])
    cfg = Config()
    folds = fold_of(200, 2, 7)
    assert sorted(np.bincount(folds)) == [100, 100]
    pred = cross_fitted_decisions(policy, y, scores, cfg, counts, 2, 7)
    assert pred.shape == y.shape and 0 < pred.sum() < pred.size
    # Changing the labels of fold 0 cannot change fold 0's decisions (only fold 1's).
    y2 = y.copy()
    y2[folds == 0] = 1 - y2[folds == 0]
    pred2 = cross_fitted_decisions(policy, y2, scores, cfg, counts, 2, 7)
    np.testing.assert_array_equal(pred[folds == 0], pred2[folds == 0])
    assert not np.array_equal(pred[folds == 1], pred2[folds == 1])


def test_frequency_buckets_and_their_thresholds():
    assert th.frequency_buckets([0, 1, 2, 3, 6, 7, 1022, 1023, 10**6]).tolist() == [
        1,
        1,
        1,
        2,
        2,
        3,
        9,
        10,
        10,
    ]
    grid = np.array([0.2, 0.5, 0.8])
    # Label A is best at 0.2 alone, label B at 0.8; pooled in one bucket, 0.2 wins.
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0]])
    s = np.array([[0.3, 0.6], [0.6, 0.1], [0.1, 0.9], [0.1, 0.85], [0.1, 0.3]])
    tp, fp, pos = th.grid_counts(y, s, grid)
    assert tp.tolist() == [[2, 2], [1, 2], [0, 2]] and fp.tolist() == [[0, 2], [0, 1], [0, 0]]
    pooled = th.bucket_thresholds(tp, fp, pos, grid, np.array([3, 3]), fallback=0.5)
    assert pooled.tolist() == [0.2, 0.2]
    alone = th.bucket_thresholds(tp, fp, pos, grid, np.array([3, 4]), fallback=0.5)
    assert alone.tolist() == [0.2, 0.8]
    # Shrunk per-label: (n * t_label + 10 * t_bucket) / (n + 10), n validation positives.
    tuned = th.per_label_from(tp, fp, pos, grid, np.array([0.5, 0.5]), 2, th.SHRINK)
    assert tuned == pytest.approx([(2 * 0.2 + 5) / 12, (2 * 0.8 + 5) / 12])
    assert th.per_label_from(tp, fp, pos, grid, np.array([0.5, 0.5]), 3, th.SHRINK).tolist() == [
        0.5,
        0.5,
    ]  # too few positives: the base threshold stays


def test_choose_takes_the_simplest_policy_then_the_best_micro_f1_within_the_tolerance():
    def option(name, policy, score, micro=None):
        micro = score / 2 if micro is None else micro
        return selection.Option(((name, 1.0),), policy, micro, score - micro, score)

    mlp_global = option("tfidf_mlp", "global", 1.000)
    mlp_bucket = option("tfidf_mlp", "bucket", 1.020)
    cnn_bucket = option("cnn", "bucket", 1.025)
    cnn_bkpl = option("cnn", "bucket_per_label", 1.030)
    options = [mlp_global, mlp_bucket, cnn_bucket, cnn_bkpl]
    assert selection.choose(options, 0.0) is cnn_bkpl  # no tolerance: the best
    assert selection.choose(options, 0.01) is cnn_bucket  # simpler policy, better micro-F1
    assert selection.choose(options, 0.05) is mlp_global  # the simplest policy first
    same_micro = [option(o.members[0][0], o.policy, o.score, 0.5) for o in options]
    assert selection.choose(same_micro, 0.01) is same_micro[1]  # equal micro: cheaper member
    # Validation tables of the 2026-12-02 bench runs (cross-fitted micro, macro).
    ens = "ensemble(tfidf_mlp + cnn)"

    def table(rows):
        return [option(name, policy, micro + macro, micro) for name, policy, micro, macro in rows]

    reuters = table(
        [
            ("tfidf_mlp", "bucket", 0.8633, 0.4280),
            ("tfidf_mlp", "bucket_per_label", 0.8660, 0.4280),
            ("cnn", "global", 0.8707, 0.3952),
            (ens, "global", 0.8738, 0.3891),
            (ens, "bucket", 0.8735, 0.4181),
            (ens, "bucket_per_label", 0.8729, 0.4200),
        ]
    )
    assert selection.choose(reuters, 0.01) is reuters[4]  # not tfidf_mlp alone
    debtags = table(
        [
            ("tfidf_mlp", "bucket_per_label", 0.5826, 0.2458),
            (ens, "global", 0.6208, 0.1890),
            (ens, "bucket", 0.6129, 0.2287),
            (ens, "bucket_per_label", 0.6163, 0.2322),
        ]
    )
    assert selection.choose(debtags, 0.01) is debtags[2]  # not the per-label thresholds


@pytest.mark.parametrize(
    "sections,key",
    [
        ({"selection": {"candidates": ["svm"]}}, "selection.candidates[0]"),
        ({"selection": {"folds": 1}}, "selection.folds"),
        ({"selection": {"threshold_policies": ["magic"]}}, "selection.threshold_policies[0]"),
        ({"selection": {"tolerance": -1}}, "selection.tolerance"),
        ({"training": {"budget_minutes": 0}}, "training.budget_minutes"),
        ({"training": {"train_splits": ["validation"]}}, "training.train_splits"),
        ({"training": {"train_splits": ["train", "test"]}}, "training.train_splits"),
    ],
)
def test_selection_settings_are_validated(tmp_path, reuters_slice, sections, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(small_config(tmp_path, reuters_slice, **sections))


@pytest.mark.parametrize(
    "name, loss",
    [
        ("tfidf_mlp", "bce"),
        ("tfidf_mlp_weighted_bce", "weighted_bce"),
        ("tfidf_mlp_focal", "focal"),
    ],
)
def test_loss_variants_are_candidates_validation_can_choose(preprocessed, name, loss):
    cfg = load_config(_config(preprocessed, f"loss-{name}"))
    assert cfg.selection.candidates == ("tfidf_mlp", "cnn")  # the measured default
    candidate = selection.candidate_config(cfg, name)
    assert (candidate.model.family, candidate.loss.name) == ("tfidf_mlp", loss)
    assert candidate.model_dir.endswith(os.path.join("candidates", name))
    listed = _config(preprocessed, f"listed-{name}", selection={"candidates": [name, "cnn"]})
    assert load_config(listed).selection.candidates == (name, "cnn")
