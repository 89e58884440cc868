"""TF Serving's ``--monitoring_config_file``, parsed with TF Serving's own schema.

``tensorflow_model_server --monitoring_config_file=F`` reads a text-format
``MonitoringConfig``; ``prometheus_config { enable: true path: "..." }``
exposes the metrics on the REST port (default path
``/monitoring/prometheus/metrics``). tensorflow-serving-api does not ship
``monitoring_config_pb2``, so the two messages are rebuilt here field for
field from TF Serving's tensorflow_serving/config/monitoring_config.proto
(as `serving.batching_config` does for ``BatchingParameters``): the same
file configures both servers, and a typo fails here as it would there.
"""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath


@functools.cache
def monitoring_config_class():
    """The ``tensorflow.serving.MonitoringConfig`` message class (private pool)."""
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=F.TYPE_MESSAGE,
        label=F.LABEL_OPTIONAL,
        type_name=".tensorflow.serving.PrometheusConfig",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    )


def prometheus_path(text: str) -> str | None:
    """The metrics path a monitoring config file enables, or None when Prometheus is off.

    Raises:
        ValueError: for text TF Serving would reject (unknown field, bad
            value, a path that does not start with ``/``).
    """
    config = monitoring_config_class()()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ValueError(f"monitoring config: {e}") from None
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not path.startswith("/"):
        raise ValueError(f"monitoring config: prometheus_config.path must start with /: {path!r}")
    return path
