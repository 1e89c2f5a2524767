//! Atomic file replacement, the one way lckv writes its outputs (GGUF files, `.npy` logits,
//! prompt caches): the bytes go to a new temporary file in the target's directory, which is
//! synced and then renamed over the target, so a reader sees the old file or the complete new
//! one, never a part. On any failure the temporary file is removed.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an atomic write failed: the target it was for, the step that failed (naming the
/// temporary file where it concerns that), and the operating system's error.
#[derive(Debug)]
pub struct WriteError {
    pub path: PathBuf,
    pub what: String,
    pub source: io::Error,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "writing {}: {}: {}",
            self.path.display(),
            self.what,
            self.source
        )
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<WriteError> for crate::Error {
    fn from(e: WriteError) -> crate::Error {
        crate::Error::io(
            format!("writing {}: {}", e.path.display(), e.what),
            e.source,
        )
    }
}

/// Replaces `path` with `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Replaces `path` with what `write` writes into the (buffered) temporary file; for outputs too
/// large to assemble in memory first.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), WriteError> {
    let fail = |what: String, source: io::Error| WriteError {
        path: path.to_path_buf(),
        what,
        source,
    };
    let Some(name) = path.file_name() else {
        return Err(fail(
            "the path does not name a file".into(),
            io::ErrorKind::InvalidInput.into(),
        ));
    };
    // The temporary file must be in the target's directory: a rename across filesystems fails.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp, file) = create_temp(&dir, &name.to_string_lossy())
        .map_err(|(tmp, e)| fail(format!("cannot create temporary file {}", tmp.display()), e))?;
    let guard = TempGuard(Some(tmp.clone()));
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write(&mut w).map_err(|e| fail(format!("cannot write {}", tmp.display()), e))?;
    let file = w
        .into_inner()
        .map_err(|e| fail(format!("cannot write {}", tmp.display()), e.into_error()))?;
    // Sync before the rename, or a power cut could leave the new name on empty blocks.
    file.sync_all()
        .map_err(|e| fail(format!("cannot sync {}", tmp.display()), e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| {
        fail(
            format!(
                "cannot rename the temporary file {} into place",
                tmp.display()
            ),
            e,
        )
    })?;
    guard.disarm();
    // Persist the rename; some filesystems refuse to sync directories, which only weakens
    // durability across a power cut, so it is not an error.
    #[cfg(unix)]
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates a temporary file that did not exist before (`create_new`, so two writers never share
/// one). The name carries the process id and a counter; a stale file of the same name, left by
/// a crash of an earlier process with the same id, is stepped over.
fn create_temp(dir: &Path, name: &str) -> Result<(PathBuf, File), (PathBuf, io::Error)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut tries = 0;
    loop {
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match File::options().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            Err(e) => return Err((tmp, e)),
        }
    }
}

/// Removes the temporary file unless the rename happened.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lckv-atomic-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn replaces_the_file_and_leaves_nothing_else() {
        let dir = scratch("replace");
        let p = dir.join("out.bin");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert_eq!(names(&dir), ["out.bin"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failing_writer_keeps_the_old_file_and_no_temporary() {
        let dir = scratch("fail-write");
        let p = dir.join("out.bin");
        write_atomic(&p, b"old").unwrap();
        let e = write_atomic_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("cannot write"), "{e}");
        assert!(e.to_string().contains("disk on fire"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(names(&dir), ["out.bin"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_rename_removes_the_temporary() {
        let dir = scratch("fail-rename");
        // A non-empty directory as the target: the rename fails after the data was written.
        let target = dir.join("taken");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        let e = write_atomic(&target, b"data").unwrap_err();
        assert!(e.to_string().contains("cannot rename"), "{e}");
        assert_eq!(names(&dir), ["taken"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_or_no_file_name_is_reported() {
        let dir = scratch("missing");
        let e = write_atomic(&dir.join("no/such/dir/x"), b"").unwrap_err();
        assert!(
            e.to_string().contains("cannot create temporary file"),
            "{e}"
        );
        let e = write_atomic(Path::new("/"), b"").unwrap_err();
        assert!(e.to_string().contains("does not name a file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
