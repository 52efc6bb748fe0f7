# Shared by scripts/install.sh and scripts/install-image.sh (sourced, not run).
# Each caller sets `installer` (its name in messages) before sourcing.

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf '\n%s: %s\n' "${installer:-soundwatch}" "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@";
  elif command -v sudo >/dev/null; then sudo "$@";
  else die "need root to run: $* (run as root or install sudo)"; fi
}

# Install the Debian packages that are missing; nothing when all are there.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found: install these yourself: ${missing[*]}"
  say "installing system packages: ${missing[*]}"
  as_root apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || die "apt-get install failed for: ${missing[*]}"
}
