//! `wssd`: serve wss (or ws behind a proxy) from the command line.

#[cfg(feature = "acme")]
mod acme;
#[cfg(feature = "bridge")]
mod api;
#[cfg(feature = "bridge")]
mod bridge;
mod certcheck;
mod certs;
mod flags;
#[cfg(feature = "probe")]
mod probe;
/// What `wssd probe` is in a build without its `probe` feature: an error saying so.
#[cfg(not(feature = "probe"))]
mod probe {
    #[derive(argh::FromArgs)]
    /// check a wss:// URL (not in this build: it lacks the probe feature)
    #[argh(subcommand, name = "probe")]
    pub struct Probe {
        /// anything probe would take
        #[argh(positional, greedy)]
        _args: Vec<String>,
    }

    impl Probe {
        pub fn run(&self) -> bool {
            eprintln!(
                "wssd probe: this wssd was built without its probe feature: build it with the default features"
            );
            false
        }
    }
}
mod proxy_config;
mod x509;

/// The self-contained test page served by `--test-page` on a plain `GET` of the WebSocket
/// path: it runs the recipe's snippet against its own origin and shows the replies.
const TEST_PAGE: &str = include_str!("test_page.html");

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use argh::FromArgs;
use log::LevelFilter;
use std::time::Duration;
use wssd::forwarded::IpNet;
use wssd::smol::Shutdown;
use wssd::{Config, Connection, Handler, Hub, Limits};

#[derive(FromArgs)]
/// wssd: a WebSocket-over-TLS (wss) server. With no arguments it serves
/// wss://localhost:8282 with a self-signed certificate and echoes every message.
/// It replaces the recipe (the "Create a wss service" guide): behind nginx or Apache with
/// --plain (its Method 1), or terminating TLS itself with --cert and --key (its Method 2).
struct Args {
    // The help text is an attribute: rustdoc would read `[::]` in a doc comment as a link.
    #[argh(
        option,
        description = "address to listen on: 127.0.0.1:8282 or localhost:8282 (this machine only), 0.0.0.0:8282 or [::]:8282 (every interface), or :8282 or 8282 (a port alone: every interface, as nginx's listen) (default 127.0.0.1:8282)",
        default = "SocketAddr::from(([127, 0, 0, 1], 8282))",
        from_str_fn(parse_listen)
    )]
    listen: SocketAddr,

    /// PEM certificate chain file, .pem or .crt: the leaf first, then intermediates (needs --key)
    #[argh(option)]
    cert: Option<PathBuf>,

    /// PEM file of the intermediate certificates, when they are not in the --cert file (as
    /// Apache's SSLCertificateChainFile, or certbot's chain.pem); served after the leaf
    #[argh(option)]
    chain: Option<PathBuf>,

    /// PEM private key file: PKCS#8, PKCS#1 RSA or SEC1 EC, not encrypted (needs --cert)
    #[argh(option)]
    key: Option<PathBuf>,

    /// get the certificate for DOMAIN from Let's Encrypt (ACME), answering its TLS-ALPN-01
    /// challenge on this port (Let's Encrypt validates on port 443), cache it and renew it
    /// before it expires; repeatable, one certificate for all the names
    #[argh(option)]
    acme: Vec<String>,

    /// with --acme, the contact address the CA sends expiry and policy notices to (default: none)
    #[argh(option)]
    acme_email: Option<String>,

    /// with --acme, the directory that keeps the certificates and the account key across
    /// restarts, created with mode 0700 (default wssd-acme, in the working directory)
    #[argh(option, default = "PathBuf::from(\"wssd-acme\")")]
    acme_cache: PathBuf,

    /// with --acme, the ACME server's directory URL (default: Let's Encrypt production)
    #[argh(option)]
    acme_directory: Option<String>,

    /// with --acme, use Let's Encrypt's staging server: untrusted certificates, for trying
    /// things out under far higher rate limits
    #[argh(switch)]
    acme_staging: bool,

    /// with --acme, PEM file of CA certificates that the ACME server's own HTTPS certificate
    /// is checked against, besides the system's (a private ACME server: Pebble, a company CA)
    #[argh(option)]
    acme_ca: Option<PathBuf>,

    /// serve wss with a generated local CA and localhost certificate (the default without --cert or --plain)
    #[argh(switch)]
    self_signed: bool,

    /// keep the self-signed ca.pem, cert.pem and key.pem in DIR, and reuse them on the next start
    #[argh(option)]
    self_signed_dir: Option<PathBuf>,

    /// serve plain ws:// without TLS, behind a TLS-terminating proxy such as nginx
    #[argh(switch)]
    plain: bool,

    /// serve NAME from its own PEM certificate and key on the same port, chosen by SNI;
    /// repeatable, reloaded on SIGHUP like --cert (as NAME=CERT,KEY)
    #[argh(option, from_str_fn(certs::parse_sni))]
    sni: Vec<certs::SniCert>,

    /// accept WebSockets only on this path, such as /wss; others get 404 (default: any path).
    /// With --rooms, the paths below it too: /wss/room1 is room room1
    #[argh(option)]
    path: Option<String>,

    /// a subprotocol this server speaks (Sec-WebSocket-Protocol, RFC 6455 section 1.9), as a
    /// browser's new WebSocket(url, "chat") asks for; repeatable: the first of the
    /// client's offers (its most preferred) found here is chosen (default: none)
    #[argh(option, from_str_fn(parse_subprotocol))]
    subprotocol: Vec<String>,

    /// answer a plain GET of the WebSocket path with a test page that runs the recipe's snippet
    /// (the browser test of the "Create a wss service" guide, which wssd replaces), instead of 426
    #[argh(switch)]
    test_page: bool,

    /// worker threads (default: the number of CPU cores)
    #[argh(option)]
    threads: Option<usize>,

    /// log level: off, error, warn, info, debug or trace (default info)
    #[argh(option, default = "LevelFilter::Info", from_str_fn(parse_level))]
    log_level: LevelFilter,

    /// a proxy whose X-Forwarded-For, Forwarded, X-Real-IP and PROXY headers are believed,
    /// as CIDR or IP; repeatable (default: 127.0.0.0/8 and ::1)
    #[argh(option, from_str_fn(parse_net))]
    trusted_proxy: Vec<IpNet>,

    /// expect a PROXY protocol v1/v2 header from trusted proxies (behind HAProxy, nginx stream or a cloud L4 balancer)
    #[argh(switch)]
    proxy_protocol: bool,

    /// answer every message with TEXT instead of echoing it
    #[argh(option)]
    reply: Option<String>,

    /// relay each message to every other connected client instead of echoing it
    #[argh(switch)]
    broadcast: bool,

    /// chat rooms: the path below --path is the room (/wss/room1 is room room1; /wss itself is
    /// the lobby), each message goes to the others in it, and ?user=NAME binds the connection to a user
    #[argh(switch)]
    rooms: bool,

    /// the app bridge: POST each connection's events (open, before the 101; message; close)
    /// as JSON to the app at this http:// URL, such as http://127.0.0.1:8000/wssd, and carry
    /// out its answers (messages to send, user, groups, close); see the README
    #[argh(option)]
    app: Option<String>,

    /// with --app, serve the push API on this address, such as 127.0.0.1:8283: send to
    /// connections, users, groups; join, leave, bind, close; who is online; GET /metrics
    #[argh(option)]
    api: Option<SocketAddr>,

    /// with --api, a file holding the bearer token that every API request must send; without
    /// it the API listens on loopback only
    #[argh(option)]
    api_token_file: Option<PathBuf>,

    /// with --app, seconds the app has to answer each event (default 5)
    #[argh(option, default = "5")]
    app_timeout: u64,

    /// with --app, the most requests to the app at once, over kept-alive connections (default 64)
    #[argh(option, default = "64")]
    app_concurrency: usize,

    /// fan --broadcast, --rooms and --app (its user, group and everyone sends) out to every wssd
    /// instance on this Redis server, such as redis://127.0.0.1:6379/
    #[argh(option)]
    redis: Option<String>,

    /// accept the permessage-deflate offers of browsers and other clients (RFC 7692): messages
    /// compressed both ways, with no memory held for idle connections (default off: it costs
    /// CPU per message; see the README)
    #[argh(switch)]
    permessage_deflate: bool,

    /// with --permessage-deflate, send messages shorter than this uncompressed, in bytes (default 128)
    #[argh(option, default = "128")]
    deflate_min_size: usize,

    /// protect TLS records with wssd's own record layer after the handshake instead of
    /// rustls' (less CPU per message; an opt-in until it is shown as correct as rustls':
    /// see the README, "TLS records"; default off)
    #[argh(switch)]
    own_records: bool,

    /// seconds for the TLS and WebSocket handshakes, against slowloris (default 10)
    #[argh(option, default = "10")]
    handshake_timeout: u64,

    /// the largest handshake request head, in bytes; more gets 431 (default 16384)
    #[argh(option, default = "16384")]
    max_header_bytes: usize,

    /// the most connections at once; more get 503 or a close (default 10000)
    #[argh(option, default = "10000")]
    max_connections: usize,

    /// the most connections at once from one client address (IPv6: its /64), the one named by a trusted proxy or PROXY header; more get 503; 0 for no cap (default 1000)
    #[argh(option, default = "1000")]
    max_connections_per_address: usize,

    /// the largest incoming message, in bytes; more closes with 1009 (default 1048576)
    #[argh(option, default = "1 << 20")]
    max_message_size: usize,

    /// the largest incoming frame, in bytes; more closes with 1009 (default 1048576)
    #[argh(option, default = "1 << 20")]
    max_frame_size: usize,

    /// the most fragments in one incoming message; more closes with 1009 (default 1024)
    #[argh(option, default = "1024")]
    max_fragments: usize,

    /// each connection's send queue, in bytes; a client that falls further behind is closed with 1013 (default 262144)
    #[argh(option, default = "256 << 10")]
    send_queue_bytes: usize,

    /// seconds between server pings; 0 disables them (default 25)
    #[argh(option, default = "25")]
    ping_interval: u64,

    /// seconds without any message or pong before closing with 1001, checked at each ping (default 60)
    #[argh(option, default = "60")]
    idle_timeout: u64,

    /// seconds to finish open connections after SIGINT or SIGTERM (default 10)
    #[argh(option, default = "10")]
    shutdown_timeout: u64,

    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    ProxyConfig(proxy_config::ProxyConfig),
    Probe(probe::Probe),
}

/// What the server does with each message.
enum Mode {
    /// Send the same opcode and payload back.
    Echo,
    /// Answer with a fixed text message.
    Reply(wssd::Data),
    /// Relay to every other connection.
    Broadcast(Hub),
    /// Relay to the others in the same room: the path below `--path`.
    Rooms { hub: Hub, base: Option<String> },
    /// Hand the events to an app over HTTP (`--app`).
    #[cfg(feature = "bridge")]
    App(bridge::Bridge),
}

/// The room of a connection to `path`: the part below `base` (`--path`), without its
/// leading `/`. `/wss/room1` under `/wss` is `room1`; `/wss` itself is the lobby, `""`.
fn room<'a>(path: &'a str, base: Option<&str>) -> &'a str {
    base.and_then(|base| path.strip_prefix(base))
        .unwrap_or(path)
        .trim_start_matches('/')
}

impl Handler for Mode {
    fn admit(&self, id: wssd::ConnectionId, request: &wssd::Request) -> Option<wssd::AdmitFuture> {
        let _ = (id, request);
        match self {
            #[cfg(feature = "bridge")]
            Mode::App(bridge) => bridge.admit(id, request),
            _ => None,
        }
    }

    fn on_open(&self, conn: &Connection) {
        match self {
            #[cfg(feature = "bridge")]
            Mode::App(bridge) => bridge.on_open(conn),
            Mode::Broadcast(hub) => hub.add(conn),
            Mode::Rooms { hub, base } => {
                hub.add(conn);
                hub.join(conn.id(), room(&conn.request().path, base.as_deref()));
                let query = conn.request().query.as_deref().unwrap_or("");
                if let Some(user) = query.split('&').find_map(|kv| kv.strip_prefix("user=")) {
                    hub.bind_user(conn.id(), user);
                }
            }
            Mode::Echo | Mode::Reply(_) => {}
        }
    }

    fn on_message(&self, conn: &Connection, msg: wssd::Data) {
        let sent = match self {
            #[cfg(feature = "bridge")]
            Mode::App(bridge) => {
                bridge.on_message(conn, msg);
                Ok(())
            }
            Mode::Echo => conn.try_send(msg),
            Mode::Reply(reply) => conn.try_send(reply.clone()),
            Mode::Broadcast(hub) => {
                hub.broadcast(&msg, &[conn.id()]);
                Ok(())
            }
            Mode::Rooms { hub, base } => {
                let room = room(&conn.request().path, base.as_deref());
                hub.send_to_group(room, &msg, &[conn.id()]);
                Ok(())
            }
        };
        if let Err(wssd::SendError::Full) = sent {
            conn.close_slow();
        }
    }

    fn on_close(&self, conn: &Connection, close: Option<&wssd::CloseFrame>) {
        match self {
            Mode::Broadcast(hub) | Mode::Rooms { hub, .. } => hub.remove(conn.id()),
            #[cfg(feature = "bridge")]
            Mode::App(bridge) => bridge.on_close(conn, close),
            _ => {}
        }
        let _ = close;
    }
}

/// `help` with its first line, argh's usage line (over 1,000 characters for wssd), wrapped
/// at 100 columns between its bracketed options.
fn wrap_usage(help: &str) -> String {
    let (usage, rest) = help.split_once('\n').unwrap_or((help, ""));
    let mut lines = vec![String::new()];
    for (i, part) in usage.split(" [").enumerate() {
        let part = if i == 0 {
            part.to_string()
        } else {
            format!("[{part}")
        };
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.len() + 1 + part.len() > 100 {
            lines.push(format!("    {part}"));
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&part);
        }
    }
    format!("{}\n{rest}", lines.join("\n"))
}

/// The command line, as argh reads it, with the spellings people type first: `-h` for
/// `--help`, and `--version` or `-V` for the version (argh has neither). Help and errors are
/// printed here; `Err` is the exit code then.
fn parse_args(argv: Vec<String>) -> Result<Args, ExitCode> {
    use argh::FromArgs;
    let (command, rest) = argv
        .split_first()
        .map_or(("wssd", &[][..]), |(c, r)| (c.as_str(), r));
    if rest.iter().any(|a| a == "--version" || a == "-V") {
        println!("wssd {}", env!("CARGO_PKG_VERSION"));
        return Err(ExitCode::SUCCESS);
    }
    let rest: Vec<&str> = rest
        .iter()
        .map(|a| if a == "-h" { "--help" } else { a.as_str() })
        .collect();
    let command = std::path::Path::new(command)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("wssd");
    Args::from_args(&[command], &rest).map_err(|early| match early.status {
        Ok(()) => {
            print!("{}", wrap_usage(&early.output));
            ExitCode::SUCCESS
        }
        Err(()) => {
            eprint!("{}", early.output);
            ExitCode::FAILURE
        }
    })
}

fn main() -> ExitCode {
    let mut args: Args = match parse_args(std::env::args().collect()) {
        Ok(args) => args,
        Err(code) => return code,
    };
    match args.command.take() {
        Some(Command::Probe(probe)) => {
            return if probe.run() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Some(Command::ProxyConfig(config)) => {
            return match config.render() {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wssd proxy-config: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    let logger = simple_logger::SimpleLogger::new()
        .with_level(args.log_level)
        .with_colors(std::io::stderr().is_terminal())
        .with_utc_timestamps();
    log::set_max_level(logger.max_level());
    let _ = log::set_boxed_logger(Box::new(flags::Logger(logger)));
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wssd: {}", flags::named(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    if [
        args.reply.is_some(),
        args.broadcast,
        args.rooms,
        args.app.is_some(),
    ]
    .iter()
    .filter(|on| **on)
    .count()
        > 1
    {
        return Err(
            "--reply, --broadcast, --rooms and --app exclude each other: choose one".into(),
        );
    }
    if (args.api.is_some() || args.api_token_file.is_some()) && args.app.is_none() {
        return Err("--api serves the connections of --app: add --app URL".into());
    }
    // Arguments are checked before anything is made (such as the self-signed certificate).
    if let Some(path) = &args.path
        && !path.starts_with('/')
    {
        return Err(format!(
            "--path {:?} must start with '/', as in --path /{}",
            wssd::text::escape(path),
            wssd::text::escape(path)
        ));
    }
    if args.redis.is_some() && !args.broadcast && !args.rooms && args.app.is_none() {
        return Err(
            "--redis fans out --broadcast, --rooms and --app across instances: add one of them"
                .into(),
        );
    }
    // The port is taken before any certificate is made, so that a busy or forbidden
    // port is reported first.
    let listener = smol::block_on(smol::net::TcpListener::bind(args.listen))
        .map_err(|e| bind_error(args.listen, e))?;
    let acme = !args.acme.is_empty();
    if acme
        && (args.plain
            || args.self_signed
            || args.self_signed_dir.is_some()
            || args.cert.is_some()
            || args.key.is_some()
            || !args.sni.is_empty())
    {
        return Err("--acme gets its certificate itself: drop --cert, --key, --sni, --self-signed and --plain".into());
    }
    if !acme
        && (args.acme_email.is_some()
            || args.acme_directory.is_some()
            || args.acme_staging
            || args.acme_ca.is_some()
            || args.acme_cache != std::path::Path::new("wssd-acme"))
    {
        return Err("--acme-email, --acme-cache, --acme-directory, --acme-staging and --acme-ca go with --acme DOMAIN: add it".into());
    }
    let tls = if acme {
        certs::TlsSetup {
            config: None,
            trust_hint: None,
            files: None,
            name: args.acme.first().cloned(),
        }
    } else {
        certs::setup(certs::TlsArgs {
            cert: &args.cert,
            chain: &args.chain,
            key: &args.key,
            sni: &args.sni,
            plain: args.plain,
            self_signed: args.self_signed,
            self_signed_dir: &args.self_signed_dir,
        })?
    };
    let secs = Duration::from_secs;
    let mut limits = Limits::default();
    limits.handshake_timeout = secs(args.handshake_timeout);
    limits.max_request_header_bytes = args.max_header_bytes;
    limits.max_message_size = args.max_message_size;
    limits.max_frame_size = args.max_frame_size;
    limits.max_fragments = args.max_fragments;
    limits.send_queue_bytes = args.send_queue_bytes;
    limits.ping_interval = secs(args.ping_interval);
    limits.idle_timeout = secs(args.idle_timeout);
    let mut config = Config::default()
        .proxy_protocol(args.proxy_protocol)
        .limits(limits);
    config.tls = tls.config;
    let served_name = tls.name;
    config.path = args.path.clone();
    config.subpaths = args.rooms;
    config.subprotocols = args.subprotocol.clone();
    config.deflate.enabled = args.permessage_deflate;
    config.deflate.min_size = args.deflate_min_size;
    if !args.trusted_proxy.is_empty() {
        config.trusted_proxies = args.trusted_proxy.clone();
    }
    if args.test_page {
        config = config.page(TEST_PAGE);
    }

    if let Some(files) = &tls.files {
        certs::check(files, &config.certificate_notes);
    }
    #[cfg(not(feature = "acme"))]
    if acme {
        return Err("this wssd was built without ACME (its acme feature): build it with the default features for --acme".into());
    }
    #[cfg(feature = "acme")]
    if acme {
        config.tls = Some(acme::start(
            acme::AcmeArgs {
                domains: &args.acme,
                email: &args.acme_email,
                cache: &args.acme_cache,
                directory: &args.acme_directory,
                staging: args.acme_staging,
                ca: &args.acme_ca,
                port: listener.local_addr().map_or(0, |a| a.port()),
            },
            config.certificate_notes.clone(),
        )?);
    }
    config = config.own_records(args.own_records);

    // Signals are watched before the server says it is up.
    let shutdown = Shutdown::default();
    let reload = tls
        .files
        .map(|files| (files, config.certificate_notes.clone()));
    watch_signals(shutdown.clone(), reload).map_err(|e| format!("cannot watch signals: {e}"))?;

    #[cfg(feature = "bridge")]
    let app = match &args.app {
        Some(url) => Some(bridge::App::new(
            url,
            secs(args.app_timeout),
            args.app_concurrency,
        )?),
        None => None,
    };
    #[cfg(not(feature = "bridge"))]
    if args.app.is_some() || args.app_timeout != 5 || args.app_concurrency != 64 {
        return Err("this wssd was built without the app bridge (its bridge feature): build it with the default features for --app".into());
    }
    #[cfg(feature = "bridge")]
    if let (Some(addr), Some(app)) = (args.api, &app) {
        api::start(
            addr,
            args.api_token_file.as_deref(),
            app.clone(),
            args.redis.is_some(),
        )?;
    }
    let mode = match (args.reply, args.broadcast, args.rooms) {
        #[cfg(feature = "bridge")]
        _ if app.is_some() => Mode::App(bridge::Bridge(app.expect("checked"))),
        (Some(text), ..) => Mode::Reply(wssd::Data::text(text)),
        (None, true, _) => Mode::Broadcast(Hub::default()),
        (None, false, true) => Mode::Rooms {
            hub: Hub::default(),
            base: args.path.clone(),
        },
        (None, false, false) => Mode::Echo,
    };
    #[cfg(not(feature = "redis"))]
    if args.redis.is_some() {
        return Err("this wssd was built without Redis (its redis feature): build it with the default features for --redis".into());
    }
    #[cfg(feature = "redis")]
    if let Some(url) = &args.redis {
        let hub = match &mode {
            Mode::Broadcast(hub) | Mode::Rooms { hub, .. } => hub,
            #[cfg(feature = "bridge")]
            Mode::App(bridge) => bridge.0.hub(),
            _ => {
                return Err(
                    "--redis fans out --broadcast, --rooms and --app across instances: add one of them"
                        .into(),
                );
            }
        };
        let (_link, task) =
            wssd::redis::link(hub, url).map_err(|e| format!("--redis {url}: {e}"))?;
        // The link's publisher and subscriber get a thread of their own.
        std::thread::Builder::new()
            .name("wssd-redis".into())
            .spawn(move || smol::block_on(task))
            .map_err(|e| format!("--redis {url}: cannot start its thread: {e}"))?;
    }
    // Everything is checked, and every port bound, before the server says it is serving.
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // The URL a client uses: with a certificate for a real name, that name (a browser checks
    // it against the certificate), else the address listened on.
    let host = match &served_name {
        Some(name) => wssd::text::escape(name).into_owned(),
        None => display_host(local.ip()),
    };
    let url = format!(
        "{}://{}:{}{}",
        if config.tls.is_some() { "wss" } else { "ws" },
        host,
        local.port(),
        config.path.as_deref().unwrap_or("")
    );
    println!("serving {url}");
    println!("Try it in a browser console:");
    println!(
        "  ws = new WebSocket(\"{url}\"); ws.onmessage = e => console.log(e.data); ws.onopen = () => ws.send(\"tom\");"
    );
    if let Some(hint) = tls.trust_hint {
        println!("{hint}");
    }
    if args.test_page {
        let page = url.replacen("ws", "http", 1);
        println!("Test page: open {page} in a browser");
    }
    if served_name.is_some() {
        println!("listening on {local}");
        if local.ip().is_loopback() {
            println!(
                "Only this machine reaches {local}: to serve other machines, listen publicly with --listen 0.0.0.0:{}",
                local.port()
            );
        }
    }
    if config.tls.is_none() && !local.ip().is_loopback() {
        log::warn!(
            "plain ws on {local}, reachable from other machines: behind a proxy on this machine, listen on 127.0.0.1:{} so that clients cannot go around it",
            local.port()
        );
    }

    let mut server = wssd::smol::Server::new(wssd::Acceptor::new(config), Arc::new(mode))
        .max_connections(args.max_connections)
        .max_connections_per_address(args.max_connections_per_address)
        .shutdown(shutdown)
        .shutdown_timeout(secs(args.shutdown_timeout));
    if let Some(threads) = args.threads {
        server = server.threads(threads);
    }
    server.run(listener).map_err(|e| e.to_string())
}

/// SIGINT and SIGTERM start the graceful shutdown (a second one exits at once);
/// SIGHUP reloads the certificate files, and checks them again.
fn watch_signals(
    shutdown: Shutdown,
    files: Option<(wssd::tls::CertFiles, wssd::tls::CertificateNotes)>,
) -> std::io::Result<()> {
    use async_signal::{Signal, Signals};
    use futures_lite::StreamExt;
    let mut signals = Signals::new([Signal::Int, Signal::Term, Signal::Hup])?;
    std::thread::Builder::new()
        .name("wssd-signals".into())
        .spawn(move || {
            smol::block_on(async {
                while let Some(Ok(signal)) = signals.next().await {
                    match (signal, &files) {
                        (Signal::Hup, Some((files, notes))) => {
                            // Each failure is logged, and keeps its current certificate.
                            let _ = files.reload();
                            certs::check(files, notes);
                        }
                        (Signal::Hup, None) => log::warn!("SIGHUP: no certificate files to reload"),
                        _ if shutdown.is_triggered() => {
                            log::warn!("{} again: exiting now", signal_name(signal));
                            std::process::exit(1);
                        }
                        _ => {
                            log::info!("{}: shutting down gracefully", signal_name(signal));
                            shutdown.trigger();
                        }
                    }
                }
            })
        })?;
    Ok(())
}

/// The signal's usual name, such as `SIGINT`.
fn signal_name(signal: async_signal::Signal) -> &'static str {
    use async_signal::Signal;
    match signal {
        Signal::Int => "SIGINT",
        Signal::Term => "SIGTERM",
        Signal::Hup => "SIGHUP",
        _ => "a signal",
    }
}

/// The forms `--listen` accepts, for its error message.
const LISTEN_FORMS: &str = "use 127.0.0.1:8282 or localhost:8282 (this machine only), 0.0.0.0:8282 or [::]:8282 (every interface), or :8282 or 8282 (a port alone: every interface)";

/// An address to listen on, in the forms people type: `127.0.0.1:8282`, `[::]:8282`,
/// `localhost:8282` (127.0.0.1), another host name that resolves here, or a port alone,
/// `:8282` or `8282`, for every interface (0.0.0.0), as nginx's `listen 8282` means.
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let shown = wssd::text::escape(value);
    if let Some((scheme, rest)) = value.split_once("://") {
        let rest = wssd::text::escape(rest.trim_end_matches('/'));
        return Err(format!(
            "{shown:?}: --listen takes an address, not a URL: drop the scheme ({}://), as in --listen {rest}",
            wssd::text::escape(scheme)
        ));
    }
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(port) = value.strip_prefix(':').unwrap_or(value).parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!(
            "{shown:?} is not an address to listen on: {LISTEN_FORMS}"
        ));
    };
    let Ok(port) = port.parse::<u16>() else {
        return Err(format!(
            "{shown:?}: the port is a number from 0 to 65535: {LISTEN_FORMS}"
        ));
    };
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    match (host, port).to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(addr)) => Ok(addr),
        _ => Err(format!(
            "{shown:?}: no address found for the name {:?}: {LISTEN_FORMS}",
            wssd::text::escape(host)
        )),
    }
}

/// A log level, by name, in any case.
fn parse_level(value: &str) -> Result<LevelFilter, String> {
    value.parse().map_err(|_| {
        format!(
            "{:?} is not a log level: use off, error, warn, info, debug or trace",
            wssd::text::escape(value)
        )
    })
}

/// A subprotocol name: an HTTP token (RFC 6455 section 4.1, RFC 9110 section 5.6.2).
fn parse_subprotocol(value: &str) -> Result<String, String> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !value.is_empty() && value.chars().all(tchar) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{:?} is not a subprotocol name: letters, digits and !#$%&'*+-.^_`|~ only, no spaces or commas (such as chat, mqtt or graphql-transport-ws)",
            wssd::text::escape(value)
        ))
    }
}

/// A CIDR range, or one IP address as a range of one.
fn parse_net(value: &str) -> Result<IpNet, String> {
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{value:?} is not an IP address or CIDR range (such as 10.0.0.0/8)"))
}

fn display_host(ip: IpAddr) -> String {
    match ip {
        ip if ip.is_loopback() || ip.is_unspecified() => "localhost".into(),
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

fn bind_error(addr: SocketAddr, e: std::io::Error) -> String {
    let fix = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another program (perhaps another wssd) has this port: stop it, or choose another port with --listen"
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: use a port above 1024 (behind nginx), or grant the capability"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "this machine has no such address: use 127.0.0.1 or 0.0.0.0 with --listen"
        }
        _ => "check --listen",
    };
    format!("cannot listen on {addr}: {e}: {fix}")
}
