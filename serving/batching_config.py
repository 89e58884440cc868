"""TF Serving's batching parameters file, parsed with TF Serving's own schema.

``tensorflow_model_server --enable_batching --batching_parameters_file=F``
reads a text-format ``BatchingParameters`` proto. tensorflow-serving-api does
not ship that message (it lives in session_bundle_config.proto), so its
definition is rebuilt here field for field from TF Serving 2.20.0's
tensorflow_serving/servables/tensorflow/session_bundle_config.proto. Parsing
with it means a typo in the file used by the Kubernetes deployment fails in
our tests, and `doctags serve --batching-parameters-file` reads the very same
file as TF Serving.
"""

from __future__ import annotations

import functools
import logging

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from serving.batching import BatchingOptions

log = logging.getLogger(__name__)

_I64 = ".google.protobuf.Int64Value"
# (name, number, type, type_name, repeated) as in session_bundle_config.proto @ 2.20.0
_FIELDS = (
    ("max_batch_size", 1, "TYPE_MESSAGE", _I64, False),
    ("batch_timeout_micros", 2, "TYPE_MESSAGE", _I64, False),
    ("max_enqueued_batches", 3, "TYPE_MESSAGE", _I64, False),
    ("num_batch_threads", 4, "TYPE_MESSAGE", _I64, False),
    ("thread_pool_name", 5, "TYPE_MESSAGE", ".google.protobuf.StringValue", False),
    ("allowed_batch_sizes", 6, "TYPE_INT64", None, True),
    ("pad_variable_length_inputs", 7, "TYPE_BOOL", None, False),
    ("enable_large_batch_splitting", 8, "TYPE_MESSAGE", ".google.protobuf.BoolValue", False),
    ("max_execution_batch_size", 9, "TYPE_MESSAGE", _I64, False),
)
HONOURED = (
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "enable_large_batch_splitting",
    "max_execution_batch_size",
)


@functools.cache
def batching_parameters_class():
    """The ``tensorflow.serving.BatchingParameters`` message class (private pool)."""
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[wrappers.name],
    )
    message = proto.message_type.add(name="BatchingParameters")
    F = descriptor_pb2.FieldDescriptorProto
    for name, number, kind, type_name, repeated in _FIELDS:
        field = message.field.add(
            name=name,
            number=number,
            type=F.Type.Value(kind),
            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL,
        )
        if type_name:
            field.type_name = type_name
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


def parse_batching_parameters(text: str, base: BatchingOptions | None = None) -> BatchingOptions:
    """Batching options from a TF Serving batching parameters file's text.

    Fields doctags serve does not implement (allowed_batch_sizes, padding,
    thread pool names...) are accepted, since TF Serving accepts them, and
    logged as ignored. The four queue sizes fall back to ``base`` (the
    command line); splitting is off unless the file turns it on, and the
    execution size defaults to ``max_batch_size``, as in TF Serving, so the
    file means here what it means there.

    Raises:
        ValueError: for text TF Serving would reject (unknown field, bad value).
    """
    params = batching_parameters_class()()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as e:
        raise ValueError(f"batching parameters: {e}") from None
    values = {}
    for name in HONOURED:
        if params.HasField(name):
            values[name] = getattr(params, name).value
    ignored = [f.name for f, _ in params.ListFields() if f.name not in HONOURED]
    if ignored:
        log.info("batching parameters not implemented by doctags serve, ignored: %s", ignored)
    base = base or BatchingOptions()
    execution = values.get("max_execution_batch_size")
    try:
        return BatchingOptions(
            max_batch_size=int(values.get("max_batch_size", base.max_batch_size)),
            batch_timeout_micros=int(values.get("batch_timeout_micros", base.batch_timeout_micros)),
            max_enqueued_batches=int(values.get("max_enqueued_batches", base.max_enqueued_batches)),
            num_batch_threads=int(values.get("num_batch_threads", base.num_batch_threads)),
            enable_large_batch_splitting=bool(values.get("enable_large_batch_splitting", False)),
            max_execution_batch_size=None if execution is None else int(execution),
            enabled=True,
        )
    except ValueError as e:
        raise ValueError(f"batching parameters: {e}") from None
