# Installs missing Debian packages by name. Sourced by the other scripts.
# Usage: ensure_packages CMD:PACKAGE ...  (PACKAGE is installed when CMD is
# missing; a CMD starting with / is a file that must exist instead)
ensure_packages() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    case "$cmd" in
      /*) [ -e "$cmd" ] || missing+=("$pkg") ;;
      *) command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg") ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "plexus: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# as_root "$@": called first by a script that needs root; re-runs the
# script with sudo unless it already runs as root.
as_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  command -v sudo >/dev/null 2>&1 || { echo "$0: needs root or sudo" >&2; exit 1; }
  exec sudo -- "$0" "$@"
}

# release_build ARGS...: `cargo build --release ARGS`, quietly. Run through
# sudo by a user whose cargo is not on root's PATH, it builds as that user
# in a login shell (where rustup puts cargo), so target/ stays the user's.
release_build() {
  if command -v cargo >/dev/null 2>&1; then
    cargo build --release "$@" >/dev/null
  elif [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    sudo -u "$SUDO_USER" -H bash -lc 'cargo build --release "$@" >/dev/null' bash "$@"
  else
    echo "$0: cargo not found" >&2
    return 1
  fi
}
