# One image for every stage of doctags (build: docker build -t doctags:0.1.0 .).
#
# - Kubernetes Jobs in k8s/ run `doctags ...` or `python -m trainer.tf_config ...`; their
#   `command` replaces the entrypoint.
# - Dataflow and Flink workers use the same image as their Beam SDK container
#   (--sdk_container_image=doctags:0.1.0), so the entrypoint is Beam's boot program, copied
#   from the official SDK image of the pinned Beam and Python versions, and the workers start
#   with TensorFlow and the pipeline's packages already installed.
FROM apache/beam_python3.11_sdk:2.77.0 AS beam

FROM python:3.11-slim
COPY --from=beam /opt/apache/beam /opt/apache/beam

WORKDIR /opt/doctags
# Dependencies first (the pins of pyproject.toml), so that code changes reuse this layer.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt
COPY doctags ./doctags
COPY doctags_core ./doctags_core
COPY beam_preprocess ./beam_preprocess
COPY trainer ./trainer
COPY serving ./serving
COPY evaluation ./evaluation
COPY configs ./configs
RUN pip install --no-cache-dir --no-deps . \
    && doctags --help > /dev/null

ENTRYPOINT ["/opt/apache/beam/boot"]
