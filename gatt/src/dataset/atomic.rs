//! Write-then-rename, so readers never see half a file.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// A file written under a temporary name next to its target and renamed into place by
/// [`AtomicFile::commit`]; dropped without commit, the temporary file is removed.
pub struct AtomicFile {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Creates the folders of `target` and the temporary file `.NAME.tmp-PID` beside it.
    ///
    /// # Errors
    ///
    /// An input error when `target` has no file name; an I/O error naming the path.
    pub fn create(target: &Path) -> Result<Self> {
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create folder", e))?;
        }
        let name = target
            .file_name()
            .ok_or_else(|| Error::input(format!("{}: not a file path", target.display())))?;
        let tmp = target.with_file_name(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            tmp,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The final path (not the temporary one).
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Where to write the contents (buffered; flushed by [`AtomicFile::commit`]).
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("writer used after commit")
    }

    /// Flushes and syncs the temporary file, then renames it to the final path.
    ///
    /// # Errors
    ///
    /// A write, sync or rename failure, naming the path.
    pub fn commit(mut self) -> Result<()> {
        let w = self.file.take().expect("committed twice");
        let f = w
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, "write", e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(&self.tmp, "write", e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.target)
            .map_err(|e| Error::io(&self.target, "move into place", e))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = AtomicFile::create(path)?;
    f.writer()
        .write_all(bytes)
        .map_err(|e| Error::io(path, "write", e))?;
    f.commit()
}

/// Writes `value` as pretty JSON to `path` atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize") + "\n";
    write_file(path, text.as_bytes())
}

/// Fills a folder under a temporary name next to `out`, then renames it into place,
/// replacing what was there. If `fill` fails, the temporary folder is removed and `out`
/// is untouched.
pub fn write_dir(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = sibling(out, "tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = sibling(out, "old");
    if out.exists() {
        std::fs::rename(out, &old).map_err(|e| Error::io(out, "move aside", e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, "rename into place", e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// `out` with a suffix, next to it (same file system, so renames are atomic).
fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    out.with_file_name(format!(".{name}.{suffix}-{}", std::process::id()))
}
