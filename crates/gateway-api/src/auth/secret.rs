//! Secrets: making them and checking them, never keeping them. Passwords are
//! hashed with argon2id (the RustCrypto defaults: 19 MiB, 2 passes, one
//! lane, a random salt), which costs tens of milliseconds on purpose, so it
//! runs on a blocking thread and only at login. API tokens and session ids
//! are 256 random bits from the operating system; they are stored as their
//! SHA-256, which is enough for secrets that cannot be guessed and fast
//! enough to check on every request.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of API tokens, so a leaked one is recognisable in a log or a
/// secret scanner; session ids carry [`SESSION_PREFIX`].
pub const TOKEN_PREFIX: &str = "egw_";

/// Prefix of session ids (what a login returns).
pub const SESSION_PREFIX: &str = "egs_";

/// Shortest password accepted for a user.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Longest password accepted (argon2 would take more, but a megabyte of
/// "password" is an attack on the CPU, not a password).
pub const MAX_PASSWORD_LEN: usize = 1024;

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// 32 random bytes from the operating system, as 64 hex digits after `prefix`.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    // The OS generator failing leaves no safe way to go on.
    SystemRandom::new().fill(&mut bytes).expect("the operating system's random generator works");
    format!("{prefix}{}", hex(&bytes))
}

/// A password for a user the gateway creates itself (the first admin): 24
/// characters from a 56-letter alphabet without look-alikes, about 139 bits.
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(24);
    let mut byte = [0u8; 1];
    while out.len() < 24 {
        SystemRandom::new().fill(&mut byte).expect("the operating system's random generator works");
        // Rejection sampling keeps every letter equally likely.
        let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
        if byte[0] < limit {
            out.push(ALPHABET[usize::from(byte[0]) % ALPHABET.len()] as char);
        }
    }
    out
}

/// The hex SHA-256 of a token or session id: what the store keeps.
pub fn digest(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

/// Why a password is not acceptable, or `None`.
pub fn password_problem(password: &str) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_LEN {
        return Some(format!("a password needs at least {MIN_PASSWORD_LEN} characters, this one has {chars}"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Some(format!("a password may have at most {MAX_PASSWORD_LEN} bytes"));
    }
    None
}

/// The argon2id PHC string of `password` (slow: call from a blocking thread).
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `hash` (slow: call from a
/// blocking thread). A malformed stored hash never matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash that verifies no password, for the same work when a user does not
/// exist (so the time of a failed login does not say whether the name is known).
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&new_secret("decoy-")).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("correct horse battery", "not a hash"));
        assert!(!verify_password("anything at all", decoy_hash()));
    }

    #[test]
    fn secrets_are_long_random_and_stored_as_their_digest() {
        let a = new_secret(TOKEN_PREFIX);
        let b = new_secret(TOKEN_PREFIX);
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(digest(&a).len(), 64);
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let p = new_password();
        assert_eq!(p.len(), 24);
        assert!(password_problem(&p).is_none());
        assert!(password_problem("short").is_some());
    }
}
