"""deploy/k8s: every overlay renders with `kubectl kustomize`, every rendered object validates
(Kubernetes' own kinds with kubernetes-validate --strict; KEDA's and prometheus-operator's custom
resources against schemas generated from their CRDs, made strict the same way), and what the
objects say fits together the way a cluster would read it: the kubelet's $(VAR) expansion of the
daemon's arguments gives a config selectd accepts, KEDA's *FromEnv trigger reads the same Kafka
settings, the topics Job's script (run against a stub kafka-topics.sh) creates every topic the
daemons use, and the models Job's script exports every model directory the configs name.
"""
from __future__ import annotations

import copy
import os
import re
import subprocess
import urllib.parse
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy_helpers import DEPLOY, K8S, README, command_options, dockerfile_arg, documented, run_tool, stage_names
from selectd.config import Config, load_config

K8S_VERSION = "1.31.0"
OVERLAYS = ["cpu", "cpu-models", "gpu", "two-tier", "cpu-dedup"]
WITH_AUTH = "cpu+kafka-auth"  # the cpu overlay with components/kafka-auth, rendered from a temporary kustomization
CONFIG_PATH = "/etc/selectd/selectd.toml"
SECRET_VALUES = {"username": "selectd-user", "password": "s3cret", "ca.crt": "/etc/kafka-tls/ca.crt"}


def kustomize(directory: Path, documented_as: str | None = None) -> list[dict]:
    command = ("kubectl", "kustomize", documented_as) if documented_as else ("kubectl", "kustomize", str(directory))
    if documented_as:
        documented(*command)
    result = run_tool(*command)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    out = {name: kustomize(K8S / "overlays" / name, f"deploy/k8s/overlays/{name}") for name in OVERLAYS}
    # kustomize accepts bases and components outside the kustomization's folder by relative path
    overlay = tmp_path_factory.mktemp("kafka-auth")
    up = os.path.relpath(K8S, overlay)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [f"{up}/overlays/cpu"], "components": [f"{up}/components/kafka-auth"]}))
    out[WITH_AUTH] = kustomize(overlay)
    return out


def strict(schema):
    """Unknown fields are errors, as kubernetes-validate --strict makes them for built-in kinds and
    the API server's field validation does for custom resources."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        if "(?i)" in schema.get("pattern", "")[1:]:  # Go's inline flag mid-pattern; Python wants it first
            schema["pattern"] = "(?i)" + schema["pattern"].replace("(?i)", "")
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict]:
    """JSON schemas of the custom resources, from models generated from KEDA's (2.16) and
    prometheus-operator's (0.80) CRDs (cloudcoil-models-*; no registry ships the CRD files)."""
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    models = {("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
              ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
              ("monitoring.coreos.com/v1", "PodMonitor"): monitoring.PodMonitor,
              ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
              ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule}
    return {key: strict(model.model_json_schema(by_alias=True)) for key, model in models.items()}


def validate(doc: dict, crd_schemas: dict) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in crd_schemas:
        jsonschema.validate(doc, crd_schemas[key])
    else:
        assert "." not in doc["apiVersion"].split("/")[0] or doc["apiVersion"].split("/")[0].endswith("k8s.io"), \
            f"a custom resource without a schema: {key}"
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    return doc


def daemons(docs: list[dict]) -> list[dict]:
    return [d for d in of_kind(docs, "Deployment") if d["metadata"]["labels"].get("app.kubernetes.io/name") == "selectd"]


def kafka_settings(docs: list[dict]) -> dict[str, str]:
    return named(docs, "ConfigMap", "selectd-kafka")["data"]


def container_env(docs: list[dict], pod: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it (envFrom, then env with its sources and
    $(VAR) references); secrets from SECRET_VALUES."""
    (container,) = pod["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(named(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
            continue
        ref = var["valueFrom"]
        if "configMapKeyRef" in ref:
            env[var["name"]] = named(docs, "ConfigMap", ref["configMapKeyRef"]["name"])["data"][ref["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in ref:
            env[var["name"]] = SECRET_VALUES[ref["secretKeyRef"]["key"]]
        else:
            resource = ref["resourceFieldRef"]["resource"]
            env[var["name"]] = str(container["resources"][resource.split(".")[0]][resource.split(".")[1]])
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion (an unknown name stays as written)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def mounted_file(docs: list[dict], pod: dict, path: str) -> str:
    """The content a ConfigMap volume puts at ``path`` in the container."""
    (container,) = pod["containers"]
    for mount in container["volumeMounts"]:
        if path.startswith(mount["mountPath"] + "/"):
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            return named(docs, "ConfigMap", volume["configMap"]["name"])["data"][path[len(mount["mountPath"]) + 1:]]
    raise AssertionError(f"nothing mounted at {path}")


def daemon_config(docs: list[dict], deployment: dict, tmp_path: Path, monkeypatch) -> tuple[Config, dict[str, str]]:
    """The config the pod's `selectd run` loads: its mounted file plus its expanded --set arguments."""
    pod = deployment["spec"]["template"]["spec"]
    env = container_env(docs, pod)
    args = [expand(arg, env) for arg in pod["containers"][0]["args"]]
    assert args[:3] == ["run", "--config", CONFIG_PATH]
    overrides = [arg.removeprefix("--set=") for arg in args[3:]]
    assert all(arg.startswith("--set=") for arg in args[3:]) and not any("$(" in o for o in overrides), overrides
    path = tmp_path / f"{deployment['metadata']['name']}.toml"
    path.write_text(mounted_file(docs, pod, CONFIG_PATH))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_config(path, overrides), env


def partitions_of(settings: dict[str, str], topic: str) -> int:
    (key,) = [key for key, value in settings.items() if key.endswith("_TOPIC") and value == topic]
    return int(settings[key.removesuffix("_TOPIC") + "_PARTITIONS"])


# ---------------------------------------------------------------------------------------------


def test_every_rendered_object_validates(rendered, crd_schemas):
    kinds = set()
    for name, docs in rendered.items():
        for doc in docs:
            try:
                validate(doc, crd_schemas)
            except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
                raise AssertionError(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc}") from None
            kinds.add(doc["kind"])
    assert {"Deployment", "ConfigMap", "PodDisruptionBudget", "Job", "PersistentVolumeClaim", "ScaledObject",
            "TriggerAuthentication", "PodMonitor", "PrometheusRule", "StatefulSet", "Service"} <= kinds
    # Strict validation rejects what a cluster would: the checks are not no-ops.
    docs = rendered["gpu"]
    deployment = copy.deepcopy(daemons(docs)[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, crd_schemas)
    scaled = of_kind(docs, "ScaledObject")[0]
    for breaks in (lambda s: s["spec"]["triggers"][0]["metadata"].update(lagThreshold=5000),  # KEDA wants strings
                   lambda s: s["spec"].update(replicas=2),
                   lambda s: s["spec"]["scaleTargetRef"].update(nmae="x")):
        broken = copy.deepcopy(scaled)
        breaks(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate(broken, crd_schemas)
    monitor = copy.deepcopy(of_kind(docs, "PodMonitor")[0])
    monitor["spec"]["podMetricsEndpoints"][0]["prot"] = "metrics"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, crd_schemas)


def test_keda_owns_the_replica_count_and_reads_the_daemons_kafka_settings(rendered, tmp_path, monkeypatch):
    for name, docs in rendered.items():
        settings = kafka_settings(docs)
        scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(docs, "ScaledObject")}
        assert set(scaled) == {d["metadata"]["name"] for d in daemons(docs)}, f"{name}: one ScaledObject per tier"
        for deployment in daemons(docs):
            assert "replicas" not in deployment["spec"], f"{name}: a replicas field resets KEDA's count at each apply"
            config, env = daemon_config(docs, deployment, tmp_path, monkeypatch)
            spec = scaled[deployment["metadata"]["name"]]["spec"]
            (trigger,) = spec["triggers"]
            metadata = trigger["metadata"]
            assert trigger["type"] == "kafka" and spec["scaleTargetRef"]["envSourceContainerName"] == "selectd"
            # KEDA resolves *FromEnv from the target container's environment: the daemon's own settings.
            assert env[metadata["bootstrapServersFromEnv"]].split(",") == config.kafka.bootstrap_servers
            assert env[metadata["consumerGroupFromEnv"]] == config.kafka.group_id
            assert [env[metadata["topicFromEnv"]]] == config.kafka.input_topics
            assert not {"bootstrapServers", "consumerGroup", "topic"} & set(metadata), "one source of truth"
            assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions_of(settings, config.kafka.input_topics[0])
            # The HPA behaviour KEDA passes through is autoscaling/v2's.
            hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "probe"},
                   "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]},
                            "minReplicas": spec["minReplicaCount"], "maxReplicas": spec["maxReplicaCount"],
                            "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]}}
            kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)


def test_the_kafka_address_is_set_in_one_place(rendered):
    address = kafka_settings(rendered["cpu"])["KAFKA_BOOTSTRAP_SERVERS"]
    holders = [path.relative_to(K8S) for path in K8S.rglob("*") if path.is_file() and address in path.read_text()]
    assert holders == [Path("base/kafka.env")], holders


def test_topics_job_creates_every_topic_the_daemons_use(rendered, tmp_path, monkeypatch):
    """The Job's script, run with the environment the cluster gives it, against a stub kafka-topics.sh."""
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text('#!/bin/sh\necho "$@" >> "$CALLS"\n')
    stub.chmod(0o755)
    for name, docs in rendered.items():
        job = named(docs, "Job", "selectd-topics")
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        script = container["args"][0].replace("/tmp/", f"{tmp_path}/").replace("/opt/kafka/bin/kafka-topics.sh", str(stub))
        calls = tmp_path / f"{name}.calls"
        env = {**container_env(docs, pod), "CALLS": str(calls), "PATH": "/usr/bin:/bin"}
        result = subprocess.run(container["command"] + [script], env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        created = {}
        for line in calls.read_text().splitlines():
            options = dict(re.findall(r"--(\S+) (\S+)", line))
            assert options["bootstrap-server"] == env["KAFKA_BOOTSTRAP_SERVERS"]
            created[options["topic"]] = int(options["partitions"])
        needed = set()
        for deployment in daemons(docs):
            config, _ = daemon_config(docs, deployment, tmp_path, monkeypatch)
            needed |= {*config.kafka.input_topics, config.topics.accepted, config.topics.rejected, config.topics.dlq}
        assert needed <= set(created), f"{name}: topics not created: {needed - set(created)}"
        assert created == {topic: partitions_of(env, topic) for topic in created}
        if name == WITH_AUTH:
            properties = (tmp_path / "client.properties").read_text()
            assert "security.protocol=SASL_SSL" in properties and 'username="selectd-user"' in properties
            assert "--command-config" in calls.read_text()


def exported_models(docs: list[dict], tmp_path: Path) -> set[str]:
    """Run the models Job's export.sh with its models.sh, a stub `selectd` and a stub downloader:
    the model directories it leaves (and that a second run leaves alone)."""
    scripts = {key: value for cm in ("selectd-models-export", "selectd-models-list")
               for key, value in named(docs, "ConfigMap", cm)["data"].items()}
    root = tmp_path / "fill"
    (root / "scripts").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "bin").mkdir()
    for key, value in scripts.items():
        (root / "scripts" / key).write_text(value.replace("/scripts/", f"{root}/scripts/").replace("/models/", f"{root}/models/"))
    (root / "bin" / "selectd").write_text('#!/bin/sh\nfor last; do :; done\nmkdir -p "$last" && echo "$@" > "$last/manifest.json"\n')
    (root / "bin" / "python").write_text('#!/bin/sh\necho "/cache/$3"\n')  # python -c SCRIPT SPEC: the download
    for tool in ("selectd", "python"):
        (root / "bin" / tool).chmod(0o755)
    env = {"PATH": f"{root / 'bin'}:/usr/bin:/bin"}
    for _ in range(2):
        result = subprocess.run(["/bin/sh", str(root / "scripts" / "export.sh")], env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    assert result.stdout.count(": present") == len(list((root / "models").iterdir())), "a second run exports nothing again"
    return {path.name for path in (root / "models").iterdir() if (path / "manifest.json").is_file()}


def test_models_are_optional_and_filled_by_the_export_job(rendered, tmp_path, monkeypatch):
    export_stages = stage_names(DEPLOY / "Dockerfile")
    for name, docs in rendered.items():
        model_dirs = set()
        for deployment in daemons(docs):
            config, _ = daemon_config(docs, deployment, tmp_path, monkeypatch)
            model_dirs |= {value for stage in config.stages for key, value in stage.options.items() if key.endswith("model_dir")}
        pod_mounts = [{m["mountPath"]: m for m in d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]} for d in daemons(docs)]
        if not model_dirs:
            assert not of_kind(docs, "PersistentVolumeClaim") and not any("/models" in m for m in pod_mounts), \
                f"{name}: a model-free deployment mounts no models volume (it would wait for storage it never reads)"
            continue
        (claim,) = of_kind(docs, "PersistentVolumeClaim")
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "written by the Job, read by replicas on any node"
        assert all(m["/models"]["readOnly"] for m in pod_mounts)
        job = named(docs, "Job", "selectd-models")
        job_pod = job["spec"]["template"]["spec"]
        assert job_pod["containers"][0]["image"] == "selectd:export" and "export" in export_stages
        assert {"claimName": claim["metadata"]["name"]} == next(v for v in job_pod["volumes"] if v["name"] == "models")["persistentVolumeClaim"]
        assert all(d.startswith("/models/") for d in model_dirs), model_dirs
        assert {d.removeprefix("/models/") for d in model_dirs} <= exported_models(docs, tmp_path / name)
        assert all(o["metadata"]["labels"].get("app.kubernetes.io/component") == "models"
                   for o in docs if o["metadata"]["name"].startswith("selectd-models")), "`kubectl apply -l` selects them"


def test_prometheus_operator_scrapes_every_pod_once(rendered):
    for name, docs in rendered.items():
        annotated = [(d["kind"], d["metadata"]["name"]) for d in docs
                     if any(key.startswith("prometheus.io/") for key in d["metadata"].get("annotations", {}))
                     or any(key.startswith("prometheus.io/") for key in
                            d.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {}))]
        assert not annotated, f"{name}: prometheus.io annotations beside the PodMonitor scrape every series twice: {annotated}"
        assert not of_kind(docs, "ServiceMonitor")
        assert not [s for s in of_kind(docs, "Service") for d in daemons(docs)
                    if s["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()], \
            f"{name}: a Service in front of selectd pods (the PodMonitor scrapes them; nothing else connects to them)"
        (monitor,) = of_kind(docs, "PodMonitor")
        assert of_kind(docs, "PrometheusRule")
        for deployment in daemons(docs):
            pod = deployment["spec"]["template"]
            assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
            ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
            assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports


def test_pods_fit_their_config_image_and_tier(rendered, tmp_path, monkeypatch):
    uid = int(dockerfile_arg(DEPLOY / "Dockerfile", "SELECTD_UID"))
    for name, docs in rendered.items():
        tiers = daemons(docs)
        for deployment in tiers:
            config, env = daemon_config(docs, deployment, tmp_path, monkeypatch)
            pod = deployment["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == config.metrics.port
            assert config.metrics.host == "0.0.0.0"
            assert pod["terminationGracePeriodSeconds"] > config.delivery.drain_timeout_s, "SIGTERM drain fits"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert pod["securityContext"]["runAsUser"] == uid
            assert env["OMP_NUM_THREADS"] == str(container["resources"]["limits"]["cpu"])
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            (budget,) = [p for p in of_kind(docs, "PodDisruptionBudget") if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
            for other in tiers:
                if other is not deployment:
                    assert not budget["spec"]["selector"]["matchLabels"].items() <= other["spec"]["template"]["metadata"]["labels"].items()
            on_gpu = "nvidia.com/gpu" in container["resources"]["limits"]
            cuda_stages = [s.name for s in config.stages if s.options.get("provider") == "cuda"]
            assert on_gpu == bool(cuda_stages), f"{name}: GPU pods run CUDA stages, CPU pods none"
            assert container["image"] == ("selectd:cuda" if on_gpu else "selectd:cpu")
            if on_gpu:
                assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
                assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert any("nvidia.com/gpu" in d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] for d in tiers) \
            == (name in ("gpu", "two-tier"))


def test_two_tier_chains_a_cpu_tier_into_a_gpu_tier(rendered, tmp_path, monkeypatch):
    docs = rendered["two-tier"]
    settings = kafka_settings(docs)
    configs = {d["metadata"]["name"]: daemon_config(docs, d, tmp_path, monkeypatch)[0] for d in daemons(docs)}
    cpu, gpu = configs["selectd-cpu"], configs["selectd-gpu"]
    assert cpu.kafka.input_topics == [settings["INPUT_TOPIC"]]
    assert cpu.topics.accepted == settings["INTERMEDIATE_TOPIC"] == gpu.kafka.input_topics[0]
    assert gpu.topics.accepted == settings["ACCEPTED_TOPIC"]
    assert (cpu.topics.rejected, cpu.topics.dlq) == (gpu.topics.rejected, gpu.topics.dlq)
    assert cpu.kafka.group_id != gpu.kafka.group_id, "each tier its own group, scaled on its own lag"
    assert {s.type for s in cpu.stages} >= {"fasttext", "gopher_quality"} and not any(s.options.get("provider") == "cuda" for s in cpu.stages)
    assert {s.type for s in gpu.stages} == {"transformer", "causal_lm"}


def test_kafka_auth_reaches_daemons_keda_and_the_topics_job(rendered, tmp_path, monkeypatch):
    docs = rendered[WITH_AUTH]
    (auth,) = of_kind(docs, "TriggerAuthentication")
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"username", "password", "ca"}
    (secret,) = {ref["name"] for ref in auth["spec"]["secretTargetRef"]}
    (deployment,) = daemons(docs)
    config, _ = daemon_config(docs, deployment, tmp_path, monkeypatch)
    assert config.kafka.security_protocol == "SASL_SSL" and config.kafka.sasl_username == SECRET_VALUES["username"]
    assert config.kafka.sasl_password.get_secret_value() == SECRET_VALUES["password"]
    assert str(config.kafka.ssl_cafile) == SECRET_VALUES["ca.crt"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                 if str(config.kafka.ssl_cafile).startswith(m["mountPath"] + "/"))
    assert volumes[mount["name"]]["secret"]["secretName"] == secret
    (trigger,) = of_kind(docs, "ScaledObject")[0]["spec"]["triggers"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    # KEDA names the mechanism its own way; it must be the daemon's.
    assert trigger["metadata"]["sasl"] == config.kafka.sasl_mechanism.lower().replace("-", "_").replace("_sha_", "_sha")
    assert trigger["metadata"]["tls"] == "enable" and config.kafka.security_protocol.endswith("SSL")


def test_dedup_overlay_points_every_replica_at_one_durable_redis(rendered, tmp_path, monkeypatch):
    docs = rendered["cpu-dedup"]
    (redis,) = of_kind(docs, "StatefulSet")
    (service,) = of_kind(docs, "Service")
    pod = redis["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith("redis:") and redis["spec"]["replicas"] == 1
    server = command_options(container["args"])
    assert server["--appendonly"] == "yes" and server["--appendfsync"] == "always", "claims on disk before the reply"
    assert server["--maxmemory-policy"] == "noeviction", "a full Redis refuses writes instead of forgetting keys"
    limit = container["resources"]["limits"]["memory"]
    assert int(server["--maxmemory"].removesuffix("gb")) < int(limit.removesuffix("Gi")), "refuses writes before the OOM killer"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": server["--dir"]} in container["volumeMounts"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    for deployment in daemons(docs):
        config, _ = daemon_config(docs, deployment, tmp_path, monkeypatch)
        url = urllib.parse.urlsplit(config.dedup.url)
        assert config.dedup.store == "redis" and (url.hostname, url.port) == (service["metadata"]["name"], port["port"])
        assert {s.type for s in config.stages if s.enabled} >= {"exact_dedup", "minhash_dedup"}


def test_the_runbook_applies_the_tested_overlays():
    applied = set(re.findall(r"kubectl apply -k deploy/k8s/overlays/([\w-]+)", README.read_text()))
    assert applied == set(OVERLAYS)
