//! CNI spec versions: which ones we speak, how a config declares one, how they compare.

use serde::Deserialize;

/// The spec version this implementation reports as its own (libcni v1.3.0's `Current`).
pub const CURRENT: &str = "1.1.0";

/// Every spec version the flannel plugin accepts in a config (libcni's `version.All`).
pub const SUPPORTED: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// What `CNI_COMMAND=VERSION` prints: compact JSON and a newline.
pub fn version_info_json() -> String {
    let value = serde_json::json!({"cniVersion": CURRENT, "supportedVersions": SUPPORTED});
    format!("{}\n", super::gojson::to_compact(&value))
}

/// The `cniVersion` a config declares; absent or empty means "0.1.0" (CNI spec).
///
/// Errors carry the decoder's message, prefixed like libcni's.
pub fn decode_config_version(config: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Versioned {
        #[serde(default, rename = "cniVersion")]
        cni_version: Option<String>,
    }
    let parsed: Versioned = serde_json::from_slice(config)
        .map_err(|e| format!("decoding version from network config: {e}"))?;
    Ok(parsed
        .cni_version
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "0.1.0".to_string()))
}

/// Parse "MAJOR[.MINOR[.MICRO]]"; the empty string counts as 0.1.0.
pub fn parse(version: &str) -> Result<(i64, i64, i64), String> {
    if version.is_empty() {
        return Ok((0, 1, 0));
    }
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() >= 4 {
        return Err(format!("invalid version {version:?}: too many parts"));
    }
    let mut numbers = [0i64; 3];
    for (i, (part, what)) in parts.iter().zip(["major", "minor", "micro"]).enumerate() {
        numbers[i] = part.parse::<i64>().map_err(|_| {
            format!("failed to convert {what} version part {part:?}: invalid syntax")
        })?;
    }
    Ok((numbers[0], numbers[1], numbers[2]))
}

/// `version >= other`, both parsed with [`parse`].
pub fn at_least(version: &str, other: &str) -> Result<bool, String> {
    Ok(parse(version)? >= parse(other)?)
}

/// `version > other`, both parsed with [`parse`].
pub fn greater_than(version: &str, other: &str) -> Result<bool, String> {
    Ok(parse(version)? > parse(other)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_output_lists_all_supported_versions() {
        assert_eq!(
            version_info_json(),
            "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
        );
    }

    #[test]
    fn config_version_defaults_to_0_1_0() {
        assert_eq!(decode_config_version(br#"{"name":"x"}"#).unwrap(), "0.1.0");
        assert_eq!(
            decode_config_version(br#"{"cniVersion":""}"#).unwrap(),
            "0.1.0"
        );
        assert_eq!(
            decode_config_version(br#"{"cniVersion":"0.3.1"}"#).unwrap(),
            "0.3.1"
        );
        assert!(
            decode_config_version(br#"{"cniVersion":1}"#)
                .unwrap_err()
                .starts_with("decoding version from network config: ")
        );
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(at_least("0.4.0", "0.4.0").unwrap());
        assert!(at_least("1.0", "0.4.0").unwrap());
        assert!(!at_least("0.3.1", "0.4.0").unwrap());
        assert!(at_least("0.10.0", "0.4.0").unwrap());
        assert!(greater_than("1.1.0", "1.0.0").unwrap());
        assert!(!greater_than("1.1.0", "1.1.0").unwrap());
        assert_eq!(parse("").unwrap(), (0, 1, 0));
        assert!(parse("1.2.3.4").unwrap_err().contains("too many parts"));
        assert!(
            parse("x.1")
                .unwrap_err()
                .contains("major version part \"x\"")
        );
    }
}
