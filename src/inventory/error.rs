//! Errors from reading an inventory. Ansible's own wording is kept (so users can search for it),
//! and every message also names the file and line and quotes the offending line.

use std::path::PathBuf;

use super::hostrange::RangeError;
use super::shlex::ShlexError;

/// Reading or parsing an inventory failed. Unlike Ansible, which falls back to other inventory
/// plugins (and then to an empty inventory), every error is fatal.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file could not be read.
    #[error("cannot read inventory {path}: {source}")]
    Read {
        /// The inventory path as given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line could not be parsed, or the groups it declares are inconsistent.
    #[error("{file}:{line}: {kind} (line: {text:?})")]
    Parse {
        /// The inventory path as given.
        file: String,
        /// 1-based line number, counted the way Python's `splitlines` counts.
        line: usize,
        /// The stripped text of that line.
        text: String,
        /// What is wrong.
        kind: ParseErrorKind,
    },
}

impl InventoryError {
    /// The parse error kind, if this is a parse error (handy in tests and for the CLI).
    pub fn kind(&self) -> Option<&ParseErrorKind> {
        match self {
            InventoryError::Parse { kind, .. } => Some(kind),
            InventoryError::Read { .. } => None,
        }
    }

    /// The 1-based line number, if this is a parse error.
    pub fn line(&self) -> Option<usize> {
        match self {
            InventoryError::Parse { line, .. } => Some(*line),
            InventoryError::Read { .. } => None,
        }
    }
}

/// What is wrong with an inventory line. Messages follow ansible-core 2.14.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// A non-comment line is not UTF-8 (Ansible would keep the raw bytes; we refuse).
    #[error("line is not valid UTF-8; save the inventory as UTF-8")]
    InvalidUtf8,
    /// `[g:foo]`.
    #[error("Section [{title}] has unknown type: {kind}")]
    UnknownSectionType {
        /// `g:foo`
        title: String,
        /// `foo`
        kind: String,
    },
    /// `[bad section]`.
    #[error(
        "Invalid section entry: '{0}'. Please make sure that there are no spaces in the section entry, and that there are no other invalid characters"
    )]
    InvalidSection(String),
    /// shlex could not split a host line.
    #[error("Error parsing host definition '{line}': {error}")]
    HostDefinition {
        /// The host line.
        line: String,
        /// Python's shlex message.
        error: ShlexError,
    },
    /// A word after the host pattern has no `=`.
    #[error("Expected key=value host variable assignment, got: {0}")]
    ExpectedHostVariable(String),
    /// A `[g:vars]` line has no `=`.
    #[error("Expected key=value, got: {0}")]
    ExpectedVariable(String),
    /// A `[g:children]` line is not a single group name.
    #[error("Expected group name, got: {0}")]
    ExpectedGroupName(String),
    /// `[g:vars]` for a group never declared with `[g]` or `[g:children]`.
    #[error("Section [{0}:vars] not valid for undefined group: {0}")]
    VarsForUndefinedGroup(String),
    /// `[p:children]` names a group that is never declared.
    #[error("Section [{parent}:children] includes undefined group: {child}")]
    UndefinedChild {
        /// The group whose children section names it.
        parent: String,
        /// The undefined group.
        child: String,
    },
    /// A group made a child of one of its descendants.
    #[error("Adding group '{child}' as child to '{parent}' creates a recursive dependency loop.")]
    Cycle {
        /// The would-be child.
        child: String,
        /// The would-be parent.
        parent: String,
    },
    /// `[g:children]` lists `g` itself.
    #[error("can't add group to itself: {0}")]
    SelfChild(String),
    /// A host pattern ending in `:` without a port.
    #[error(
        "Invalid host pattern '{0}' supplied, ending in ':' is not allowed, this character is reserved to provide a port."
    )]
    TrailingColon(String),
    /// A host named `---` (a YAML file read as INI).
    #[error("Invalid host pattern '{0}' supplied, '---' is normally a sign this is a YAML file.")]
    YamlMarker(String),
    /// A host pattern that is empty (`""`).
    #[error("Invalid empty host name provided: {0:?}")]
    EmptyHostName(String),
    /// A host range that cannot be expanded.
    #[error("{error} (host pattern '{pattern}')")]
    Range {
        /// The host pattern.
        pattern: String,
        /// Ansible's/Python's reason.
        error: RangeError,
    },
    /// A value whose Python literal has an unhashable dict key or set element.
    #[error(
        "unhashable type: '{type_name}' in the value of '{key}'; quote the value to keep it a string"
    )]
    Unhashable {
        /// The variable name.
        key: String,
        /// `list`, `dict` or `set`.
        type_name: &'static str,
    },
    /// `ansible_group_priority` is not an integer.
    #[error("ansible_group_priority must be an integer: {0}")]
    GroupPriority(String),
}
