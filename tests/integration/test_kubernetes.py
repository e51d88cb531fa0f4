"""deploy/kubernetes, from the YAML alone: every overlay renders with `kubectl kustomize`, passes
the Kubernetes 1.32 schemas offline (kubernetes-validate, strict), holds the security settings on
every container, carries a gateway config that loads, and keeps the MCP server reachable only
through the gateway (a small analysis over the rendered NetworkPolicies, labels and ports).

kubectl is on this kind of machine and on CI's (the same kind); if it is missing, these tests
fail rather than skip, because a skipped check of the manifests proves nothing.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ledgergate.config import parse_config
from ledgergate.masking.engine import Masker
from ledgergate.policy.engine import PolicyEngine
from ledgergate.upstream.unix import parse_unix_url
from tests.support.procs import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("standalone", "sidecar", "ha-postgres")
K8S_VERSION = "1.32.0"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
GATEWAY = "Deployment/ledgergate"
CONFIG_PATH = "/etc/ledgergate/ledgergate.yaml"

Doc = dict[str, Any]


@cache
def render(target: str) -> tuple[Doc, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: the manifests cannot be rendered, and an unrendered overlay proves nothing")
    path = DEPLOY / target if target == "base" else DEPLOY / "overlays" / target
    proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {target}: {proc.stderr[-2000:]}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def name_of(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def workloads(docs: tuple[Doc, ...] | list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in WORKLOADS]


def pod_spec(workload: Doc) -> Doc:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Doc) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def find(docs: tuple[Doc, ...] | list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container(workload: Doc, name: str) -> Doc:
    (found,) = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    return found


def gateway_config(docs: tuple[Doc, ...]) -> tuple[str, Doc]:
    """The config text mounted at /etc/ledgergate/ledgergate.yaml in the gateway container."""
    gw = find(docs, "Deployment", "ledgergate")
    mount = next(m for m in container(gw, "ledgergate")["volumeMounts"] if m["mountPath"] == CONFIG_PATH)
    volume = next(v for v in pod_spec(gw)["volumes"] if v["name"] == mount["name"])
    cm = find(docs, "ConfigMap", volume["configMap"]["name"])
    return cm["data"][mount["subPath"]], gw


# --- rendering and schemas -------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_renders_and_passes_the_schemas(target: str) -> None:
    docs = render(target)
    assert any(d["kind"] == "Deployment" and d["metadata"]["name"] == "ledgergate" for d in docs)
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{target}: {name_of(doc)} does not match the {K8S_VERSION} schema: {exc.message}")


def test_schema_check_is_real() -> None:
    """The validator refuses what the API server would (so a pass above means something)."""
    gw = copy.deepcopy(find(render("standalone"), "Deployment", "ledgergate"))
    container(gw, "ledgergate")["securityContext"]["readOnlyRootFilesystm"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(gw, K8S_VERSION, strict=True)


# --- security settings -----------------------------------------------------------------------------

def _dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    return int(users[-1])


@pytest.mark.parametrize("target", OVERLAYS)
def test_every_container_is_locked_down(target: str) -> None:
    docs = render(target)
    for wl in workloads(docs):
        spec, where = pod_spec(wl), name_of(wl)
        assert spec.get("automountServiceAccountToken") is False, f"{where}: no service-account token by default"
        for flag in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
            assert not spec.get(flag), f"{where}: {flag}"
        assert not [v for v in spec.get("volumes", []) if "hostPath" in v], f"{where}: hostPath volume"
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc, cw = c.get("securityContext", {}), f"{where} container {c['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, cw
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, cw
            assert sc.get("allowPrivilegeEscalation") is False, cw
            assert sc.get("readOnlyRootFilesystem") is True, cw
            assert sc.get("privileged") in (None, False), cw
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), cw
            assert not sc.get("capabilities", {}).get("add"), cw
            assert sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type") == "RuntimeDefault", cw
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), f"{cw}: {kind}"
            assert not [p for p in c.get("ports", []) if "hostPort" in p], f"{cw}: hostPort"
    for sa in [d for d in docs if d["kind"] == "ServiceAccount"]:
        assert sa.get("automountServiceAccountToken") is False, name_of(sa)
    # the Pod Security Standard that says the same, enforced by the API server
    for ns in [d for d in docs if d["kind"] == "Namespace"]:
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("target", OVERLAYS)
def test_gateway_probes_user_and_disruption_budget(target: str) -> None:
    docs = render(target)
    gw = find(docs, "Deployment", "ledgergate")
    c = container(gw, "ledgergate")
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # runAsNonRoot can only be checked against a numeric user; the image's and the pod's agree
    assert pod_spec(gw)["securityContext"]["runAsUser"] == _dockerfile_uid()
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"
            and _selects(d["spec"]["selector"], pod_labels(gw))]
    assert len(pdbs) == 1


@pytest.mark.parametrize("target", OVERLAYS)
def test_secrets_are_only_referenced(target: str) -> None:
    docs = render(target)
    assert not [d for d in docs if d["kind"] == "Secret"], "no secret material in the manifests"
    text, gw = gateway_config(docs)
    c = container(gw, "ledgergate")
    env = {e["name"]: e for e in c.get("env", [])}
    assert env["MCP_SERVER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ledgergate-upstream"
    assert env["OIDC_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "ledgergate-oidc"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(gw)["volumes"]}
    settings = parse_config(text, env={name: "x" for name in env})
    keys = next(n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == "ledgergate-ledger-keys")
    key_dir = mounts[keys]["mountPath"]
    assert mounts[keys]["readOnly"] is True
    assert settings.audit.signing_key.startswith(key_dir + "/")
    assert settings.audit.hmac_key is not None and settings.audit.hmac_key.startswith(key_dir + "/")
    assert "${MCP_SERVER_TOKEN}" in text and "Bearer x" in str(settings.servers["accounts"].headers)


@pytest.mark.parametrize("target", OVERLAYS)
def test_gateway_config_loads_and_writes_only_to_volumes(target: str) -> None:
    """The mounted config passes `config validate`'s checks with exactly the container's environment
    (every ${VAR} it names is provided), and whatever it writes lies on a writable volume, because
    the root filesystem is read-only."""
    text, gw = gateway_config(render(target))
    c = container(gw, "ledgergate")
    env = {e["name"]: "x" for e in c.get("env", [])}
    settings = parse_config(text, env=env)
    PolicyEngine.from_settings(settings.policies, set(Masker.from_settings(settings.masking).profiles))
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
        assert name in env, f"${{{name}}} is not in the container's environment"
    assert settings.listen.startswith("0.0.0.0:")
    assert int(settings.listen.rsplit(":", 1)[1]) == next(p["containerPort"] for p in c["ports"] if p["name"] == "http")
    writable = [m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")]
    written = [settings.data_dir]
    if settings.storage.startswith("sqlite:///"):
        written.append(settings.storage[len("sqlite:///"):])
    for path in written:
        assert any(path == w or path.startswith(w + "/") for w in writable), f"{path} is not on a writable volume"
    replica = next(e for e in c["env"] if e["name"] == "POD_NAME")
    assert settings.audit.replica == "x" and "${POD_NAME}" in text
    assert replica["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", "each pod writes its own log"


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_the_pod_outlives_the_gateways_drain(target: str) -> None:
    """On SIGTERM the gateway drains for `limits.drain_timeout`, then answers and records the calls it cuts
    off, closes connections and signs its final checkpoint: the kubelet's SIGKILL must come after all of
    that (terminationGracePeriodSeconds >= drain_timeout + app.SHUTDOWN_MARGIN), and the default drain is
    the one the manifests are sized for, so a config that omits it still fits."""
    from ledgergate.app import SHUTDOWN_MARGIN
    from ledgergate.config import LimitsSettings

    text, gw = gateway_config(render(target))
    grace = pod_spec(gw).get("terminationGracePeriodSeconds")
    assert isinstance(grace, int), f"{target}: the gateway pod leaves terminationGracePeriodSeconds at 30 s"
    settings = parse_config(text, env={e["name"]: "x" for e in container(gw, "ledgergate").get("env", [])})
    assert grace >= settings.limits.drain_timeout + SHUTDOWN_MARGIN, (grace, settings.limits.drain_timeout)
    assert grace == LimitsSettings().drain_timeout + SHUTDOWN_MARGIN, "the default drain and the manifests agree"
    assert settings.limits.drain_timeout >= settings.approvals.hold, "a held call can end as its hold does"


# --- reachability ----------------------------------------------------------------------------------

def _selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions); {} selects everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels,
              "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class Reach:
    anyone: bool  # some source outside the rendered pods (any pod, other namespaces, IP ranges)
    workloads: frozenset[str]  # rendered workloads whose pods are admitted


def _port_matches(rule_port: Doc, port: int, port_name: str | None) -> bool:
    value = rule_port.get("port")
    if value is None:
        return True
    if isinstance(value, str):
        return value == port_name
    end = rule_port.get("endPort", value)
    return value <= port <= end


def who_can_reach(docs: list[Doc], target: Doc, port: int, port_name: str | None = None) -> Reach:
    """Sources admitted to `port` of `target`'s pods by the rendered NetworkPolicies (ingress only:
    egress policies of the source can only narrow this further)."""
    labels = pod_labels(target)
    namespace = target["metadata"].get("namespace")
    policies = [p for p in docs if p["kind"] == "NetworkPolicy"
                and p["metadata"].get("namespace") == namespace
                and _selects(p["spec"].get("podSelector"), labels)
                and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not policies:
        return Reach(True, frozenset())  # not isolated: everything may connect
    anyone, admitted = False, set()
    pods = [w for w in workloads(docs) if w["metadata"].get("namespace") == namespace]
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            if rule.get("ports") and not any(_port_matches(p, port, port_name) for p in rule["ports"]):
                continue
            peers = rule.get("from") or []
            if not peers:
                anyone = True
                continue
            for peer in peers:
                if "ipBlock" in peer or "namespaceSelector" in peer or "podSelector" not in peer:
                    anyone = True
                    continue
                matched = {name_of(w) for w in pods if _selects(peer["podSelector"], pod_labels(w))}
                admitted |= matched
                if not (peer["podSelector"].get("matchLabels") or peer["podSelector"].get("matchExpressions")):
                    anyone = True  # {} admits every pod of the namespace, also ones not rendered here
    return Reach(anyone, frozenset(admitted))


def _mcp_port(server: Doc) -> tuple[int, str | None]:
    (port,) = [p for c in pod_spec(server)["containers"] for p in c.get("ports", [])]
    return port["containerPort"], port.get("name")


@pytest.mark.parametrize("target", ["standalone", "ha-postgres"])
def test_only_the_gateway_reaches_the_mcp_server(target: str) -> None:
    docs = list(render(target))
    server = find(docs, "Deployment", "mcp-server")
    port, port_name = _mcp_port(server)
    reach = who_can_reach(docs, server, port, port_name)
    assert reach == Reach(False, frozenset({GATEWAY})), reach
    # ... and the Service in front of it is cluster-internal
    svc = find(docs, "Service", "mcp-server")
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert not pod_spec(server).get("hostNetwork")
    # the gateway itself is reachable (on its port) and is what the config points at
    gw = find(docs, "Deployment", "ledgergate")
    assert who_can_reach(docs, gw, 8080, "http").anyone
    text, _ = gateway_config(tuple(docs))
    assert "http://mcp-server:8000/mcp" in text


def _mutations(docs: list[Doc]) -> dict[str, list[Doc]]:
    def policy(d: list[Doc], name: str) -> Doc:
        return next(p for p in d if p["kind"] == "NetworkPolicy" and p["metadata"]["name"] == name)

    out: dict[str, list[Doc]] = {}
    d = copy.deepcopy(docs)
    d.remove(policy(d, "default-deny-ingress"))
    d.remove(policy(d, "mcp-server-only-from-gateway"))
    out["no policy selects the server"] = d
    d = copy.deepcopy(docs)
    policy(d, "mcp-server-only-from-gateway")["spec"]["ingress"][0]["from"].append({"ipBlock": {"cidr": "10.0.0.0/8"}})
    out["an IP range is admitted"] = d
    d = copy.deepcopy(docs)
    policy(d, "mcp-server-only-from-gateway")["spec"]["ingress"][0]["from"][0]["namespaceSelector"] = {}
    out["gateway-labelled pods of every namespace are admitted"] = d
    d = copy.deepcopy(docs)
    policy(d, "mcp-server-only-from-gateway")["spec"]["ingress"][0]["from"][0]["podSelector"] = {
        "matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "Exists"}]}
    out["a selector every workload matches"] = d
    d = copy.deepcopy(docs)
    policy(d, "mcp-server-only-from-gateway")["spec"]["ingress"].append({"ports": [{"port": 8000}]})
    out["a second rule opens the port to all"] = d
    d = copy.deepcopy(docs)
    policy(d, "ledgergate-ingress")["spec"]["podSelector"] = {}
    del policy(d, "ledgergate-ingress")["spec"]["ingress"][0]["ports"]
    out["the gateway's open policy selects every pod on every port"] = d
    return out


@pytest.mark.parametrize("case", ["no policy selects the server", "an IP range is admitted",
                                  "gateway-labelled pods of every namespace are admitted",
                                  "a selector every workload matches", "a second rule opens the port to all",
                                  "the gateway's open policy selects every pod on every port"])
def test_the_reachability_analysis_catches_a_bypass(case: str) -> None:
    """Each of these edits would let something other than the gateway reach the server."""
    docs = list(render("standalone"))
    mutated = _mutations(docs)[case]
    server = find(mutated, "Deployment", "mcp-server")
    port, port_name = _mcp_port(server)
    reach = who_can_reach(mutated, server, port, port_name)
    assert reach != Reach(False, frozenset({GATEWAY})), f"{case}: not caught ({reach})"


def test_sidecar_server_listens_only_on_a_unix_socket() -> None:
    docs = list(render("sidecar"))
    assert not [w for w in workloads(docs) if w["metadata"]["name"] == "mcp-server"], "no separate server pod"
    gw = find(docs, "Deployment", "ledgergate")
    spec = pod_spec(gw)
    server, gateway = container(gw, "mcp-server"), container(gw, "ledgergate")
    assert not server.get("ports"), "the MCP server exposes no container port"
    text, _ = gateway_config(tuple(docs))
    settings = parse_config(text, env={e["name"]: "x" for e in gateway.get("env", [])})
    url = parse_unix_url(settings.servers["accounts"].url or "")
    socket_dir = str(Path(url.socket_path).parent)
    volumes = {v["name"]: v for v in spec["volumes"]}

    def mount_of(c: Doc) -> Doc:
        (m,) = [m for m in c["volumeMounts"] if m["mountPath"] == socket_dir]
        return m

    shared = mount_of(server)["name"]
    assert mount_of(gateway)["name"] == shared, "both containers mount the socket's folder"
    assert "emptyDir" in volumes[shared], "the socket lives in a pod-private emptyDir"
    assert [c["name"] for c in spec["containers"] if any(m["name"] == shared for m in c["volumeMounts"])] == \
        ["ledgergate", "mcp-server"]
    # the server is told to listen on exactly that socket
    started = " ".join(server.get("command", []) + server.get("args", []) + [str(e.get("value")) for e in server.get("env", [])])
    assert url.socket_path in started
    # only the gateway's port is published and admitted
    svc = find(docs, "Service", "ledgergate")
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert {ports.get(p["targetPort"], p["targetPort"]) for p in svc["spec"]["ports"]} == {8080}
    assert all(not c.get("ports") or c["name"] == "ledgergate" for c in spec["containers"])
    assert who_can_reach(docs, gw, 8080, "http").anyone
    assert "default-deny-ingress" in {p["metadata"]["name"] for p in docs if p["kind"] == "NetworkPolicy"}


def test_ha_sessions_stick_to_their_replica_and_modern_requests_spread() -> None:
    docs = list(render("ha-postgres"))
    gw = find(docs, "Deployment", "ledgergate")
    assert gw["spec"]["replicas"] == 3
    text, _ = gateway_config(tuple(docs))
    settings = parse_config(text, env={e["name"]: "x" for e in container(gw, "ledgergate").get("env", [])})
    assert settings.storage.startswith("postgresql://") and "@" in settings.storage
    assert ":" not in settings.storage.split("@")[0].removeprefix("postgresql://"), "no password in the URL"
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    pdb = find(docs, "PodDisruptionBudget", "ledgergate")
    assert pdb["spec"] == {"minAvailable": 2, "unhealthyPodEvictionPolicy": "AlwaysAllow",
                           "selector": {"matchLabels": {"app.kubernetes.io/name": "ledgergate"}}}

    router = find(docs, "Deployment", "mcp-router")
    volume = next(v for v in pod_spec(router)["volumes"] if "configMap" in v)
    envoy = yaml.safe_load(find(docs, "ConfigMap", volume["configMap"]["name"])["data"]["envoy.yaml"])
    (listener,) = envoy["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    filters = [f["name"] for f in hcm["http_filters"]]
    assert filters == ["envoy.filters.http.stateful_session", "envoy.filters.http.router"]
    session = hcm["http_filters"][0]["typed_config"]
    assert session["session_state"]["name"] == "envoy.http.stateful_session.envelope"
    assert session["session_state"]["typed_config"]["header"]["name"].lower() == "mcp-session-id"
    assert session.get("strict", False) is False, "a dead replica's session falls through to a 404 elsewhere"
    (cluster,) = envoy["static_resources"]["clusters"]
    assert cluster["lb_policy"] == "ROUND_ROBIN", "requests without a session spread over every replica"
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    host, namespace = address["address"].split(".")[:2]
    headless = find(docs, "Service", host)
    assert headless["metadata"]["namespace"] == namespace and headless["spec"]["clusterIP"] == "None"
    assert _selects({"matchLabels": headless["spec"]["selector"]}, pod_labels(gw))
    assert address["port_value"] == 8080
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert all(r["route"]["timeout"] == "0s" for r in routes), "SSE streams and approval holds are not cut"
    # the router reaches the gateway; it cannot reach the MCP server directly
    server = find(docs, "Deployment", "mcp-server")
    assert "Deployment/mcp-router" not in who_can_reach(docs, server, *_mcp_port(server)).workloads
