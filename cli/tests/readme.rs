//! The README shows the generated proxy configs verbatim: this keeps it true.

#[test]
fn readme_shows_the_current_proxy_config_output() {
    let readme = include_str!("../../README.md");
    for server in ["nginx", "apache"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wssd"))
            .args(["proxy-config", server, "--server-name", "example.com"])
            .args([
                "--cert",
                "/etc/ssl/example.com.pem",
                "--key",
                "/etc/ssl/example.com.key",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let config = String::from_utf8(out.stdout).unwrap();
        assert!(
            readme.contains(&format!("```{server}\n{config}```")),
            "README.md's {server} config is stale: paste the output of `wssd proxy-config {server} ...`"
        );
    }
}

#[test]
fn readme_documents_every_flag_of_the_binary() {
    let readme = include_str!("../../README.md");
    for command in [&[][..], &["probe"][..], &["proxy-config"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wssd"))
            .args(command)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        let flags: Vec<&str> = help
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2 && !w.starts_with("--help"))
            .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
            .collect();
        assert!(flags.len() > 2, "{help}");
        for flag in flags {
            assert!(
                readme.contains(&format!("`{flag}")),
                "README.md does not document {flag} of `wssd {}`",
                command.join(" ")
            );
        }
    }
}

/// The README's library section is a complete program, `examples/readme.rs` as it is (which
/// `cargo test` builds), and short enough to read at once.
#[test]
fn readme_library_program_is_the_example_that_cargo_builds() {
    let readme = include_str!("../../README.md");
    let program = include_str!("../../examples/readme.rs");
    assert!(
        readme.contains(&format!("```rust\n{program}```")),
        "README.md's library program is not examples/readme.rs: paste the file"
    );
    assert!(program.lines().count() <= 30, "over 30 lines");
}
