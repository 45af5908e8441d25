//! The binary: `check`, `serve` with SIGTERM, `demo`, exit codes.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_outpost");

/// Kills the child if a test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn outpost(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("OUTPOST_CONFIG").env("OUTPOST_LOG", "info");
    cmd
}

/// Lines of a child's output, read on a thread so that waiting for one is bounded.
fn lines_of(reader: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line (within 30 s) for which `pick` returns something.
fn wait_line<T>(rx: &std::sync::mpsc::Receiver<String>, what: &str, pick: impl Fn(&str) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {what} within 30 s"));
        if let Some(found) = pick(&line) {
            return found;
        }
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited, not killed");
        }
        assert!(Instant::now() < deadline, "process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_shipped_config_passes_check() {
    // What the container and pod specs set beside the files: a fleet's secret
    // (compose.yaml and the Kubernetes Secret), and on Kubernetes the pod's
    // own address (deployment.yaml).
    let secret = ("OUTPOST_CLUSTER__SECRET", "a-secret-of-more-than-16-bytes");
    let pod = ("OUTPOST_CLUSTER__SELF", "http://10.1.2.3:8080");
    let mut checked = Vec::new();
    for (dir, env) in [
        ("conf", vec![]),
        ("docker", vec![secret]),
        ("docker/k8s", vec![secret, pod]),
    ] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let out = outpost(&["check", "--config", path.to_str().unwrap()])
                    .envs(env.iter().copied())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                checked.push(path.display().to_string());
            }
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "conf/outpost.toml",
            "docker/fleet.toml",
            "docker/k8s/outpost.toml",
            "docker/outpost.toml"
        ]
    );
}

#[test]
fn each_edge_of_the_compose_fleet_has_a_valid_config() {
    let compose = std::fs::read_to_string("docker/compose.yaml").unwrap();
    let selves: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("OUTPOST_CLUSTER__SELF:"))
        .map(str::trim)
        .collect();
    assert_eq!(selves, ["http://edge1:8080", "http://edge2:8080", "http://edge3:8080"]);
    for me in selves {
        let out = outpost(&["check", "--config", "docker/fleet.toml"])
            .env("OUTPOST_CLUSTER__SELF", me)
            .env("OUTPOST_CLUSTER__SECRET", "compose-try-out-secret-change-me")
            .output()
            .unwrap();
        assert!(out.status.success(), "{me}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn the_kubernetes_manifests_name_what_the_config_expects() {
    // No engine runs here: the manifests are read, and held to the config.
    let read = |name: &str| std::fs::read_to_string(format!("docker/k8s/{name}")).unwrap();
    let (deployment, service, kustomization, config) = (
        read("deployment.yaml"),
        read("service.yaml"),
        read("kustomization.yaml"),
        read("outpost.toml"),
    );
    // `cluster.dns` names the headless Service, on the port its pods serve.
    assert!(config.contains("dns = \"outpost-peers:8080\""));
    assert!(service.contains("name: outpost-peers") && service.contains("clusterIP: None"));
    assert!(deployment.contains("containerPort: 8080") && config.contains("listen = \"0.0.0.0:8080\""));
    // Probes ask the admin listener's /healthz.
    assert!(config.contains("listen = \"0.0.0.0:9090\"") && deployment.contains("containerPort: 9090"));
    assert_eq!(
        deployment.matches("path: /healthz").count(),
        2,
        "readiness and liveness"
    );
    // Each pod names itself by its IP, and reads the secret from a Secret.
    assert!(deployment.contains("value: \"http://$(POD_IP):8080\""));
    assert!(deployment.contains("name: OUTPOST_CLUSTER__SECRET") && deployment.contains("secretKeyRef"));
    // The config file is the ConfigMap, mounted where OUTPOST_CONFIG points.
    assert!(kustomization.contains("- outpost.toml") && kustomization.contains("name: outpost-config"));
    assert!(deployment.contains("name: outpost-config") && deployment.contains("value: /etc/outpost/outpost.toml"));
}

#[test]
fn check_names_the_bad_key_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("outpost-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("[server]\nheader_timout = \"1s\"\n", "server.header_timout"),
        ("[cache]\nmemory = \"a lot\"\n", "cache.memory"),
        ("[[routes]]\nurl = \"gopher://x\"\n", "routes[0].url"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = outpost(&["check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "error names {key}: {err}");
    }
    // Environment layers are checked too.
    let good = dir.join("good.toml");
    std::fs::write(&good, "[admin]\ntoken = \"hunter2\"\n").unwrap();
    let out = outpost(&["check", "--config", good.to_str().unwrap()])
        .env("OUTPOST_SERVER__LISTEN", "nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
    let out = outpost(&["check", "--config", good.to_str().unwrap()])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        !printed.contains("hunter2") && printed.contains("token = \"********\""),
        "{printed}"
    );
    let usage = outpost(&["serve", "--no-such-flag"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_runs_until_sigterm_and_exits_0() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = rt.block_on(TestOrigin::start());
    origin.set("/x", Script::ok("through the binary"));
    let child = outpost(&["serve", "--listen", "127.0.0.1:0", "--origin", &origin.url()])
        .env("OUTPOST_ADMIN__LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let lines = lines_of(child.0.stderr.take().unwrap());
    let listen = wait_line(&lines, "startup log line", |line| {
        let rest = line.split("listen=").nth(1)?;
        Some(rest.split_whitespace().next()?.to_owned())
    });
    let got = rt.block_on(async { get(&client(), &format!("http://{listen}/x")).await });
    assert_eq!(got.text(), "through the binary");
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0), 0);
    // The access log line for the request was written.
    wait_line(&lines, "access log line", |l| {
        (l.contains("client=127.0.0.1")
            && l.contains("source=upstream")
            && l.contains("path=/x")
            && l.contains("status=200")
            && l.contains("cache=miss")
            && l.contains("end=complete")
            && l.contains(" ms=")
            && l.contains("id="))
        .then_some(())
    });
}

#[test]
fn demo_serves_a_live_stream_through_the_edge() {
    let child = outpost(&["demo"])
        .env("OUTPOST_SERVER__LISTEN", "127.0.0.1:0")
        .env("OUTPOST_ADMIN__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let lines = lines_of(child.0.stdout.take().unwrap());
    let page = wait_line(&lines, "the player page URL", |line| {
        line.trim_start()
            .starts_with("player page")
            .then(|| line.split_whitespace().last().unwrap().to_owned())
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = client();
        // The page at the edge's root plays the live playlist with hls.js and polls the edge's figures.
        let html = get(&c, &page).await;
        assert_eq!(html.status, 200);
        assert!(html.header("content-type").starts_with("text/html"));
        let html = html.text();
        assert!(html.contains("hls.min.js") && html.contains("/live/stream.m3u8") && html.contains("/stats.json"));
        // The page's bytes are counted when its answer ends, a moment after
        // the client has them: asked a few times, bounded.
        let mut stats = serde_json::Value::Null;
        for _ in 0..50 {
            stats = serde_json::from_slice(get(&c, &format!("{page}stats.json")).await.bytes()).unwrap();
            if stats["response_bytes"].as_u64().unwrap() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(stats["response_bytes"].as_u64().unwrap() > 0, "{stats}");

        // The live playlist starts with a full window of real MPEG-TS segments.
        let playlist = get(&c, &format!("{page}live/stream.m3u8")).await;
        assert_eq!(playlist.status, 200);
        let text = playlist.text();
        assert!(
            text.starts_with("#EXTM3U") && !text.contains("#EXT-X-ENDLIST"),
            "{text}"
        );
        let segments: Vec<&str> = text.lines().filter(|l| l.ends_with(".ts")).collect();
        assert_eq!(segments.len(), 6, "{text}");
        let seg_url = format!("{page}live/{}", segments[0]);
        let first = get(&c, &seg_url).await;
        assert_eq!(first.status, 200);
        assert!(
            first.bytes().len() > 10_000 && first.bytes()[0] == 0x47,
            "an MPEG-TS segment"
        );
        assert!(get(&c, &seg_url)
            .await
            .header("cache-status")
            .starts_with("outpost; hit"));
    });
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0), 0);
}

#[test]
fn health_exits_0_for_a_serving_edge_and_1_once_it_stopped() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = rt.block_on(TestOrigin::start());
    let edge = rt.block_on(edge_for(&origin));
    let admin = edge.addrs.admin.to_string();
    let run = |cmd: &mut Command| cmd.stderr(Stdio::piped()).output().unwrap();
    let up = run(outpost(&["health", "--admin", &admin]).env_remove("OUTPOST_ADMIN__LISTEN"));
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    // As the image runs it: the address from the config and variables serve reads.
    let from_env = run(outpost(&["health"]).env("OUTPOST_ADMIN__LISTEN", &admin));
    assert!(
        from_env.status.success(),
        "{}",
        String::from_utf8_lossy(&from_env.stderr)
    );
    rt.block_on(edge.shutdown());
    let down = run(&mut outpost(&["health", "--admin", &admin]));
    assert_eq!(down.status.code(), Some(1));
    let said = String::from_utf8_lossy(&down.stderr);
    assert!(said.contains("unhealthy") && said.contains(&admin), "{said}");
}

/// Copies `from` to `to` as the image's context holds it: without the
/// folders `docker/Dockerfile.dockerignore` leaves out (build output).
fn copy_context(from: &std::path::Path, to: &std::path::Path) {
    if from.is_dir() {
        let name = from.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if ["target", "artifacts", "corpus", "node_modules"].contains(&name) {
            return;
        }
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_context(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

/// Every `COPY` source of the Dockerfile's build stage (`COPY a b ./dest`).
fn build_context_sources(dockerfile: &str) -> Vec<String> {
    let mut sources = Vec::new();
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with("FROM ") && !sources.is_empty() {
            break; // the runtime stage copies from the build stage
        }
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        sources.extend(words[..words.len() - 1].iter().map(|w| w.to_string()));
    }
    sources
}

#[test]
fn the_image_build_context_holds_all_the_build_needs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).unwrap();
    let sources = build_context_sources(&dockerfile);
    assert!(sources.contains(&"Cargo.toml".to_owned()) && sources.contains(&"src".to_owned()));
    // Exactly what the build stage copies, in an empty folder.
    let dir = std::env::temp_dir().join(format!("outpost-context-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ignored = std::fs::read_to_string(root.join("docker/Dockerfile.dockerignore")).unwrap();
    for left_out in ["**/target", "benches/fuzz/artifacts", "tests/browser/node_modules"] {
        assert!(
            ignored.lines().any(|l| l == left_out),
            "the context leaves out {left_out}"
        );
    }
    for source in &sources {
        assert!(root.join(source).exists(), "COPY {source}: not in the repository");
        copy_context(&root.join(source), &dir.join(source));
    }
    // The lockfile resolves as it stands (`--locked`, as the image builds)...
    let tree = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--offline", "--depth", "0"])
        .current_dir(&dir)
        .output()
        .unwrap();
    // ...and cargo takes the manifest and every target it names: it gets as
    // far as asking the compiler its version (a stand-in that fails, so
    // that nothing is compiled here).
    let build = Command::new(env!("CARGO"))
        .args(["check", "--bin", "outpost", "--locked", "--offline"])
        .env("RUSTC", "false")
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(tree.status.success(), "{}", String::from_utf8_lossy(&tree.stderr));
    let said = String::from_utf8_lossy(&build.stderr);
    assert!(
        said.contains("`false -vV`"),
        "cargo refuses the image's build context: {said}"
    );
    // The runtime stage's own files, and the health check the image runs.
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY docker/")) {
        let file = line.split_whitespace().nth(1).unwrap();
        assert!(root.join(file).exists(), "{line}");
    }
    assert!(dockerfile.contains(r#"HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/outpost", "health"]"#));
}

#[test]
fn the_json_access_log_carries_every_field_and_is_reopened_on_sighup() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = rt.block_on(TestOrigin::start());
    origin.set("/a.ts", Script::ok("segment"));
    let dir = std::env::temp_dir().join(format!("outpost-access-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let edge = Binary::start(&format!(
        "[server]\naccess_log = \"json\"\naccess_log_file = \"{}\"\n[[routes]]\nurl = \"{}\"\n",
        log.display(),
        origin.url()
    ));
    let c = client();
    let url = format!("http://{}/a.ts", edge.listen);
    let lines = |path: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    };
    // A line is written when its answer ends: wait for it, bounded.
    let until = |path: &std::path::Path, n: usize| {
        for _ in 0..100 {
            let got = lines(path);
            if got.len() >= n {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} has fewer than {n} lines", path.display());
    };
    rt.block_on(get(&c, &url));
    let first = until(&log, 1);
    let line = &first[0];
    for field in [
        "time", "id", "client", "method", "host", "path", "status", "cache", "source", "bytes", "ms", "end", "error",
    ] {
        assert!(line.get(field).is_some(), "no {field} in {line}");
    }
    assert_eq!(line["path"], "/a.ts");
    assert_eq!(line["status"], 200);
    assert_eq!(line["cache"], "miss");
    assert_eq!(line["source"], "upstream");
    assert_eq!(line["bytes"], 7);
    assert_eq!(line["end"], "complete");
    assert_eq!(line["client"], "127.0.0.1");
    // logrotate moves the file, then signals: the next line goes to a new file.
    let moved = dir.join("access.log.1");
    std::fs::rename(&log, &moved).unwrap();
    edge.signal("HUP");
    let mut reopened = false;
    for _ in 0..100 {
        rt.block_on(get(&c, &url));
        if log.exists() {
            reopened = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(reopened, "no new file after SIGHUP");
    let after = until(&log, 1);
    assert_eq!(after[0]["cache"], "hit");
    drop(edge);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_access_log_format_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("outpost-access-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[server]\naccess_log = \"xml\"\n").unwrap();
    let out = outpost(&["check", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("server.access_log") && said.contains("off, text, json"),
        "{said}"
    );
}

#[test]
fn config_errors_name_their_source_with_one_key_style_and_a_suggestion() {
    let dir = std::env::temp_dir().join(format!("outpost-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let said = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    };
    let typo = file("typo.toml", "[server]\nheader_timout = \"5s\"\n");
    assert_eq!(
        said(&mut outpost(&["check", "--config", &typo])),
        format!(
            "outpost: invalid config {typo}: config key `server.header_timout`: unknown key; did you mean `header_timeout`? (in {typo})"
        )
    );
    let broken = file("broken.toml", "[server\n");
    let text = said(&mut outpost(&["check", "--config", &broken]));
    assert!(
        text.starts_with(&format!("outpost: invalid config {broken}: TOML parse error at line 1")),
        "{text}"
    );
    assert!(!text.contains("config key ``"), "{text}");
    let route = file("route.toml", "[[routes]]\nurl = \"ftp://x\"\n");
    let text = said(&mut outpost(&["serve", "--config", &route]));
    assert_eq!(
        text,
        format!("outpost: invalid config {route}: config key `routes[0].url`: \"ftp://x\" must start with http:// or https://")
    );
    let text = said(outpost(&["check", "--config", &route]).env("OUTPOST_SERVER__MAX_CONNECTIONS", "many"));
    assert!(
        text.contains("config key `server.max_connections`")
            && text.contains("(from the environment variable OUTPOST_SERVER__MAX_CONNECTIONS)"),
        "{text}"
    );
    let text = said(&mut outpost(&["serve", "--origin", "ftp://x"]));
    assert_eq!(
        text,
        "outpost: invalid config: flag `--origin`: \"ftp://x\" must start with http:// or https://"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_names_the_config_layers_logs_admin_address_and_exit_codes() {
    let out = outpost(&["--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "OUTPOST_CONFIG",
        "OUTPOST_<SECTION>__<KEY>",
        "conf/outpost.toml",
        "OUTPOST_LOG",
        "127.0.0.1:9090",
        "server.access_log",
        "Exit codes: 0 ok, 1",
        "health",
    ] {
        assert!(help.contains(needle), "--help does not mention {needle}:\n{help}");
    }
}
