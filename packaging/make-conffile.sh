#!/usr/bin/env bash
# Writes packaging/farsight.toml, the Debian package's /etc/farsight/farsight.toml (a conffile),
# from farsight.example.toml: every option commented out (so the binary's defaults apply and a
# later package's defaults are not frozen into an old conffile), except the paths of an installed
# box, which are set:
#   models_dir = "/usr/share/farsight/models"
#   gallery    = "/var/lib/farsight/gallery.db"      (the status file follows: gallery.db.status.json)
#   [crops] dir = "/var/lib/farsight/crops"          (commented, like every other option)
#
#   packaging/make-conffile.sh           regenerate packaging/farsight.toml
#   packaging/make-conffile.sh --check   exit 1 when packaging/farsight.toml is out of date
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$ROOT/farsight.example.toml"
dst="$ROOT/packaging/farsight.toml"

generate() {
  cat <<'EOF'
# /etc/farsight/farsight.toml: configuration of the farsight service (farsight.service).
# Generated from farsight.example.toml by packaging/make-conffile.sh. Every option is commented
# out and shows its default, except the installed paths below. After a change:
#   farsight --config /etc/farsight/farsight.toml validate && systemctl reload farsight
# The service needs at least one [[camera]] (see below). Enroll people as the service user:
#   runuser -u farsight -- farsight --config /etc/farsight/farsight.toml enroll --name "Ada" ada.jpg
# This file may hold secrets (MQTT password, webhook token): it is root:farsight, mode 0640.

EOF
  # Comment out every active line that is not a comment, a blank or a [table] header; then set
  # the installed paths.
  sed -E \
    -e 's/^([A-Za-z_][A-Za-z0-9_.]* *=)/# \1/' \
    -e 's|^# *(models_dir *= *)"[^"]*"|\1"/usr/share/farsight/models"|' \
    -e 's|^# *(gallery *= *)"[^"]*"|\1"/var/lib/farsight/gallery.db"|' \
    -e 's|^(# *dir *= *)"farsight-crops"|\1"/var/lib/farsight/crops"|' \
    -e '/^# Check a file with:/d' \
    "$src"
}

if [[ "${1:-}" == "--check" ]]; then
  if ! diff -u "$dst" <(generate) >/dev/null; then
    echo "packaging/farsight.toml is out of date with farsight.example.toml: run packaging/make-conffile.sh" >&2
    diff -u "$dst" <(generate) >&2 || true
    exit 1
  fi
  echo "packaging/farsight.toml is up to date"
  exit 0
fi
[[ $# -eq 0 ]] || { echo "usage: packaging/make-conffile.sh [--check]" >&2; exit 2; }
generate >"$dst"
echo "wrote packaging/farsight.toml"
