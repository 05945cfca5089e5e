//! The Debian package: `cargo deb` builds it from the `[package.metadata.deb]` metadata, and
//! `dpkg-deb` shows the binaries, the conffile, the unit, the man pages and the docs where an
//! admin expects them, each identical to the file in this repository.
//!
//! Needs cargo-deb (scripts/test.sh installs it). The package is built by scripts/package.sh
//! (`cargo deb` with fsfaxsend's static musl build) with the dev profile, reusing the binaries
//! this test run already built; the script alone builds a release one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Files under `dir` (relative to the repository), recursively.
fn repo_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&manifest_dir().join(dir), &mut out);
    out.into_iter()
        .map(|p| p.strip_prefix(manifest_dir()).unwrap().to_path_buf())
        .collect()
}

/// Whether the ELF file at `path` names a program interpreter (`PT_INTERP`): a dynamically
/// linked executable does, a static one does not.
fn has_interpreter(path: &Path) -> bool {
    let elf = std::fs::read(path).unwrap();
    assert!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([elf[o], elf[o + 1]]));
    let phoff = usize::try_from(u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap())).unwrap();
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

fn build_deb(out_dir: &Path) -> PathBuf {
    let version = Command::new(cargo()).args(["deb", "--version"]).output();
    match version {
        Ok(v) if v.status.success() => {}
        _ => panic!(
            "cargo-deb is not installed: run scripts/test.sh, or \
             `cargo install cargo-deb --locked` and run this test again"
        ),
    }
    run(Command::new(manifest_dir().join("scripts/package.sh"))
        .current_dir(manifest_dir())
        .args(["--quiet", "--profile", "dev", "--fast", "-o"])
        .arg(out_dir));
    let debs: Vec<PathBuf> = std::fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs.into_iter().next().unwrap()
}

#[test]
fn deb_package_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = build_deb(tmp.path());
    let name = deb.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with(&format!("fsfax_{}-", env!("CARGO_PKG_VERSION"))),
        "{name}"
    );

    // Control fields.
    let field = |f: &str| stdout(&run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f)));
    assert_eq!(field("Package").trim(), "fsfax");
    let depends = field("Depends");
    for dep in ["hylafax-server", "libtiff-tools", "libc6"] {
        assert!(depends.contains(dep), "Depends: {depends}");
    }
    assert!(field("Suggests").contains("freeswitch-mod-spandsp"));
    let conffiles = stdout(&run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles")));
    assert_eq!(conffiles.trim(), "/etc/fsfax.conf");

    // The listing: path -> mode.
    let listing = stdout(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    let mut files = BTreeSet::new();
    let mut modes = std::collections::BTreeMap::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let path = cols.last().unwrap().trim_start_matches('.');
        if !cols[0].starts_with('d') {
            files.insert(path.to_owned());
            modes.insert(path.to_owned(), cols[0].to_owned());
        }
    }
    let mut expected: Vec<String> = [
        "/usr/bin/fsfaxd",
        "/usr/bin/fsfaxsend",
        "/etc/fsfax.conf",
        "/usr/lib/systemd/system/fsfaxd.service",
        "/usr/share/man/man8/fsfaxd.8.gz",
        "/usr/share/man/man8/fsfaxsend.8.gz",
        "/usr/share/doc/fsfax/README.md",
        "/usr/share/doc/fsfax/LICENSE-MIT",
        "/usr/share/doc/fsfax/LICENSE-APACHE",
        "/usr/share/doc/fsfax/copyright",
        "/usr/share/doc/fsfax/examples/supervisor/fsfaxd.supervisor.conf",
        "/usr/share/doc/fsfax/examples/supervisor/var-spool-hylafax-etc.mount",
    ]
    .map(str::to_owned)
    .to_vec();
    // Every FreeSWITCH file and every HylaFAX example, in the same layout.
    for f in repo_files("freeswitch-conf") {
        expected.push(format!("/usr/share/doc/fsfax/examples/{}", f.display()));
    }
    for f in repo_files("config/hylafax") {
        let rel = f.strip_prefix("config").unwrap();
        expected.push(format!("/usr/share/doc/fsfax/examples/{}", rel.display()));
    }
    let missing: Vec<&String> = expected.iter().filter(|e| !files.contains(*e)).collect();
    assert!(
        missing.is_empty(),
        "missing from the .deb: {missing:?}\n{listing}"
    );
    for bin in ["/usr/bin/fsfaxd", "/usr/bin/fsfaxsend"] {
        assert_eq!(modes[bin], "-rwxr-xr-x", "{bin}");
    }
    assert_eq!(
        modes["/usr/share/doc/fsfax/examples/hylafax/DynamicConfig"],
        "-rwxr-xr-x"
    );
    // The ESL password is in there: never world-readable (postinst gives it to group uucp).
    assert_eq!(modes["/etc/fsfax.conf"], "-rw-r-----");

    // The files are the repository's own.
    let root = tmp.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let same = |packaged: &str, repo: &str| {
        let a = std::fs::read(root.join(packaged.trim_start_matches('/'))).unwrap();
        let b = std::fs::read(manifest_dir().join(repo)).unwrap();
        assert!(a == b, "{packaged} differs from {repo}");
    };
    same("/etc/fsfax.conf", "config/fsfax.conf");
    same(
        "/usr/lib/systemd/system/fsfaxd.service",
        "supervisor/fsfaxd.service",
    );
    same(
        "/usr/share/doc/fsfax/examples/freeswitch-conf/vars.xml",
        "freeswitch-conf/vars.xml",
    );
    for page in ["fsfaxd", "fsfaxsend"] {
        let out = run(Command::new("gzip")
            .arg("-dc")
            .arg(root.join(format!("usr/share/man/man8/{page}.8.gz"))));
        let repo = std::fs::read(manifest_dir().join(format!("man/{page}.8"))).unwrap();
        assert!(out.stdout == repo, "{page}.8.gz differs from man/{page}.8");
    }
    // The packaged binaries run.
    let v = run(Command::new(root.join("usr/bin/fsfaxd")).arg("--version"));
    assert_eq!(
        stdout(&v).trim(),
        format!("fsfaxd {}", env!("CARGO_PKG_VERSION"))
    );
    let v = run(Command::new(root.join("usr/bin/fsfaxsend")).arg("--version"));
    assert!(stdout(&v).starts_with("fsfaxsend "));
    // fsfaxsend, which faxq execs for every job, is the static build: no program interpreter
    // (no ld.so, no glibc start-up); fsfaxd is the usual dynamic one.
    assert!(
        !has_interpreter(&root.join("usr/bin/fsfaxsend")),
        "the packaged fsfaxsend is dynamically linked"
    );
    assert!(has_interpreter(&root.join("usr/bin/fsfaxd")));

    // Maintainer scripts: our postinst with the systemd snippets merged in.
    let ctl = tmp.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctl));
    let postinst = std::fs::read_to_string(ctl.join("postinst")).unwrap();
    assert!(postinst.contains("chgrp uucp /etc/fsfax.conf"));
    assert!(!postinst.contains("#DEBHELPER#"));
    assert!(postinst.contains("daemon-reload"));
    // Installing must not start fsfaxd with an unreviewed sample configuration.
    assert!(!postinst.contains("deb-systemd-invoke start"));
    assert!(!postinst.contains("deb-systemd-invoke restart fsfaxd"));
}
