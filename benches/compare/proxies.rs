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
    child: Child,
    dir: PathBuf,
}

/// The cache budget every proxy gets.
pub struct Budget {
    pub bytes: u64,
}

impl Proxy {
    /// Starts `kind` on CPU `cpu` in front of `origin_port`, with `budget`
    /// of cache memory, and waits until it answers.
    pub fn start(kind: Kind, origin_port: u16, budget: &Budget, cpu: usize) -> Self {
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
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpu.to_string());
        match kind {
            Kind::Outpost => outpost(&mut cmd, &dir, port, origin_port, budget, false),
            Kind::OutpostSendfile => outpost(&mut cmd, &dir, port, origin_port, budget, true),
            Kind::Nginx => nginx(&mut cmd, &dir, port, h2_port, origin_port, budget),
            Kind::Varnish => varnish(&mut cmd, &dir, port, h2_port, origin_port, budget),
            Kind::Trafficserver => trafficserver(&mut cmd, &dir, port, origin_port, budget),
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

fn outpost(cmd: &mut Command, dir: &Path, port: u16, origin: u16, budget: &Budget, sendfile: bool) {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 100000\nheader_timeout = \"300s\"\n\
         sendfile = {sendfile}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [cache]\nmemory = \"{}\"\n\n\
         [[routes]]\nurl = \"http://127.0.0.1:{origin}\"\n",
        budget.bytes
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

/// nginx's `sendfile`: `off` (its built-in default) unless COMPARE_NGINX_SENDFILE
/// says `on` (as Debian's nginx.conf has it). Off is nginx's best in this bench:
/// with it on, 1 KiB hits cost nginx more CPU (a second system call per hit) and
/// 1 MiB hits cost the same, and the client more.
pub fn nginx_sendfile() -> &'static str {
    match std::env::var("COMPARE_NGINX_SENDFILE").as_deref() {
        Ok("on") => "on",
        _ => "off",
    }
}

fn nginx(cmd: &mut Command, dir: &Path, port: u16, h2_port: Option<u16>, origin: u16, budget: &Budget) {
    let shm = shm_dir(dir);
    std::fs::create_dir_all(shm.join("nginx-cache")).expect("cache dir");
    let d = dir.display();
    let mut conf = String::new();
    let sendfile = nginx_sendfile();
    let _ = write!(
        conf,
        "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         worker_rlimit_nofile 65536;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           keepalive_requests 1000000;\n  keepalive_timeout 300s;\n\
           sendfile {sendfile};\n\
           proxy_cache_path {}/nginx-cache levels=1:2 keys_zone=edge:64m max_size={} inactive=1h use_temp_path=off;\n\
           upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    listen 127.0.0.1:{} http2;\n\
             location / {{\n      proxy_pass http://origin;\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n      proxy_cache edge;\n      proxy_cache_lock on;\n\
               proxy_cache_lock_timeout 60s;\n      proxy_cache_lock_age 60s;\n    }}\n  }}\n}}\n",
        shm.display(),
        budget.bytes,
        h2_port.expect("nginx has h2c"),
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("config");
    cmd.args(["nginx", "-c"]).arg(dir.join("nginx.conf"));
}

fn varnish(cmd: &mut Command, dir: &Path, port: u16, h2_port: Option<u16>, origin: u16, budget: &Budget) {
    let vcl = format!("vcl 4.1;\nbackend origin {{ .host = \"127.0.0.1\"; .port = \"{origin}\"; }}\n");
    std::fs::write(dir.join("edge.vcl"), vcl).expect("vcl");
    cmd.args(["varnishd", "-F", "-j", "none", "-n"])
        .arg(dir.join("work"))
        .arg("-a")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-a")
        .arg(format!("127.0.0.1:{}", h2_port.expect("varnish has h2c")))
        .arg("-f")
        .arg(dir.join("edge.vcl"))
        .arg("-s")
        .arg(format!("malloc,{}", budget.bytes))
        .args(["-p", "feature=+http2", "-p", "thread_pools=1", "-p", "timeout_idle=300"]);
}

fn trafficserver(cmd: &mut Command, dir: &Path, port: u16, origin: u16, budget: &Budget) {
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
    let mut records = std::fs::read_to_string(etc.join("records.config")).unwrap_or_default();
    let _ = write!(
        records,
        "\nCONFIG proxy.config.http.server_ports STRING {port}\n\
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
