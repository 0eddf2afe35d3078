/* The one header pyxis-rs binds: everything else comes in through it. */
#include <slurm/spank.h>
#include <slurm/slurm_version.h>
