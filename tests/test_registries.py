"""Each registry is the one source its users read: families and cleaning steps."""

from doctags_core import cleaning, config, families
from trainer import models


def test_every_family_has_one_builder_and_every_builder_a_family():
    assert set(models.BUILDERS) == set(families.FAMILIES)
    assert config.MODEL_FAMILIES == tuple(families.FAMILIES)
    for name, family in families.FAMILIES.items():
        assert family.name == name
        assert family.input_kind in ("ids", "tf_idf")
        assert family.description


def test_the_default_cleaning_is_the_registry_in_order():
    assert config.CleaningConfig().steps == cleaning.DEFAULT_STEPS == tuple(cleaning.CLEANING_STEPS)


def test_config_validation_reads_the_registries(tmp_path):
    import pytest

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("")
    base = {"data": {"input_pattern": str(corpus)}}
    with pytest.raises(config.ConfigError, match="model.family: must be one of"):
        config.config_from_dict({**base, "model": {"family": "svm"}})
    with pytest.raises(config.ConfigError, match=r"cleaning.steps\[0\]: unknown step"):
        config.config_from_dict({**base, "cleaning": {"steps": ["stem"]}})
