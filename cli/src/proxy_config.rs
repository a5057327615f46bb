//! `wssd proxy-config nginx|apache`: a complete, commented reverse-proxy config for Method 1.

use std::fmt::Write;
use std::str::FromStr;

use argh::FromArgs;
use wssd::text::escape;

#[derive(FromArgs)]
/// Print a complete, commented nginx or Apache config that terminates TLS and forwards
/// WebSockets to wssd (Method 1). Check it with `nginx -t` or `apachectl -t`.
#[argh(subcommand, name = "proxy-config")]
pub struct ProxyConfig {
    /// nginx or apache
    #[argh(positional)]
    server: Server,

    /// the public host name, as in the certificate (default localhost)
    #[argh(option, default = "String::from(\"localhost\")")]
    server_name: String,

    /// the proxy's PEM certificate chain (default /etc/ssl/certs/wssd.pem)
    #[argh(option, default = "String::from(\"/etc/ssl/certs/wssd.pem\")")]
    cert: String,

    /// the proxy's PEM private key (default /etc/ssl/private/wssd.key)
    #[argh(option, default = "String::from(\"/etc/ssl/private/wssd.key\")")]
    key: String,

    /// the WebSocket path clients connect to (default /wss)
    #[argh(option, default = "String::from(\"/wss\")")]
    path: String,

    /// a wssd instance, host:port; repeatable, two or more are load-balanced (default 127.0.0.1:8282)
    #[argh(option)]
    upstream: Vec<String>,

    /// where the proxy listens: a port, or address:port (default 443)
    #[argh(option, default = "String::from(\"443\")")]
    listen: String,
}

enum Server {
    Nginx,
    Apache,
}

impl FromStr for Server {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nginx" => Ok(Server::Nginx),
            "apache" | "apache2" | "httpd" => Ok(Server::Apache),
            _ => Err(format!("{s:?}: choose nginx or apache")),
        }
    }
}

/// The idle timeout the proxy applies to a WebSocket, in seconds. wssd pings every
/// 25 s, so an open connection is never idle this long; 3600 s still lets the proxy
/// reap connections whose peer vanished.
const PROXY_TIMEOUT_S: u32 = 3600;

impl ProxyConfig {
    /// The config text.
    ///
    /// # Errors
    /// An argument that is not what it says (a host name, a path, a file, host:port):
    /// the config would not load, or would carry directives of its own.
    pub fn render(&self) -> Result<String, String> {
        let upstreams = if self.upstream.is_empty() {
            vec!["127.0.0.1:8282".to_string()]
        } else {
            self.upstream.clone()
        };
        self.validate(&upstreams)?;
        Ok(match self.server {
            Server::Nginx => self.nginx(&upstreams),
            Server::Apache => self.apache(&upstreams),
        })
    }

    /// Refuses any argument that is not plainly what it names: the values are pasted
    /// into the config, where `;`, braces, quotes, `#`, `$`, `%` or a line break would
    /// end a directive and start another.
    fn validate(&self, upstreams: &[String]) -> Result<(), String> {
        if !is_host_name(&self.server_name) {
            return Err(format!(
                "--server-name {:?} is not a host name: letters, digits, '-' and '.' only (such as example.com or *.example.com)",
                escape(&self.server_name)
            ));
        }
        let path_char = |c: char| c.is_ascii_alphanumeric() || "/-._~".contains(c);
        if !self.path.starts_with('/') || !self.path.chars().all(path_char) {
            return Err(format!(
                "--path {:?} is not a plain URL path: it starts with '/' and has letters, digits and '/-._~' only (such as /wss)",
                escape(&self.path)
            ));
        }
        let file_char = |c: char| c.is_ascii_alphanumeric() || "/-._+@=,:".contains(c);
        for (flag, file) in [("--cert", &self.cert), ("--key", &self.key)] {
            if file.is_empty() || !file.chars().all(file_char) {
                return Err(format!(
                    "{flag} {:?} is not a plain file path: letters, digits and '/-._+@=,:' only, no spaces or quotes (move or link the file)",
                    escape(file)
                ));
            }
        }
        for upstream in upstreams {
            if !is_host_port(upstream, true) {
                return Err(format!(
                    "--upstream {:?} is not host:port (such as 127.0.0.1:8282 or [::1]:8282)",
                    escape(upstream)
                ));
            }
        }
        if !is_host_port(&self.listen, false) {
            return Err(format!(
                "--listen {:?} is not a port or address:port (such as 443 or 192.0.2.1:443)",
                escape(&self.listen)
            ));
        }
        Ok(())
    }

    fn header(&self, out: &mut String, server: &str, upstreams: &[String]) {
        let _ = writeln!(
            out,
            "# {server} in front of wssd (Method 1): {server} terminates TLS and forwards"
        );
        let _ = writeln!(
            out,
            "# WebSocket connections at {} to wssd over plain ws.",
            self.path
        );
        let _ = writeln!(
            out,
            "# Clients connect to wss://{}{}.",
            self.public_authority(),
            self.path
        );
        for upstream in upstreams {
            let _ = writeln!(
                out,
                "# Run wssd as: wssd --plain --listen {upstream} --path {}",
                self.path
            );
        }
        let _ = writeln!(
            out,
            "# wssd believes X-Real-IP and X-Forwarded-For only from --trusted-proxy"
        );
        let _ = writeln!(
            out,
            "# addresses (default loopback): pass the proxy's address if it runs elsewhere."
        );
    }

    fn public_authority(&self) -> String {
        let port = self.listen.rsplit(':').next().unwrap_or("443");
        if port == "443" {
            self.server_name.clone()
        } else {
            format!("{}:{port}", self.server_name)
        }
    }

    fn nginx(&self, upstreams: &[String]) -> String {
        let mut out = String::new();
        self.header(&mut out, "nginx", upstreams);
        out.push_str(
            "# Put this file in /etc/nginx/conf.d/ (the http context), then run\n\
             # `nginx -t && nginx -s reload`.\n\n\
             # Connection: upgrade when the client asks for an upgrade, close otherwise.\n\
             map $http_upgrade $wssd_connection_upgrade {\n    default upgrade;\n    ''      close;\n}\n\n",
        );
        let target = if upstreams.len() > 1 {
            out.push_str("# Several wssd instances. least_conn suits long-lived WebSockets better than\n# round robin: a new connection goes to the instance with the fewest.\nupstream wssd {\n    least_conn;\n");
            for upstream in upstreams {
                let _ = writeln!(out, "    server {upstream};");
            }
            out.push_str("}\n\n");
            "wssd".to_string()
        } else {
            upstreams[0].clone()
        };
        out.push_str("server {\n");
        if self.listen.contains(':') {
            let _ = writeln!(out, "    listen {} ssl;", self.listen);
        } else {
            let _ = writeln!(
                out,
                "    listen {} ssl;\n    listen [::]:{} ssl;",
                self.listen, self.listen
            );
        }
        let _ = write!(
            out,
            "    server_name {name};\n\n\
             \x20   # The certificate chain (leaf first, then intermediates) and its private key.\n\
             \x20   ssl_certificate     {cert};\n\
             \x20   ssl_certificate_key {key};\n\
             \x20   # TLS 1.2 and 1.3 only. The old recipe allowed SSLv2, SSLv3, TLS 1.0/1.1 and RC4:\n\
             \x20   # all are broken, and WeChat Mini Programs refuse anything below TLS 1.2.\n\
             \x20   ssl_protocols TLSv1.2 TLSv1.3;\n\
             \x20   ssl_session_cache shared:wssd_tls:10m;\n\
             \x20   ssl_session_timeout 1d;\n\n\
             \x20   location {path} {{\n\
             \x20       # No URI after the address: the path reaches wssd unchanged.\n\
             \x20       proxy_pass http://{target};\n\
             \x20       # The WebSocket upgrade needs HTTP/1.1 and both hop-by-hop headers passed on;\n\
             \x20       # without them wssd sees a plain GET and the browser gets 400.\n\
             \x20       proxy_http_version 1.1;\n\
             \x20       proxy_set_header Upgrade $http_upgrade;\n\
             \x20       proxy_set_header Connection $wssd_connection_upgrade;\n\
             \x20       # The Host as the client sent it, with its port, for wssd's answers and handler.\n\
             \x20       proxy_set_header Host $http_host;\n\
             \x20       proxy_set_header X-Forwarded-Host $http_host;\n\
             \x20       # The client's address, for wssd's log and handler. A Forwarded header\n\
             \x20       # from the client is dropped (\"\" removes it): wssd would believe it.\n\
             \x20       proxy_set_header X-Real-IP $remote_addr;\n\
             \x20       proxy_set_header Forwarded \"\";\n\
             \x20       proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             \x20       proxy_set_header X-Forwarded-Proto $scheme;\n\
             \x20       # nginx closes a proxied connection idle for proxy_read_timeout, 60 s by\n\
             \x20       # default, silently cutting quiet WebSockets. wssd pings every 25 s.\n\
             \x20       proxy_read_timeout {timeout}s;\n\
             \x20       proxy_send_timeout {timeout}s;\n\
             \x20   }}\n\
             }}\n",
            name = self.server_name,
            cert = self.cert,
            key = self.key,
            path = self.path,
            timeout = PROXY_TIMEOUT_S,
        );
        out
    }

    fn apache(&self, upstreams: &[String]) -> String {
        let mut out = String::new();
        self.header(&mut out, "Apache", upstreams);
        let balanced = upstreams.len() > 1;
        let _ = write!(
            out,
            "# Needs mod_ssl, mod_proxy, mod_proxy_http, mod_proxy_wstunnel and mod_headers{}.\n\
             # Debian: a2enmod ssl proxy proxy_http proxy_wstunnel headers{}\n\
             # then put this file in /etc/apache2/sites-available/, a2ensite it, and run\n\
             # `apachectl -t && apachectl graceful`.\n\n",
            if balanced {
                ", plus mod_proxy_balancer, mod_lbmethod_byrequests and mod_slotmem_shm"
            } else {
                ""
            },
            if balanced {
                " proxy_balancer lbmethod_byrequests slotmem_shm"
            } else {
                ""
            },
        );
        let (listen, vhost) = if self.listen.contains(':') {
            (self.listen.clone(), self.listen.clone())
        } else {
            (self.listen.clone(), format!("*:{}", self.listen))
        };
        let target = if balanced {
            "balancer://wssd".to_string()
        } else {
            format!("ws://{}", upstreams[0])
        };
        let _ = write!(
            out,
            "Listen {listen} https\n\n\
             <VirtualHost {vhost}>\n\
             \x20   ServerName {name}\n\n\
             \x20   SSLEngine on\n\
             \x20   # The certificate chain (leaf first, then intermediates) and its private key.\n\
             \x20   SSLCertificateFile    {cert}\n\
             \x20   SSLCertificateKeyFile {key}\n\
             \x20   # TLS 1.2 and 1.3 only. The old recipe allowed RC4 and export ciphers: all\n\
             \x20   # broken, and WeChat Mini Programs refuse anything below TLS 1.2.\n\
             \x20   SSLProtocol -all +TLSv1.2 +TLSv1.3\n\
             \x20   SSLHonorCipherOrder off\n\n\
             \x20   # A reverse proxy only: never an open forward proxy.\n\
             \x20   ProxyRequests Off\n\
             \x20   # The Host as the client sent it, with its port (mod_proxy adds X-Forwarded-Host too).\n\
             \x20   ProxyPreserveHost On\n\
             \x20   # The client's address, for wssd's log and handler (mod_proxy adds X-Forwarded-For).\n\
             \x20   # A Forwarded header from the client is dropped: wssd would believe it.\n\
             \x20   RequestHeader set X-Real-IP \"expr=%{{REMOTE_ADDR}}\"\n\
             \x20   RequestHeader unset Forwarded\n\
             \x20   RequestHeader set X-Forwarded-Proto \"https\"\n\
             \x20   # Apache closes a proxied connection idle this long (60 s by default),\n\
             \x20   # silently cutting quiet WebSockets. wssd pings every 25 s.\n\
             \x20   ProxyTimeout {timeout}\n\n",
            name = self.server_name,
            cert = self.cert,
            key = self.key,
            timeout = PROXY_TIMEOUT_S,
        );
        if balanced {
            out.push_str("    # Several wssd instances; a connection stays on the one it reached.\n    <Proxy balancer://wssd>\n");
            for upstream in upstreams {
                let _ = writeln!(out, "        BalancerMember ws://{upstream}");
            }
            out.push_str("        ProxySet lbmethod=byrequests\n    </Proxy>\n");
        }
        let _ = write!(
            out,
            "    # ws:// hands the upgraded connection to mod_proxy_wstunnel; the path reaches wssd unchanged.\n\
             \x20   ProxyPass        {path} {target}{path}\n\
             \x20   ProxyPassReverse {path} {target}{path}\n\
             </VirtualHost>\n",
            path = self.path,
        );
        out
    }
}

/// Whether `name` is a DNS host name (RFC 1123 section 2.1), optionally with a leading
/// `*.` wildcard as nginx and Apache accept, or `_` (nginx's catch-all).
fn is_host_name(name: &str) -> bool {
    if name == "_" {
        return true;
    }
    let name = name.strip_prefix("*.").unwrap_or(name);
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label)
}

/// Whether `value` is host:port (a host name, an IPv4 address or a bracketed IPv6
/// address), or, when `host_required` is false, a port alone.
fn is_host_port(value: &str, host_required: bool) -> bool {
    let port_ok = |p: &str| p.parse::<u16>().is_ok_and(|p| p > 0);
    match value.rsplit_once(':') {
        None => !host_required && port_ok(value),
        Some((host, port)) => {
            let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => is_host_name(host) && host != "_",
            };
            host_ok && port_ok(port)
        }
    }
}
