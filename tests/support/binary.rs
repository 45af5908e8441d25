//! The `outpost` binary as a child process: for what only a process shows
//! (its resident memory, a SIGKILL).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary, serving `config`; killed on drop.
pub struct Binary {
    child: Child,
    pub listen: String,
    pub admin: String,
    dir: std::path::PathBuf,
}

impl Binary {
    /// Serves `config` on 127.0.0.1, a port of the kernel's choosing.
    pub fn start(config: &str) -> Self {
        Self::start_at(config, "127.0.0.1:0")
    }

    /// Serves `config` with `server.listen` at `listen`.
    pub fn start_at(config: &str, listen: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("outpost-binary-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("outpost.toml");
        std::fs::write(&file, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["serve", "--config", file.to_str().unwrap(), "--listen", listen])
            .env_remove("OUTPOST_CONFIG")
            .env("OUTPOST_ADMIN__LISTEN", "127.0.0.1:0")
            .env("OUTPOST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        // Read to the end, so that the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let field = |line: &str, name: &str| {
            let rest = line.split(&format!(" {name}=")).nth(1)?;
            Some(rest.split_whitespace().next()?.to_owned())
        };
        let (listen, admin) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("a startup line within 30 s");
            if let (Some(listen), Some(admin)) = (field(&line, "listen"), field(&line, "admin")) {
                break (listen, admin);
            }
        };
        Self {
            child,
            listen,
            admin,
            dir,
        }
    }

    /// The config file it was started with, which SIGHUP reads again.
    pub fn config_file(&self) -> std::path::PathBuf {
        self.dir.join("outpost.toml")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, from /proc.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(sent.success(), "kill -{signal}");
    }

    /// SIGKILL: the process ends at once, its connections with it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        // A stopped process is killed all the same.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
