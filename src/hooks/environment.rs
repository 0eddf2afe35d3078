//! `--environment` / `PYXIS_ENVIRONMENT` in `init_post_opt`, of srun/sbatch/salloc (as
//! the user, so a mistake stops the command before a job exists) and of slurmstepd
//! (the node reads the same file as the job user, so the step gets what the user saw).

use std::path::PathBuf;

use tracing::debug;

use crate::core::args::Args;
use crate::core::edf;
use crate::error::PluginError;
use crate::sys::edf::Reader;

/// The environment to apply: the option, else a non-empty `PYXIS_ENVIRONMENT`.
pub fn requested(args: &Args, pyxis_environment: Option<String>) -> Option<String> {
    args.environment
        .clone()
        .or_else(|| pyxis_environment.filter(|v| !v.is_empty()))
}

/// Reads `name` with `reader` and fills what the options left unset.
pub fn apply(
    args: &mut Args,
    name: &str,
    reader: &Reader,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), PluginError> {
    let resolved = reader.resolve(name, lookup)?;
    debug!("environment {name}: {resolved:?}");
    edf::apply(args, &resolved)?;
    Ok(())
}

/// `environment_path=` from the plugstack arguments, for srun, which does not parse
/// the rest of them (as pyxis).
pub fn admin_dir_of(plugin_args: &[String]) -> Option<PathBuf> {
    plugin_args
        .iter()
        .rev()
        .find_map(|a| a.strip_prefix("environment_path="))
        .filter(|v| v.starts_with('/'))
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_and_admin_dir() {
        let mut args = Args::default();
        assert_eq!(requested(&args, None), None);
        assert_eq!(requested(&args, Some(String::new())), None);
        assert_eq!(requested(&args, Some("env".into())).as_deref(), Some("env"));
        args.environment = Some("cli".into());
        assert_eq!(requested(&args, Some("env".into())).as_deref(), Some("cli"));
        let plugstack = [
            "runtime_path=/run/x".to_owned(),
            "environment_path=/a".to_owned(),
            "environment_path=/b".to_owned(),
        ];
        assert_eq!(admin_dir_of(&plugstack), Some(PathBuf::from("/b")));
        assert_eq!(admin_dir_of(&["environment_path=rel".to_owned()]), None);
        assert_eq!(admin_dir_of(&[]), None);
    }
}
