//! One writer per output folder: a lock a second run reports, and that a dead holder
//! does not keep.

use crate::error::{Error, Location, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The name of the lock file inside a locked folder.
pub const LOCK_FILE: &str = ".gatt.lock";

/// An exclusive lock on an output folder, held until dropped. It is an advisory lock
/// (`flock`) on `DIR/.gatt.lock`, which also names the holder: the operating system
/// releases it when the holding process ends, however it ends, so a run killed with
/// `kill -9` never leaves the folder locked and `--resume` just works.
#[derive(Debug)]
pub struct FolderLock {
    path: PathBuf,
    /// Kept open: closing it would release the lock.
    _file: File,
}

impl FolderLock {
    /// Creates `dir` if needed and locks it for this process.
    ///
    /// # Errors
    ///
    /// An input error when another process holds the lock (the message names its
    /// process id and command when known); an I/O error naming the lock file.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create folder", e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, "open", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    holder.to_string()
                };
                return Err(Error::input(format!(
                    "this folder is in use by {holder}; wait for that run to end (or stop \
                     it), or choose another folder"
                ))
                .at(Location::in_file(dir)));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, "lock", e)),
        }
        // The command, not its arguments: those may hold credentials (an endpoint URL).
        let command: Vec<String> = std::env::args().take(2).collect();
        let me = format!(
            "gatt process {} ({})",
            std::process::id(),
            command.join(" ")
        );
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(me.as_bytes()))
            .map_err(|e| Error::io(&path, "write", e))?;
        Ok(FolderLock { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let first = FolderLock::acquire(&out).unwrap();
        let e = FolderLock::acquire(&out).unwrap_err();
        assert!(e.is_input(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("gatt process {}", std::process::id())),
            "{text}"
        );
        drop(first);
        FolderLock::acquire(&out).unwrap();
    }
}
