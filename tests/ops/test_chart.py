"""The Helm chart (k8s/avatar-fleet), checked offline the way a cluster would: ``helm lint``,
``helm template`` of every values file, every rendered object validated against Kubernetes'
own schemas (kubernetes-validate, strict) and CRDs against their vendored schemas
(k8s/schemas/), the settings it gives each process accepted by our settings loader, its NGINX
config accepted by the real nginx, and what ops rely on (GPU requests, drains, budgets,
autoscaling, network policies) present in what is rendered."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from config.settings import load_settings
from scripts import chart_files
from scripts.gotools import helm
from scripts.servers import find_program

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "k8s" / "avatar-fleet"
SCHEMAS = REPO / "k8s" / "schemas"
KUBE_VERSION = "1.31.0"
VALUES = {"default": None, "production-gpu": CHART / "values" / "production-gpu.yaml"}
NAMESPACE = "tutors"


def render(values: Path | None, *extra: str) -> list[dict]:
    cmd = [str(helm()), "template", "fleet", str(CHART), "-n", NAMESPACE,
           "--kube-version", KUBE_VERSION, *extra]
    if values:
        cmd += ["-f", str(values)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module", params=list(VALUES))
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(VALUES[request.param])


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


# --- validation -------------------------------------------------------------------------------
def _strict(schema: object) -> object:
    """A CRD's structural schema with unknown fields refused (the API server prunes them
    silently, which hides a misspelt field such as ``pollingIntervl``)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    out = {}
    for f in SCHEMAS.glob("*.json"):
        doc = json.loads(f.read_text())
        schema = _strict(doc["schema"])
        schema["properties"]["metadata"] = {"type": "object"}
        out[(f"{doc['group']}/{doc['version']}", doc["kind"])] = jsonschema.Draft7Validator(schema)
    return out


def validate(obj: dict, crds) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in crds:
        errors = sorted(crds[key].iter_errors(obj), key=lambda e: list(e.path))
        if errors:
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: " + "; ".join(
                f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5]))
        return
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_helm_lint_is_clean():
    for values in VALUES.values():
        cmd = [str(helm()), "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
        r = subprocess.run(cmd + (["-f", str(values)] if values else []),
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "0 chart(s) failed" in r.stdout


def test_every_rendered_object_is_valid(rendered):
    _, objs = rendered
    crds = crd_validators()
    assert len(crds) == 3
    for obj in objs:
        validate(obj, crds)


def test_the_validation_catches_mistakes():
    """A misspelt field, a wrong type, a CRD typo: each is refused (the checks above can fail)."""
    crds = crd_validators()
    objs = render(None)
    dep = next(o for o in by_kind(objs, "Deployment") if "router" in o["metadata"]["name"])
    bad = json.loads(json.dumps(dep))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad, crds)
    bad = json.loads(json.dumps(dep))
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad, crds)
    so = json.loads(json.dumps(by_kind(objs, "ScaledObject")[0]))
    so["spec"]["pollingIntervl"] = 15
    with pytest.raises(AssertionError, match="pollingIntervl"):
        validate(so, crds)


def test_bad_values_are_refused_with_the_field_named(tmp_path):
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    pool = base["workerPools"][0]
    cases = {"mars": {**pool, "region": "mars"},  # no such region (templates)
             "accelerator": {**pool, "accelerator": "tpu"},  # values.schema.json
             "capcity": {**pool, "capcity": 4}}  # a misspelt key
    for needle, bad_pool in cases.items():
        f = tmp_path / f"{needle}.yaml"
        f.write_text(yaml.safe_dump({"workerPools": [bad_pool]}))
        r = subprocess.run([str(helm()), "template", "fleet", str(CHART), "--kube-version",
                            KUBE_VERSION, "-f", str(f)], capture_output=True, text=True)
        assert r.returncode != 0, needle
        assert needle in r.stderr, r.stderr


# --- what the processes get -------------------------------------------------------------------
def _env(container: dict, secret: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet would set it ($(VAR) expanded)."""
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            v = e["value"]
            for k, known in env.items():
                v = v.replace(f"$({k})", known)
            env[e["name"]] = v
        elif "secretKeyRef" in e["valueFrom"]:
            env[e["name"]] = secret[e["valueFrom"]["secretKeyRef"]["key"]]
        else:
            env[e["name"]] = {"metadata.name": "fleet-worker-abc12",
                              "metadata.namespace": NAMESPACE}[
                e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _settings(objs: list[dict], tmp_path: Path, monkeypatch) -> list[tuple[str, object]]:
    """(container name, the settings it loads from the environment the chart gives it) for
    the router and each worker pool; a misnamed or invalid setting raises SettingsError."""
    secret = by_kind(objs, "Secret")[0]["stringData"]
    regions = tmp_path / "regions.yaml"
    regions.write_text(secret["regions.yaml"])
    out = []
    for dep in by_kind(objs, "Deployment"):
        c = dep["spec"]["template"]["spec"]["containers"][0]
        if c["name"] not in ("router", "worker"):
            continue
        env = _env(c, secret)
        assert env["AVATAR_REGIONS_FILE"] == "/etc/avatar/regions.yaml"
        env["AVATAR_REGIONS_FILE"] = str(regions)
        for k in [k for k in os.environ if k.startswith("AVATAR_")]:
            monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        out.append((c["name"], load_settings()))
    return out


def test_every_process_accepts_the_settings_the_chart_gives_it(tmp_path, monkeypatch):
    checked = 0
    for name, s in _settings(render(None), tmp_path, monkeypatch):
        assert s.log_format == "json"
        assert s.redis_url == "redis://fleet-avatar-fleet-redis:6379/0"
        if name == "worker":
            assert s.worker.id == "fleet-worker-abc12"
            assert s.worker.capacity == 4 and s.worker.health_port == 8081
            assert s.worker.pod_deletion_cost and s.metrics_port == 9100
            assert s.livekit.url == "ws://fleet-avatar-fleet-livekit:7880"
            assert s.livekit.api_secret.get_secret_value() == s.regions().get("eu").api_secret \
                .get_secret_value()
            # the worker's Redis wait by default fits its 4 s heartbeat ttl: 1.5 s, two tries
            assert s.worker.heartbeat_ttl_s == 4 and s.worker.redis_timeout_s == 1.5
        else:
            assert s.router.redis_timeout_s == 0.5
        checked += 1
    assert checked == 2  # the worker pool and the router


def test_redis_timeouts_reach_the_processes_and_one_the_ttl_cannot_hold_is_refused(
        tmp_path, monkeypatch):
    got = dict(_settings(render(None, "--set-json", "worker.redisTimeoutS=1.2",
                                "--set-json", "router.redisTimeoutS=0.8"), tmp_path, monkeypatch))
    assert got["worker"].worker.redis_timeout_s == 1.2
    assert got["router"].router.redis_timeout_s == 0.8
    # two 2 s tries and the 1 s interval outlast a 4 s ttl: refused at install, not in a
    # crash-looping pod
    r = subprocess.run([str(helm()), "template", "fleet", str(CHART), "--kube-version",
                        KUBE_VERSION, "--set-json", "worker.redisTimeoutS=2"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "worker.redisTimeoutS (2)" in r.stderr and "heartbeatTtlS (4)" in r.stderr, r.stderr


def test_the_chart_ships_our_nginx_config_and_nginx_accepts_it(tmp_path):
    assert chart_files.main(["--check"]) == 0, "run python -m scripts.chart_files"
    objs = render(None)
    cm = next(o for o in by_kind(objs, "ConfigMap") if "nginx.conf" in o.get("data", {}))
    conf = cm["data"]["nginx.conf"]
    assert "server fleet-avatar-fleet-router:8080 " in conf
    assert "limit_req_zone" in conf and "error_log stderr" in conf
    # nginx -t resolves upstream names: point it at loopback for the check
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(conf.replace("fleet-avatar-fleet-router", "127.0.0.1")
                                         .replace("listen 8080;", "listen 127.0.0.1:8080;"))
    r = subprocess.run([find_program("nginx", "/usr/sbin"), "-t", "-p", str(tmp_path), "-c",
                        str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- what ops rely on -------------------------------------------------------------------------
def _pools(objs):
    return {d["metadata"]["labels"]["avatar-fleet/worker-pool"]: d
            for d in by_kind(objs, "Deployment")
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"}


def test_worker_pools_drain_spread_and_get_their_accelerator():
    objs = render(VALUES["production-gpu"])
    pools = _pools(objs)
    assert set(pools) == {"eu-gpu", "eu-cpu-overflow", "eu-gpu-canary"}
    pdbs = {p["spec"]["selector"]["matchLabels"].get("avatar-fleet/worker-pool"): p
            for p in by_kind(objs, "PodDisruptionBudget")}
    for name, dep in pools.items():
        spec = dep["spec"]["template"]["spec"]
        c = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        gpu = "gpu" in name
        assert ("nvidia.com/gpu" in c["resources"]["limits"]) == gpu, name
        assert c["image"].endswith("avatar-worker-gpu:0.1.0" if gpu else "avatar-worker:0.1.0")
        if gpu:
            assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
        assert env["AVATAR_REGION"] == ("eu-canary" if "canary" in name else "eu")
        # SIGTERM drains for drainSeconds; the kubelet waits longer than that before SIGKILL
        assert spec["terminationGracePeriodSeconds"] > int(env["AVATAR_WORKER__DRAIN_TIMEOUT_S"])
        assert "replicas" not in dep["spec"], "KEDA owns the replica count"
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        keys = {t["topologyKey"] for t in spec["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert pdbs[name]["spec"]["maxUnavailable"] == 1
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["serviceAccountName"].endswith("-worker")
    role = by_kind(objs, "Role")[0]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                              "verbs": ["get", "patch"]}]


def test_each_pool_scales_on_its_sessions_and_zero_pools_know_when_to_wake():
    objs = render(VALUES["production-gpu"])
    scaled = {s["spec"]["scaleTargetRef"]["name"].split("-worker-")[1]: s
              for s in by_kind(objs, "ScaledObject")}
    assert set(scaled) == set(_pools(objs))
    for name, so in scaled.items():
        trig = {t["name"]: t for t in so["spec"]["triggers"]}
        q = trig["sessions"]["metadata"]["query"]
        assert f'avatar_fleet_worker_pool="{name}"' in q and f'namespace="{NAMESPACE}"' in q
        # 16 lessons per GPU worker, 4 per CPU worker, aiming at 70 %
        assert float(trig["sessions"]["metadata"]["threshold"]) == pytest.approx(
            (16 if "gpu" in name else 4) * 0.7)
        behaviour = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behaviour["scaleDown"]["stabilizationWindowSeconds"] >= 300
        if so["spec"]["minReplicaCount"] == 0:
            # from zero, the sessions trigger reads 0: another signal must start the pool
            assert {"canary-share", "region-overflow"} & set(trig), name
    crons = [t for t in scaled["eu-gpu"]["spec"]["triggers"] if t["type"] == "cron"]
    assert len(crons) == 8 and crons[0]["metadata"]["start"] == "50 8 * * *"
    assert crons[0]["metadata"]["desiredReplicas"] == "18"


def test_routers_livekit_redis_and_the_edge():
    objs = render(None)
    deps = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d
            for d in by_kind(objs, "Deployment")}
    router = deps["router"]["spec"]
    assert router["replicas"] >= 2
    assert router["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] \
        == "/readyz"
    lk_cm = next(o for o in by_kind(objs, "ConfigMap") if "livekit.yaml" in o["data"])
    lk = yaml.safe_load(lk_cm["data"]["livekit.yaml"])
    assert lk["room"]["sync_streams"] is True
    assert lk["rtc"]["pli_throttle"]["high_quality"] == "100ms"
    assert lk["redis"]["address"] == "fleet-avatar-fleet-redis:6379"
    assert deps["livekit"]["spec"]["template"]["spec"]["hostNetwork"] is True
    redis = by_kind(objs, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][:4] == ["--appendonly", "yes", "--appendfsync", "everysec"]
    # the rules in the chart are the plain rules file, unchanged
    rules = yaml.safe_load((CHART / "files" / "prometheus" / "avatar-fleet.rules.yaml")
                           .read_text())
    assert by_kind(objs, "PrometheusRule")[0]["spec"] == rules


def test_network_policies_admit_only_what_must_talk():
    objs = render(None)
    pols = {p["metadata"]["name"].removeprefix("fleet-avatar-fleet-"): p["spec"]
            for p in by_kind(objs, "NetworkPolicy")}
    assert pols["default-deny"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/instance": "fleet"}
    assert "ingress" not in pols["default-deny"]
    router_from = pols["router"]["ingress"][0]["from"]
    assert {"app.kubernetes.io/component": "nginx"}.items() <= \
        router_from[0]["podSelector"]["matchLabels"].items()
    assert router_from[1]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    assert pols["worker"]["ingress"][0]["ports"] == [{"port": 9100, "protocol": "TCP"}]
    redis_from = [f.get("podSelector", {}).get("matchLabels", {}).get(
        "app.kubernetes.io/component") for f in pols["redis"]["ingress"][0]["from"]]
    assert {"router", "worker"} <= set(redis_from)


def test_a_pool_with_a_neural_model_mounts_it_read_only_and_names_it(tmp_path):
    """``neuralModel`` on a GPU pool: its workers mount the claim at /models read-only and are
    told the file (AVATAR_WORKER__NEURAL_MODEL); the other pools get neither; a file that is not
    an .onnx path is refused by the schema."""
    vals = tmp_path / "neural.yaml"
    values = yaml.safe_load(VALUES["production-gpu"].read_text())
    pools = values["workerPools"]
    for p in pools:
        if p["name"] == "eu-gpu":
            p["neuralModel"] = {"claimName": "w2l-weights", "file": "wav2lip/w2l.onnx"}
    vals.write_text(yaml.safe_dump(values))
    deps = _pools(render(vals))
    for name, dep in deps.items():
        spec = dep["spec"]["template"]["spec"]
        c = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        if name == "eu-gpu":
            assert env["AVATAR_WORKER__NEURAL_MODEL"] == "/models/wav2lip/w2l.onnx"
            assert mounts["neural-model"] == {"name": "neural-model", "mountPath": "/models",
                                              "readOnly": True}
            vol = next(v for v in spec["volumes"] if v["name"] == "neural-model")
            assert vol["persistentVolumeClaim"] == {"claimName": "w2l-weights",
                                                    "readOnly": True}
        else:
            assert "AVATAR_WORKER__NEURAL_MODEL" not in env and "neural-model" not in mounts
    pools[0]["neuralModel"] = {"claimName": "w2l-weights", "file": "../etc/passwd"}
    vals.write_text(yaml.safe_dump(values))
    r = subprocess.run([str(helm()), "template", "fleet", str(CHART), "--kube-version",
                        KUBE_VERSION, "-f", str(vals)], capture_output=True, text=True)
    assert r.returncode != 0 and "neuralModel" in r.stderr, r.stderr
