#!/usr/bin/env bash
# Install every Debian package the harness and the build need (idempotent),
# after pinning public registry host names to 127.0.0.1 so that nothing the
# tests start can reach a public registry. Package services are NOT started
# (policy-rc.d in apt_ensure): cluster.sh starts and owns the daemons.
#
#   tests/harness/packages.sh
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

hosts_guard
# up.sh ran us already in this run: the nested calls from cluster.sh etc. have nothing to do
if [ -n "${PXT_PACKAGES_DONE:-}" ]; then exit 0; fi

PKGS=(
  # Slurm 22.05 single node + munge; libslurm-dev carries <slurm/spank.h> for the build,
  # libpmix-dev the unversioned libpmix.so that Slurm's mpi/pmix dlopens
  slurmctld slurmd slurm-client munge libslurm-dev libpmix2 libpmix-dev
  # what enroot (real or test double) uses to unpack and mount squashfs images
  squashfs-tools squashfuse fuse3
  # the test image is built from Debian's statically linked busybox
  busybox-static
  # test runner and the tools the tests and the harness call
  bats procps psmisc iproute2 util-linux jq curl rsync binutils make strace
  # tools/memcheck.sh (valgrind memcheck of the plugin, gcc for its harness)
  valgrind gcc libc6-dev
  # bindgen (spank-sys) needs libclang
  libclang-dev clang
  # tests/harness/packaging.sh: the deb is built with debhelper and checked with lintian,
  # the rpm spec with Debian's rpm (rpmspec, rpmbuild)
  debhelper dpkg-dev fakeroot lintian rpm
  # image tooling for later suites (loopback registry, OCI layouts)
  docker-registry skopeo umoci
  # release.sh's trixie/sid root filesystems. Installed here, before up.sh's
  # `dpkg -i --ignore-depends=enroot` of the plugin package: from then on apt refuses
  # every install (pyxis-rs's Depends on enroot is unmet, enroot is in no registry)
  debootstrap
)
apt_ensure "${PKGS[@]}"
ok "packages present (${#PKGS[@]} checked)"
