//! `edge-gateway tls self-signed`: a certificate and key for a first try of
//! HTTPS (`[api.tls]`), made with rcgen on the `ring` provider: ECDSA P-256,
//! valid for `localhost`, `127.0.0.1`, `::1` and the names given, for a
//! limited time. The key file is created readable by its owner only, and
//! neither file is overwritten unless asked. Clients trust the certificate
//! itself (there is no CA behind it); for a plant, use certificates from the
//! site's own CA instead.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};

/// `edge-gateway tls ...`.
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Write a self-signed certificate (cert.pem) and its key (key.pem, mode 0600).
    SelfSigned(SelfSignedArgs),
}

/// Arguments of `tls self-signed`.
#[derive(Debug, Args)]
pub struct SelfSignedArgs {
    /// Directory to write cert.pem and key.pem into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// A further name or address clients use (repeatable), besides
    /// localhost, 127.0.0.1 and ::1.
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

/// Runs a `tls` subcommand; exit status 1 on failure.
pub fn main(cmd: TlsCommand) -> ExitCode {
    let TlsCommand::SelfSigned(args) = cmd;
    match self_signed(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-gateway: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The names a self-signed certificate covers: the loopback ones, then
/// `extra` in order, each once.
fn names(extra: &[String]) -> Vec<String> {
    let mut all: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    for h in extra {
        let h = h.trim().trim_start_matches('[').trim_end_matches(']').to_owned();
        if !h.is_empty() && !all.contains(&h) {
            all.push(h);
        }
    }
    all
}

fn self_signed(args: &SelfSignedArgs) -> anyhow::Result<()> {
    let names = names(&args.hosts);
    let mut params = CertificateParams::new(names.clone()).context("a --host is not a valid DNS name or address")?;
    let common_name = names.get(3).map_or("edge-gateway", String::as_str);
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "edge-gateway (self-signed)");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    // An hour back, so a client whose clock is a little behind accepts it.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(args.days));
    let key = KeyPair::generate().context("cannot generate a key")?;
    let cert = params.self_signed(&key).context("cannot sign the certificate")?;

    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let cert_file = args.out.join("cert.pem");
    let key_file = args.out.join("key.pem");
    write_new(&key_file, key.serialize_pem().as_bytes(), 0o600, args.force)?;
    write_new(&cert_file, cert.pem().as_bytes(), 0o644, args.force)?;
    // The names clients use must also be allowed hosts, or requests naming them get 421.
    let allowed = if names.len() > 3 { format!("allowed_hosts = {:?}\n", &names[3..]) } else { String::new() };
    println!(
        "Wrote {} (for {}; valid {} days) and {} (private key, mode 0600).\n\nUse them with:\n\n[api]\n{allowed}[api.tls]\ncert_file = {:?}\nkey_file = {:?}\n\nClients trust this certificate itself, e.g. curl --cacert {} https://localhost:8080/",
        cert_file.display(),
        names.join(", "),
        args.days,
        key_file.display(),
        cert_file.display().to_string(),
        key_file.display().to_string(),
        cert_file.display(),
    );
    Ok(())
}

/// Writes `bytes` to a new file created with `mode` (so a key is never
/// readable by others, not even for a moment); an existing file is an error
/// unless `force`.
fn write_new(path: &Path, bytes: &[u8], mode: u32, force: bool) -> anyhow::Result<()> {
    if force {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot replace {}", path.display()));
            }
            _ => {}
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (it exists? pass --force to replace it)", path.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_names_come_first_and_each_name_once() {
        let extra = vec!["gw1.plant".to_string(), "[::1]".into(), "localhost".into(), "10.0.0.5".into()];
        assert_eq!(names(&extra), vec!["localhost", "127.0.0.1", "::1", "gw1.plant", "10.0.0.5"]);
    }
}
