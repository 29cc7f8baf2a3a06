//! The ADD result cache (libcni's `<cacheDir>/results/<network>-<container>-<ifname>`), read
//! back on DEL and CHECK to hand plugins their `prevResult`. The file format is libcni's
//! `cniCacheV1`, so either side can read the other's entries.

use super::Attachment;
use super::conf::NetworkList;
use crate::cni::gojson;
use base64::Engine;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Marks the file format.
const KIND: &str = "cniCacheV1";

/// Where the result of `network` for `attachment` is kept.
pub fn path(cache_dir: &Path, network: &str, attachment: &Attachment) -> PathBuf {
    cache_dir.join("results").join(format!(
        "{network}-{}-{}",
        attachment.container_id, attachment.ifname
    ))
}

/// Store the final result of an ADD.
pub fn write(
    cache_dir: &Path,
    list: &NetworkList,
    attachment: &Attachment,
    result: &Value,
) -> Result<(), String> {
    let mut entry = Map::new();
    entry.insert("kind".into(), json!(KIND));
    entry.insert("containerId".into(), json!(attachment.container_id));
    entry.insert(
        "config".into(),
        json!(base64::engine::general_purpose::STANDARD.encode(&list.bytes)),
    );
    entry.insert("ifName".into(), json!(attachment.ifname));
    entry.insert("networkName".into(), json!(list.name));
    if let Some(netns) = &attachment.netns {
        entry.insert("netns".into(), json!(netns.display().to_string()));
    }
    if !attachment.args.is_empty() {
        let args: Vec<[&str; 2]> = attachment
            .args
            .iter()
            .map(|(k, v)| [k.as_str(), v.as_str()])
            .collect();
        entry.insert("cniArgs".into(), json!(args));
    }
    if !attachment.capability_args.is_empty() {
        entry.insert(
            "capabilityArgs".into(),
            Value::Object(attachment.capability_args.clone()),
        );
    }
    entry.insert("result".into(), result.clone());
    let text = gojson::to_compact(&Value::Object(entry));

    let file = path(cache_dir, &list.name, attachment);
    let dir = file.parent().unwrap_or(cache_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut handle = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    handle
        .write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// The cached result, if there is one; an unreadable entry is an error.
pub fn read_result(
    cache_dir: &Path,
    network: &str,
    attachment: &Attachment,
) -> Result<Option<Value>, String> {
    let file = path(cache_dir, network, attachment);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(_) => return Ok(None),
    };
    let entry: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("cached result {} is not JSON: {e}", file.display()))?;
    if entry.get("kind").and_then(Value::as_str) != Some(KIND) {
        // A pre-cniCacheV1 entry is the bare result.
        return Ok(Some(entry));
    }
    Ok(entry.get("result").filter(|r| r.is_object()).cloned())
}

/// Forget the result (after a successful DEL); a missing entry is fine.
pub fn remove(cache_dir: &Path, network: &str, attachment: &Attachment) {
    let _ = std::fs::remove_file(path(cache_dir, network, attachment));
}
