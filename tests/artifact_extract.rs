//! Safe extraction of CNI plugins from real tarballs built here with the tar crate, including
//! crafted malicious ones.

use flate2::Compression;
use flate2::write::GzEncoder;
use installer::artifact::{
    ArtifactError, DEFAULT_PLUGINS, ExtractLimits, cached_plugins, extract_plugins, sha256_bytes,
};
use std::fs;
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

/// One entry to put in a test tarball. `name` is written raw into the header, so it can be
/// anything (`../x`, `/abs`), bypassing the tar crate's own checks.
struct E<'a> {
    name: &'a str,
    kind: EntryType,
    data: Vec<u8>,
    mode: u32,
    link: Option<&'a str>,
    /// Declared size, when it differs from data.len() (not used for links).
    size: Option<u64>,
}

fn file<'a>(name: &'a str, data: &[u8]) -> E<'a> {
    E {
        name,
        kind: EntryType::Regular,
        data: data.to_vec(),
        mode: 0o755,
        link: None,
        size: None,
    }
}

fn dir_entry(name: &str) -> E<'_> {
    E {
        name,
        kind: EntryType::Directory,
        data: Vec::new(),
        mode: 0o755,
        link: None,
        size: None,
    }
}

fn link<'a>(name: &'a str, kind: EntryType, target: &'a str) -> E<'a> {
    E {
        name,
        kind,
        data: Vec::new(),
        mode: 0o777,
        link: Some(target),
        size: None,
    }
}

fn build_tgz(path: &Path, entries: &[E]) {
    let mut builder = tar::Builder::new(GzEncoder::new(
        fs::File::create(path).unwrap(),
        Compression::fast(),
    ));
    for e in entries {
        let mut h = Header::new_gnu();
        let raw = e.name.as_bytes();
        h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.size.unwrap_or(e.data.len() as u64));
        if let Some(target) = e.link {
            h.set_link_name_literal(target).unwrap();
        }
        h.set_cksum();
        builder.append(&h, &e.data[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// Plugin content that differs per name.
fn content(name: &str) -> Vec<u8> {
    let mut v = format!("#!plugin {name}\n").into_bytes();
    v.extend((0..4096u32).map(|i| (i as u8) ^ name.len() as u8));
    v
}

/// A tarball laid out like the upstream release: `./` then `./<plugin>` files.
fn upstream_like(path: &Path, prefix: &str, extra: Vec<E>) {
    let names = [
        "flannel",
        "ptp",
        "host-local",
        "portmap",
        "tuning",
        "bridge",
        "loopback",
    ];
    let full: Vec<String> = names.iter().map(|n| format!("{prefix}{n}")).collect();
    let bodies: Vec<Vec<u8>> = names.iter().map(|n| content(n)).collect();
    let mut entries = Vec::new();
    if prefix == "./" {
        entries.push(dir_entry("./"));
    }
    for (n, b) in full.iter().zip(&bodies) {
        entries.push(file(n, b));
    }
    entries.extend(extra);
    build_tgz(path, &entries);
}

/// Everything under `root`, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

struct Case {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    tarball: PathBuf,
    dest: PathBuf,
}

fn case() -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    Case {
        tarball: root.join("plugins.tgz"),
        dest: root.join("work/dest"),
        root,
        _tmp: tmp,
    }
}

#[test]
fn extracts_default_plugins_under_dot_slash_with_digests_and_modes() {
    let c = case();
    upstream_like(&c.tarball, "./", vec![]);

    let files = extract_plugins(
        &c.tarball,
        DEFAULT_PLUGINS,
        &c.dest,
        &ExtractLimits::default(),
    )
    .unwrap();

    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, DEFAULT_PLUGINS);
    for f in &files {
        let body = content(&f.name);
        assert_eq!(f.path, c.dest.join(&f.name));
        assert_eq!(fs::read(&f.path).unwrap(), body);
        assert_eq!(f.sha256, sha256_bytes(&body));
        assert_eq!(f.size, body.len() as u64);
        assert_eq!(f.mode, 0o755);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&f.path).unwrap().permissions().mode() & 0o7777,
            0o755
        );
    }
    // Only the wanted files, and no staging directory left beside dest.
    assert_eq!(
        tree(&c.root.join("work")),
        [
            "dest",
            "dest/bridge",
            "dest/host-local",
            "dest/loopback",
            "dest/portmap"
        ]
    );
}

#[test]
fn extracts_root_level_entries_into_an_existing_empty_dir() {
    let c = case();
    upstream_like(&c.tarball, "", vec![file("README.md", b"docs")]);
    fs::create_dir_all(&c.dest).unwrap();
    let files = extract_plugins(
        &c.tarball,
        &["flannel", "bridge"],
        &c.dest,
        &ExtractLimits::default(),
    )
    .unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(
        fs::read(c.dest.join("flannel")).unwrap(),
        content("flannel")
    );
    assert_eq!(tree(&c.dest), ["bridge", "flannel"]);
}

#[test]
fn non_executable_entry_gets_0644() {
    let c = case();
    let mut e = file("./bridge", b"data");
    e.mode = 0o4600; // setuid bit must not survive
    build_tgz(&c.tarball, &[e]);
    let files =
        extract_plugins(&c.tarball, &["bridge"], &c.dest, &ExtractLimits::default()).unwrap();
    assert_eq!(files[0].mode, 0o644);
}

#[test]
fn missing_plugins_are_named_with_the_tarball_contents() {
    let c = case();
    build_tgz(
        &c.tarball,
        &[
            dir_entry("./"),
            file("./bridge", &content("bridge")),
            file("./loopback", &content("loopback")),
        ],
    );
    let err = extract_plugins(
        &c.tarball,
        DEFAULT_PLUGINS,
        &c.dest,
        &ExtractLimits::default(),
    )
    .unwrap_err();
    match &err {
        ArtifactError::MissingPlugins {
            missing, contains, ..
        } => {
            assert_eq!(missing, &["host-local", "portmap"]);
            assert_eq!(contains, &["bridge", "loopback"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("plugins.tgz"), "{text}");
    assert!(text.contains("host-local, portmap"), "{text}");
    assert_eq!(tree(&c.root), ["plugins.tgz"]);
}

/// Runs a crafted tarball that must be refused: checks the error names the entry and that
/// nothing was written anywhere (dest absent, no staging dir, nothing else in root).
fn assert_refused(c: &Case, entry: &str, reason_part: &str) {
    let limits = ExtractLimits {
        max_entry_size: 64 * 1024,
    };
    let err = extract_plugins(&c.tarball, DEFAULT_PLUGINS, &c.dest, &limits).unwrap_err();
    match &err {
        ArtifactError::UnsafeEntry {
            entry: e, reason, ..
        } => {
            assert_eq!(e, entry);
            assert!(reason.contains(reason_part), "{reason}");
        }
        other => panic!("expected UnsafeEntry, got {other:?}"),
    }
    assert!(!c.dest.exists(), "dest was created");
    // Not even the parent directories created for dest remain.
    assert_eq!(tree(&c.root), ["plugins.tgz"]);
}

#[test]
fn parent_dir_entry_is_refused() {
    let c = case();
    // A wanted plugin first, so something was already staged when the bad entry arrives.
    upstream_like(&c.tarball, "./", vec![file("../evil", b"owned")]);
    assert_refused(&c, "../evil", "..");
    let c2 = case();
    upstream_like(&c2.tarball, "./", vec![file("./a/../../../evil", b"owned")]);
    assert_refused(&c2, "./a/../../../evil", "..");
}

#[test]
fn absolute_entry_is_refused() {
    let c = case();
    // Points into the test's own directory so a successful write would be seen.
    let abs = c.root.join("abs-evil").display().to_string();
    upstream_like(&c.tarball, "./", vec![file(&abs, b"owned")]);
    assert_refused(&c, &abs, "absolute");
}

#[test]
fn escaping_symlink_is_refused() {
    let c = case();
    upstream_like(
        &c.tarball,
        "./",
        vec![link("./escape", EntryType::Symlink, "../../..")],
    );
    assert_refused(&c, "./escape", "symbolic link");
}

#[test]
fn symlinked_plugin_then_write_through_it_is_refused() {
    // Classic attack: a wanted name as a symlink to a file outside, then content for it.
    let c = case();
    let target = c.root.join("victim").display().to_string();
    build_tgz(
        &c.tarball,
        &[
            link("./bridge", EntryType::Symlink, &target),
            file("./bridge", b"owned"),
        ],
    );
    assert_refused(&c, "./bridge", "symbolic link");
}

#[test]
fn hardlink_is_refused() {
    let c = case();
    upstream_like(
        &c.tarball,
        "./",
        vec![link("./hard", EntryType::Link, "/etc/passwd")],
    );
    assert_refused(&c, "./hard", "hard link");
}

#[test]
fn device_entry_is_refused() {
    let c = case();
    let mut dev = file("./null", b"");
    dev.kind = EntryType::Char;
    upstream_like(&c.tarball, "./", vec![dev]);
    assert_refused(&c, "./null", "only regular files");
}

#[test]
fn oversized_entries_are_refused_wanted_or_not() {
    let c = case();
    let big = vec![7u8; 64 * 1024 + 1];
    upstream_like(&c.tarball, "./", vec![file("./huge-unwanted", &big)]);
    assert_refused(&c, "./huge-unwanted", "over the limit");

    let c2 = case();
    build_tgz(&c2.tarball, &[file("./portmap", &big)]);
    assert_refused(&c2, "./portmap", "over the limit");
}

#[test]
fn duplicate_wanted_entry_is_refused() {
    let c = case();
    upstream_like(&c.tarball, "./", vec![file("bridge", b"second copy")]);
    assert_refused(&c, "bridge", "twice");
}

#[test]
fn non_empty_destination_is_refused_and_left_alone() {
    let c = case();
    upstream_like(&c.tarball, "./", vec![]);
    fs::create_dir_all(&c.dest).unwrap();
    fs::write(c.dest.join("keep"), b"mine").unwrap();
    let err = extract_plugins(
        &c.tarball,
        DEFAULT_PLUGINS,
        &c.dest,
        &ExtractLimits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ArtifactError::DestinationNotEmpty { .. }),
        "{err}"
    );
    assert_eq!(tree(&c.dest), ["keep"]);
}

#[test]
fn failure_keeps_an_empty_destination_dir_empty() {
    let c = case();
    upstream_like(&c.tarball, "./", vec![file("../evil", b"x")]);
    fs::create_dir_all(&c.dest).unwrap();
    let err = extract_plugins(
        &c.tarball,
        DEFAULT_PLUGINS,
        &c.dest,
        &ExtractLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ArtifactError::UnsafeEntry { .. }), "{err}");
    assert_eq!(tree(&c.root.join("work")), ["dest"]);
}

#[test]
fn garbage_file_is_a_clear_archive_error() {
    let c = case();
    fs::write(&c.tarball, b"<html>404 page from a captive portal</html>").unwrap();
    let err = extract_plugins(
        &c.tarball,
        DEFAULT_PLUGINS,
        &c.dest,
        &ExtractLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ArtifactError::BadArchive { .. }), "{err}");
    assert!(!c.dest.exists());
}

#[test]
fn bad_wanted_names_are_rejected() {
    let c = case();
    upstream_like(&c.tarball, "./", vec![]);
    for bad in ["", "../bridge", "a/b", ".."] {
        let err =
            extract_plugins(&c.tarball, &[bad], &c.dest, &ExtractLimits::default()).unwrap_err();
        assert!(
            matches!(err, ArtifactError::InvalidWanted { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn extraction_cache_is_reused_and_refreshed_when_a_file_changes() {
    let c = case();
    upstream_like(&c.tarball, "./", vec![]);
    let cache = c.root.join("cache");
    let sha = installer::artifact::sha256_file(&c.tarball).unwrap();
    let wanted = ["bridge", "loopback"];
    let first =
        cached_plugins(&c.tarball, &sha, &wanted, &cache, &ExtractLimits::default()).unwrap();
    let dir = cache.join("extracted").join(&sha);
    assert_eq!(first[0].path, dir.join("bridge"));
    assert_eq!(
        first[0].sha256,
        installer::artifact::sha256_bytes(&content("bridge"))
    );
    // Reused: the tarball is not even read again (it may be gone).
    let moved = c.root.join("moved.tgz");
    fs::rename(&c.tarball, &moved).unwrap();
    let again = cached_plugins(&c.tarball, &sha, &wanted, &cache, &ExtractLimits::default())
        .expect("served from the cache without the tarball");
    assert_eq!(again, first);
    // A tampered file (new content, new identity) makes it extract afresh.
    fs::rename(&moved, &c.tarball).unwrap();
    fs::write(dir.join("bridge"), b"tampered").unwrap();
    let fresh =
        cached_plugins(&c.tarball, &sha, &wanted, &cache, &ExtractLimits::default()).unwrap();
    assert_eq!(fs::read(dir.join("bridge")).unwrap(), content("bridge"));
    assert_eq!(fresh[0].sha256, first[0].sha256);
    // A plugin the cache does not hold yet: extracted again with it.
    let more = cached_plugins(
        &c.tarball,
        &sha,
        &["bridge", "portmap"],
        &cache,
        &ExtractLimits::default(),
    )
    .unwrap();
    assert_eq!(more[1].name, "portmap");
}
