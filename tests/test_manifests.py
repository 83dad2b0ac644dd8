"""k8s/ manifests: they build, validate against the Kubernetes schema, and say what the docs say.

Nothing here needs a cluster or the network: `kubectl kustomize` renders locally, the schema
comes with the kubernetes-validate package, and the Dockerfiles' commands are run (with
--help, or on loopback) from this checkout instead of from an image.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from conftest import stop_process

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
LOCUSTFILE = REPO / "locustfile.py"
KUBECTL = shutil.which("kubectl")

needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not on the PATH: cannot build the kustomizations"
)
needs_locustfile = pytest.mark.skipif(
    not LOCUSTFILE.exists(), reason="locustfile.py does not exist yet (written by another issue)"
)

NAMESPACE = "nodeport-harness"
EXPECTED_KUSTOMIZATIONS = {
    "helloworld",
    "locust",
    "overlays/nodeport",
    "overlays/loadbalancer",
    "overlays/nodeport-local",
    "overlays/locust-expose",
    "overlays/openshift",
}


# --------------------------------------------------------------------------- helpers


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def schema_version() -> str:
    """The newest Kubernetes schema kubernetes-validate ships (it must be >= 1.30)."""
    newest = kubernetes_validate.latest_version()
    assert _version_key(newest)[:2] >= (1, 30), f"kubernetes-validate too old: {newest}"
    return newest


def kustomization_dirs() -> list[str]:
    return sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml"))


@functools.cache
def _kustomize(rel: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / rel)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def build(rel: str) -> list[dict]:
    """The objects `kubectl kustomize k8s/REL` renders (a fresh copy each call)."""
    if KUBECTL is None:
        pytest.skip("kubectl is not on the PATH: cannot build the kustomizations")
    code, out, err = _kustomize(rel)
    if code != 0:
        pytest.fail(f"kubectl kustomize k8s/{rel} failed:\n{err}")
    return [obj for obj in yaml.safe_load_all(out) if obj]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [
        o for o in objects
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def load_file(path: Path) -> list[dict]:
    return [obj for obj in yaml.safe_load_all(path.read_text()) if obj]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- Dockerfiles


class Dockerfile:
    """Just enough of a Dockerfile parser for the final stage: WORKDIR, COPY, ENTRYPOINT, CMD."""

    def __init__(self, path: Path):
        self.path = path
        self.text = path.read_text()
        self.instructions: list[tuple[str, str]] = []
        logical = ""
        for raw in self.text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.endswith("\\"):
                logical += line[:-1] + " "
                continue
            logical += line
            keyword, _, rest = logical.partition(" ")
            self.instructions.append((keyword.upper(), rest.strip()))
            logical = ""
        # Only the last stage ends up in the image.
        last_from = max(i for i, (k, _) in enumerate(self.instructions) if k == "FROM")
        self.final = self.instructions[last_from:]

    def _exec_form(self, keyword: str) -> list[str]:
        values = [rest for k, rest in self.final if k == keyword]
        if not values:
            return []
        value = values[-1]
        assert value.startswith("["), f"{self.path.name}: {keyword} must use the exec (JSON) form"
        return json.loads(value)

    @property
    def entrypoint(self) -> list[str]:
        return self._exec_form("ENTRYPOINT")

    @property
    def cmd(self) -> list[str]:
        return self._exec_form("CMD")

    @property
    def workdir(self) -> str:
        dirs = [rest for k, rest in self.final if k == "WORKDIR"]
        return dirs[-1] if dirs else "/"

    @property
    def user(self) -> str | None:
        users = [rest for k, rest in self.final if k == "USER"]
        return users[-1] if users else None

    def copies_from_context(self) -> list[tuple[list[str], str, str]]:
        """(sources, destination, workdir at that point) of every COPY from the build context,
        in all stages."""
        copies = []
        workdir = "/"
        for keyword, rest in self.instructions:
            if keyword == "FROM":
                workdir = "/"
            elif keyword == "WORKDIR":
                workdir = rest
            elif keyword in ("COPY", "ADD"):
                words = shlex.split(rest)
                if any(w.startswith("--from") for w in words):
                    continue
                words = [w for w in words if not w.startswith("--")]
                copies.append((words[:-1], words[-1], workdir))
        return copies

    def image_path_to_repo(self, image_path: str) -> Path | None:
        """Which checkout file a path inside the final image comes from (final stage COPYs)."""
        workdir = "/"
        for keyword, rest in self.final:
            if keyword == "WORKDIR":
                workdir = rest
            elif keyword == "COPY" and "--from" not in rest:
                *sources, dest = shlex.split(rest)
                dest_abs = os.path.normpath(os.path.join(workdir, dest))
                for src in sources:
                    target = dest_abs if not dest.endswith("/") else os.path.join(
                        dest_abs, os.path.basename(src))
                    if os.path.normpath(target) == os.path.normpath(image_path):
                        return REPO / src
        return None

    def pip_requirements(self) -> list[str]:
        """Requirement strings the final stage `pip install`s by name (not wheels/paths)."""
        requirements = []
        for keyword, rest in self.final:
            if keyword != "RUN":
                continue
            for command in rest.split("&&"):
                words = shlex.split(command)
                if words[:2] != ["pip", "install"]:
                    continue
                requirements += [w for w in words[2:] if not w.startswith("-")
                                 and "/" not in w and not w.endswith(".whl") and w != "."]
        return requirements

    def build_tag(self) -> str:
        """The image tag the header's `docker build ... -t TAG .` line gives."""
        for line in self.text.splitlines():
            if "docker build" in line and " -t " in line:
                words = line.lstrip("# ").split()
                return words[words.index("-t") + 1]
        raise AssertionError(f"{self.path}: no '# docker build ... -t TAG .' line in the header")


HELLOWORLD_DOCKERFILE = Dockerfile(K8S / "helloworld" / "Dockerfile")
LOCUST_DOCKERFILE = Dockerfile(K8S / "locust" / "Dockerfile")


def local_argv(argv: list[str]) -> list[str]:
    """An image command, runnable here: `python` / `locust` from this test environment."""
    program, *rest = argv
    if program == "python":
        return [sys.executable, *rest]
    if program == "locust":
        return [sys.executable, "-m", "locust", *rest]
    raise AssertionError(f"unexpected program in an image command: {program}")


# Runs `python -m MODULE ARGS...` with only the standard library, the `harness` package and
# the named distributions (and what they require) importable: what an image that installs
# the package with --no-deps plus those requirements can import.
_ONLY_INSTALLED = """
import importlib.metadata as md, json, re, runpy, sys

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

wanted, module, args = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3:]
todo, dists = [norm(re.split(r"[ ;<>=!~\\[(]", w, maxsplit=1)[0]) for w in wanted], set()
while todo:
    name = todo.pop()
    if name in dists:
        continue
    dists.add(name)
    try:
        requires = md.requires(name) or []
    except md.PackageNotFoundError:
        continue
    todo += [norm(re.split(r"[ ;<>=!~\\[(]", r, maxsplit=1)[0])
             for r in requires if "extra ==" not in r]
allowed = {top for top, owners in md.packages_distributions().items()
           if any(norm(o) in dists for o in owners)} | {"harness"}

class OnlyInstalled:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in sys.builtin_module_names or top in allowed:
            return None
        raise ModuleNotFoundError(f"No module named {top!r} (not installed in the image)",
                                  name=top)

sys.meta_path.insert(0, OnlyInstalled())
sys.argv = [module, *args]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def image_python_argv(dockerfile: Dockerfile, argv: list[str]) -> list[str]:
    """`python -m MODULE ARGS` from an image, runnable here with only what the image installs."""
    assert argv[:2] == ["python", "-m"], argv
    return [sys.executable, "-c", _ONLY_INSTALLED, json.dumps(dockerfile.pip_requirements()),
            *argv[2:]]


def run_help(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [*local_argv(argv), "--help"], cwd=cwd, capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})}, check=False,
    )
    assert proc.returncode == 0, f"{argv} --help exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def options_in(argv: list[str]) -> list[str]:
    return [word.split("=", 1)[0] for word in argv if word.startswith("--")]


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern.startswith("!"):
            continue
        bare = pattern.removeprefix("**/").rstrip("/")
        parts = Path(rel).parts
        candidates = [rel] + ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            candidates += list(parts)
        if any(fnmatch.fnmatch(c, bare) for c in candidates):
            return True
    return False


# --------------------------------------------------------------------------- build + schema


def test_the_expected_kustomizations_exist():
    assert set(kustomization_dirs()) >= EXPECTED_KUSTOMIZATIONS


@needs_kubectl
@pytest.mark.parametrize("rel", kustomization_dirs())
def test_kustomization_builds_and_every_object_validates(rel):
    objects = build(rel)
    assert objects, f"k8s/{rel} renders nothing"
    version = schema_version()
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"k8s/{rel}: {obj['kind']}/{obj['metadata']['name']}: {path}: "
                        f"{err.message}")


@needs_kubectl
@pytest.mark.parametrize("rel", [d for d in kustomization_dirs() if d != "helloworld"])
def test_overlays_and_locust_pin_one_namespace(rel):
    # The ClusterRoleBinding subject and the discovery Role must land in the same namespace as
    # the Service under test; the namespaced objects of every overlay share one namespace.
    namespaces = {o["metadata"].get("namespace") for o in build(rel)
                  if o["kind"] not in ("ClusterRole", "ClusterRoleBinding")}
    assert namespaces == {NAMESPACE}


# --------------------------------------------------------------------------- Services


def _service_summary(svc: dict) -> dict:
    spec = svc["spec"]
    (port,) = spec["ports"]
    return {
        "type": spec.get("type", "ClusterIP"),
        "selector": spec["selector"],
        "port": port["port"],
        "targetPort": port["targetPort"],
        "protocol": port.get("protocol", "TCP"),
        "externalTrafficPolicy": spec.get("externalTrafficPolicy", "Cluster"),
    }


@needs_kubectl
def test_base_service_is_clusterip_on_8080_to_http_server():
    svc = one(build("helloworld"), "Service", "helloworld")
    assert _service_summary(svc) == {
        "type": "ClusterIP", "selector": {"app": "helloworld"}, "port": 8080,
        "targetPort": "http-server", "protocol": "TCP", "externalTrafficPolicy": "Cluster",
    }
    assert svc["metadata"]["labels"]["app"] == "helloworld"


@needs_kubectl
def test_nodeport_overlay_service():
    svc = one(build("overlays/nodeport"), "Service", "helloworld")
    assert _service_summary(svc) == {
        "type": "NodePort", "selector": {"app": "helloworld"}, "port": 8080,
        "targetPort": "http-server", "protocol": "TCP", "externalTrafficPolicy": "Cluster",
    }
    # Let Kubernetes assign the NodePort; the harness discovers it.
    assert "nodePort" not in svc["spec"]["ports"][0]


@needs_kubectl
def test_loadbalancer_overlay_service():
    svc = one(build("overlays/loadbalancer"), "Service", "helloworld")
    summary = _service_summary(svc)
    assert summary["type"] == "LoadBalancer"
    assert summary["selector"] == {"app": "helloworld"}
    assert (summary["port"], summary["targetPort"]) == (8080, "http-server")


@needs_kubectl
def test_local_overlay_service():
    svc = one(build("overlays/nodeport-local"), "Service", "helloworld")
    summary = _service_summary(svc)
    assert summary["type"] == "NodePort"
    assert summary["externalTrafficPolicy"] == "Local"
    assert summary["selector"] == {"app": "helloworld"}


@needs_kubectl
def test_standalone_nodeport_file_validates_and_matches_the_overlay():
    (svc,) = load_file(K8S / "helloworld-service-nodeport.yaml")
    kubernetes_validate.validate(svc, schema_version(), strict=True)
    # The lab applies it with -n $MY_NS: it must not carry a namespace of its own.
    assert "namespace" not in svc["metadata"]
    assert svc["metadata"]["name"] == "helloworld"
    assert svc["metadata"]["labels"] == {"app": "helloworld"}
    overlay = one(build("overlays/nodeport"), "Service", "helloworld")
    assert svc["spec"] == overlay["spec"]


@needs_kubectl
def test_service_selector_matches_the_helloworld_pods():
    objects = build("overlays/nodeport")
    svc = one(objects, "Service", "helloworld")
    deployment = one(objects, "Deployment", "helloworld")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    named = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"]
             for p in c.get("ports", [])}
    assert svc["spec"]["ports"][0]["targetPort"] in named


# --------------------------------------------------------------------------- Deployments


def _all_deployments() -> list[tuple[str, str]]:
    if KUBECTL is None:
        return []
    pairs = []
    for rel in kustomization_dirs():
        code, out, _ = _kustomize(rel)
        if code != 0:
            continue  # reported by test_kustomization_builds_and_every_object_validates
        for obj in yaml.safe_load_all(out):
            if obj and obj["kind"] == "Deployment":
                pairs.append((rel, obj["metadata"]["name"]))
    return pairs


@needs_kubectl
@pytest.mark.parametrize(("rel", "name"), _all_deployments())
def test_every_deployment_is_hardened(rel, name):
    deployment = one(build(rel), "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext", {})
    assert pod_sc.get("runAsNonRoot") is True
    assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}
    if "runAsUser" in pod_sc:
        assert isinstance(pod_sc["runAsUser"], int) and pod_sc["runAsUser"] > 0
    assert "fsGroup" not in pod_sc, "fsGroup is rejected by OpenShift's restricted-v2 SCC"
    assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True
    assert not [v for v in pod.get("volumes", []) if "hostPath" in v]
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container.get("securityContext", {})
        where = f"{rel}: {name}/{container['name']}"
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("privileged") is not True, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not sc.get("capabilities", {}).get("add"), where
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind}"


@needs_kubectl
def test_helloworld_deployment():
    deployment = one(build("helloworld"), "Deployment", "helloworld")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"]["matchLabels"] == {"app": "helloworld"}
    assert spec["template"]["metadata"]["labels"]["app"] == "helloworld"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] == int(HELLOWORLD_DOCKERFILE.user.split(":")[0])

    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["maxSkew"] == 1
    assert spread["labelSelector"]["matchLabels"] == {"app": "helloworld"}

    (container,) = pod["containers"]
    assert container["ports"] == [{"name": "http-server", "containerPort": 8080,
                                   "protocol": "TCP"}]
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
           for e in container["env"]}
    assert env["POD_NAME"] == "metadata.name"
    assert env["NODE_NAME"] == "spec.nodeName"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http-server"}, probe
    # The image's CMD is the command: a Deployment command/args would silently replace it.
    assert "command" not in container and "args" not in container


@needs_kubectl
def test_helloworld_image_listens_on_the_container_port():
    container = one(build("helloworld"), "Deployment", "helloworld")["spec"]["template"][
        "spec"]["containers"][0]
    argv = HELLOWORLD_DOCKERFILE.entrypoint + HELLOWORLD_DOCKERFILE.cmd
    assert argv[argv.index("--port") + 1] == str(container["ports"][0]["containerPort"])
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


@needs_kubectl
@pytest.mark.parametrize(("dockerfile", "rel", "name"), [
    (HELLOWORLD_DOCKERFILE, "helloworld", "helloworld"),
    (LOCUST_DOCKERFILE, "locust", "locust-master"),
    (LOCUST_DOCKERFILE, "locust", "locust-worker"),
])
def test_deployment_image_is_the_one_the_dockerfile_builds(dockerfile, rel, name):
    pod = one(build(rel), "Deployment", name)["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["containers"]] == [dockerfile.build_tag()]


def _locust_pods(rel: str = "locust") -> tuple[dict, dict]:
    objects = build(rel)
    return (one(objects, "Deployment", "locust-master")["spec"]["template"]["spec"],
            one(objects, "Deployment", "locust-worker")["spec"]["template"]["spec"])


@needs_kubectl
def test_only_the_master_gets_the_service_account_token():
    master, worker = _locust_pods()
    assert master["serviceAccountName"] == "nodeport-harness"
    assert master["automountServiceAccountToken"] is True
    assert worker["automountServiceAccountToken"] is False
    assert worker.get("serviceAccountName", "default") != "nodeport-harness"
    sa = one(build("locust"), "ServiceAccount", "nodeport-harness")
    assert sa["automountServiceAccountToken"] is False


@needs_kubectl
def test_locust_roles_args_and_options():
    master, worker = _locust_pods()
    (master_c,) = master["containers"]
    (worker_c,) = worker["containers"]
    assert master_c["args"] == ["--master"]
    assert worker_c["args"][0] == "--worker"
    master_host = worker_c["args"][worker_c["args"].index("--master-host") + 1]
    service = one(build("locust"), "Service", "locust-master")
    assert master_host == service["metadata"]["name"]
    for container in (master_c, worker_c):
        assert container["envFrom"] == [{"configMapRef": {"name": "locust-options"}}]
        # Service links would add LOCUST_MASTER_PORT=tcp://... next to the real options.
    assert master["enableServiceLinks"] is False and worker["enableServiceLinks"] is False


@needs_kubectl
def test_locust_master_service_exposes_ui_and_worker_port_of_the_master_only():
    objects = build("locust")
    service = one(objects, "Service", "locust-master")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert ports == {8089: "web", 5557: "master"}
    selector = service["spec"]["selector"].items()
    master = one(objects, "Deployment", "locust-master")["spec"]["template"]
    worker = one(objects, "Deployment", "locust-worker")["spec"]["template"]
    assert selector <= master["metadata"]["labels"].items()
    assert not selector <= worker["metadata"]["labels"].items()
    container_ports = {p["name"]: p["containerPort"]
                       for p in master["spec"]["containers"][0]["ports"]}
    assert container_ports == {"web": 8089, "master": 5557}


@needs_kubectl
def test_locust_writable_paths_are_emptydirs_under_a_readonly_root():
    report_dir = f"{LOCUST_DOCKERFILE.workdir}/reports"
    for pod in _locust_pods():
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert set(mounts) == {"/tmp", report_dir}
        for name in mounts.values():
            assert "emptyDir" in volumes[name]


@needs_kubectl
def test_locust_options_name_the_target_and_the_image_locustfile():
    objects = build("locust")
    options = one(objects, "ConfigMap", "locust-options")["data"]
    assert {"LOCUST_LOCUSTFILE", "LOCUST_SERVICE", "LOCUST_NAMESPACE", "LOCUST_ENTRY",
            "LOCUST_CONNECTION", "LOCUST_ADDRESS_TYPE", "LOCUST_POD_FROM"} <= set(options)
    assert "LOCUST_HOST" not in options, "the host list comes from discovery"
    assert all(key.startswith("LOCUST_") for key in options)
    # The target: the Service the overlays create, in the namespace the discovery Role covers.
    target = one(build("overlays/nodeport"), "Service", "helloworld")
    assert options["LOCUST_SERVICE"] == target["metadata"]["name"]
    assert options["LOCUST_NAMESPACE"] == target["metadata"]["namespace"]
    role = one(objects, "Role", "nodeport-harness-discovery")
    assert options["LOCUST_NAMESPACE"] == role["metadata"]["namespace"]
    # Reports go to the emptyDir mounted on the master.
    master = one(objects, "Deployment", "locust-master")["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in master["containers"][0]["volumeMounts"]}
    assert options["LOCUST_REPORT_DIR"] in mounts
    # The locustfile path is the file the harness image copies from this checkout.
    source = LOCUST_DOCKERFILE.image_path_to_repo(options["LOCUST_LOCUSTFILE"])
    assert source == LOCUSTFILE


@needs_kubectl
def test_openshift_overlay_lets_openshift_pick_the_uid():
    objects = build("overlays/openshift")
    deployments = find(objects, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {
        "helloworld", "locust-master", "locust-worker"}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert "runAsUser" not in pod["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert "runAsUser" not in container.get("securityContext", {})
            assert container["image"].startswith(
                f"image-registry.openshift-image-registry.svc:5000/{NAMESPACE}/")
    assert one(objects, "Service", "helloworld")["spec"]["type"] == "NodePort"


# --------------------------------------------------------------------------- RBAC


def _rules(role: dict) -> set[tuple[str, str, str]]:
    """A Role's rules as (apiGroup, resource, verb) triples."""
    triples = set()
    for rule in role.get("rules", []):
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    triples.add((group, resource, verb))
    return triples


@needs_kubectl
@pytest.mark.parametrize("rel", kustomization_dirs())
def test_no_wildcards_anywhere_in_rbac(rel):
    for role in find(build(rel), "Role") + find(build(rel), "ClusterRole"):
        assert "aggregationRule" not in role
        for rule in role.get("rules", []):
            for field in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(field, [])), (
                    f"{rel}: {role['metadata']['name']}: wildcard in {field}")


@needs_kubectl
def test_default_locust_rbac_is_exactly_what_discovery_needs():
    objects = build("locust")
    cluster_roles = find(objects, "ClusterRole")
    roles = find(objects, "Role")
    assert [r["metadata"]["name"] for r in cluster_roles] == ["nodeport-harness-nodes"]
    assert [r["metadata"]["name"] for r in roles] == ["nodeport-harness-discovery"]
    assert _rules(cluster_roles[0]) == {("", "nodes", "get"), ("", "nodes", "list")}
    assert _rules(roles[0]) == {
        ("", "services", "get"), ("", "services", "list"),
        ("", "pods", "list"),
        ("discovery.k8s.io", "endpointslices", "list"),
    }
    assert roles[0]["metadata"]["namespace"] == NAMESPACE
    # Nothing that writes, in any form, in the default install.
    verbs = {verb for role in cluster_roles + roles for _, _, verb in _rules(role)}
    assert verbs <= {"get", "list"}


@needs_kubectl
@pytest.mark.parametrize("rel", ["locust", "overlays/locust-expose", "overlays/openshift"])
def test_bindings_grant_the_roles_to_the_harness_service_account_only(rel):
    objects = build(rel)
    roles = {(r["kind"], r["metadata"]["name"]) for r in find(objects, "Role")
             + find(objects, "ClusterRole")}
    bindings = find(objects, "RoleBinding") + find(objects, "ClusterRoleBinding")
    assert {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings} == roles
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nodeport-harness",
                                        "namespace": NAMESPACE}], binding["metadata"]["name"]
        if binding["kind"] == "RoleBinding":
            assert binding["roleRef"]["kind"] == "Role", "a RoleBinding to a ClusterRole"


@needs_kubectl
def test_patch_on_services_is_a_separate_optional_role():
    expose_objects = build("overlays/locust-expose")
    expose = one(expose_objects, "Role", "nodeport-harness-expose")
    assert _rules(expose) == {("", "services", "patch")}
    # The overlay is the default install plus exactly that Role and its binding.
    default = {(o["kind"], o["metadata"]["name"]) for o in build("locust")}
    added = {(o["kind"], o["metadata"]["name"]) for o in expose_objects} - default
    assert added == {("Role", "nodeport-harness-expose"),
                     ("RoleBinding", "nodeport-harness-expose")}
    # ... and no other kustomization carries it.
    for rel in kustomization_dirs():
        if rel == "overlays/locust-expose":
            continue
        for role in find(build(rel), "Role") + find(build(rel), "ClusterRole"):
            assert not {v for _, _, v in _rules(role)} - {"get", "list"}, (rel, role["metadata"])


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("dockerfile", [HELLOWORLD_DOCKERFILE, LOCUST_DOCKERFILE],
                         ids=["helloworld", "locust"])
def test_dockerfile_runs_as_numeric_non_root_user(dockerfile):
    user = dockerfile.user
    assert user is not None, "no USER: the container would run as root"
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0
    # GID 0: OpenShift runs an arbitrary UID with group 0; files must be group-accessible.
    assert gid == "0"
    assert dockerfile.final[0][1].startswith("python:") and "slim" in dockerfile.final[0][1]


@pytest.mark.parametrize("dockerfile", [HELLOWORLD_DOCKERFILE, LOCUST_DOCKERFILE],
                         ids=["helloworld", "locust"])
def test_dockerfile_copies_exist_and_are_not_dockerignored(dockerfile):
    patterns = dockerignore_patterns()
    for sources, _, _ in dockerfile.copies_from_context():
        for src in sources:
            if src == "locustfile.py" and not LOCUSTFILE.exists():
                pytest.skip("locustfile.py does not exist yet (written by another issue)")
            assert (REPO / src).exists(), f"{dockerfile.path}: COPY {src}: not in the checkout"
            assert not ignored(src, patterns), f".dockerignore excludes {src}"


def test_dockerignore_keeps_history_output_and_tests_out():
    patterns = dockerignore_patterns()
    for path in (".git", "reports/run-1/index.html", ".lab", "harness/__pycache__",
                 "tests", "tests/test_manifests.py"):
        assert ignored(path, patterns), path
    for path in ("harness/helloworld.py", "pyproject.toml", "README.md", "locustfile.py"):
        assert not ignored(path, patterns), path


def test_helloworld_image_command_is_a_real_cli():
    argv = HELLOWORLD_DOCKERFILE.entrypoint + HELLOWORLD_DOCKERFILE.cmd
    assert argv[:3] == ["python", "-m", "harness.helloworld"]
    help_text = run_help(argv, cwd=REPO)
    for option in options_in(argv):
        assert option in help_text, f"{option} is not an option of {' '.join(argv[:3])}"


def _dependency_specs() -> dict[str, str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return {re.split(r"[ ;<>=!~\\[(]", d, maxsplit=1)[0].lower(): d.replace(" ", "")
            for d in deps}


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python >= 3.11")
def test_helloworld_image_installs_only_declared_requirements():
    declared = _dependency_specs()
    installed = HELLOWORLD_DOCKERFILE.pip_requirements()
    assert installed, "the helloworld image installs no runtime requirement"
    for requirement in installed:
        name = re.split(r"[ ;<>=!~\\[(]", requirement, maxsplit=1)[0].lower()
        assert declared.get(name) == requirement.replace(" ", ""), (
            f"{requirement!r} in k8s/helloworld/Dockerfile, "
            f"{declared.get(name)!r} in pyproject.toml")


def test_helloworld_starts_with_only_what_its_image_installs():
    argv = HELLOWORLD_DOCKERFILE.entrypoint + HELLOWORLD_DOCKERFILE.cmd + ["--help"]
    proc = subprocess.run(image_python_argv(HELLOWORLD_DOCKERFILE, argv), cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def _http(method: str, url: str, body: bytes | None = None):
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, dict(response.headers), response.read().decode()


def test_helloworld_serves_healthz_and_reports_the_downward_api_names():
    # The image's command, with only what the image installs importable, on a free loopback
    # port, with the env the Deployment sets from the downward API.
    port = free_port()
    argv = HELLOWORLD_DOCKERFILE.entrypoint + ["--port", str(port), "--host", "127.0.0.1"]
    env = {**os.environ, "POD_NAME": "helloworld-7d9f-abcde", "NODE_NAME": "worker-node-2"}
    proc = subprocess.Popen(image_python_argv(HELLOWORLD_DOCKERFILE, argv), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:  # the readiness probe
            try:
                status, _, _ = _http("GET", f"{base}/healthz")
                break
            except urllib.error.URLError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert status == 200
        # The lab's request: the answer names the pod and the node that served it.
        status, headers, body = _http("POST", f"{base}/api/messages", b'{"sender": "world1"}')
        assert status == 200
        seen = body + json.dumps(headers)
        assert "helloworld-7d9f-abcde" in seen, "the pod name (POD_NAME) is not in the answer"
        assert "worker-node-2" in seen, "the node name (NODE_NAME) is not in the answer"
    finally:
        stop_process(proc)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        proc.stderr and proc.stderr.close()
    assert "Traceback" not in stderr, stderr


@needs_kubectl
def test_locust_cli_has_the_deployment_args(tmp_path):
    # Locust alone (no locustfile in the working directory): the core options exist.
    master, worker = _locust_pods()
    help_text = run_help(LOCUST_DOCKERFILE.entrypoint, cwd=tmp_path)
    for option in ("--master", "--worker", "--master-host"):
        assert option in help_text
    for pod in (master, worker):
        for option in options_in(pod["containers"][0]["args"]):
            assert option in help_text, option


def _locust_list(cwd: Path, env: dict[str, str]) -> str:
    """`locust --list` as the image runs it, with only `env`'s LOCUST_* variables set."""
    argv = LOCUST_DOCKERFILE.entrypoint + LOCUST_DOCKERFILE.cmd + ["--list"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    proc = subprocess.run(local_argv(argv), cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**clean, **env}, check=False)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


@needs_kubectl
@needs_locustfile
def test_locust_image_command_loads_the_locustfile(tmp_path):
    # `locust --help` never imports a locustfile; `--list` does, and lists its user classes.
    entry = LOCUST_DOCKERFILE.entrypoint + LOCUST_DOCKERFILE.cmd
    assert entry[0] == "locust"
    # 1. As the image runs with no options: ./locustfile.py in WORKDIR (the checkout here).
    workdir_file = LOCUST_DOCKERFILE.image_path_to_repo(
        f"{LOCUST_DOCKERFILE.workdir}/locustfile.py")
    assert workdir_file == LOCUSTFILE
    assert "Available Users" in _locust_list(REPO, {})
    # 2. As the pods run: LOCUST_LOCUSTFILE from the ConfigMap, mapped to the checkout.
    options = one(build("locust"), "ConfigMap", "locust-options")["data"]
    source = LOCUST_DOCKERFILE.image_path_to_repo(options["LOCUST_LOCUSTFILE"])
    assert source is not None, "LOCUST_LOCUSTFILE is not a file the image copies"
    assert "Available Users" in _locust_list(tmp_path, {"LOCUST_LOCUSTFILE": str(source)})


_OPTION_DUMP = """
import importlib.util, json, sys
from locust.argument_parser import get_parser
spec = importlib.util.spec_from_file_location("locustfile", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
parser = get_parser()
print(json.dumps({
    action.env_var: [list(action.choices) if action.choices else None, action.option_strings]
    for action in parser._actions if getattr(action, "env_var", None)
}))
"""


@needs_kubectl
@needs_locustfile
def test_every_configmap_option_is_one_locust_reads():
    # Locust (configargparse) reads an env var only if the option declares it: a LOCUST_*
    # key nobody declares is silently ignored. Load the locustfile (which registers the
    # harness's options) and check every key, and the value when the option has choices.
    proc = subprocess.run([sys.executable, "-c", _OPTION_DUMP, str(LOCUSTFILE)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    known = json.loads(proc.stdout.strip().splitlines()[-1])
    options = one(build("locust"), "ConfigMap", "locust-options")["data"]
    unread = sorted(key for key in options if key not in known)
    assert not unread, f"no Locust or harness option reads {', '.join(unread)}"
    for key, value in options.items():
        choices, _ = known[key]
        if choices:
            assert value in [str(c) for c in choices], f"{key}={value}: not one of {choices}"
