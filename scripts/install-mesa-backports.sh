#!/usr/bin/env bash
# Installs Mesa's Vulkan drivers (lavapipe, adapter "llvmpipe") and the Vulkan loader from <codename>-backports,
# so that Dawn (npm `webgpu`) finds a software GPU on a CPU-only Debian machine. Debian 12's own Mesa 22.3 is too
# old for Dawn ("Vulkan shaderUniform*ArrayDynamicIndexing required"); bookworm-backports carries Mesa 25.
#
# The backports source reuses the URI, Components and Signed-By of the machine's existing Debian main-archive
# entry (the deb822 stanza whose Suites include the release codename), so no mirror is named here and a pinned
# mirror or snapshot keeps working. Idempotent: rerunning rewrites the same file and reinstalls nothing.
# Needs root. Run: sudo scripts/install-mesa-backports.sh
set -euo pipefail

packages=(mesa-vulkan-drivers libvulkan1)
sources_dir=/etc/apt/sources.list.d

die() { echo "install-mesa-backports: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get install)"
# shellcheck disable=SC1091
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || die "VERSION_CODENAME is not set in /etc/os-release; is this Debian?"
backports="$codename-backports"
target="$sources_dir/mnist-ddp-$backports.sources"

# Prints the first deb822 stanza (Types: deb, Suites containing exactly $codename) of the given files, keeping
# only the URIs, Components and Signed-By fields (continuation lines included, so an inline key survives).
find_main_stanza() {
  awk -v codename="$codename" '
    function flush() {
      if (is_deb && has_suite && uris != "" && !done) { printf "%s%s%s", uris, components, signed; done = 1 }
      is_deb = 0; has_suite = 0; uris = ""; components = ""; signed = ""; field = ""
    }
    BEGIN { flush() }
    /^[ \t]*#/ { next }
    /^[ \t]*$/ { flush(); next }
    /^[ \t]/ {  # continuation of the previous field
      if (field == "signed-by") signed = signed $0 "\n"
      next
    }
    {
      split($0, kv, ":"); field = tolower(kv[1]); value = substr($0, length(kv[1]) + 2)
      gsub(/^[ \t]+|[ \t]+$/, "", value)
      if (field == "types") { n = split(value, t, /[ \t]+/); for (i = 1; i <= n; i++) if (t[i] == "deb") is_deb = 1 }
      else if (field == "suites") { n = split(value, s, /[ \t]+/); for (i = 1; i <= n; i++) if (s[i] == codename) has_suite = 1 }
      else if (field == "uris") uris = "URIs: " value "\n"
      else if (field == "components") components = "Components: " value "\n"
      else if (field == "signed-by") signed = "Signed-By:" (value == "" ? "" : " " value) "\n"
      else if (field == "enabled" && tolower(value) == "no") is_deb = 0
    }
    END { flush() }
  ' "$@"
}

shopt -s nullglob
candidates=()
for f in "$sources_dir"/*.sources; do
  [ "$f" = "$target" ] || candidates+=("$f")
done
stanza=""
[ ${#candidates[@]} -gt 0 ] && stanza=$(find_main_stanza "${candidates[@]}")
[ -n "$stanza" ] || die "no deb822 entry with 'Suites: $codename' in $sources_dir/*.sources; add the Debian archive first"
grep -q '^Components:' <<<"$stanza" || stanza+=$'\nComponents: main'

content="# Written by mnist-ddp scripts/install-mesa-backports.sh from the existing $codename entry.
Types: deb
Suites: $backports
$stanza
"
if [ -f "$target" ] && [ "$(cat "$target")" = "$(printf '%s' "$content")" ]; then
  echo "install-mesa-backports: $target is up to date"
else
  printf '%s' "$content" >"$target"
  echo "install-mesa-backports: wrote $target"
fi

export DEBIAN_FRONTEND=noninteractive
if compgen -G "/var/lib/apt/lists/*_dists_${codename}_*Packages*" >/dev/null; then
  # The main archive's lists are already here: refresh only the backports source, and keep the other lists
  # (List-Cleanup=0), which apt would otherwise delete as belonging to no configured source.
  apt-get update -o Dir::Etc::sourcelist="$target" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0
else
  apt-get update
fi
apt-get install -y --no-install-recommends -t "$backports" "${packages[@]}"

mesa=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)
echo "install-mesa-backports: mesa-vulkan-drivers $mesa installed"
