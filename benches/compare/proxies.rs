//! The four proxies, each with an equivalent cache config in front of one
//! origin: started pinned to the proxy CPU, measured through /proc, stopped.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The process group of the proxy running now (0: none), for [`kill_running`].
static RUNNING: AtomicU32 = AtomicU32::new(0);

/// Kills the running proxy's process group: it is not in the bench's own
/// group, so a Ctrl-C or a kill of the bench would leave it serving.
pub fn kill_running() {
    let group = RUNNING.swap(0, Ordering::SeqCst);
    if group != 0 {
        let _ = Command::new("kill").args(["-9", "--", &format!("-{group}")]).status();
    }
}

/// Which proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Outpost,
    /// outpost with `server.sendfile` on: its own column, since on loopback
    /// the proxy's CPU and the whole machine's tell different stories.
    OutpostSendfile,
    Nginx,
    Varnish,
    Trafficserver,
}

pub const ALL: [Kind; 5] = [
    Kind::Outpost,
    Kind::OutpostSendfile,
    Kind::Nginx,
    Kind::Varnish,
    Kind::Trafficserver,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Outpost => "outpost",
            Kind::OutpostSendfile => "outpost+sendfile",
            Kind::Nginx => "nginx",
            Kind::Varnish => "Varnish",
            Kind::Trafficserver => "Traffic Server",
        }
    }

    /// The proxy's version, as it reports it.
    pub fn version(self) -> String {
        let (cmd, args): (&str, &[&str]) = match self {
            Kind::Outpost | Kind::OutpostSendfile => (env!("CARGO_BIN_EXE_outpost"), &["--version"]),
            Kind::Nginx => ("nginx", &["-v"]),
            Kind::Varnish => ("varnishd", &["-V"]),
            Kind::Trafficserver => ("traffic_server", &["-V"]),
        };
        first_line(cmd, args)
    }

    pub fn is_outpost(self) -> bool {
        matches!(self, Kind::Outpost | Kind::OutpostSendfile)
    }
}

/// Where a started proxy listens, and its processes.
pub struct Proxy {
    pub kind: Kind,
    /// HTTP/1.1.
    pub port: u16,
    /// HTTP/2 with prior knowledge (h2c), when the proxy has it.
    pub h2_port: Option<u16>,
    /// HTTPS (ALPN h2 and http/1.1), when the proxy terminates TLS.
    pub tls_port: Option<u16>,
    child: Child,
    dir: PathBuf,
}

/// The cache budget every proxy gets.
pub struct Budget {
    pub bytes: u64,
}

/// The certificate every proxy that terminates TLS serves: ECDSA P-256,
/// PEM files.
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Proxy {
    /// Starts `kind` on CPU `cpu` in front of `origin_port`, with `budget`
    /// of cache memory, and waits until it answers.
    pub fn start(kind: Kind, origin_port: u16, budget: &Budget, tls: &Certificate, cpu: usize) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "outpost-compare-{}-{}",
            kind.name().replace(' ', ""),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let port = free_port();
        let h2_port = match kind {
            Kind::Outpost | Kind::OutpostSendfile => Some(port), // one listener speaks HTTP/1.1 and h2c
            Kind::Trafficserver => None,                         // Traffic Server speaks HTTP/2 over TLS only
            _ => Some(free_port()),
        };
        // Varnish has no TLS of its own.
        let tls_port = (kind != Kind::Varnish).then(free_port);
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpu.to_string());
        let ports = Ports {
            http: port,
            h2c: h2_port,
            tls: tls_port,
            origin: origin_port,
        };
        match kind {
            Kind::Outpost => outpost(&mut cmd, &dir, &ports, budget, tls, false),
            Kind::OutpostSendfile => outpost(&mut cmd, &dir, &ports, budget, tls, true),
            Kind::Nginx => nginx(&mut cmd, &dir, &ports, budget, tls),
            Kind::Varnish => varnish(&mut cmd, &dir, &ports, budget),
            Kind::Trafficserver => trafficserver(&mut cmd, &dir, &ports, budget, tls),
        }
        let log = std::fs::File::create(dir.join("proxy.log")).expect("a log file");
        // Its own process group, so that it and every process it forks end together.
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", kind.name()));
        RUNNING.store(child.id(), Ordering::SeqCst);
        let proxy = Proxy {
            kind,
            port,
            h2_port,
            tls_port,
            child,
            dir,
        };
        proxy.wait_ready();
        proxy
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Listening is not serving for every proxy (Traffic Server opens its port first).
                std::thread::sleep(Duration::from_millis(500));
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen within 30 s; its log: {}",
                self.kind.name(),
                std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn h2_url(&self, path: &str) -> Option<String> {
        self.h2_port.map(|p| format!("http://127.0.0.1:{p}{path}"))
    }

    pub fn tls_url(&self, path: &str) -> Option<String> {
        self.tls_port.map(|p| format!("https://127.0.0.1:{p}{path}"))
    }

    /// The proxy's processes: the one started and all its descendants.
    pub fn pids(&self) -> Vec<u32> {
        let mut tree = vec![self.child.id()];
        // taskset execs the proxy, so the child's pid is the proxy's.
        let mut parents: Vec<(u32, u32)> = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some(ppid) = stat_field(pid, 3).and_then(|p| p.parse().ok()) {
                parents.push((pid, ppid));
            }
        }
        let mut i = 0;
        while i < tree.len() {
            let parent = tree[i];
            tree.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
            i += 1;
        }
        tree
    }

    /// CPU time used so far by the proxy's processes: in user space, and in the kernel.
    pub fn cpu_split(&self) -> (Duration, Duration) {
        let (mut user, mut system) = (0u64, 0u64);
        for pid in self.pids() {
            user += stat_field(pid, 13).and_then(|v| v.parse().ok()).unwrap_or(0);
            system += stat_field(pid, 14).and_then(|v| v.parse().ok()).unwrap_or(0);
        }
        let time = |ticks: u64| Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64);
        (time(user), time(system))
    }

    /// Resident memory of the proxy's processes, in bytes.
    pub fn rss(&self) -> u64 {
        self.pids()
            .iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .filter_map(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .sum::<u64>()
            * 1024
    }

    /// Bytes of cache the proxy keeps in files on tmpfs (nginx's cache, Traffic
    /// Server's cache.db), which its RSS does not count: blocks in use.
    pub fn cache_files(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fn used(p: &Path) -> u64 {
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => std::fs::read_dir(p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| used(&e.path()))
                    .sum(),
                Ok(m) => m.blocks() * 512,
                Err(_) => 0,
            }
        }
        used(&shm_dir(&self.dir))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The whole group at once: killed one by one, children first, nginx's
        // master respawned its cache manager in between and left it behind.
        let pids = self.pids();
        let _ = RUNNING.compare_exchange(self.child.id(), 0, Ordering::SeqCst, Ordering::SeqCst);
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-9", "--", &group]).status();
        // Then any that left the group, parents first so none respawns the rest.
        for pid in pids {
            let _ = Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(shm_dir(&self.dir));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Cache files go to tmpfs so that no proxy waits on a disk.
fn shm_dir(dir: &Path) -> PathBuf {
    PathBuf::from("/dev/shm").join(dir.file_name().expect("named"))
}

/// Where a proxy listens, and its origin.
struct Ports {
    http: u16,
    h2c: Option<u16>,
    tls: Option<u16>,
    origin: u16,
}

fn outpost(cmd: &mut Command, dir: &Path, ports: &Ports, budget: &Budget, tls: &Certificate, sendfile: bool) {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nmax_connections = 100000\nheader_timeout = \"300s\"\n\
         sendfile = {sendfile}\n\
         tls_listen = \"127.0.0.1:{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [cache]\nmemory = \"{}\"\n\n\
         [[routes]]\nurl = \"http://127.0.0.1:{}\"\n",
        ports.http,
        ports.tls.expect("outpost serves TLS"),
        tls.cert.display(),
        tls.key.display(),
        budget.bytes,
        ports.origin,
    );
    std::fs::write(dir.join("outpost.toml"), config).expect("config");
    cmd.arg(env!("CARGO_BIN_EXE_outpost"))
        .arg("serve")
        .arg("--config")
        .arg(dir.join("outpost.toml"))
        // No access log, like the others: one line per request is not what is compared.
        .env("OUTPOST_SERVER__ACCESS_LOG", "off")
        .env("OUTPOST_LOG", "warn");
}

/// nginx's `sendfile`: `on`, as nginx's own tuning guide and Debian's
/// nginx.conf have it, unless COMPARE_NGINX_SENDFILE says `off` (nginx's
/// built-in default, to see what it changes).
pub fn nginx_sendfile() -> &'static str {
    match std::env::var("COMPARE_NGINX_SENDFILE").as_deref() {
        Ok("off") => "off",
        _ => "on",
    }
}

fn nginx(cmd: &mut Command, dir: &Path, ports: &Ports, budget: &Budget, tls: &Certificate) {
    let shm = shm_dir(dir);
    std::fs::create_dir_all(shm.join("nginx-cache")).expect("cache dir");
    let d = dir.display();
    let mut conf = String::new();
    let sendfile = nginx_sendfile();
    // Tuned as nginx's documentation and experienced operators set up a
    // caching proxy; each setting says why (the conf file keeps the comments).
    let _ = write!(
        conf,
        "user root;\n\
         # One worker: the proxy has one CPU, as every proxy here does.\n\
         worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         worker_rlimit_nofile 65536;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           keepalive_requests 1000000;\n  keepalive_timeout 300s;\n\
           # Cached bodies are files: sent from the page cache without a copy to user space.\n\
           sendfile {sendfile};\n\
           # With sendfile: the head and the body's first bytes leave in full segments (TCP_CORK).\n\
           tcp_nopush on;\n\
           # On keep-alive connections the last partial segment is sent at once, not held by Nagle.\n\
           tcp_nodelay on;\n\
           # A hit opens its cache file: keep the descriptors (and their stat) instead of an open() per hit.\n\
           open_file_cache max=10000 inactive=60s;\n  open_file_cache_valid 60s;\n  open_file_cache_min_uses 1;\n\
           # TLS 1.3 only, as for every proxy here; sessions resumable by cache and by ticket.\n\
           ssl_protocols TLSv1.3;\n  ssl_session_cache shared:SSL:10m;\n  ssl_session_tickets on;\n\
           ssl_certificate {};\n  ssl_certificate_key {};\n\
           proxy_cache_path {}/nginx-cache levels=1:2 keys_zone=edge:64m max_size={} inactive=1h use_temp_path=off;\n\
           # Keep-alive connections to the origin.\n\
           upstream origin {{ server 127.0.0.1:{}; keepalive 64; }}\n\
           server {{\n    listen 127.0.0.1:{};\n    listen 127.0.0.1:{} http2;\n    listen 127.0.0.1:{} ssl http2;\n\
             location / {{\n      proxy_pass http://origin;\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n      proxy_cache edge;\n\
               # One origin fetch per key; the others wait for it.\n\
               proxy_cache_lock on;\n\
               proxy_cache_lock_timeout 60s;\n      proxy_cache_lock_age 60s;\n    }}\n  }}\n}}\n",
        tls.cert.display(),
        tls.key.display(),
        shm.display(),
        budget.bytes,
        ports.origin,
        ports.http,
        ports.h2c.expect("nginx has h2c"),
        ports.tls.expect("nginx serves TLS"),
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("config");
    cmd.args(["nginx", "-c"]).arg(dir.join("nginx.conf"));
}

fn varnish(cmd: &mut Command, dir: &Path, ports: &Ports, budget: &Budget) {
    let vcl = format!(
        "vcl 4.1;\nbackend origin {{ .host = \"127.0.0.1\"; .port = \"{}\"; }}\n",
        ports.origin
    );
    std::fs::write(dir.join("edge.vcl"), vcl).expect("vcl");
    cmd.args(["varnishd", "-F", "-j", "none", "-n"])
        .arg(dir.join("work"))
        .arg("-a")
        .arg(format!("127.0.0.1:{}", ports.http))
        .arg("-a")
        .arg(format!("127.0.0.1:{}", ports.h2c.expect("varnish has h2c")))
        .arg("-f")
        .arg(dir.join("edge.vcl"))
        // Objects in memory, as the other proxies' caches are.
        .arg("-s")
        .arg(format!("malloc,{}", budget.bytes))
        .args(["-p", "feature=+http2", "-p", "timeout_idle=300"])
        // Varnish's tuning advice: one thread pool per CPU (the proxy has
        // one), and enough threads started ahead for the load, since a
        // request waits for a free worker: the storm's 500 clients and the
        // live test's 1,000 players are each in flight at once.
        .args([
            "-p",
            "thread_pools=1",
            "-p",
            "thread_pool_min=1200",
            "-p",
            "thread_pool_max=5000",
        ]);
}

fn trafficserver(cmd: &mut Command, dir: &Path, ports: &Ports, budget: &Budget, tls: &Certificate) {
    let (port, origin) = (ports.http, ports.origin);
    let etc = dir.join("etc");
    for sub in ["etc", "var", "run", "log", "cache"] {
        std::fs::create_dir_all(dir.join(sub)).expect("runroot");
    }
    let copied = Command::new("cp")
        .arg("-r")
        .arg("/etc/trafficserver/.")
        .arg(&etc)
        .status()
        .expect("cp runs");
    assert!(copied.success(), "copying /etc/trafficserver");
    let d = dir.display();
    let runroot = format!(
        "prefix: {d}\nexec_prefix: /usr\nbindir: /usr/bin\nsbindir: /usr/sbin\nsysconfdir: {d}/etc\n\
         datadir: {d}/cache\nincludedir: /usr/include\nlibdir: /usr/lib/trafficserver\n\
         libexecdir: /usr/lib/trafficserver/modules\nlocalstatedir: {d}/var\nruntimedir: {d}/run\n\
         logdir: {d}/log\ncachedir: {d}/cache\n"
    );
    std::fs::write(dir.join("runroot.yaml"), runroot).expect("runroot");
    let shm = shm_dir(dir);
    std::fs::create_dir_all(&shm).expect("cache dir");
    // The disk cache is a file on tmpfs; the RAM cache holds the budget.
    let storage_mb = (budget.bytes / (1 << 20)).max(256) * 2;
    // A directory: Traffic Server makes its cache.db in it (a missing file disables the cache).
    std::fs::write(etc.join("storage.config"), format!("{} {storage_mb}M\n", shm.display())).expect("storage");
    std::fs::write(etc.join("remap.config"), format!("map / http://127.0.0.1:{origin}/\n")).expect("remap");
    // The certificate for every address.
    std::fs::write(
        etc.join("ssl_multicert.config"),
        format!(
            "dest_ip=* ssl_cert_name={} ssl_key_name={}\n",
            tls.cert.display(),
            tls.key.display()
        ),
    )
    .expect("ssl_multicert");
    let tls_port = ports.tls.expect("Traffic Server serves TLS");
    let mut records = std::fs::read_to_string(etc.join("records.config")).unwrap_or_default();
    // Each setting: the RAM cache holds the budget; read-while-writer and
    // open_write_fail_action 5 make one origin fetch serve every waiter (the
    // Traffic Server docs' recipe for collapsed forwarding); one thread on
    // the proxy's one CPU; TLS 1.3 only, as for the others.
    let _ = write!(
        records,
        "\nCONFIG proxy.config.http.server_ports STRING {port} {tls_port}:ssl\n\
         CONFIG proxy.config.ssl.TLSv1 INT 0\n\
         CONFIG proxy.config.ssl.TLSv1_1 INT 0\n\
         CONFIG proxy.config.ssl.TLSv1_2 INT 0\n\
         CONFIG proxy.config.ssl.TLSv1_3 INT 1\n\
         CONFIG proxy.config.admin.user_id STRING #-1\n\
         CONFIG proxy.config.log.logging_enabled INT 0\n\
         CONFIG proxy.config.exec_thread.autoconfig INT 0\n\
         CONFIG proxy.config.exec_thread.limit INT 1\n\
         CONFIG proxy.config.cache.ram_cache.size INT {}\n\
         CONFIG proxy.config.cache.ram_cache_cutoff INT 8388608\n\
         CONFIG proxy.config.cache.enable_read_while_writer INT 1\n\
         CONFIG proxy.config.http.cache.open_write_fail_action INT 5\n\
         CONFIG proxy.config.http.cache.max_open_read_retries INT 100\n\
         CONFIG proxy.config.http.cache.open_read_retry_time INT 10\n\
         CONFIG proxy.config.http.background_fill_active_timeout INT 0\n\
         CONFIG proxy.config.http.background_fill_completed_threshold FLOAT 0.0\n\
         CONFIG proxy.config.http.keep_alive_no_activity_timeout_in INT 300\n\
         CONFIG proxy.config.net.connections_throttle INT 100000\n\
         CONFIG proxy.config.net.max_connections_in INT 100000\n\
         CONFIG proxy.config.http.insert_request_via_str INT 0\n",
        budget.bytes
    );
    std::fs::write(etc.join("records.config"), records).expect("records");
    cmd.arg("traffic_server")
        .arg(format!("--run-root={d}"))
        .env("TS_RUNROOT", dir);
}

/// A port free on 127.0.0.1 now (the proxies bind it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Field `index` (0-based) of /proc/PID/stat, counted after the command name.
fn stat_field(pid: u32, index: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    // Fields after the name start at index 2 (state).
    after_name.split_whitespace().nth(index - 2).map(str::to_owned)
}

fn clock_ticks() -> u64 {
    first_line("getconf", &["CLK_TCK"]).parse().unwrap_or(100)
}

/// The first line a command prints (stdout, else stderr).
pub fn first_line(cmd: &str, args: &[&str]) -> String {
    match Command::new(cmd).args(args).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        }
        Err(_) => format!("{cmd}: not found"),
    }
}
