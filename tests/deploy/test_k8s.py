"""The Kubernetes manifests: valid against Kubernetes' own schemas (kubernetes-validate, offline, strict), and
consistent with each other, the image and the server (probes, drain time, GPU, cache, autoscaling metric)."""

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from server.config import Settings
from server.metrics import Metrics
from tests.deploy.dockerfile import chain

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "k8s"
KUBERNETES_VERSION = "1.33.0"  # the oldest minor release still supported upstream when this was written


def _docs() -> dict[str, dict]:
    """kind/name -> manifest, every file of docker/k8s."""
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[f"{doc['kind']}/{doc.get('metadata', {}).get('name', path.stem)}"] = doc | {"_file": path.name}
    return docs


DOCS = _docs()
DEPLOYMENT = DOCS["Deployment/qwen2-audio"]
POD = DEPLOYMENT["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]
CONFIG = DOCS["ConfigMap/qwen2-audio-config"]["data"]


@pytest.mark.parametrize("name", [n for n in DOCS if not n.startswith("Kustomization/")])
def test_manifest_is_valid_for_kubernetes(name):
    manifest = {k: v for k, v in DOCS[name].items() if k != "_file"}
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_field():
    manifest = {k: v for k, v in DEPLOYMENT.items() if k != "_file"}
    broken = yaml.safe_load(yaml.safe_dump(manifest).replace("readinessProbe", "readynessProbe"))
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_everything_but_the_separate_steps():
    kustomization = DOCS["Kustomization/kustomization"]
    separate = {"pull-job.yaml", "prometheus-adapter-rules.yaml"}  # run before; belongs to the adapter
    assert set(kustomization["resources"]) == {d["_file"] for d in DOCS.values()} - separate - {"kustomization.yaml"}


def test_each_replica_gets_one_gpu_and_probes_the_right_endpoints():
    assert CONTAINER["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert CONTAINER["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert CONTAINER["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = CONTAINER["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # loading 16 GB takes minutes


def test_termination_grace_outlasts_prestop_and_the_servers_drain():
    drain = float(CONFIG.get("QWEN2_AUDIO_SHUTDOWN_GRACE_S", Settings.model_fields["shutdown_grace_s"].default))
    prestop = CONTAINER["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop[0] == "sleep"
    assert POD["terminationGracePeriodSeconds"] > float(prestop[1]) + drain


def test_the_pod_runs_as_the_images_user_on_the_images_port():
    stages = chain(ROOT / "Dockerfile", "server", {"VARIANT": "gpu"})
    user = [rest for stage in stages for kw, rest in stage.instructions if kw == "USER"][-1]
    assert POD["securityContext"]["runAsUser"] == int(user.split(":")[0])
    assert POD["securityContext"]["runAsNonRoot"] is True
    env = " ".join(rest for stage in stages for kw, rest in stage.instructions if kw == "ENV")
    assert f"QWEN2_AUDIO_PORT={CONTAINER['ports'][0]['containerPort']}" in env


def test_the_model_cache_is_the_claim_the_pull_job_fills_mounted_read_only():
    claim = DOCS["PersistentVolumeClaim/qwen2-audio-hf-cache"]["metadata"]["name"]
    job = DOCS["Job/qwen2-audio-pull"]["spec"]["template"]["spec"]
    for pod in (POD, job):
        (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert volume["persistentVolumeClaim"]["claimName"] == claim
    (mount,) = [m for m in CONTAINER["volumeMounts"] if m["name"] == "hf-cache"]
    assert mount["readOnly"] is True and CONFIG["HF_HUB_CACHE"].startswith(mount["mountPath"] + "/")
    assert CONFIG["HF_HUB_OFFLINE"] == "1"
    job_env = {e["name"]: e.get("value") for e in job["containers"][0]["env"]}
    assert job_env["HF_HUB_CACHE"] == CONFIG["HF_HUB_CACHE"]
    assert job["containers"][0]["args"] == ["pull", CONFIG["QWEN2_AUDIO_MODEL"]]
    assert {k for k in CONFIG if k.startswith("QWEN2_AUDIO_")} <= {"QWEN2_AUDIO_" + f.upper() for f in Settings.model_fields}


def test_service_ingress_and_budget_select_the_replicas():
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    service = DOCS["Service/qwen2-audio"]
    assert service["spec"]["selector"] == labels and "sessionAffinity" not in service["spec"]  # nothing is sticky
    assert DOCS["PodDisruptionBudget/qwen2-audio"]["spec"]["selector"]["matchLabels"] == labels
    ingress = DOCS["Ingress/qwen2-audio"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": service["spec"]["ports"][0]["name"]}}
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-body-size"].rstrip("m")) > Settings.model_fields[
        "max_upload_mb"].default


def test_the_hpa_scales_on_the_queue_depth_the_server_exports_through_the_adapter():
    hpa = DOCS["HorizontalPodAutoscaler/qwen2-audio"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == DEPLOYMENT["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "qwen2_audio_queue_depth"
    exported = {family.name for family in Metrics().registry.collect()}
    (rule,) = yaml.safe_load(DOCS["ConfigMap/prometheus-adapter-qwen2-audio"]["data"]["config.yaml"])["rules"]
    series = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
    assert series in exported and rule["name"]["as"] == metric["pods"]["metric"]["name"]
    assert re.fullmatch(rule["name"]["matches"], series)
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    annotations = DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics" and annotations["prometheus.io/scrape"] == "true"


def test_every_replica_shares_the_valkey_the_manifests_run():
    store = DOCS["Deployment/qwen2-audio-valkey"]["spec"]["template"]["spec"]
    service = DOCS["Service/qwen2-audio-valkey"]
    (valkey,) = store["containers"]
    assert valkey["readinessProbe"]["exec"]["command"] == valkey["livenessProbe"]["exec"]["command"] == ["valkey-cli", "ping"]
    assert service["spec"]["selector"] == DOCS["Deployment/qwen2-audio-valkey"]["spec"]["selector"]["matchLabels"]
    url = f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0"
    assert CONFIG["QWEN2_AUDIO_RESPONSE_STORE"] == url and Settings(response_store=url).response_store == url
    assert re.search(r":\d+\.\d+\.\d+", valkey["image"])
