//! Every backend this process can use: the built-in ones registered at link time
//! through `inventory`, and those loaded from plugin libraries.

use std::fmt;
use std::path::PathBuf;

use gllm_api::BackendFactory;

use crate::error::{Result, RuntimeError};

/// Where a backend comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Linked into this binary.
    BuiltIn,
    /// Loaded from a shared library.
    Plugin(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BuiltIn => f.write_str("built-in"),
            Self::Plugin(p) => write!(f, "plugin {}", p.display()),
        }
    }
}

/// One usable backend.
#[derive(Clone)]
pub struct BackendEntry {
    /// The factory (static for built-ins; leaked for plugins, which are never unloaded).
    pub factory: &'static dyn BackendFactory,
    /// Where it comes from.
    pub origin: Origin,
}

impl BackendEntry {
    /// The backend's name.
    pub fn name(&self) -> &str {
        self.factory.name()
    }
}

impl fmt::Debug for BackendEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendEntry")
            .field("name", &self.name())
            .field("origin", &self.origin)
            .finish()
    }
}

/// The set of backends, in registration order.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Vec<BackendEntry>,
}

impl Registry {
    /// Every backend registered at link time (built-in backend crates, and any
    /// crate of the final binary that submits a `gllm_api::Registration`).
    pub fn builtin() -> Self {
        let mut entries: Vec<BackendEntry> = gllm_api::registered_factories()
            .map(|factory| BackendEntry {
                factory,
                origin: Origin::BuiltIn,
            })
            .collect();
        // inventory's order is unspecified: sort by name for stable listings.
        entries.sort_by(|a, b| a.name().cmp(b.name()));
        entries.dedup_by(|a, b| a.name() == b.name());
        Self { entries }
    }

    /// Adds a backend; a name that is already taken is an error.
    pub fn add(&mut self, entry: BackendEntry) -> Result<()> {
        if let Some(existing) = self.get(entry.name()) {
            return Err(RuntimeError::Plugin {
                library: entry.origin.to_string(),
                message: format!(
                    "backend name `{}` is already taken by the {} backend",
                    entry.name(),
                    existing.origin
                ),
            });
        }
        self.entries.push(entry);
        Ok(())
    }

    /// All backends.
    pub fn entries(&self) -> &[BackendEntry] {
        &self.entries
    }

    /// The backend with this name.
    pub fn get(&self, name: &str) -> Option<&BackendEntry> {
        self.entries.iter().find(|e| e.name() == name)
    }

    /// Names of all backends.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name().to_string()).collect()
    }
}
