//! What a service account may do (ADR 029): its scopes, as OAuth scope
//! tokens (RFC 6749 §3.3) and as a small set. `devices:manage` includes
//! reading; remote access is its own grant and includes nothing else.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One grant a service account can hold.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Scope {
    /// List and read devices and their telemetry.
    #[serde(rename = "devices:read")]
    DevicesRead,
    /// Rename, relabel, delete, rotate and pair devices (includes reading).
    #[serde(rename = "devices:manage")]
    DevicesManage,
    /// Reach a box: its proxied API and `edge forward`.
    #[serde(rename = "devices:remote")]
    DevicesRemote,
}

impl Scope {
    pub const ALL: [Scope; 3] = [
        Scope::DevicesRead,
        Scope::DevicesManage,
        Scope::DevicesRemote,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DevicesRead => "devices:read",
            Self::DevicesManage => "devices:manage",
            Self::DevicesRemote => "devices:remote",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope token this platform does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope (known: devices:read, devices:manage, devices:remote)")]
pub struct UnknownScope;

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, UnknownScope> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(UnknownScope)
    }
}

/// A set of scopes, kept sorted and without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(mut scopes: Vec<Scope>) -> Self {
        scopes.sort();
        scopes.dedup();
        Self(scopes)
    }

    /// Parse an OAuth scope string: tokens separated by spaces.
    pub fn parse(s: &str) -> Result<Self, UnknownScope> {
        s.split_ascii_whitespace()
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    /// Whether the set grants `needed` (manage grants read).
    pub fn grants(&self, needed: Scope) -> bool {
        self.0.contains(&needed)
            || (needed == Scope::DevicesRead && self.0.contains(&Scope::DevicesManage))
    }

    /// Whether every scope of `other` is in this set.
    pub fn covers(&self, other: &Scopes) -> bool {
        other.0.iter().all(|s| self.0.contains(s))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for Scopes {
    /// The OAuth form: space-separated tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_strings_round_trip_and_unknown_ones_are_refused() {
        let s = Scopes::parse("devices:remote  devices:read devices:read").unwrap();
        assert_eq!(s.to_string(), "devices:read devices:remote");
        assert_eq!(Scopes::parse(&s.to_string()).unwrap(), s);
        assert_eq!(Scopes::parse("devices:read admin"), Err(UnknownScope));
        assert!(Scopes::parse("").unwrap().is_empty());
    }

    #[test]
    fn manage_grants_read_but_remote_stands_alone() {
        let manage = Scopes::new(vec![Scope::DevicesManage]);
        assert!(manage.grants(Scope::DevicesRead));
        assert!(!manage.grants(Scope::DevicesRemote));
        let remote = Scopes::new(vec![Scope::DevicesRemote]);
        assert!(!remote.grants(Scope::DevicesRead));
        assert!(remote.covers(&Scopes::new(vec![Scope::DevicesRemote])));
        assert!(!remote.covers(&manage));
    }
}
