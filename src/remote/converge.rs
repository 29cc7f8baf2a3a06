//! Converge many paths on one host in two round trips: one facts query, one apply stream.
//!
//! Each `exec` over SSH costs a new session on the server (often 100+ ms with PAM), so a host
//! with a dozen files would spend seconds on round trips. Here the facts of every path (kind,
//! mode, owner, sha256, link target) come back from a single command, the comparison happens
//! locally, and everything that differs is applied by a second command fed one tar stream: new
//! file contents land under temporary names next to their targets and are renamed into place,
//! so a reader never sees a partial file. An unchanged host costs one round trip.

use super::diff::unified_diff;
use super::ops::{
    Attrs, CmdOutput, Content, Input, OpResult, OpStatus, Remote, RemoteError, Stat, random_suffix,
    short,
};
use std::io::Read;
use std::path::Path;

/// What one path should be.
#[derive(Debug, Clone)]
pub enum Desired<'a> {
    /// A directory with a mode (parents created as needed).
    Dir {
        /// Absolute path.
        path: &'a str,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file with this content and attributes.
    File {
        /// Absolute path.
        path: &'a str,
        /// Where the bytes come from.
        content: Content<'a>,
        /// sha256 of the content (hex), computed once by the caller.
        sha256: &'a str,
        /// Size of the content in bytes.
        size: u64,
        /// Mode and owner.
        attrs: &'a Attrs,
    },
    /// A symbolic link pointing at `target`.
    Link {
        /// Absolute path of the link.
        path: &'a str,
        /// What it points to (as written into the link).
        target: &'a str,
    },
    /// Nothing at this path.
    Absent {
        /// Absolute path.
        path: &'a str,
    },
}

impl Desired<'_> {
    /// The path this item is about.
    pub fn path(&self) -> &str {
        match self {
            Desired::Dir { path, .. }
            | Desired::File { path, .. }
            | Desired::Link { path, .. }
            | Desired::Absent { path } => path,
        }
    }

    fn op(&self) -> &'static str {
        match self {
            Desired::Dir { .. } => "ensure_dir",
            Desired::File { .. } => "put_file",
            Desired::Link { .. } => "symlink",
            Desired::Absent { .. } => "remove",
        }
    }
}

/// What a path is now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fact {
    Absent,
    Dir(Stat),
    File(Stat, String),
    Link(String),
    Other,
}

/// Host facts gathered in one round trip.
#[derive(Debug, Clone)]
pub struct Facts {
    /// `uname -m` of the host.
    pub machine: String,
    paths: Vec<Fact>,
}

impl Facts {
    /// Whether the `index`-th queried path exists (as anything).
    pub fn exists(&self, index: usize) -> bool {
        self.paths.get(index).is_some_and(|f| *f != Fact::Absent)
    }
}

/// Where nodes remember their files' digests (see [`FACTS`]).
pub const NODE_DIGEST_MEMO: &str = "/var/lib/installer/digests";

/// Prints `uname -m`, then one tab-separated line per path argument (the first argument is
/// `rw` or `ro`). A regular file's sha256 comes from the node's digest memo
/// ([`NODE_DIGEST_MEMO`]: `DEV:INO:SIZE:MTIME<TAB>PATH<TAB>SHA256` lines) when its identity
/// (device, inode, size, modification time to the nanosecond) is the one recorded there, else
/// from `sha256sum`; a file modified less than two seconds ago is not memoised (its timestamp
/// could still be shared by a later write). With `rw` the memo is rewritten when it changed.
///
/// One `stat` answers for every path (name line, then facts line; missing paths print
/// nothing), so an unchanged host costs three processes (`uname`, `stat`, and the shell)
/// whatever the number of paths. The memo is read into numbered variables and searched by
/// exact comparison: a `${memo#*KEY}` search is quadratic in dash and took 60 ms on a memo of
/// 18 lines.
const FACTS: &str = r#"mode=$1; shift
uname -m
memo=/var/lib/installer/digests
nl='
'
old=
n=0
if [ -f "$memo" ]; then
  while IFS= read -r l || [ -n "$l" ]; do
    old="$old$l$nl"; n=$((n + 1)); eval "mk_$n=\${l%	*}; ms_$n=\${l##*	}"
  done 2>/dev/null < "$memo"
fi
now=
out=
st=$(stat --printf '%n\n%F|%a %u %g %U %G|%d:%i:%s:%Y.%y\n' -- "$@" 2>/dev/null)$nl
for p in "$@"; do
  if [ "${st%%"$nl"*}" = "$p" ]; then
    st=${st#*"$nl"}; f=${st%%"$nl"*}; st=${st#*"$nl"}
  elif [ -e "$p" ] || [ -L "$p" ]; then f=other
  else f=; fi
  case $f in
    '') echo A ;;
    'symbolic link|'*) printf 'L\t%s\n' "$(readlink -- "$p")" ;;
    'directory|'*) a=${f#*|}; printf 'D\t%s\n' "${a%%|*}" ;;
    'regular file|'*|'regular empty file|'*)
      a=${f#*|}; id=${a#*|}; a=${a%%|*}
      key="$id	$p"; s=; k=1
      while [ $k -le $n ]; do
        eval "[ \"\$mk_$k\" = \"\$key\" ]" && { eval "s=\$ms_$k"; break; }
        k=$((k + 1))
      done
      if [ -n "$s" ]; then
        out="$out$key	$s$nl"
      else
        s=$(sha256sum < "$p") && s=${s%% *} || s=unreadable
        [ -n "$now" ] || now=$(date +%s)
        t=${id#*:*:*:}; t=${t%%.*}
        if [ "$s" != unreadable ] && [ -n "$t" ] && [ "$t" -lt $((now - 1)) ] 2>/dev/null; then
          out="$out$id	$p	$s$nl"
        fi
      fi
      printf 'F\t%s\t%s\n' "$a" "$s" ;;
    *) echo O ;;
  esac
done
if [ "$mode" = rw ] && [ "$out" != "$old" ] && [ -n "$out" ]; then
  mkdir -p /var/lib/installer 2>/dev/null && printf '%s' "$out" > "$memo.$$" 2>/dev/null \
    && mv -f "$memo.$$" "$memo" 2>/dev/null || rm -f "$memo.$$" 2>/dev/null
fi
exit 0"#;

/// Applies planned actions. Arguments are `ACTION INDEX PATH [EXTRA…]` groups, in order:
/// `dir I P MODE OWNER`, `attrs I P MODE OWNER`, `tar - - -` (extract stdin at /, modes exact),
/// `place I P TMP OWNER SHA256`, `link I P TARGET`, `rm I P`. Prints `ok I` or `err I MESSAGE`.
/// Results are collected and printed at the end, after stdin has been consumed: output
/// written while the upload is still streaming in is not reliably delivered by libssh2.
///
/// Every fork counts (a host runs this once per run, and a fork with an exec costs about a
/// millisecond of CPU): no command substitution except for error messages and the one
/// `mktemp` that holds them (a private file, not a guessable name in /tmp), the uploaded files
/// get their modes (and root ownership, when root extracts) from the tar headers, a placed file
/// costs one `mv`, and the digest memo is appended with one `stat` for all of them.
const APPLY: &str = r#"e=$(mktemp 2>/dev/null) || e=/dev/null
nl='
'
tarok=1
res=
placed=
sums=
ok() { res="${res}ok $1$nl"; }
fail() { res="${res}err $1 $(tr '\n' ' ' < "$e" 2>/dev/null)$nl"; }
while [ $# -gt 0 ]; do
  a=$1; i=$2; p=$3; shift 3
  case $a in
    dir)
      m=$1; o=$2; shift 2
      if { mkdir -m "$m" -- "$p" 2>/dev/null || { mkdir -p -- "$p" && chmod "$m" -- "$p"; }; } 2>"$e" \
        && { [ -z "$o" ] || chown "$o" -- "$p" 2>"$e"; }; then ok "$i"; else fail "$i"; fi ;;
    attrs)
      m=$1; o=$2; shift 2
      if chmod "$m" -- "$p" 2>"$e" && { [ -z "$o" ] || chown "$o" -- "$p" 2>"$e"; }; then ok "$i"; else fail "$i"; fi ;;
    tar)
      if ! tar -x -p -f - -C / 2>"$e"; then tarok=0; terr=$(tr '\n' ' ' < "$e"); cat >/dev/null; fi ;;
    place)
      t=$1; o=$2; h=$3; shift 3
      if [ $tarok = 0 ]; then rm -f -- "$t"; res="${res}err $i upload failed: $terr$nl"; continue; fi
      if { [ -z "$o" ] || chown "$o" -- "$t" 2>"$e"; } && mv -f -- "$t" "$p" 2>"$e"; then
        ok "$i"; placed="$placed$p$nl"; sums="$sums$h$nl"
      else rm -f -- "$t"; fail "$i"; fi ;;
    link)
      t=$1; shift
      tmp="${p%/*}/.${p##*/}.installer-link-$$"
      if ln -s -- "$t" "$tmp" 2>"$e" && mv -Tf -- "$tmp" "$p" 2>"$e"; then ok "$i"; else rm -f -- "$tmp"; fail "$i"; fi ;;
    rm)
      if rm -rf -- "$p" 2>"$e"; then ok "$i"; else fail "$i"; fi ;;
  esac
done
[ "$e" = /dev/null ] || rm -f -- "$e"
# Files just placed are memoised with the digest they were uploaded with (see FACTS). Here the
# memo is only appended to (FACTS rewrites it whole), and left alone if stat fails.
if [ -n "$placed" ]; then
  set --
  while IFS= read -r q; do set -- "$@" "$q"; done <<EOF
${placed%"$nl"}
EOF
  if ids=$(stat -c '%d:%i:%s:%Y.%y' -- "$@" 2>/dev/null); then
    add=; ids=$ids$nl
    for q in "$@"; do
      add="$add${ids%%"$nl"*}	$q	${sums%%"$nl"*}$nl"; ids=${ids#*"$nl"}; sums=${sums#*"$nl"}
    done
    { [ -d /var/lib/installer ] || mkdir -p /var/lib/installer; } 2>/dev/null \
      && printf '%s' "$add" >> /var/lib/installer/digests 2>/dev/null
  fi
fi
printf '%s' "$res""#;

fn parse_stat(text: &str) -> Option<Stat> {
    let words: Vec<&str> = text.split_whitespace().collect();
    Stat::parse(&words)
}

impl Remote {
    /// Gather the host's machine type and the current state of `paths` in one round trip.
    pub fn facts(&self, paths: &[&str]) -> Result<Facts, RemoteError> {
        for p in paths {
            self.check_path(p)?;
            if p.contains('\n') {
                return Err(RemoteError::BadPath {
                    host: self.host().to_string(),
                    path: p.to_string(),
                    why: "contains a newline",
                });
            }
        }
        let mut args: Vec<&str> = vec![if self.check_mode() { "ro" } else { "rw" }];
        args.extend_from_slice(paths);
        let out = self.exec(FACTS, &args, true, Input::None)?;
        let bad = |detail: String| RemoteError::Command {
            host: self.host().to_string(),
            doing: "gathering facts",
            detail,
        };
        if !out.success() {
            return Err(bad(out.describe_failure()));
        }
        let text = out.stdout_text().to_string();
        let mut lines = text.lines();
        let machine = lines.next().unwrap_or_default().trim().to_string();
        let mut facts = Vec::with_capacity(paths.len());
        for (path, line) in paths.iter().zip(lines.by_ref()) {
            let mut parts = line.split('\t');
            let fact = match (parts.next(), parts.next(), parts.next()) {
                (Some("A"), _, _) => Fact::Absent,
                (Some("O"), _, _) => Fact::Other,
                (Some("L"), Some(target), _) => Fact::Link(target.to_string()),
                (Some("D"), Some(stat), _) => {
                    Fact::Dir(parse_stat(stat).ok_or_else(|| bad(format!("{path}: {line:?}")))?)
                }
                (Some("F"), Some(stat), Some(sum)) => Fact::File(
                    parse_stat(stat).ok_or_else(|| bad(format!("{path}: {line:?}")))?,
                    sum.to_string(),
                ),
                _ => return Err(bad(format!("unexpected facts line for {path}: {line:?}"))),
            };
            facts.push(fact);
        }
        if facts.len() != paths.len() {
            return Err(bad(format!(
                "expected {} facts lines, got {}",
                paths.len(),
                facts.len()
            )));
        }
        Ok(Facts {
            machine,
            paths: facts,
        })
    }

    /// Make every item true, given `facts` gathered for exactly these items' paths (in order).
    /// Unchanged items cost nothing; everything else is applied in one more round trip. In
    /// check mode nothing is applied and changes are reported as "would …".
    pub fn converge(&self, items: &[Desired<'_>], facts: &Facts) -> Vec<OpResult> {
        let mut results: Vec<Option<OpResult>> = vec![None; items.len()];
        let mut args: Vec<String> = Vec::new();
        let mut uploads: Vec<(usize, String)> = Vec::new(); // (item, remote temp path)
        let mut pending: Vec<(usize, String)> = Vec::new(); // (item, detail when applied)
        let suffix = random_suffix();
        for (i, (item, fact)) in items.iter().zip(&facts.paths).enumerate() {
            let path = item.path();
            let result =
                |status, detail: String| Some(OpResult::new(item.op(), path, status, detail));
            match (item, fact) {
                (Desired::Dir { mode, .. }, Fact::Dir(stat)) => {
                    let diffs = stat.differences(&Attrs::mode(*mode));
                    if diffs.is_empty() {
                        results[i] = result(OpStatus::Ok, "exists".into());
                    } else {
                        args.extend([
                            "attrs".into(),
                            i.to_string(),
                            path.into(),
                            format!("{mode:o}"),
                            String::new(),
                        ]);
                        pending.push((i, diffs.join(", ")));
                    }
                }
                (Desired::Dir { mode, .. }, Fact::Absent) => {
                    args.extend([
                        "dir".into(),
                        i.to_string(),
                        path.into(),
                        format!("{mode:o}"),
                        String::new(),
                    ]);
                    pending.push((i, format!("created (mode {mode:04o})")));
                }
                (Desired::Dir { .. }, _) => {
                    results[i] = result(
                        OpStatus::Failed,
                        "exists but is not a directory; remove it or choose another path".into(),
                    );
                }
                (Desired::File { sha256, attrs, .. }, Fact::File(stat, sum)) if sum == sha256 => {
                    let diffs = stat.differences(attrs);
                    if diffs.is_empty() {
                        results[i] = result(OpStatus::Ok, format!("sha256 {}", short(sha256)));
                    } else {
                        let mode = attrs
                            .mode
                            .map(|m| format!("{m:o}"))
                            .unwrap_or_else(|| format!("{:o}", stat.mode));
                        args.extend([
                            "attrs".into(),
                            i.to_string(),
                            path.into(),
                            mode,
                            attrs.chown_arg(),
                        ]);
                        pending.push((i, diffs.join(", ")));
                    }
                }
                (
                    Desired::File { size, attrs, .. },
                    Fact::Absent | Fact::File(..) | Fact::Link(_),
                ) => {
                    let dir = Path::new(path)
                        .parent()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|| "/".into());
                    let base = Path::new(path)
                        .file_name()
                        .map(|b| b.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let tmp = format!("{}/.{base}.installer-{suffix}", dir.trim_end_matches('/'));
                    let detail = match fact {
                        Fact::Absent => format!("created ({size} bytes)"),
                        Fact::File(_, old) => format!(
                            "updated (sha256 {} -> {})",
                            short(old),
                            short(self_sha(item))
                        ),
                        _ => "replaced a symbolic link".to_string(),
                    };
                    uploads.push((i, tmp.clone()));
                    pending.push((i, detail));
                    // The mode comes from the tar header (extracted with -p), and so does
                    // root ownership when root extracts: chown only for anything else.
                    let owner = if self.extracts_as_root() && attrs.is_root_owned() {
                        String::new()
                    } else {
                        attrs.chown_arg()
                    };
                    args.extend([
                        "place".into(),
                        i.to_string(),
                        path.into(),
                        tmp,
                        owner,
                        self_sha(item).to_string(),
                    ]);
                }
                (Desired::File { .. }, _) => {
                    results[i] = result(
                        OpStatus::Failed,
                        "exists but is not a regular file; remove it first".into(),
                    );
                }
                (Desired::Link { target, .. }, Fact::Link(current)) if current == target => {
                    results[i] = result(OpStatus::Ok, format!("-> {target}"));
                }
                (Desired::Link { .. }, Fact::Dir(_)) => {
                    results[i] = result(
                        OpStatus::Failed,
                        "is a directory; remove it or choose another path".into(),
                    );
                }
                (Desired::Link { target, .. }, fact) => {
                    let detail = match fact {
                        Fact::Link(old) => format!("-> {target} (was -> {old})"),
                        Fact::Absent => format!("created -> {target}"),
                        _ => format!("-> {target} (replaced a file)"),
                    };
                    args.extend([
                        "link".into(),
                        i.to_string(),
                        path.into(),
                        target.to_string(),
                    ]);
                    pending.push((i, detail));
                }
                (Desired::Absent { .. }, Fact::Absent) => {
                    results[i] = result(OpStatus::Ok, "already absent".into());
                }
                (Desired::Absent { .. }, _) => {
                    args.extend(["rm".into(), i.to_string(), path.into()]);
                    pending.push((i, "removed".into()));
                }
            }
        }
        // Diffs of changed text files (one extra read each, only with --diff).
        let mut diffs: Vec<Option<String>> = vec![None; items.len()];
        if self.diff_mode() {
            for (i, _) in &pending {
                if let (
                    Desired::File {
                        path,
                        content: Content::Bytes(new),
                        attrs,
                        ..
                    },
                    Fact::File(..),
                ) = (&items[*i], &facts.paths[*i])
                {
                    // Files only root may read (credentials) are never shown.
                    if attrs.mode.is_some_and(|m| m & 0o077 == 0) {
                        diffs[*i] = Some(format!(
                            "--- {path}\n+++ {path}\n(content not shown: mode {:04o})\n",
                            attrs.mode.unwrap_or(0)
                        ));
                    } else if let Ok(Some(old)) = self.read_file(path) {
                        diffs[*i] = unified_diff(path, &old, new);
                    }
                }
            }
        }
        if self.check_mode() || pending.is_empty() {
            for (i, detail) in pending {
                let mut r = OpResult::new(
                    items[i].op(),
                    items[i].path(),
                    OpStatus::Changed,
                    format!("would be {detail}"),
                );
                r.diff = diffs[i].take();
                results[i] = Some(r);
            }
            return results.into_iter().flatten().collect();
        }
        // The tar extraction runs after directories are made and before files are placed.
        let first_place = args.iter().position(|a| a == "place");
        let mut final_args: Vec<String> = Vec::with_capacity(args.len() + 3);
        let dirs_end = first_place.unwrap_or(args.len());
        final_args.extend_from_slice(&args[..dirs_end]);
        if !uploads.is_empty() {
            final_args.extend(["tar".into(), "-".into(), "-".into()]);
        }
        final_args.extend_from_slice(&args[dirs_end..]);
        let outcome = self.apply_stream(items, &uploads, &final_args);
        let mut reported: std::collections::HashMap<usize, Result<(), String>> = Default::default();
        if let Ok(out) = &outcome {
            for line in out.stdout_text().lines() {
                let mut w = line.splitn(3, ' ');
                match (
                    w.next(),
                    w.next().and_then(|n| n.parse::<usize>().ok()),
                    w.next(),
                ) {
                    (Some("ok"), Some(i), _) => {
                        reported.insert(i, Ok(()));
                    }
                    (Some("err"), Some(i), msg) => {
                        reported.insert(i, Err(msg.unwrap_or("failed").to_string()));
                    }
                    _ => {}
                }
            }
        }
        for (i, detail) in pending {
            let r = match (reported.remove(&i), &outcome) {
                (Some(Ok(())), _) => {
                    let mut r =
                        OpResult::new(items[i].op(), items[i].path(), OpStatus::Changed, detail);
                    r.diff = diffs[i].take();
                    r
                }
                (Some(Err(msg)), _) => OpResult::failed(items[i].op(), items[i].path(), msg),
                (None, Err(e)) => OpResult::failed(items[i].op(), items[i].path(), e.to_string()),
                (None, Ok(out)) => OpResult::failed(
                    items[i].op(),
                    items[i].path(),
                    format!("not applied: {}", out.describe_failure()),
                ),
            };
            results[i] = Some(r);
        }
        results.into_iter().flatten().collect()
    }

    /// Run the apply script with a tar stream of the uploads on stdin (built on a thread).
    fn apply_stream(
        &self,
        items: &[Desired<'_>],
        uploads: &[(usize, String)],
        args: &[String],
    ) -> Result<CmdOutput, RemoteError> {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        if uploads.is_empty() {
            return self.exec(APPLY, &argv, true, Input::None);
        }
        let io = |doing, source| RemoteError::Io {
            host: self.host().to_string(),
            doing,
            source,
        };
        let (mut reader, writer) = std::io::pipe().map_err(|e| io("creating a pipe", e))?;
        // A larger pipe buffer lets the producer and the channel writer hand over whole
        // packets' worth at a time (best effort: the default 64 KiB works, only slower).
        let _ = rustix::pipe::fcntl_setpipe_size(&writer, UPLOAD_PIPE_BYTES);
        std::thread::scope(|scope| {
            let producer = scope.spawn(move || write_tar(writer, items, uploads));
            let result = self.exec(APPLY, &argv, true, Input::Reader(&mut reader));
            drop(reader);
            match producer.join() {
                Ok(Ok(())) => result,
                Ok(Err(e)) => result.and(Err(io("reading local files for upload", e))),
                Err(_) => result.and(Err(io(
                    "building the upload stream",
                    std::io::Error::other("producer thread panicked"),
                ))),
            }
        })
    }

    fn diff_mode(&self) -> bool {
        self.diff_enabled()
    }

    /// Whether the apply script runs as root (the login user, or the become user), so that
    /// `tar` gives extracted files the header's owner (uid and gid 0).
    fn extracts_as_root(&self) -> bool {
        let spec = self.spec();
        match &spec.become_ {
            Some(b) => b.user == "root",
            None => spec.user == "root",
        }
    }
}

fn self_sha<'a>(item: &'a Desired<'_>) -> &'a str {
    match item {
        Desired::File { sha256, .. } => sha256,
        _ => "",
    }
}

/// Pipe buffer between the tar producer and the SSH channel (the kernel's default maximum).
const UPLOAD_PIPE_BYTES: usize = 1 << 20;

/// Write a tar stream with each upload's content under its remote temporary path.
fn write_tar(
    writer: std::io::PipeWriter,
    items: &[Desired<'_>],
    uploads: &[(usize, String)],
) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(writer);
    for (i, tmp) in uploads {
        let Desired::File {
            content,
            size,
            attrs,
            ..
        } = &items[*i]
        else {
            continue;
        };
        let mut header = tar::Header::new_gnu();
        header.set_size(*size);
        header.set_mode(attrs.mode.unwrap_or(0o644));
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        header.set_entry_type(tar::EntryType::Regular);
        let rel = tmp.trim_start_matches('/');
        match content {
            Content::Bytes(b) => tar.append_data(&mut header, rel, *b)?,
            Content::File(p) => {
                let f = std::fs::File::open(p)?;
                let len = f.metadata()?.len();
                if len != *size {
                    return Err(std::io::Error::other(format!(
                        "{} changed while uploading ({} bytes, expected {size})",
                        p.display(),
                        len
                    )));
                }
                tar.append_data(&mut header, rel, f.take(*size))?;
            }
        }
    }
    tar.into_inner()?;
    Ok(())
}
