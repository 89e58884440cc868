"""The config reference (`doctags config --explain`, docs/config.md) and the README's promises."""

import dataclasses
import glob
import os
import re

import pytest
import yaml

from doctags.cli import main
from doctags_core import config_reference as ref
from doctags_core.config import Config, config_to_dict, load_config
from tests.conftest import REPO


def _leaves(mapping, prefix=""):
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_config_key_has_a_doc():
    assert ref.missing_docs() == []


def test_the_reference_covers_every_key_with_its_real_default():
    entries = {e.key: e for e in ref.reference() if not e.is_section}
    defaults = config_to_dict(Config())
    assert set(entries) == set(_leaves(defaults))
    for key, entry in entries.items():
        value = defaults
        for part in key.split("."):
            value = value[part]
        assert yaml.safe_load(entry.default) == value, key


def test_a_field_without_a_doc_is_reported():
    @dataclasses.dataclass(frozen=True)
    class Inner:
        """Inner settings.

        Attributes:
            documented: Has a doc
                over two lines.
        """

        documented: int = 1
        forgotten: str = "x"

    @dataclasses.dataclass(frozen=True)
    class Root:
        """Root.

        Attributes:
            inner: The inner section.

        Raises:
            ValueError: not an attribute.
        """

        inner: Inner = dataclasses.field(default_factory=Inner)
        also_forgotten: bool = False

    assert ref.missing_docs(Root) == ["inner.forgotten", "also_forgotten"]
    assert ref.attribute_docs(Inner) == {"documented": "Has a doc over two lines."}
    assert "ValueError" not in ref.attribute_docs(Root)


def test_the_committed_docs_page_is_the_generated_one():
    with open(os.path.join(REPO, ref.DOCS_PAGE), encoding="utf-8") as f:
        committed = f.read()
    assert committed == ref.markdown(), (
        "docs/config.md is stale: run `doctags config --explain --markdown > docs/config.md`"
    )
    assert "| `data.label_delimiter` | string | `','` |" in committed


def test_explain_prints_one_key_a_section_or_suggests(capsys):
    assert main(["config", "--explain", "data.id_field"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("  data.id_field  (string or null, default id)")
    assert "SHA-1 of the text" in out
    assert main(["config", "--explain", "export"]) == 0
    out = capsys.readouterr().out
    assert "export.version" in out and "--overwrite" in out and "data." not in out
    assert main(["config", "--explain", "data.label_delimitr"]) == 2
    assert "did you mean data.label_delimiter" in capsys.readouterr().err
    assert main(["config", "--explain"]) == 0
    everything = capsys.readouterr().out
    assert all(f"  {e.key}  (" in everything for e in ref.reference() if not e.is_section)


# --- the README ---------------------------------------------------------------------
_PATH = re.compile(r"(?<![\w./-])((?:configs|bench|k8s|docs)/[\w./*-]*[\w/*])")


def readme_paths(text: str) -> set[str]:
    """Repository paths a README names: a file with an extension, a glob or a folder/."""
    return {p for p in _PATH.findall(text) if p.endswith("/") or re.search(r"\.\w+$", p)}


@pytest.mark.parametrize("doc", ["README.md", "DEVELOPERS.md", "k8s/README.md", "docs/config.md"])
def test_every_path_the_docs_name_exists(doc):
    with open(os.path.join(REPO, doc), encoding="utf-8") as f:
        paths = readme_paths(f.read())
    if doc == "README.md":
        assert {"configs/reuters.yaml", "configs/big.yaml", "bench/quality.py"} <= paths
    missing = [p for p in sorted(paths) if not glob.glob(os.path.join(REPO, p))]
    assert missing == []


def test_the_path_finder_sees_a_missing_config():
    found = readme_paths("run `doctags preprocess --config configs/huge.yaml` (docs/s: 3)")
    assert found == {"configs/huge.yaml"}
    assert not glob.glob(os.path.join(REPO, "configs/huge.yaml"))


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(REPO, "configs"))))
def test_every_bundled_config_loads(name):
    cfg = load_config(os.path.join(REPO, "configs", name), check_inputs=False)
    assert cfg.data.input_pattern


def test_readme_documents_the_data_keys_people_asked_about():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for said in (
        "label_field",
        "label_delimiter",
        "id_field: null",
        "test_fraction",
        "allow_unlabeled",
        "`val`",
        "`dev`",
        "doctags init",
        "docs/config.md",
        "doctags config --explain",
        "--overwrite",
    ):
        assert said in readme, said
