//! Lays out the lean build's code so that what runs in steady state sits
//! together (`deploy/hot-code.order`, written by `scripts/hot-code-order`).
//!
//! The kernel maps code in 64 KiB windows around each page a process touches
//! (fault-around, plus readahead into the page cache), so the RSS of a
//! gateway's code is the number of windows its steady state reaches, not
//! the bytes it runs: on the 100,000 values/s memory job 0.7 MB of code was
//! touched in 10 s and 4.2 MB of it was resident. The list names the
//! functions the profile saw running; the linker puts them first and in
//! that order, so they share a few windows.
//!
//! Only for the lean profile (what the package ships) on x86_64 Linux,
//! where rustc links with lld: GNU ld, the default linker on other targets,
//! has no `--symbol-ordering-file`. A name the list has and the build does
//! not (the code changed since the list was made) is skipped silently: the
//! function lands where it would have anyway. `EDGE_GATEWAY_CODE_ORDER=off`
//! turns it off.
//!
//! The names are v0 symbol names (`.cargo/config.toml`): legacy names end in
//! a hash of their crate's code, so every edit renamed part of the list. A
//! build without v0 names (a `RUSTFLAGS` of its own replaces the config's)
//! would match little of it; it is then not applied, with a warning.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=EDGE_GATEWAY_CODE_ORDER");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = Path::new(&manifest).join("../../deploy/hot-code.order");
    println!("cargo:rerun-if-changed={}", order.display());
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    // OUT_DIR is <target>/[<triple>/]<profile>/build/<package>-<hash>/out.
    let out_dir = var("OUT_DIR");
    let profile = Path::new(&out_dir).ancestors().nth(3).and_then(|p| p.file_name()).and_then(|n| n.to_str());
    // The profile's name for `bench`'s report: a lean build is not a
    // `--release` one (half the code, laid out), and its figures differ.
    println!("cargo:rustc-env=EDGE_GATEWAY_PROFILE={}", profile.unwrap_or(""));
    let wanted = profile == Some("lean")
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && var("EDGE_GATEWAY_CODE_ORDER") != "off";
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let v0 = var("CARGO_ENCODED_RUSTFLAGS").split('\x1f').any(|f| f.ends_with("symbol-mangling-version=v0"));
    if wanted && !v0 {
        println!(
            "cargo:warning=deploy/hot-code.order not applied: it names v0 symbols, and this build's rustflags \
             lack -C symbol-mangling-version=v0 (a RUSTFLAGS variable replaces .cargo/config.toml's)"
        );
    }
    if wanted && v0 && order.is_file() {
        let order = order.canonicalize().unwrap_or(order);
        println!("cargo:rustc-link-arg-bin=edge-gateway=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bin=edge-gateway=-Wl,--no-warn-symbol-ordering");
    }
}
