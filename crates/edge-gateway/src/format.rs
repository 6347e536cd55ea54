//! The data directory's format version (`data_dir/FORMAT`). A gateway
//! writes the version it uses into a new data directory; one started on a
//! directory written by a newer version refuses to touch it (and says which
//! version it needs) instead of misreading its WAL or database; one started
//! on an older directory migrates it (today: directories made before the
//! version file existed hold the same formats, so migrating is stamping).
//! The WAL's records and the databases' schemas carry versions of their own
//! (the batch codec's version byte, sqlx's migration table); this file is the
//! one check that covers the directory as a whole, before anything opens.

use std::path::Path;

use anyhow::Context;

/// The file.
pub const FORMAT_FILE: &str = "FORMAT";
/// The format this build reads and writes.
pub const CURRENT: u32 = 1;

/// What [`check`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new directory, now stamped.
    Created,
    /// Already at this build's format.
    Current,
    /// An older directory, migrated (from this version; 0: no version file).
    Migrated(u32),
}

/// Checks (and stamps or migrates) the data directory `dir`. Fails, naming
/// both versions, for a directory of a newer format, and for a version
/// file that cannot be read.
pub fn check(dir: &Path) -> anyhow::Result<Outcome> {
    let path = dir.join(FORMAT_FILE);
    let found = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().parse::<u32>().with_context(|| {
            format!(
                "{} holds {:?}, not a format version: restore it or remove it to let this gateway stamp it",
                path.display(),
                text.trim()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let is_new = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(Result::ok)
        .all(|e| e.file_name() == "edge-gateway.lock");
    let outcome = match found {
        Some(v) if v == CURRENT => return Ok(Outcome::Current),
        Some(v) if v > CURRENT => anyhow::bail!(
            "the data directory {} was written by a newer edge-gateway (format {v}; this one reads format {CURRENT} and older): \
             run the newer version, or give this one another --data-dir",
            dir.display()
        ),
        Some(v) => Outcome::Migrated(v),
        None if is_new => Outcome::Created,
        None => Outcome::Migrated(0),
    };
    // Written whole or not at all: a crash here leaves the old state.
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    std::fs::write(&tmp, format!("{CURRENT}\n")).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    if let Outcome::Migrated(from) = outcome {
        tracing::info!(dir = %dir.display(), from, to = CURRENT, "Data directory format migrated.");
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_current_older_and_newer_directories() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(check(d.path()).unwrap(), Outcome::Created);
        assert_eq!(std::fs::read_to_string(d.path().join(FORMAT_FILE)).unwrap(), "1\n");
        assert_eq!(check(d.path()).unwrap(), Outcome::Current);

        // Made before the version file existed: a WAL and a database, no FORMAT.
        let old = tempfile::tempdir().unwrap();
        std::fs::create_dir(old.path().join("wal")).unwrap();
        std::fs::write(old.path().join("gateway.db"), b"").unwrap();
        assert_eq!(check(old.path()).unwrap(), Outcome::Migrated(0));
        assert_eq!(check(old.path()).unwrap(), Outcome::Current);

        let newer = tempfile::tempdir().unwrap();
        std::fs::write(newer.path().join(FORMAT_FILE), "7\n").unwrap();
        let e = check(newer.path()).unwrap_err().to_string();
        assert!(e.contains("newer edge-gateway (format 7") && e.contains("format 1"), "{e}");
        assert_eq!(std::fs::read_to_string(newer.path().join(FORMAT_FILE)).unwrap(), "7\n", "left as it was");

        let garbled = tempfile::tempdir().unwrap();
        std::fs::write(garbled.path().join(FORMAT_FILE), "banana").unwrap();
        assert!(check(garbled.path()).unwrap_err().to_string().contains("not a format version"));
    }
}
