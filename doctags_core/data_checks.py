"""The data report: what usually goes wrong with a corpus, said plainly.

A preprocess run that "succeeds" on the wrong fields is worse than one that
fails: a misspelled text field trains on titles only, a wrong label field
dead-letters every record and training dies much later on an empty label
vocabulary, pipe-delimited tags become hundreds of combined labels. These
checks run on the finished run's `metadata.json` (pure functions, no I/O)
and each finding names what to change.

Severities: ``error`` stops the run before training (the dataset is not
published; exit status 3); ``warning`` is printed and saved, and is an
error under ``--strict``; ``info`` is for the record.

Thresholds (shares are of the records that parsed into fields, or of the
label assignments):

- a configured text field holds text in under `TEXT_FIELD_ERROR` (10%) of
  the records: error; under `TEXT_FIELD_WARNING` (50%): warning;
- a configured id or label field is in no record: error; a split field in
  no record: warning (every document is then split by id hash);
- dead letters above ``preprocess.max_dead_letter_fraction`` of the records
  read (``duplicate`` of ``dedupe`` excluded): error, with the top reasons;
- no document in train, or an empty label vocabulary: error;
- fewer than `FEW_TOKENS` (5) tokens per document on average: warning;
- at least `DELIMITED_SHARE` (half) of the label assignments hold ``|``,
  ``;`` or ``,`` (not the configured delimiter): error; ``/``: warning,
  since hierarchical names such as ``sci/physics`` are common;
- labels with a single training example: warning;
- documents truncated to ``preprocess.max_chars``: info.
"""

from __future__ import annotations

from doctags_core.config import Config

ERROR, WARNING, INFO = "error", "warning", "info"
TEXT_FIELD_ERROR = 0.1
TEXT_FIELD_WARNING = 0.5
FEW_TOKENS = 5.0
DELIMITED_SHARE = 0.5
STRONG_DELIMITERS = ("|", ";", ",")
WEAK_DELIMITERS = ("/",)
NOT_DATA_FAULTS = ("duplicate",)  # dead letters removed on purpose (preprocess.dedupe)


class DataRejected(Exception):
    """The data report found errors (or warnings, strictly); nothing was published.

    Attributes:
        report: The report (`check_data`).
        staging: The rejected run's folder (report, metadata, dead letters).
    """

    def __init__(self, report: dict, strict: bool, staging: str, data_dir: str):
        self.report = report
        self.staging = staging
        lines = [
            "the data report rejected this dataset; nothing was published and "
            f"{data_dir} is unchanged",
            *format_findings(report, strict),
            f"report, metadata and dead letters of this run: {staging} (removed by the next run)",
        ]
        super().__init__("\n".join(lines))


def _finding(severity: str, check: str, message: str) -> dict:
    return {"severity": severity, "check": check, "message": message}


def _share(part: int, whole: int) -> str:
    return f"{part:,} of {whole:,} ({100 * part / whole:.1f}%)" if whole else f"{part:,}"


def _fields_seen(fields: dict) -> str:
    seen = sorted(fields.get("seen", {}), key=lambda k: -fields["seen"][k])
    return ", ".join(seen[:12]) or "none"


def check_fields(metadata: dict, cfg: Config) -> list[dict]:
    """Configured fields that are missing or nearly empty in most records."""
    fields = metadata.get("fields") or {}
    rows = fields.get("records", 0)
    if not rows:
        return []
    out = []
    seen = _fields_seen(fields)
    for name in cfg.data.text_fields:
        with_text = fields.get("with_text", {}).get(name, 0)
        share = with_text / rows
        if share < TEXT_FIELD_WARNING:
            severity = ERROR if share < TEXT_FIELD_ERROR else WARNING
            out.append(
                _finding(
                    severity,
                    "text_field",
                    f"data.text_fields: {name!r} holds text in {_share(with_text, rows)} records "
                    f"(fields in the data: {seen})",
                )
            )
    d = cfg.data
    for key, name, severity, hint in (
        ("data.id_field", d.id_field, ERROR, "; set data.id_field: null to use a hash of the text"),
        ("data.label_field", d.label_field, ERROR, ""),
        ("data.split_field", d.split_field, WARNING, "; every document is split by id hash"),
    ):
        if name and not fields.get("present", {}).get(name, 0):
            out.append(
                _finding(
                    severity,
                    "field",
                    f"{key}: no record has a field {name!r} (fields in the data: {seen}){hint}",
                )
            )
    return out


def _example_of(example: dict) -> str:
    detail = example.get("detail")
    return f" (e.g. {detail})" if detail else ""


def check_dead_letters(metadata: dict, cfg: Config) -> list[dict]:
    """Too many dead letters, with the top reasons and an example of each."""
    read = metadata.get("records_read", 0)
    dead = metadata.get("dead_letter", {})
    by_reason = {
        r: n for r, n in dead.get("by_reason", {}).items() if r not in NOT_DATA_FAULTS and n
    }
    if not read:
        return [_finding(ERROR, "records", "no record was read from data.input_pattern")]
    bad = sum(by_reason.values())
    limit = cfg.preprocess.max_dead_letter_fraction
    if bad / read <= limit:
        return []
    top = sorted(by_reason.items(), key=lambda kv: -kv[1])[:3]
    examples = dead.get("examples", {})
    reasons = "; ".join(
        f"{reason} {n:,}" + _example_of(examples.get(reason, {})) for reason, n in top
    )
    return [
        _finding(
            ERROR,
            "dead_letters",
            f"{_share(bad, read)} records are dead letters, over "
            f"preprocess.max_dead_letter_fraction={limit}; top reasons: {reasons}",
        )
    ]


def check_documents(metadata: dict) -> list[dict]:
    """No training document, no label vocabulary, or very short documents."""
    out = []
    if not metadata.get("documents", {}).get("train", 0):
        out.append(_finding(ERROR, "documents", "no document was written to the train split"))
    if not metadata.get("label_vocabulary_size", 0):
        out.append(
            _finding(
                ERROR,
                "labels",
                "the label vocabulary is empty: no train or validation document has a label",
            )
        )
    lengths = metadata.get("token_lengths", {})
    mean = lengths.get("mean")
    if lengths.get("documents") and mean is not None and mean < FEW_TOKENS:
        out.append(
            _finding(
                WARNING,
                "tokens",
                f"documents have {mean:.2f} tokens on average after cleaning: check "
                "data.text_fields and cleaning.steps",
            )
        )
    return out


def _delimiter_share(label_counts: dict, delimiter: str) -> tuple[int, int, str]:
    """``(assignments holding it, all assignments, an example label)``."""
    holding = total = 0
    example = ""
    for label, counts in label_counts.items():
        n = sum(counts.values())
        total += n
        if delimiter in label:
            holding += n
            example = example or label
    return holding, total, example


def check_labels(metadata: dict, cfg: Config) -> list[dict]:
    """Labels that look delimited, and labels with one training example."""
    label_counts = metadata.get("label_counts", {})
    out = []
    for delimiter in STRONG_DELIMITERS + WEAK_DELIMITERS:
        if delimiter == cfg.data.label_delimiter:
            continue
        holding, total, example = _delimiter_share(label_counts, delimiter)
        if total and holding / total >= DELIMITED_SHARE:
            severity = ERROR if delimiter in STRONG_DELIMITERS else WARNING
            out.append(
                _finding(
                    severity,
                    "label_delimiter",
                    f"labels look {delimiter!r}-delimited: {_share(holding, total)} label "
                    f"assignments hold {delimiter!r} (e.g. {example!r}); set "
                    f"data.label_delimiter: {delimiter!r}",
                )
            )
    pool = {
        label: counts.get("train", 0) + counts.get("validation", 0)
        for label, counts in label_counts.items()
    }
    single = sorted(label for label, n in pool.items() if n == 1)
    if single:
        shown = ", ".join(repr(x) for x in single[:5])
        trained = sum(1 for n in pool.values() if n)
        out.append(
            _finding(
                WARNING,
                "rare_labels",
                f"{len(single):,} of {trained:,} labels have a single training "
                f"example (e.g. {shown}): too few to learn them or tune their thresholds",
            )
        )
    return out


def check_truncation(metadata: dict) -> list[dict]:
    """How many documents were cut to ``preprocess.max_chars``."""
    n = metadata.get("truncated_documents", 0)
    if not n:
        return []
    return [
        _finding(
            INFO,
            "truncated",
            f"{n:,} document(s) longer than preprocess.max_chars={metadata.get('max_chars')} "
            "characters were truncated",
        )
    ]


def check_data(metadata: dict, cfg: Config) -> dict:
    """Runs every check on a finished run's metadata.

    Returns:
        ``{"run_id", "errors", "warnings", "findings": [{severity, check,
        message}]}``, errors first.
    """
    findings = (
        check_dead_letters(metadata, cfg)
        + check_fields(metadata, cfg)
        + check_documents(metadata)
        + check_labels(metadata, cfg)
        + check_truncation(metadata)
    )
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    findings.sort(key=lambda f: order[f["severity"]])
    return {
        "run_id": metadata.get("run_id", ""),
        "errors": sum(f["severity"] == ERROR for f in findings),
        "warnings": sum(f["severity"] == WARNING for f in findings),
        "findings": findings,
    }


def rejected(report: dict, strict: bool = False) -> bool:
    """Whether the report stops the run (errors; warnings too when ``strict``)."""
    return bool(report["errors"] or (strict and report["warnings"]))


def format_findings(report: dict, strict: bool = False) -> list[str]:
    """One line per finding: ``ERROR   data.text_fields: ...``."""
    lines = []
    for f in report["findings"]:
        severity = f["severity"]
        if strict and severity == WARNING:
            severity = ERROR
        lines.append(f"  {severity.upper():<8}{f['message']}")
    return lines


def format_report(report: dict, strict: bool = False) -> str:
    """The report as printed after preprocessing."""
    errors = report["errors"] + (report["warnings"] if strict else 0)
    warnings = 0 if strict else report["warnings"]
    head = f"data report: {errors} error(s), {warnings} warning(s)"
    return "\n".join([head, *format_findings(report, strict)])
