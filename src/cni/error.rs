//! The CNI error object: what a plugin prints on stdout (with exit status 1) when it fails.

use serde::{Deserialize, Serialize};

/// Error codes defined by the CNI spec ("Error" section) and used by libcni's skeleton.
pub mod code {
    /// The config's `cniVersion` is not one the plugin supports.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A config field the plugin does not support.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// The container is unknown or its ID is empty.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A required `CNI_*` variable is missing or invalid.
    pub const INVALID_ENV: u32 = 4;
    /// Reading stdin or another I/O operation failed.
    pub const IO_FAILURE: u32 = 5;
    /// The config could not be decoded.
    pub const DECODING_FAILURE: u32 = 6;
    /// The config is invalid (e.g. no network name).
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// `CNI_NETNS` is unusable (e.g. the plugin's own namespace).
    pub const INVALID_NETNS: u32 = 8;
    /// Transient failure; the runtime should retry later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Any other error (what Go plugins report for plain errors).
    pub const INTERNAL: u32 = 999;
}

/// A CNI error as printed by a plugin: `{"code":N,"msg":"…","details":"…"}` (details optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// Numeric code; see [`code`].
    #[serde(default)]
    pub code: u32,
    /// Short message.
    #[serde(default)]
    pub msg: String,
    /// Longer explanation; omitted from the JSON when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with a code and message and no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The same error with `details` set.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// A plain failure (code 999), as Go plugins report errors that are not CNI errors.
    pub fn internal(msg: impl Into<String>) -> Self {
        CniError::new(code::INTERNAL, msg)
    }

    /// The JSON a plugin prints, indented with four spaces like libcni's `Error.Print`.
    pub fn to_json_pretty(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        super::gojson::to_pretty(&value)
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}; {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_omitted_when_empty() {
        let e = CniError::new(
            code::INVALID_ENV,
            "required env variables [CNI_PATH] missing",
        );
        let v: serde_json::Value = serde_json::from_str(&e.to_json_pretty()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": 4, "msg": "required env variables [CNI_PATH] missing"})
        );
        let e = e.with_details("more");
        assert!(e.to_json_pretty().contains("\"details\": \"more\""));
        assert_eq!(
            e.to_string(),
            "required env variables [CNI_PATH] missing; more"
        );
    }

    #[test]
    fn parses_plugin_errors_with_extra_fields() {
        let e: CniError =
            serde_json::from_str(r#"{"cniVersion":"1.0.0","code":7,"msg":"bad"}"#).unwrap();
        assert_eq!(e, CniError::new(7, "bad"));
    }
}
