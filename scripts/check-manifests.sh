#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/kubernetes without a cluster:
# every object strictly against the Kubernetes OpenAPI schemas of the
# oldest and newest versions we target (kubernetes-validate from PyPI, which
# ships the schemas), each kustomization rendered (`kubectl kustomize`) and
# its output checked as a whole (references between objects, read-only
# RBAC, the CNI conflist). It first runs the checks on known-bad snippets
# and fails unless each is rejected. scripts/test.sh calls it.
#
# Installs what it lacks: python3 and venv (apt-get, with sudo unless root),
# kubernetes-validate into a virtualenv under ~/.cache/plexus (pip).
# Environment: PLEXUS_K8S_VERSIONS (default "1.28.0,1.37.0"),
# PLEXUS_TOOLS_DIR (default ~/.cache/plexus).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

VALIDATOR=kubernetes-validate==1.37.0
VERSIONS=${PLEXUS_K8S_VERSIONS:-1.28.0,1.37.0}
MANIFESTS=deploy/kubernetes
TOOLS=${PLEXUS_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/plexus}
VENV=$TOOLS/kubernetes-validate-1.37.0

[ -d "$MANIFESTS" ] || { echo "check-manifests: no $MANIFESTS" >&2; exit 1; }
ensure_packages python3:python3
if ! "$VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian's python3 keeps venv's pip bootstrap in python3-venv.
    py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    ensure_packages "/usr/lib/python$py/ensurepip/__init__.py:python3-venv"
  fi
  echo "check-manifests: installing $VALIDATOR into $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$VALIDATOR"
fi

# Render every kustomization with kustomize v4 or later (kubectl >= 1.21
# bundles one; Debian's kubectl 1.20 has v2, which cannot read the
# `resources: [dir]` and `patches:` these use).
render=()
if command -v kustomize >/dev/null 2>&1; then
  render=(kustomize build)
elif command -v kubectl >/dev/null 2>&1 \
  && kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v([4-9]|[1-9][0-9])'; then
  render=(kubectl kustomize)
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
rendered=()
if [ ${#render[@]} -gt 0 ]; then
  while IFS= read -r dir; do
    file="$out/$(echo "$dir" | tr / _).yaml"
    if ! "${render[@]}" "$dir" >"$file" 2>"$file.err"; then
      echo "check-manifests: ${render[*]} $dir failed:" >&2
      cat "$file.err" >&2
      exit 1
    fi
    rendered+=(--rendered "$dir=$file")
  done < <(find "$MANIFESTS" -name kustomization.yaml -printf '%h\n' | sort)
else
  echo "check-manifests: WARNING: no kustomize v4+ (kubectl >= 1.21 or kustomize):" \
    "kustomizations not rendered, overlays (patches) NOT checked" >&2
fi

"$VENV/bin/python" scripts/check-manifests.py --versions "$VERSIONS" \
  --dir "$MANIFESTS" "${rendered[@]}"
