#!/usr/bin/env sh
# Prints the Slurm release (major.minor, e.g. 22.05) of the <slurm/slurm_version.h> the
# plugin is built against: $SLURM_INCLUDE_DIR if set (as spank-sys/build.rs uses it),
# else /usr/include. With --next, the first release after it (22.06), the upper bound of
# the packages' dependency range. Slurm loads a SPANK plugin only when its plugin_version
# has the same major.minor, so this pair is what the deb and rpm declare.
set -eu
h="${SLURM_INCLUDE_DIR:-/usr/include}/slurm/slurm_version.h"
[ -r "$h" ] || { echo "slurm-release: cannot read $h (install libslurm-dev or set SLURM_INCLUDE_DIR)" >&2; exit 1; }
n=$(sed -n 's/^#define[[:space:]]*SLURM_VERSION_NUMBER[[:space:]]*\(0x[0-9a-fA-F]*\).*/\1/p' "$h")
[ -n "$n" ] || { echo "slurm-release: no SLURM_VERSION_NUMBER in $h" >&2; exit 1; }
major=$(( (n >> 16) & 255 )) minor=$(( (n >> 8) & 255 ))
if [ "${1-}" = --next ]; then minor=$((minor + 1)); fi
printf '%d.%02d\n' "$major" "$minor"
