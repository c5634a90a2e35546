//! Write-then-rename, so readers never see half a file.

use crate::error::{Error, Location, Result};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// A file written under a temporary name next to its target and renamed into place by
/// [`AtomicFile::commit`]; dropped without commit, the temporary file is removed.
pub struct AtomicFile {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    /// Set once the temporary file has been renamed into place.
    committed: bool,
}

impl AtomicFile {
    /// Creates the folders of `target` and the temporary file `.NAME.tmp-PID` beside it.
    /// Temporary files of the same target left by processes that no longer run (killed
    /// with `kill -9`, a power cut) are removed first.
    ///
    /// # Errors
    ///
    /// An input error when `target` has no file name, is a folder, or lies under a file;
    /// an I/O error naming the path.
    pub fn create(target: &Path) -> Result<Self> {
        if let Ok(m) = std::fs::symlink_metadata(target) {
            if !m.is_file() && !m.is_dir() {
                return Err(Error::input(
                    "cannot write: this is not a regular file (a link, device or pipe), \
                     which writing by rename would replace; name a regular file",
                )
                .at(Location::in_file(target)));
            }
        }
        if target.is_dir() {
            return Err(Error::input(
                "cannot write: this is a folder, and a file is expected here",
            )
            .at(Location::in_file(target)));
        }
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            if dir.is_file() {
                return Err(Error::input(
                    "cannot create folder: this is a file, and a folder is expected here",
                )
                .at(Location::in_file(dir)));
            }
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create folder", e))?;
        }
        let name = target
            .file_name()
            .ok_or_else(|| Error::input(format!("{}: not a file path", target.display())))?;
        remove_stale(target);
        let tmp = target.with_file_name(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
        live_temporaries(|live| live.push(tmp.clone()));
        Ok(AtomicFile {
            target: target.to_path_buf(),
            tmp,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            committed: false,
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

    /// Flushes and syncs the temporary file, then renames it to the final path. On
    /// failure the temporary file is removed and the final path is left as it was.
    ///
    /// # Errors
    ///
    /// A write, sync or rename failure, naming the final path (a full disk says so).
    pub fn commit(mut self) -> Result<()> {
        let w = self.file.take().expect("committed twice");
        let f = w
            .into_inner()
            .map_err(|e| Error::io(&self.target, "write", e.into_error()))?;
        f.sync_all()
            .map_err(|e| Error::io(&self.target, "write", e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.target)
            .map_err(|e| Error::io(&self.target, "move into place", e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.tmp);
        }
        live_temporaries(|live| live.retain(|t| t != &self.tmp));
    }
}

/// The temporary files of this process's [`AtomicFile`]s not yet committed or dropped.
static LIVE_TEMPORARIES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Runs `f` on the list of live temporary files (skipped if the lock is poisoned or,
/// from [`remove_live_temporaries`], held).
fn live_temporaries(f: impl FnOnce(&mut Vec<PathBuf>)) {
    if let Ok(mut live) = LIVE_TEMPORARIES.lock() {
        f(&mut live);
    }
}

/// Removes the temporary files of this process's unfinished outputs: for a process about
/// to end without unwinding (`std::process::exit` from a refusal deep inside a render),
/// which would otherwise leave them for the next run to clean.
pub fn remove_live_temporaries() {
    if let Ok(live) = LIVE_TEMPORARIES.try_lock() {
        for t in live.iter() {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// Removes what processes that no longer run left beside `target`: temporary files and
/// folders `.NAME.tmp-PID`, and `.NAME.old-PID` (a folder moved aside by [`write_dir`]),
/// which is moved back when `target` is missing (the process died between the two
/// renames) and removed otherwise. Only where process ids can be checked (`/proc`);
/// elsewhere nothing is removed.
fn remove_stale(target: &Path) {
    let (Some(name), Some(dir)) = (target.file_name(), target.parent()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let name = name.to_string_lossy();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let Some(rest) = file.strip_prefix(&format!(".{name}.")) else {
            continue;
        };
        let (kind, pid) = match rest.split_once('-') {
            Some((kind @ ("tmp" | "old"), pid)) if pid.bytes().all(|b| b.is_ascii_digit()) => {
                (kind, pid)
            }
            _ => continue,
        };
        if pid.is_empty() || proc.join(pid).exists() {
            continue;
        }
        let path = entry.path();
        if kind == "old" && !target.exists() {
            let _ = std::fs::rename(&path, target);
        } else if path.is_dir() {
            let _ = std::fs::remove_dir_all(&path);
        } else {
            let _ = std::fs::remove_file(&path);
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
/// replacing what was there: for folders gatt owns (a checkpoint, an adapter inside a
/// run folder). If `fill` fails, the temporary folder is removed and `out` is
/// untouched. Folders a user names go through [`write_user_dir`].
pub fn write_dir(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if out.is_file() {
        return Err(Error::input(
            "cannot write a folder: this is a file, and a folder is expected here",
        )
        .at(Location::in_file(out)));
    }
    remove_stale(out);
    let tmp = sibling(out, "tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        // The error names a file of the temporary folder: say which output it was for.
        return Err(e.context(format!("writing {}", out.display())));
    }
    let old = sibling(out, "old");
    if out.exists() {
        std::fs::rename(out, &old).map_err(|e| Error::io(out, "move aside", e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, "rename into place", e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Refuses an output that would destroy one of the run's inputs: `out` is the same file
/// as one of `inputs` (also through links or `..`), or, for an input that is a folder (a
/// Hugging Face model), a file inside it. Each input comes with the flag that named it.
///
/// # Errors
///
/// An input error naming the flag whose file would be lost.
pub fn refuse_overwriting_inputs(out: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    for (flag, input) in inputs {
        if would_replace(out, input) {
            return Err(Error::input(format!(
                "this output would replace the file of {flag} ({}); write to another file",
                input.display()
            ))
            .at(Location::in_file(out)));
        }
    }
    Ok(())
}

/// Whether writing `out` would replace `input`: both name one existing file (also
/// through links or `..`), or `input` is a folder holding `out`.
pub fn would_replace(out: &Path, input: &Path) -> bool {
    match (std::fs::canonicalize(out), std::fs::canonicalize(input)) {
        (Ok(o), Ok(i)) => o == i || (i.is_dir() && o.starts_with(&i)),
        _ => false, // nothing there yet: nothing to destroy
    }
}

/// Checks that gatt may write a folder at `out`, a path the user named: it is absent,
/// empty, or `overwrite` is set. Call it before long work, so a refusal comes first.
///
/// # Errors
///
/// An input error when `out` is a file, or a folder that holds files and `overwrite` is
/// not set (the message counts them and names `--overwrite`).
pub fn check_user_dir(out: &Path, overwrite: bool) -> Result<()> {
    if out.is_file() {
        return Err(Error::input(
            "cannot write a folder: this is a file, and a folder is expected here",
        )
        .at(Location::in_file(out)));
    }
    let held = match std::fs::read_dir(out) {
        Ok(entries) => entries.count(),
        Err(_) => 0,
    };
    if held > 0 && !overwrite {
        return Err(Error::input(format!(
            "the folder is not empty ({held} entries); choose an empty or new folder, or pass \
             --overwrite to replace the files gatt writes there (other files are kept)"
        ))
        .at(Location::in_file(out)));
    }
    Ok(())
}

/// Writes a folder at `out`, a path the user named, without losing what it held: an
/// absent or empty `out` is filled as [`write_dir`] does (all at once); a folder that
/// holds files is refused unless `overwrite` is set, and then only the files `fill`
/// writes are replaced, one rename each, and the others kept.
///
/// # Errors
///
/// See [`check_user_dir`]; an I/O error naming the path. If `fill` fails, `out` is
/// untouched.
pub fn write_user_dir(
    out: &Path,
    overwrite: bool,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    check_user_dir(out, overwrite)?;
    let empty = std::fs::read_dir(out).map_or(true, |mut e| e.next().is_none());
    if empty {
        if out.exists() {
            std::fs::remove_dir(out).map_err(|e| Error::io(out, "replace empty folder", e))?;
        }
        return write_dir(out, fill);
    }
    remove_stale(out);
    let tmp = sibling(out, "tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
    let moved = fill(&tmp)
        .map_err(|e| e.context(format!("writing {}", out.display())))
        .and_then(|()| {
            let entries: Vec<_> = std::fs::read_dir(&tmp)
                .map_err(|e| Error::io(&tmp, "read", e))?
                .collect::<std::io::Result<_>>()
                .map_err(|e| Error::io(&tmp, "read", e))?;
            // A user's folder named as a file gatt writes is kept: refused before any move.
            for entry in &entries {
                let to = out.join(entry.file_name());
                if to.is_dir() && !entry.path().is_dir() {
                    return Err(Error::input(
                        "this is a folder where gatt writes a file; --overwrite replaces files \
                     only: move the folder away",
                    )
                    .at(Location::in_file(&to)));
                }
            }
            for entry in entries {
                let to = out.join(entry.file_name());
                std::fs::rename(entry.path(), &to)
                    .map_err(|e| Error::io(&to, "move into place", e))?;
            }
            Ok(())
        });
    let _ = std::fs::remove_dir_all(&tmp);
    moved
}

/// `out` with a suffix, next to it (same file system, so renames are atomic).
fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    out.with_file_name(format!(".{name}.{suffix}-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A process id that cannot be running (above Linux's `pid_max` limit of 2^22).
    const DEAD: u32 = 999_999_999;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_failed_commit_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.jsonl");
        let mut f = AtomicFile::create(&target).unwrap();
        f.writer().write_all(b"{}\n").unwrap();
        // The target becomes a non-empty folder: the rename must fail.
        std::fs::create_dir_all(target.join("sub")).unwrap();
        let e = f.commit().unwrap_err();
        assert!(e.to_string().contains("x.jsonl"), "{e}");
        assert_eq!(names(dir.path()), ["x.jsonl"]);
    }

    #[test]
    fn a_folder_named_as_a_file_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = AtomicFile::create(dir.path()).err().unwrap();
        assert!(e.is_input(), "{e}");
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = AtomicFile::create(&file.join("y.jsonl")).err().unwrap();
        assert!(e.is_input(), "{e}");
        assert!(write_dir(&file, |_| Ok(())).unwrap_err().is_input());
    }

    #[test]
    fn temporary_files_of_dead_processes_are_removed_and_live_ones_kept() {
        if !Path::new("/proc/self").exists() {
            return; // process ids cannot be checked here: nothing is removed
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("m.parquet");
        std::fs::write(dir.path().join(format!(".m.parquet.tmp-{DEAD}")), "half").unwrap();
        std::fs::write(dir.path().join(".m.parquet.tmp-1"), "init's").unwrap();
        std::fs::write(dir.path().join(format!(".other.tmp-{DEAD}")), "").unwrap();
        write_file(&target, b"whole").unwrap();
        assert_eq!(
            names(dir.path()),
            [
                ".m.parquet.tmp-1".to_string(),
                format!(".other.tmp-{DEAD}"),
                "m.parquet".into()
            ]
        );
    }

    #[test]
    fn a_folder_moved_aside_by_a_dead_process_is_moved_back() {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ckpt");
        let old = dir.path().join(format!(".ckpt.old-{DEAD}"));
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("state.json"), "previous").unwrap();
        remove_stale(&out);
        assert_eq!(
            std::fs::read_to_string(out.join("state.json")).unwrap(),
            "previous"
        );
        assert_eq!(names(dir.path()), ["ckpt"]);
    }

    #[test]
    fn a_user_folder_is_refused_when_it_holds_files_and_kept_with_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("hf");
        let fill = |d: &Path| write_file(&d.join("config.json"), b"new");
        // Absent, then empty: filled.
        write_user_dir(&out, false, fill).unwrap();
        assert_eq!(names(&out), ["config.json"]);
        // Holds files: refused, untouched.
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        std::fs::write(out.join("config.json"), "old").unwrap();
        let e = write_user_dir(&out, false, fill).unwrap_err();
        assert!(e.is_input() && e.to_string().contains("--overwrite"), "{e}");
        assert_eq!(
            std::fs::read_to_string(out.join("config.json")).unwrap(),
            "old"
        );
        // With overwrite: gatt's files replaced, the user's kept, no temporary left.
        write_user_dir(&out, true, fill).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("config.json")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("notes.txt")).unwrap(),
            "mine"
        );
        assert_eq!(names(dir.path()), ["hf"]);
        // A failed fill leaves the folder as it was.
        let e = write_user_dir(&out, true, |_| Err(Error::runtime("boom"))).unwrap_err();
        assert_eq!(e.to_string(), format!("writing {}: boom", out.display()));
        assert_eq!(names(&out), ["config.json", "notes.txt"]);
        assert_eq!(names(dir.path()), ["hf"]);
        // A user's folder with the name of a file gatt writes is refused, not deleted.
        std::fs::remove_file(out.join("config.json")).unwrap();
        std::fs::create_dir(out.join("config.json")).unwrap();
        std::fs::write(out.join("config.json").join("mine"), "x").unwrap();
        let e = write_user_dir(&out, true, fill).unwrap_err();
        assert!(e.is_input(), "{e}");
        assert!(out.join("config.json").join("mine").exists());
    }

    #[cfg(unix)]
    #[test]
    fn links_devices_and_pipes_are_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.jsonl");
        std::fs::write(&real, "keep").unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(AtomicFile::create(&link).err().unwrap().is_input());
        assert!(AtomicFile::create(Path::new("/dev/null"))
            .err()
            .unwrap()
            .is_input());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "keep");
    }

    #[test]
    fn an_output_that_is_an_input_is_refused_naming_its_flag() {
        let dir = tempfile::tempdir().unwrap();
        let tpl = dir.path().join("t.jinja");
        std::fs::write(&tpl, "x").unwrap();
        let model = dir.path().join("hf");
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("tokenizer.json"), "{}").unwrap();
        let inputs = [("--template", tpl.as_path()), ("--model", model.as_path())];
        let e = refuse_overwriting_inputs(&dir.path().join(".").join("t.jinja"), &inputs);
        assert!(e.unwrap_err().to_string().contains("--template"));
        let e = refuse_overwriting_inputs(&model.join("tokenizer.json"), &inputs);
        assert!(e.unwrap_err().to_string().contains("--model"));
        refuse_overwriting_inputs(&dir.path().join("new.jsonl"), &inputs).unwrap();
    }
}
