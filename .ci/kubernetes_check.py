"""Checks the Kubernetes manifests of deploy/kubernetes; .ci/kubernetes runs it in its venv.

1. Schemas: every resource of every manifest (secret.example.yaml too) against the Kubernetes
   OpenAPI schemas of each version given, strictly (an unknown field is an error, and so is a kind
   or apiVersion the schemas do not have).
2. Kustomizations: every file they list exists, every manifest is listed by one (except
   secret.example.yaml, which none may list), and each variant (the kustomization as it is, and
   with each component of its folder added) holds together: selectors select pods, named ports,
   claims and Secret keys exist, images are the one `images:` sets, every pod is locked down and
   has no Service links (their variables would start FHIR_REGISTERS_), the read-only replicas
   mount the data read-only, a workload an autoscaler scales sets no replica count, and each
   server's grace period outlasts its preStop sleep plus its shutdown timeout.
3. Rendering: where kubectl (with kustomize 5 or later) is installed, `kubectl kustomize` renders
   each variant, and the output is checked as in 1 and 2.

Usage: kubernetes_check.py DIR VERSION... ; exits 1 on any error, listing every one.
"""

import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

EXAMPLE_SECRET = "secret.example.yaml"
# The server's `--shutdown-timeout` default, and Kubernetes's default grace period.
DEFAULT_SHUTDOWN_SECONDS = 10
DEFAULT_GRACE_SECONDS = 30
SERVER_UID = 10001
# Keys a kustomization here may use; anything else is beyond what section 2 understands.
BASE_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "components", "images"}
COMPONENT_KEYS = {"apiVersion", "kind", "resources", "patches"}


def load(path):
    """The YAML documents of a file (empty ones left out)."""
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def dig(obj, *keys):
    """obj[k1][k2]…, or None where a step is missing (or null)."""
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


def name_of(obj):
    return f"{obj.get('kind')}/{dig(obj, 'metadata', 'name')}"


def secret_keys_of(secret):
    return set(secret.get("data") or {}) | set(secret.get("stringData") or {})


# ---- 1. schemas ---------------------------------------------------------------------------------


def schema_errors(where, obj, versions):
    errors = []
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top)"
            errors.append(f"{where}: {name_of(obj)}: Kubernetes {version}: {path}: {e.message}")
        except (
            kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.InvalidSchemaError,
        ) as e:
            errors.append(f"{where}: {name_of(obj)}: {e.message}")
    return errors


# ---- 2. kustomizations --------------------------------------------------------------------------


def read_kustomization(folder, kind, allowed, errors):
    path = folder / "kustomization.yaml"
    docs = load(path)
    if len(docs) != 1 or docs[0].get("kind") != kind:
        errors.append(f"{path}: expected one {kind}")
        return {}
    k = docs[0]
    for key in sorted(set(k) - allowed):
        errors.append(f"{path}: `{key}` is not understood by .ci/kubernetes_check.py: extend it")
    for entry in k.get("resources", []) + k.get("components", []):
        if not (folder / entry).exists():
            errors.append(f"{path}: lists {entry}, which does not exist")
    return k


def deletions(component, path, errors):
    """The (kind, name) pairs a component's `$patch: delete` patches remove."""
    out = []
    for p in component.get("patches", []):
        body = yaml.safe_load(p.get("patch", "")) if isinstance(p, dict) else None
        if dig(body, "$patch") != "delete":
            errors.append(f"{path}: only `$patch: delete` patches are understood: extend the check")
            continue
        out.append(f"{body.get('kind')}/{dig(body, 'metadata', 'name')}")
    return out


def source_variants(root, errors):
    """The base kustomization, and each variant's resources as (file, resource) pairs, read
    from the files the kustomizations list."""
    base = read_kustomization(root, "Kustomization", BASE_KEYS, errors)
    listed = {(root / r).resolve() for r in base.get("resources", [])}
    components = {}
    for k in sorted(root.rglob("kustomization.yaml")):
        if k.parent != root:
            comp = read_kustomization(k.parent, "Component", COMPONENT_KEYS, errors)
            components[k.parent.relative_to(root).as_posix()] = comp
            listed |= {(k.parent / r).resolve() for r in comp.get("resources", [])}

    for f in sorted(root.rglob("*.y*ml")):
        if f.name == "kustomization.yaml":
            continue
        if f.name == EXAMPLE_SECRET and f.resolve() in listed:
            errors.append(f"{f}: listed by a kustomization: secrets are never applied from git")
        elif f.name != EXAMPLE_SECRET and f.resolve() not in listed:
            errors.append(f"{f}: listed by no kustomization, so never applied")

    def resources(folder, k):
        out = []
        for r in k.get("resources", []):
            f = folder / r
            if f.is_file():
                out += [(f.relative_to(root).as_posix(), d) for d in load(f)]
            elif f.exists():
                errors.append(f"{folder}: resource {r} is a folder: extend the check")
        return out

    def with_components(names):
        objs = resources(root, base)
        for n in names:
            comp = components.get(n)
            if comp is None:
                errors.append(f"{root}/kustomization.yaml: {n} is not a Component folder here")
                continue
            for gone in deletions(comp, root / n / "kustomization.yaml", errors):
                kept = [(w, o) for w, o in objs if name_of(o) != gone]
                if len(kept) == len(objs):
                    errors.append(f"{root / n}: deletes {gone}, which the kustomization lacks")
                objs = kept
            objs += resources(root / n, comp)
        return objs

    enabled = list(base.get("components", []))
    variants = {"kustomization": with_components(enabled)}
    for n in components:
        if n not in enabled:
            variants[f"kustomization + {n}"] = with_components(enabled + [n])
    return base, variants


def pod_template(obj):
    """The pod template of a workload, or None."""
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return dig(obj, "spec", "template")
    if obj.get("kind") == "CronJob":
        return dig(obj, "spec", "jobTemplate", "spec", "template")
    return None


def selects(selector, labels):
    if not selector:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and labels.get(key) in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


class Variant:
    """One variant's resources, and the errors found in them."""

    def __init__(self, name, objs, images, secret_keys, rendered):
        self.name = name
        self.images = images
        self.rendered = rendered
        self.errors = []
        self.where = {}
        self.by_kind = {}
        for w, o in objs:
            if name_of(o) in self.where:
                self.error(f"{name_of(o)} defined twice ({self.where[name_of(o)]}, {w})")
            self.where[name_of(o)] = w
            self.by_kind.setdefault(o.get("kind"), []).append(o)
        self.pods = [(o, pod_template(o)) for _, o in objs if pod_template(o)]
        self.claims = {
            dig(c, "metadata", "name") for c in self.by_kind.get("PersistentVolumeClaim", [])
        }
        self.secrets = dict(secret_keys)
        for s in self.by_kind.get("Secret", []):
            self.secrets[dig(s, "metadata", "name")] = secret_keys_of(s)

    def error(self, text):
        self.errors.append(f"{self.name}: {text}")

    def selected(self, selector):
        return [
            (o, t) for o, t in self.pods if selects(selector, dig(t, "metadata", "labels") or {})
        ]

    def secret_ref(self, ctx, name, key):
        if name not in self.secrets:
            self.error(f"{ctx}: Secret {name} is neither in {EXAMPLE_SECRET} nor applied")
        elif key is not None and key not in self.secrets[name]:
            self.error(f"{ctx}: Secret {name} has no key {key} in {EXAMPLE_SECRET}")

    def check(self):
        for workload, template in self.pods:
            self.check_pod(workload, template)
        for s in self.by_kind.get("Service", []):
            self.check_service(s)
        for p in self.by_kind.get("PodDisruptionBudget", []):
            if not self.selected(dig(p, "spec", "selector")):
                self.error(f"{name_of(p)}: its selector matches no pod")
        for n in self.by_kind.get("NetworkPolicy", []):
            if not self.selected(dig(n, "spec", "podSelector")):
                self.error(f"{name_of(n)}: its podSelector matches no pod")
        for h in self.by_kind.get("HorizontalPodAutoscaler", []):
            target = f"{dig(h, 'spec', 'scaleTargetRef', 'kind')}/"
            target += f"{dig(h, 'spec', 'scaleTargetRef', 'name')}"
            if target not in self.where:
                self.error(f"{name_of(h)}: scales {target}, which is not applied")
            for o in self.by_kind.get(dig(h, "spec", "scaleTargetRef", "kind"), []):
                if name_of(o) == target and dig(o, "spec", "replicas") is not None:
                    self.error(f"{target}: spec.replicas would undo {name_of(h)} at each apply")
        return self.errors

    def check_pod(self, workload, template):
        ctx = f"{name_of(workload)} ({self.where[name_of(workload)]})"
        spec = template.get("spec") or {}
        labels = dig(template, "metadata", "labels") or {}
        if workload["kind"] == "Deployment" and not selects(
            dig(workload, "spec", "selector"), labels
        ):
            self.error(f"{ctx}: spec.selector does not select its own pod template")
        pod_security = spec.get("securityContext") or {}
        if (
            pod_security.get("runAsNonRoot") is not True
            or pod_security.get("runAsUser") != SERVER_UID
        ):
            self.error(f"{ctx}: the pod must run as non-root uid {SERVER_UID}")
        if dig(pod_security, "seccompProfile", "type") != "RuntimeDefault":
            self.error(f"{ctx}: seccompProfile must be RuntimeDefault")
        if spec.get("enableServiceLinks") is not False:
            self.error(f"{ctx}: enableServiceLinks must be false (FHIR_REGISTERS_* Service links)")
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for v in volumes.values():
            claim = dig(v, "persistentVolumeClaim", "claimName")
            if claim is not None and claim not in self.claims:
                self.error(f"{ctx}: volume {v['name']} claims {claim}, which is not applied")
            if "secret" in v:
                for item in dig(v, "secret", "items") or [{}]:
                    self.secret_ref(ctx, dig(v, "secret", "secretName"), item.get("key"))
        grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            self.check_container(f"{ctx} container {c.get('name')}", c, volumes, grace)

    def check_container(self, ctx, c, volumes, grace):
        security = c.get("securityContext") or {}
        if security.get("allowPrivilegeEscalation") is not False:
            self.error(f"{ctx}: allowPrivilegeEscalation must be false")
        if security.get("readOnlyRootFilesystem") is not True:
            self.error(f"{ctx}: readOnlyRootFilesystem must be true")
        if "ALL" not in (dig(security, "capabilities", "drop") or []):
            self.error(f"{ctx}: capabilities must drop ALL")
        image = c.get("image", "")
        if self.rendered and image in self.images:
            self.error(f"{ctx}: image {image} was not set by `images:`")
        if not self.rendered and image not in self.images:
            self.error(f"{ctx}: image {image} is no `images:` name, so its tag is never set")
        ports = {p.get("name") for p in c.get("ports") or []}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = dig(c, probe, "httpGet", "port")
            if isinstance(port, str) and port not in ports:
                self.error(f"{ctx}: {probe} uses port {port}, which the container does not name")
        for e in c.get("env") or []:
            ref = dig(e, "valueFrom", "secretKeyRef")
            if ref:
                self.secret_ref(ctx, ref.get("name"), ref.get("key"))
        args = c.get("args") or []
        if "--read-only" in args:
            for m in c.get("volumeMounts") or []:
                claim = dig(volumes, m["name"], "persistentVolumeClaim")
                if claim is not None and not (m.get("readOnly") and claim.get("readOnly")):
                    self.error(
                        f"{ctx}: --read-only, so volume {m['name']} must be read-only "
                        "(its mount and its claim)"
                    )
        if args and args[0] != "serve":
            return
        sleep = dig(c, "lifecycle", "preStop", "exec", "command") or []
        if len(sleep) != 2 or sleep[0] != "sleep":
            self.error(f'{ctx}: a server needs a preStop ["sleep", N] while endpoints drop it')
            return
        shutdown = DEFAULT_SHUTDOWN_SECONDS
        for e in c.get("env") or []:
            if e.get("name") == "FHIR_REGISTERS_SHUTDOWN_TIMEOUT" and "value" in e:
                shutdown = int(e["value"])
        for a in args:
            if a.startswith("--shutdown-timeout="):
                shutdown = int(a.split("=", 1)[1])
        if grace <= int(sleep[1]) + shutdown:
            self.error(
                f"{ctx}: terminationGracePeriodSeconds {grace} must exceed the preStop "
                f"sleep ({sleep[1]} s) plus the shutdown timeout ({shutdown} s)"
            )

    def check_service(self, s):
        ctx = f"{name_of(s)} ({self.where[name_of(s)]})"
        if not dig(s, "spec", "selector"):
            return  # endpoints managed by hand
        chosen = self.selected({"matchLabels": dig(s, "spec", "selector")})
        if not chosen:
            self.error(f"{ctx}: its selector matches no pod")
        for p in dig(s, "spec", "ports") or []:
            target = p.get("targetPort", p.get("port"))
            for o, t in chosen:
                ports = [
                    cp for c in dig(t, "spec", "containers") or [] for cp in c.get("ports") or []
                ]
                if not any(target in (cp.get("name"), cp.get("containerPort")) for cp in ports):
                    self.error(f"{ctx}: targetPort {target} is not a port of {name_of(o)}")


# ---- 3. rendering -------------------------------------------------------------------------------


def kustomize_major():
    """kubectl's kustomize major version, or None without a usable kubectl."""
    if shutil.which("kubectl") is None:
        return None
    try:
        out = subprocess.run(
            ["kubectl", "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        m = re.match(r"v?(\d+)", json.loads(out).get("kustomizeVersion", ""))
        return int(m.group(1)) if m else None
    except (subprocess.SubprocessError, ValueError):
        return None


def render(root, components, errors):
    """`kubectl kustomize` of a copy of ROOT with COMPONENTS added, as resources."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = pathlib.Path(tmp) / root.name
        shutil.copytree(root, copy)
        k = load(copy / "kustomization.yaml")[0]
        k["components"] = list(k.get("components", [])) + components
        with open(copy / "kustomization.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump(k, f, sort_keys=False)
        run = subprocess.run(
            ["kubectl", "kustomize", str(copy)],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
    if run.returncode != 0:
        errors.append(f"kubectl kustomize with {components}: {run.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    root = pathlib.Path(sys.argv[1])
    versions = sys.argv[2:]
    errors = []

    files = sorted(f for f in root.rglob("*.y*ml") if f.name != "kustomization.yaml")
    count = 0
    secret_keys = {}
    for f in files:
        docs = load(f)
        if not docs:
            errors.append(f"{f}: holds no resource")
        for d in docs:
            count += 1
            errors += schema_errors(f.relative_to(root).as_posix(), d, versions)
            if f.name == EXAMPLE_SECRET and d.get("kind") == "Secret":
                secret_keys[dig(d, "metadata", "name")] = secret_keys_of(d)
    print(f"schemas: {len(files)} files, {count} resources, Kubernetes {' and '.join(versions)}")

    base, variants = source_variants(root, errors)
    images = {i.get("name") for i in base.get("images", [])}
    for name, objs in variants.items():
        errors += Variant(name, objs, images, secret_keys, rendered=False).check()
        print(f"{name}: {', '.join(name_of(o) for _, o in objs)}")

    major = kustomize_major()
    if major is None or major < 5:
        print("no kubectl with kustomize 5 or later: variants not rendered (files checked alone)")
    else:
        for name in variants:
            extra = name.split(" + ", 1)[1:]
            docs = render(root, extra, errors)
            for d in docs:
                errors += schema_errors(f"rendered {name}", d, versions)
            rendered = [(f"rendered {name}", d) for d in docs]
            errors += Variant(f"rendered {name}", rendered, images, secret_keys, True).check()
            print(f"rendered {name} (kubectl kustomize, v{major}): {len(docs)} resources")

    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        sys.exit(f"deploy/kubernetes: {len(errors)} error{'s' if len(errors) > 1 else ''}")
    print("deploy/kubernetes: ok")


if __name__ == "__main__":
    main()
