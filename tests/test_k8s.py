"""Every manifest in k8s/ loads, validates structurally, and its command line parses."""

import pathlib

import pytest
import yaml
from absl import flags

K8S = pathlib.Path(__file__).resolve().parents[1] / "k8s"


def load(name):
    return list(yaml.safe_load_all((K8S / name).read_text()))


def _drop_none(x):
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_drop_none(v) for v in x]
    return x


def _normalize(x):
    """YAML as the API sees it: numbers in quantities and env are strings either way."""
    if isinstance(x, dict):
        return {k: _normalize(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_normalize(v) for v in x]
    return str(x)


def roundtrip(obj, model_name, api):
    """Deserialize with the SDK's models, serialize back: a misspelt or misplaced field is
    dropped on the way, so the round trip differs from the input."""
    model = api._ApiClient__deserialize(obj, model_name)
    back = _drop_none(api.sanitize_for_serialization(model))
    assert _normalize(back) == _normalize(obj), f"fields lost in {model_name}"
    return model


def test_every_manifest_is_covered():
    assert sorted(p.name for p in K8S.glob("*.yaml")) == [
        "data-service.yaml",
        "flink-session.yaml",
        "serving.yaml",
        "tfjob.yaml",
    ]


def test_data_service_manifests_validate_and_parse():
    pytest.importorskip("kubernetes")
    from kubernetes.client import ApiClient

    from launch import data_service  # noqa: F401  (defines the flags)

    dispatcher, service, workers = load("data-service.yaml")
    roundtrip(dispatcher, "V1Deployment", ApiClient())
    svc = roundtrip(service, "V1Service", ApiClient())
    roundtrip(workers, "V1Deployment", ApiClient())
    assert svc.spec.ports[0].port == 5050
    (tfjob,) = load("tfjob.yaml")
    for role, spec in tfjob["spec"]["tfReplicaSpecs"].items():
        env = {e["name"]: e.get("value") for e in spec["template"]["spec"]["containers"][0]["env"]}
        assert env["SDM_DATA_SERVICE"] == "grpc://sdm-data-dispatcher:5050", role
    for deployment in (dispatcher, workers):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        try:
            flags.FLAGS(["data_service", *container["args"]])
        finally:
            flags.FLAGS.unparse_flags()


def test_serving_deployment_and_service_validate():
    pytest.importorskip("kubernetes")
    from kubernetes.client import ApiClient

    deployment, svc = load("serving.yaml")
    dep = roundtrip(deployment, "V1Deployment", ApiClient())
    service = roundtrip(svc, "V1Service", ApiClient())
    pod = dep.spec.template.spec
    (container,) = pod.containers
    assert dep.spec.selector.match_labels == dep.spec.template.metadata.labels
    assert service.spec.selector == dep.spec.template.metadata.labels
    port = {p.name: p.container_port for p in container.ports}["http"]
    for probe in (container.readiness_probe, container.liveness_probe):
        assert probe.http_get.path == "/health" and probe.http_get.port == "http"
    assert service.spec.ports[0].target_port == "http"
    assert container.resources.requests["cpu"] and container.resources.requests["memory"]
    assert container.resources.limits["memory"] == container.resources.requests["memory"]
    assert container.command == ["python", "-m", "launch.serve"]
    assert f"--port={port}" in container.args and "--host=0.0.0.0" in container.args


def test_serving_arguments_parse_with_our_flags():
    from launch import serve  # noqa: F401  (defines the flags)

    deployment, _ = load("serving.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    try:
        flags.FLAGS(["serve", *container["args"]])
        assert flags.FLAGS.index == "hnsw" and flags.FLAGS.port == 8500
    finally:
        flags.FLAGS.unparse_flags()


def test_tfjob_validates_against_the_kubeflow_models():
    pytest.importorskip("kubeflow.training")
    from kubeflow.training.api_client import ApiClient

    (job,) = load("tfjob.yaml")
    model = roundtrip(job, "KubeflowOrgV1TFJob", ApiClient())
    assert model.api_version == "kubeflow.org/v1" and model.kind == "TFJob"
    specs = model.spec.tf_replica_specs
    assert set(specs) == {"Chief", "PS", "Worker", "Evaluator"}
    assert specs["Chief"].replicas == 1
    for role, spec in specs.items():
        (container,) = spec.template.spec.containers
        assert container.name == "tensorflow", role  # the operator finds TF_CONFIG's target by name
    gpus = specs["Worker"].template.spec.containers[0].resources.limits
    assert "nvidia.com/gpu" in gpus


@pytest.fixture
def train_flags():
    from launch import train  # noqa: F401  (defines the flags)

    yield flags.FLAGS
    flags.FLAGS.unparse_flags()


def test_tfjob_arguments_parse_with_our_flags(train_flags):
    from launch import common

    (job,) = load("tfjob.yaml")
    for role, spec in job["spec"]["tfReplicaSpecs"].items():
        (container,) = spec["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", "launch.train"]
        args = container["args"]
        # Only a preset (and variant) plus overrides: the rest comes from the environment.
        assert all(a.split("=")[0] in ("--preset", "--variant", "--override") for a in args), role
        env = {e["name"]: e["value"] for e in container["env"]}
        assert set(env) == {"SDM_DATA_DIR", "SDM_MODEL_DIR", "SDM_DATA_SERVICE"}
        train_flags.unparse_flags()
        # In the pod the flag defaults come from these variables at import; same here.
        train_flags.set_default("data_dir", env["SDM_DATA_DIR"])
        train_flags.set_default("model_dir", env["SDM_MODEL_DIR"])
        train_flags(["launch.train", *args])
        cfg = common.experiment_config()  # presets and overrides resolve
        assert cfg.preset == "paper_online" and cfg.train.epochs == 20


def test_flink_deployment_is_well_formed():
    pytest.importorskip("kubernetes")
    from kubernetes.client import ApiClient

    (dep,) = load("flink-session.yaml")
    assert dep["apiVersion"] == "flink.apache.org/v1beta1" and dep["kind"] == "FlinkDeployment"
    spec = dep["spec"]
    for key in ("image", "flinkVersion", "jobManager", "taskManager"):
        assert key in spec
    assert spec["flinkVersion"].startswith("v1_")
    for part in ("jobManager", "taskManager"):
        assert {"memory", "cpu"} <= set(spec[part]["resource"])
    roundtrip(spec["taskManager"]["podTemplate"], "V1Pod", ApiClient())
    (sidecar,) = spec["taskManager"]["podTemplate"]["spec"]["containers"]
    assert "worker_pool_main" in " ".join(sidecar["command"])
    assert sidecar["ports"][0]["containerPort"] == 50000


def test_dockerfile_installs_the_project():
    text = (K8S / "Dockerfile").read_text()
    assert "FROM python:3.11" in text and "pip install" in text
    assert "TF_USE_LEGACY_KERAS=1" in text
    # One FAISS wheel per image, from the extras (removing faiss-cpu broke faiss-gpu's files).
    assert "ARG EXTRA=cpu" in text and 'pip install --no-cache-dir ".[$EXTRA]"' in text
    assert "uninstall" not in text
