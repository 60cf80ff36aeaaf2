"""Checks the Kubernetes manifests in deploy/kubernetes without a cluster.

Run by scripts/check-manifests.sh inside a virtualenv that has
kubernetes-validate (the Kubernetes OpenAPI schemas as JSON Schema, one set
per Kubernetes version, shipped inside the package: no network at check
time).

    check-manifests.py --versions 1.28.0,1.37.0 --dir deploy/kubernetes [--rendered NAME=FILE ...]

The files of --dir that its kustomizations list as resources are YAML
streams of whole objects and are checked one by one (patches are partial
objects: they are checked in the rendered output); a YAML file no
kustomization mentions is an error. Every --rendered NAME=FILE is a
kustomization's output. Each
object is validated strictly (unknown fields are errors) against each
version's schema; an object whose kind has no schema is an error, not a
warning. The rendered streams are also checked for what a schema cannot
see: references between the objects, the controller's RBAC staying
read-only on its five resources, and the CNI conflist. Before any of that
the checks run on known-bad snippets and must reject each one, so a
validator that accepts everything cannot pass.
"""

import argparse
import json
import os
import sys

import kubernetes_validate
import yaml

NAMESPACE = "plexus-system"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
# Secrets the operator creates (README.md); the manifests only name them.
OPERATOR_SECRETS = {"plexus-admin-token", "plexus-etcd"}
# What the controller may do in Kubernetes: read these, nothing else.
CONTROLLER_ACCESS = {
    ("", "namespaces"),
    ("", "pods"),
    ("", "services"),
    ("discovery.k8s.io", "endpointslices"),
    ("networking.k8s.io", "networkpolicies"),
}
READ_VERBS = {"get", "list", "watch"}
CNI_VERSIONS = {"0.4.0", "1.0.0", "1.1.0"}
CONFLIST_KEY = "10-plexus.conflist"


def resource_files(root):
    """The whole-object files of the kustomizations under root, and problems."""
    resources, patches, yamls, problems = set(), set(), set(), []
    for directory, _, files in os.walk(root):
        for f in files:
            if f.endswith((".yaml", ".yml")):
                yamls.add(os.path.normpath(os.path.join(directory, f)))
        if "kustomization.yaml" not in files:
            continue
        path = os.path.join(directory, "kustomization.yaml")
        kustomization = load_stream(path)[0]
        yamls.discard(os.path.normpath(path))
        for entry in kustomization.get("resources") or []:
            target = os.path.normpath(os.path.join(directory, entry))
            if os.path.isfile(target):
                resources.add(target)
            elif not os.path.isfile(os.path.join(target, "kustomization.yaml")):
                problems.append(f"{path}: resource {entry} is neither a file nor a kustomization")
        for entry in (kustomization.get("patches") or []) + (kustomization.get("patchesStrategicMerge") or []):
            entry = entry.get("path") if isinstance(entry, dict) else entry
            if entry:
                patches.add(os.path.normpath(os.path.join(directory, entry)))
    if not resources:
        problems.append(f"{root}: no kustomization with resource files")
    for stray in sorted(yamls - resources - patches):
        problems.append(f"{stray}: no kustomization lists it")
    return sorted(resources), problems


def name_of(obj):
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')}"


def load_stream(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def schema_errors(obj, versions):
    """Schema problems of one object, as strings."""
    problems = []
    if not isinstance(obj, dict):
        return [f"not a mapping: {obj!r:.60}"]
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str):
            problems.append(f"{field} missing or not a string")
    if problems:
        return problems
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top)"
            problems.append(f"Kubernetes {version}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                f"Kubernetes {version} has no {obj['apiVersion']} {obj['kind']}"
            )
        except Exception as e:  # a broken schema file is a failure too
            problems.append(f"Kubernetes {version}: {type(e).__name__}: {e}")
    return problems


def pod_spec(obj):
    if obj.get("kind") in ("DaemonSet", "Deployment", "StatefulSet", "Job"):
        return (((obj.get("spec") or {}).get("template") or {}).get("spec")) or {}
    if obj.get("kind") == "Pod":
        return obj.get("spec") or {}
    return None


def stream_errors(objs):
    """What a schema cannot see, over one rendered stream."""
    problems = []
    by_kind = {}
    for obj in objs:
        by_kind.setdefault(obj.get("kind"), {})[
            (obj.get("metadata") or {}).get("name")
        ] = obj
        ns = (obj.get("metadata") or {}).get("namespace")
        if obj.get("kind") in CLUSTER_SCOPED:
            if ns is not None:
                problems.append(f"{name_of(obj)}: cluster-scoped, has a namespace")
        elif ns != NAMESPACE:
            problems.append(f"{name_of(obj)}: namespace {ns!r}, not {NAMESPACE}")
    config_maps = by_kind.get("ConfigMap", {})
    accounts = by_kind.get("ServiceAccount", {})

    for obj in objs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        where = name_of(obj)
        account = spec.get("serviceAccountName", "default")
        if account not in accounts:
            problems.append(f"{where}: service account {account} is not defined")
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        for volume in volumes.values():
            if "configMap" in volume and volume["configMap"].get("name") not in config_maps:
                problems.append(f"{where}: volume {volume['name']}: no such ConfigMap")
            if "secret" in volume and volume["secret"].get("secretName") not in OPERATOR_SECRETS:
                problems.append(f"{where}: volume {volume['name']}: unknown Secret")
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        for c in containers:
            for mount in c.get("volumeMounts") or []:
                if mount.get("name") not in volumes:
                    problems.append(
                        f"{where}: container {c.get('name')} mounts undefined volume {mount.get('name')}"
                    )
            for source in c.get("envFrom") or []:
                ref = source.get("configMapRef")
                if ref and ref.get("name") not in config_maps:
                    problems.append(f"{where}: container {c.get('name')}: no ConfigMap {ref.get('name')}")
            for var in c.get("env") or []:
                value_from = var.get("valueFrom") or {}
                cm = value_from.get("configMapKeyRef")
                if cm and cm.get("key") not in (config_maps.get(cm.get("name")) or {}).get("data", {}):
                    problems.append(f"{where}: env {var.get('name')}: no ConfigMap key {cm.get('name')}/{cm.get('key')}")
                secret = value_from.get("secretKeyRef")
                if secret and secret.get("name") not in OPERATOR_SECRETS:
                    problems.append(f"{where}: env {var.get('name')}: unknown Secret {secret.get('name')}")

    # RBAC: only the controller is bound, and only to read its resources.
    for kind in ("Role", "RoleBinding"):
        for name in by_kind.get(kind, {}):
            problems.append(f"{kind}/{name}: no namespaced RBAC is expected")
    for name, role in by_kind.get("ClusterRole", {}).items():
        for rule in role.get("rules") or []:
            verbs = set(rule.get("verbs") or [])
            if not verbs <= READ_VERBS:
                problems.append(f"ClusterRole/{name}: verbs {sorted(verbs - READ_VERBS)} beyond get/list/watch")
            if rule.get("nonResourceURLs") or rule.get("resourceNames"):
                problems.append(f"ClusterRole/{name}: unexpected nonResourceURLs/resourceNames")
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    if (group, resource) not in CONTROLLER_ACCESS:
                        problems.append(f"ClusterRole/{name}: access to {group or 'core'}/{resource}")
    for name, binding in by_kind.get("ClusterRoleBinding", {}).items():
        for subject in binding.get("subjects") or []:
            if subject.get("name") != "plexus-controller":
                problems.append(f"ClusterRoleBinding/{name}: binds {subject.get('kind')}/{subject.get('name')}")
    for name, account in accounts.items():
        if name != "plexus-controller" and account.get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount/{name}: mounts a token it has no use for")

    # The conflist the node pods install.
    cni = config_maps.get("plexus-cni")
    if cni is None:
        problems.append("ConfigMap/plexus-cni is missing")
    else:
        text = (cni.get("data") or {}).get(CONFLIST_KEY)
        problems += conflist_errors(text)
    return problems


def conflist_errors(text):
    if not isinstance(text, str):
        return [f"ConfigMap/plexus-cni: no {CONFLIST_KEY}"]
    try:
        conf = json.loads(text.replace("__NODE_NAME__", "node-1"))
    except json.JSONDecodeError as e:
        return [f"{CONFLIST_KEY}: not JSON: {e}"]
    problems = []
    if conf.get("cniVersion") not in CNI_VERSIONS:
        problems.append(f"{CONFLIST_KEY}: cniVersion {conf.get('cniVersion')!r} not in {sorted(CNI_VERSIONS)}")
    if not isinstance(conf.get("name"), str) or not conf.get("name"):
        problems.append(f"{CONFLIST_KEY}: no network name")
    plugins = conf.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        return problems + [f"{CONFLIST_KEY}: no plugins list"]
    plexus = plugins[0]
    expected = {"type": "plexus-cni", "cluster_network": "kubernetes", "host": "node-1"}
    for key, value in expected.items():
        if plexus.get(key) != value:
            problems.append(f"{CONFLIST_KEY}: plugins[0].{key} is {plexus.get(key)!r}, not {value!r}")
    for key in ("api", "token_file"):
        if not isinstance(plexus.get(key), str):
            problems.append(f"{CONFLIST_KEY}: plugins[0].{key} is not a string")
    if "mtu" in plexus and not (isinstance(plexus["mtu"], int) and 576 <= plexus["mtu"] <= 65535):
        problems.append(f"{CONFLIST_KEY}: mtu must be a number in 576..65535")
    return problems


# --- self-test: each of these must be rejected ---------------------------

GOOD = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ok, namespace: plexus-system}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      hostNetwork: true
      containers:
        - name: c
          image: i
          ports: [{containerPort: 8471}]
"""

BAD_SCHEMA = {
    "a boolean field given a string": GOOD.replace("hostNetwork: true", 'hostNetwork: "yes"'),
    "a port given a string": GOOD.replace("containerPort: 8471", 'containerPort: "8471"'),
    "a misspelt field": GOOD.replace("hostNetwork: true", "hostNetwrk: true"),
    "a container without a name": GOOD.replace("- name: c\n          image: i", "- image: i"),
    "an unknown kind": GOOD.replace("kind: DaemonSet", "kind: DaemonSett"),
    "an unknown API version": GOOD.replace("apps/v1", "apps/v1beta9"),
}

GOOD_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "plexus-controller"},
    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
}


def self_test(versions):
    """Failures of the checks themselves (empty when they work)."""
    failures = []
    good = yaml.safe_load(GOOD)
    if schema_errors(good, versions):
        failures.append(f"a valid DaemonSet was rejected: {schema_errors(good, versions)}")
    for what, text in BAD_SCHEMA.items():
        if not schema_errors(yaml.safe_load(text), versions):
            failures.append(f"the schema check accepted {what}")
    write_role = json.loads(json.dumps(GOOD_ROLE))
    write_role["rules"][0]["verbs"].append("create")
    secrets_role = json.loads(json.dumps(GOOD_ROLE))
    secrets_role["rules"][0]["resources"].append("secrets")
    for what, role in (("a writing ClusterRole", write_role), ("a ClusterRole reading Secrets", secrets_role)):
        if not any("ClusterRole" in p for p in stream_errors([role])):
            failures.append(f"the RBAC check accepted {what}")
    if any("ClusterRole" in p for p in stream_errors([GOOD_ROLE])):
        failures.append("the RBAC check rejected a read-only ClusterRole")
    bad_conflist = json.dumps({"cniVersion": "1.0.0", "name": "plexus", "plugins": [{"type": "plexus-cni"}]})
    if not conflist_errors(bad_conflist):
        failures.append("the conflist check accepted a conflist without cluster_network")
    return failures, len(BAD_SCHEMA) + 3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", required=True, help="comma-separated Kubernetes versions")
    parser.add_argument("--rendered", action="append", default=[], metavar="NAME=FILE")
    parser.add_argument("--dir", required=True, help="the manifests' directory")
    args = parser.parse_args()
    versions = [v for v in args.versions.split(",") if v]

    failures, rejected = self_test(versions)
    if failures:
        for failure in failures:
            print(f"check-manifests: SELF-TEST FAILED: {failure}", file=sys.stderr)
        return 1
    print(f"check-manifests: self-test: {rejected} known-bad snippets rejected, the good one accepted")

    files, stray = resource_files(args.dir)
    for problem in stray:
        print(f"check-manifests: {problem}", file=sys.stderr)
    problems = len(stray)
    checked = 0
    inputs = [(path, path) for path in files]
    inputs += [tuple(item.split("=", 1)) for item in args.rendered]
    for label, path in inputs:
        try:
            objs = load_stream(path)
        except (OSError, yaml.YAMLError) as e:
            print(f"check-manifests: {label}: cannot read: {e}", file=sys.stderr)
            problems += 1
            continue
        if not objs:
            print(f"check-manifests: {label}: no objects", file=sys.stderr)
            problems += 1
        for obj in objs:
            checked += 1
            for problem in schema_errors(obj, versions):
                print(f"check-manifests: {label}: {name_of(obj)}: {problem}", file=sys.stderr)
                problems += 1
        if path != label:  # a kustomization's whole output
            for problem in stream_errors(objs):
                print(f"check-manifests: {label}: {problem}", file=sys.stderr)
                problems += 1
        print(f"check-manifests: {label}: {len(objs)} objects checked")
    if problems:
        print(f"check-manifests: {problems} problems", file=sys.stderr)
        return 1
    print(f"check-manifests: {checked} objects valid against Kubernetes {', '.join(versions)} (strict)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
