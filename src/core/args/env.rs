//! `PYXIS_CONTAINER_*` (behaviour spec §4.5): environment aliases of the options, read
//! after the command line in srun, sbatch/salloc and slurmstepd.

use super::{parse_bool, ArgError, Args, OptionId, MAX_VALUE_LEN};

// The `PYXIS_CONTAINER_*` variables of §4.5, in evaluation order.
const ENV_IMAGE: &str = "PYXIS_CONTAINER_IMAGE";
const ENV_MOUNTS: &str = "PYXIS_CONTAINER_MOUNTS";
const ENV_WORKDIR: &str = "PYXIS_CONTAINER_WORKDIR";
const ENV_NAME: &str = "PYXIS_CONTAINER_NAME";
const ENV_SAVE: &str = "PYXIS_CONTAINER_SAVE";
const ENV_MOUNT_HOME: &str = "PYXIS_CONTAINER_MOUNT_HOME";
const ENV_REMAP_ROOT: &str = "PYXIS_CONTAINER_REMAP_ROOT";
const ENV_ENTRYPOINT: &str = "PYXIS_CONTAINER_ENTRYPOINT";
const ENV_ENTRYPOINT_LOG: &str = "PYXIS_CONTAINER_ENTRYPOINT_LOG";
const ENV_WRITABLE: &str = "PYXIS_CONTAINER_WRITABLE";
const ENV_READONLY: &str = "PYXIS_CONTAINER_READONLY";
const ENV_ENV: &str = "PYXIS_CONTAINER_ENV";
const ENV_UNSHARE: &str = "PYXIS_CONTAINER_UNSHARE";

impl Args {
    /// Applies `PYXIS_CONTAINER_*` after the command line (§4.5): each
    /// variable only fills an option that is still unset, in table order.
    /// Errors are returned for printing and never fail the command; boolean
    /// values that do not parse are ignored silently; WRITABLE beats READONLY.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Vec<ArgError> {
        let mut errors = Vec::new();
        let get = &get;
        if self.image.is_none() {
            self.apply_env_string(get, ENV_IMAGE, OptionId::Image, &mut errors);
        }
        if self.mounts.is_empty() {
            self.apply_env_string(get, ENV_MOUNTS, OptionId::Mounts, &mut errors);
        }
        if self.workdir.is_none() {
            self.apply_env_string(get, ENV_WORKDIR, OptionId::Workdir, &mut errors);
        }
        if self.name.is_none() {
            self.apply_env_string(get, ENV_NAME, OptionId::Name, &mut errors);
        }
        if self.save.is_none() {
            self.apply_env_string(get, ENV_SAVE, OptionId::Save, &mut errors);
        }

        let bool_of = |var: &str| get(var).as_deref().and_then(parse_bool);
        if self.mount_home.is_none() {
            self.mount_home = bool_of(ENV_MOUNT_HOME);
        }
        if self.remap_root.is_none() {
            self.remap_root = bool_of(ENV_REMAP_ROOT);
        }
        if self.entrypoint.is_none() {
            self.entrypoint = bool_of(ENV_ENTRYPOINT);
        }
        if self.entrypoint_log.is_none() {
            self.entrypoint_log = bool_of(ENV_ENTRYPOINT_LOG);
        }
        if self.writable.is_none() {
            self.writable = bool_of(ENV_WRITABLE);
        }
        if self.writable.is_none() {
            self.writable = bool_of(ENV_READONLY).map(|readonly| !readonly);
        }

        if self.env_names.is_empty() {
            self.apply_env_string(get, ENV_ENV, OptionId::Env, &mut errors);
        }
        if !self.unshare.any() {
            self.apply_env_string(get, ENV_UNSHARE, OptionId::Unshare, &mut errors);
        }
        errors
    }

    /// One argument-taking `PYXIS_CONTAINER_*` variable, if set. Values the
    /// node could not read back (longer than [`MAX_VALUE_LEN`]) are
    /// reported and ignored in every context (W16).
    fn apply_env_string(
        &mut self,
        get: &impl Fn(&str) -> Option<String>,
        var: &'static str,
        id: OptionId,
        errors: &mut Vec<ArgError>,
    ) {
        let Some(value) = get(var) else {
            return;
        };
        let result = if crate::core::bytes::encoded_len(&value) > MAX_VALUE_LEN {
            Err(ArgError::EnvValueTooLong { var })
        } else {
            self.apply(id, Some(&value))
        };
        if let Err(e) = result {
            errors.push(e);
        }
    }
}
