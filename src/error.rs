//! `PluginError`: what a hook can fail with, reported once by the boundary.

use crate::core::args::ArgError;
use crate::core::config::ConfigError;
use crate::spank::boundary::Report;
use crate::spank::options::RegisterError;
use crate::spank::SpankError;
use crate::step::StepError;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// pyxis prints the reason, then `failed to parse configuration`.
    #[error(transparent)]
    Config(ConfigError),
    /// pyxis prints the reason, then `failed to register arguments`.
    #[error(transparent)]
    Register(RegisterError),
    #[error(transparent)]
    Arg(#[from] ArgError),
    #[error(transparent)]
    Edf(#[from] crate::core::edf::EdfError),
    #[error("unknown option index {0}")]
    UnknownOption(i32),
    #[error(transparent)]
    Step(Box<StepError>),
    #[error("{what}: {source}")]
    Spank {
        what: &'static str,
        #[source]
        source: SpankError,
    },
    #[error("slurmd: {0}")]
    Slurmd(#[source] crate::sys::dirs::DirError),
    #[error("epilog: couldn't cleanup pyxis containers for job {job}")]
    Epilog { job: u32, details: Vec<String> },
}

impl From<StepError> for PluginError {
    fn from(e: StepError) -> Self {
        PluginError::Step(Box::new(e))
    }
}

impl Report for PluginError {
    fn details(&self) -> Vec<String> {
        match self {
            PluginError::Config(_) => vec!["failed to parse configuration".to_owned()],
            PluginError::Register(_) => vec!["failed to register arguments".to_owned()],
            // pyxis's second line, e.g. `could not add mount entry: SRC:DST`.
            PluginError::Arg(e) => e.log_lines().into_iter().skip(1).collect(),
            PluginError::Step(e) => e.details(),
            PluginError::Epilog { details, .. } => details.clone(),
            _ => Vec::new(),
        }
    }
}
