/* The one header pyxis-rs binds: everything else comes in through it. */
#include <slurm/spank.h>
#include <slurm/slurm_version.h>
/* only for SLURM_BATCH_SCRIPT, the step id of the batch step */
#include <slurm/slurm.h>
