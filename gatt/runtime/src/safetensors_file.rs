//! Writing `.safetensors` files with the permissions of any other file the user writes.
//!
//! The `safetensors` crate writes through a `tempfile::NamedTempFile`, created with mode
//! 0600, and renames it into place: a model or adapter shared with another account (a
//! training job in a container, a colleague) could not be read. Here the file gets the
//! mode an ordinary `File::create` gives in the same folder (0644 under the usual umask).

use candle_core::Tensor;
use gatt::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Saves `tensors` to `path` as safetensors (candle's layout), then gives the file the
/// permissions of a file created normally in its folder.
///
/// # Errors
///
/// A runtime error naming `path` when the tensors cannot be written (a full disk) or
/// the permissions cannot be set.
pub(crate) fn save(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    candle_core::safetensors::save(tensors, path)
        .map_err(|e| Error::runtime(format!("{}: {e} (disk full?)", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let probe = dir.join(".gatt-permissions-probe");
    let perms = std::fs::File::create(&probe)
        .and_then(|f| f.metadata())
        .map(|m| m.permissions());
    let _ = std::fs::remove_file(&probe);
    let perms = perms.map_err(|e| Error::io(&probe, "create", e))?;
    std::fs::set_permissions(path, perms).map_err(|e| Error::io(path, "set permissions of", e))
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(unix)]
    fn the_file_is_as_readable_as_any_other() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let t = candle_core::Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
        let path = dir.path().join("m.safetensors");
        super::save(&[("w".to_string(), t)].into_iter().collect(), &path).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"x").unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&path), mode(&other));
        assert!(!dir.path().join(".gatt-permissions-probe").exists());
    }
}
