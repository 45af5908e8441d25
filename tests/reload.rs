//! Reloading the config while serving: admin `POST /reload` and SIGHUP.
//! Routes, limits, CORS, the certificate and the fleet's members change;
//! connections stay open and the cache stays; a bad config changes nothing.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use outpost::app::RunningEdge;
use outpost::config::Source;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "reload-token";

/// A folder for one test's config file, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("outpost-reload-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("outpost.toml")
    }

    fn write(&self, text: &str) {
        std::fs::write(self.path(), text).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config with every listener on 127.0.0.1:0 and purge/reload enabled.
fn config(server: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\naccess_log = \"off\"\n{server}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n{rest}"
    )
}

/// An edge started from `file`, which a reload reads again.
async fn edge_from(file: &ConfigFile, text: &str, origin: &TestOrigin) -> RunningEdge {
    let text = text.replace("{origin}", &origin.url());
    file.write(&text);
    let edge = start_edge(&text, origin).await;
    edge.edge.set_source(Source {
        file: Some(file.path()),
        ..Source::default()
    });
    edge
}

async fn post_reload(edge: &RunningEdge, token: Option<&str>) -> (u16, serde_json::Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    let got = send(&client(), "POST", &admin_url(edge, "/reload"), &headers).await;
    let body = serde_json::from_slice(got.bytes()).unwrap_or(serde_json::Value::Null);
    (got.status.as_u16(), body)
}

async fn status_json(edge: &RunningEdge) -> serde_json::Value {
    serde_json::from_slice(get(&client(), &admin_url(edge, "/status.json")).await.bytes()).unwrap()
}

/// One HTTP/1.1 GET on an open connection: the head, then the body read
/// as it comes, `during` run once the first body bytes arrived.
async fn get_on(conn: &mut tokio::net::TcpStream, path: &str, during: impl std::future::Future<Output = ()>) -> Bytes {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut byte))
            .await
            .expect("head within 20 s")
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed in the head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    let first = 1024.min(length);
    conn.read_exact(&mut body[..first]).await.unwrap();
    during.await;
    tokio::time::timeout(Duration::from_secs(30), conn.read_exact(&mut body[first..]))
        .await
        .expect("body within 30 s")
        .expect("the whole body on the same connection");
    Bytes::from(body)
}

fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>().into()
}

#[tokio::test]
async fn a_reload_changes_routes_limits_and_cors_without_closing_a_connection_or_dropping_the_cache() {
    let origin = TestOrigin::start().await;
    let big = pattern(2 << 20);
    // About a second to send: the reload happens while it streams.
    origin.set(
        "/a/big.bin",
        Script::ok(big.clone()).throttle(64 << 10, Duration::from_millis(30)),
    );
    origin.set("/a/kept.ts", Script::ok("kept"));
    origin.set("/b/new.ts", Script::ok("new route"));
    let file = ConfigFile::new("routes");
    let first = config(
        "cors_origins = [\"https://one.example\"]\nmax_connections_per_ip = 100",
        "[cache]\nmemory = \"64MiB\"\nmax_object = \"8MiB\"\n[[routes]]\nprefix = \"/a\"\nurl = \"{origin}/a\"\n",
    );
    let edge = edge_from(&file, &first, &origin).await;
    let c = client();
    assert_eq!(get(&c, &url(&edge, "/a/kept.ts")).await.text(), "kept");
    assert_eq!(get(&c, &url(&edge, "/b/new.ts")).await.status, 421);
    let kept_url = url(&edge, "/a/kept.ts");
    let cors = |origin_header: &'static str| {
        let kept_url = kept_url.clone();
        async move {
            send(&client(), "GET", &kept_url, &[("origin", origin_header)])
                .await
                .header("access-control-allow-origin")
                .to_owned()
        }
    };
    assert_eq!(cors("https://one.example").await, "https://one.example");
    assert_eq!(cors("https://two.example").await, "");

    // Without the token, nothing is reloaded.
    let second = config(
        "cors_origins = [\"https://two.example\"]\nmax_connections_per_ip = 100",
        "[cache]\nmemory = \"32MiB\"\nmax_object = \"8MiB\"\n[[routes]]\nprefix = \"/a\"\nurl = \"{origin}/a\"\n[[routes]]\nprefix = \"/b\"\nurl = \"{origin}/b\"\n",
    )
    .replace("{origin}", &origin.url());
    file.write(&second);
    assert_eq!(post_reload(&edge, None).await.0, 401);
    assert_eq!(post_reload(&edge, Some("wrong")).await.0, 401);
    assert_eq!(get(&c, &url(&edge, "/b/new.ts")).await.status, 421);

    // A client streams a large object through the reload, on one connection.
    let mut conn = tokio::net::TcpStream::connect(edge.addrs.listen).await.unwrap();
    let mut answer = serde_json::Value::Null;
    let got = get_on(&mut conn, "/a/big.bin", async {
        let (status, body) = post_reload(&edge, Some(TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        answer = body;
    })
    .await;
    assert!(got == big, "the object streamed through the reload is not byte-exact");
    assert!(origin.hits("/a/big.bin") == 1);
    let changed: Vec<&str> = answer["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(changed.contains(&"routes[1].url"), "{answer}");
    assert!(changed.contains(&"server.cors_origins[0]"), "{answer}");
    assert!(!changed.contains(&"cache.memory"), "{answer}");
    assert_eq!(
        answer["restart_required"],
        serde_json::json!(["cache.memory"]),
        "{answer}"
    );
    // The same connection serves the next request.
    let again = get_on(&mut conn, "/a/kept.ts", async {}).await;
    assert_eq!(again, "kept");

    // The new route answers, the cache is as it was, CORS follows the new list.
    assert_eq!(get(&c, &url(&edge, "/b/new.ts")).await.text(), "new route");
    assert_eq!(cache_status(&c, &url(&edge, "/a/kept.ts")).await, "outpost; hit");
    assert_eq!(origin.hits("/a/kept.ts"), 1);
    assert_eq!(cors("https://two.example").await, "https://two.example");
    assert_eq!(cors("https://one.example").await, "");
    let status = status_json(&edge).await;
    assert_eq!(status["last_reload"]["ok"], true, "{status}");
    assert_eq!(
        status["cache_memory"],
        64 << 20,
        "the budget in force is the one the edge started with"
    );

    // A bad config is refused: the old one stays, and the error is shown.
    file.write(&second.replace("max_connections_per_ip = 100", "max_connections_per_ip = \"many\""));
    let (status, body) = post_reload(&edge, Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("server.max_connections_per_ip"), "{error}");
    assert!(error.contains(&file.path().display().to_string()), "{error}");
    assert_eq!(get(&c, &url(&edge, "/b/new.ts")).await.text(), "new route");
    assert_eq!(cache_status(&c, &url(&edge, "/a/kept.ts")).await, "outpost; hit");
    let status = status_json(&edge).await;
    assert_eq!(status["last_reload"]["ok"], false, "{status}");
    assert_eq!(status["last_reload"]["error"], error);
    let metrics = get(&c, &admin_url(&edge, "/metrics")).await.text();
    assert!(metrics.contains("outpost_reloads_total{result=\"ok\"} 1"), "{metrics}");
    assert!(
        metrics.contains("outpost_reloads_total{result=\"refused\"} 1"),
        "{metrics}"
    );

    // A lowered per-address limit applies to new connections.
    file.write(&second.replace("max_connections_per_ip = 100", "max_connections_per_ip = 1"));
    assert_eq!(post_reload(&edge, Some(TOKEN)).await.0, 200);
    let mut refused = tokio::net::TcpStream::connect(edge.addrs.listen).await.unwrap();
    refused
        .write_all(b"GET /a/kept.ts HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .ok();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), refused.read(&mut buf))
        .await
        .expect("the refused connection is closed within 10 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "a second connection from 127.0.0.1 was served"
    );
    // The connection open before the change still works.
    assert_eq!(get_on(&mut conn, "/a/kept.ts", async {}).await, "kept");
    edge.shutdown().await;
}

#[tokio::test]
async fn a_reload_serves_a_renewed_certificate_to_new_handshakes() {
    let origin = TestOrigin::start().await;
    origin.set("/t.ts", Script::ok("over tls"));
    let old = TestCert::new("reload-old");
    let renewed = TestCert::new("reload-new");
    let file = ConfigFile::new("tls");
    // The files the edge reads, written over on renewal as certbot does.
    let (cert_path, key_path) = (file.0.join("cert.pem"), file.0.join("key.pem"));
    std::fs::write(&cert_path, &old.cert_pem).unwrap();
    std::fs::write(&key_path, &old.key_pem).unwrap();
    let tls = format!(
        "tls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        cert_path.display(),
        key_path.display()
    );
    let edge = edge_from(&file, &config(&tls, "[[routes]]\nurl = \"{origin}\"\n"), &origin).await;
    let tls_url = format!("https://127.0.0.1:{}/t.ts", edge.addrs.tls_listen.unwrap().port());
    let fetch = |c: &Client, url: String| {
        let c = c.clone();
        async move {
            let resp = c
                .request(http::Request::get(url).body(http_body_util::Empty::new()).unwrap())
                .await
                .map_err(|e| format!("{e:?}"))?;
            use http_body_util::BodyExt;
            Ok::<_, String>(resp.into_body().collect().await.unwrap().to_bytes())
        }
    };
    let trusts_old = old.client(true);
    let trusts_new = renewed.client(true);
    assert_eq!(fetch(&trusts_old, tls_url.clone()).await.unwrap(), "over tls");
    assert!(fetch(&trusts_new, tls_url.clone()).await.is_err());

    // A broken certificate is refused, and the old one is still served.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    let (status, body) = post_reload(&edge, Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("server.tls_cert"), "{body}");
    assert_eq!(fetch(&old.client(true), tls_url.clone()).await.unwrap(), "over tls");

    std::fs::write(&cert_path, &renewed.cert_pem).unwrap();
    std::fs::write(&key_path, &renewed.key_pem).unwrap();
    let (status, body) = post_reload(&edge, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    // New handshakes get the renewed certificate; the connection the old
    // client holds (h2, kept alive) goes on.
    assert_eq!(fetch(&renewed.client(true), tls_url.clone()).await.unwrap(), "over tls");
    assert!(fetch(&old.client(true), tls_url.clone()).await.is_err());
    assert_eq!(fetch(&trusts_old, tls_url.clone()).await.unwrap(), "over tls");
    edge.shutdown().await;
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<Bytes>,
>;

#[tokio::test]
async fn a_reload_changes_the_fleets_members() {
    let origin = TestOrigin::start().await;
    let ports = free_ports(2);
    let me = format!("http://127.0.0.1:{}", ports[0]);
    let other = format!("http://127.0.0.1:{}", ports[1]);
    let fleet = |peers: &str| {
        format!(
            "[[routes]]\nurl = \"{{origin}}\"\n[cluster]\nself = \"{me}\"\nsecret = \"a-fleet-secret-of-some-length\"\npeers = [{peers}]\n"
        )
    };
    let file = ConfigFile::new("fleet");
    let text = config("", &fleet(&format!("\"{me}\"")));
    let edge = edge_from(&file, &text, &origin).await;
    let members = |status: &serde_json::Value| status["cluster"]["members"].as_array().map_or(0, Vec::len);
    assert_eq!(members(&status_json(&edge).await), 1);
    file.write(&config("", &fleet(&format!("\"{me}\", \"{other}\""))).replace("{origin}", &origin.url()));
    let (status, body) = post_reload(&edge, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], serde_json::json!(["cluster.peers[1]"]), "{body}");
    assert_eq!(members(&status_json(&edge).await), 2);
    edge.shutdown().await;
}

#[test]
fn sighup_reloads_the_binarys_config() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = rt.block_on(TestOrigin::start());
    origin.set("/a/x.ts", Script::ok("route a"));
    origin.set("/b/x.ts", Script::ok("route b"));
    let route = |prefix: &str| {
        format!(
            "[[routes]]\nprefix = \"/{prefix}\"\nurl = \"{}/{prefix}\"\n",
            origin.url()
        )
    };
    let edge = Binary::start(&route("a"));
    let c = client();
    let at = |path: &str| format!("http://{}{path}", edge.listen);
    assert_eq!(rt.block_on(get(&c, &at("/a/x.ts"))).text(), "route a");
    assert_eq!(rt.block_on(get(&c, &at("/b/x.ts"))).status, 421);
    std::fs::write(edge.config_file(), format!("{}{}", route("a"), route("b"))).unwrap();
    edge.signal("HUP");
    // The reload happens on the edge's own time: poll, bounded.
    let mut answered = None;
    for _ in 0..100 {
        let got = rt.block_on(get(&c, &at("/b/x.ts")));
        if got.status == 200 {
            answered = Some(got.text());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        answered.as_deref(),
        Some("route b"),
        "the new route never answered after SIGHUP"
    );
    assert_eq!(rt.block_on(get(&c, &at("/a/x.ts"))).text(), "route a");
    // A config that does not parse is refused; the routes stay.
    std::fs::write(edge.config_file(), "[[routes]\n").unwrap();
    edge.signal("HUP");
    let mut refused = false;
    for _ in 0..100 {
        let status: serde_json::Value = serde_json::from_slice(
            rt.block_on(get(&c, &format!("http://{}/status.json", edge.admin)))
                .bytes(),
        )
        .unwrap();
        if status["last_reload"]["ok"] == false {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused, "the broken config was not reported as refused");
    assert_eq!(rt.block_on(get(&c, &at("/b/x.ts"))).text(), "route b");
    drop(edge);
}
