//! The man pages shipped in the Debian package (`man/fsfaxd.8`, `man/fsfaxsend.8`) are rendered
//! from the clap definitions in `fsfax::cli`. This test renders them again and compares, so a
//! changed flag or help text cannot ship with a stale page.
//!
//! To regenerate after changing `src/cli.rs`: `FSFAX_BLESS=1 cargo test --test deploy_man`.

use std::path::{Path, PathBuf};

fn render(cmd: clap::Command) -> String {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .manual("fsfax")
        .render(&mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn check(name: &str, cmd: clap::Command) {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("man")
        .join(format!("{name}.8"));
    let fresh = render(cmd);
    if std::env::var_os("FSFAX_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let shipped =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        shipped == fresh,
        "{} is out of date with src/cli.rs; regenerate with \
         FSFAX_BLESS=1 cargo test --test deploy_man",
        path.display()
    );
    // The page documents what an admin needs: the name, every flag, the examples.
    assert!(shipped.contains(&format!(".TH {name} 8")), "{name}: header");
    for flag in ["\\-\\-config", "\\-\\-version", "\\-\\-help"] {
        assert!(shipped.contains(flag), "{name}: {flag} missing");
    }
    assert!(shipped.contains("EXAMPLES"), "{name}: examples missing");
}

#[test]
fn fsfaxd_man_page_is_in_sync() {
    check("fsfaxd", fsfax::cli::fsfaxd_command());
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/fsfaxd.8")).unwrap();
    assert!(page.contains("\\-\\-check\\-config"));
    assert!(page.contains("SIGHUP"));
}

#[test]
fn fsfaxsend_man_page_is_in_sync() {
    check("fsfaxsend", fsfax::cli::fsfaxsend_command());
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/fsfaxsend.8")).unwrap();
    assert!(page.contains("SendFaxCmd"));
    assert!(page.contains("\\-\\-modem"));
}
