//! The binary's flag for each library setting. The library's messages name its own settings
//! (`Config::path`); this binary's log lines and errors name the flag that sets each
//! instead, so a message says what to fix on the command line: `Config::path` becomes
//! `--path`.

use std::borrow::Cow;

/// Each library setting a message may name, and the flag that sets it here. A name that is
/// the start of another (`Server::max_connections`) comes after it.
const FLAGS: &[(&str, &str)] = &[
    ("Config::path", "--path"),
    ("Config::proxy_protocol", "--proxy-protocol"),
    ("Config::tls", "--cert and --key"),
    ("Config::page", "--test-page"),
    ("tls::from_pem_files", "--cert and --key"),
    (
        "Server::max_connections_per_address",
        "--max-connections-per-address",
    ),
    ("Server::max_connections", "--max-connections"),
    ("Limits::max_message_size", "--max-message-size"),
    ("Limits::max_frame_size", "--max-frame-size"),
    ("Limits::max_fragments", "--max-fragments"),
    ("Limits::max_request_header_bytes", "--max-header-bytes"),
];

/// `text` with each library setting it names replaced by the flag that sets it.
pub fn named(text: &str) -> Cow<'_, str> {
    if !text.contains("::") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for (setting, flag) in FLAGS {
            if let Some(after) = rest.strip_prefix(setting) {
                // Not a longer name that starts the same (`max_connections_per_address`).
                if !after.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                    out.push_str(flag);
                    rest = after;
                    continue 'scan;
                }
            }
        }
        let mut chars = rest.chars();
        out.extend(chars.next());
        rest = chars.as_str();
    }
    Cow::Owned(out)
}

/// The binary's logger: simple_logger, with each library setting a line names replaced by
/// its flag.
pub struct Logger(pub simple_logger::SimpleLogger);

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.0.enabled(record.metadata()) {
            return;
        }
        let text = match record.args().as_str() {
            Some(text) => Cow::Borrowed(text),
            None => Cow::Owned(record.args().to_string()),
        };
        let named = named(&text);
        self.0.log(
            &log::Record::builder()
                .args(format_args!("{named}"))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::named;

    #[test]
    fn a_library_setting_becomes_its_flag_and_a_longer_name_its_own() {
        assert_eq!(
            named("answered 404 (the server's path: Config::path)"),
            "answered 404 (the server's path: --path)"
        );
        assert_eq!(
            named("1000 open from ::1 (Server::max_connections_per_address): refused"),
            "1000 open from ::1 (--max-connections-per-address): refused"
        );
        assert_eq!(
            named("(Server::max_connections): refused"),
            "(--max-connections): refused"
        );
        assert_eq!(named("nothing to name"), "nothing to name");
    }
}
