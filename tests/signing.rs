//! Signed URLs (`[routes.signing]`): valid, expired, tampered, wrong key,
//! rotated key; the token is neither in the cache key nor sent upstream; a
//! playlist's token covers its segments.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use outpost::config::Source;
use outpost::signing::sign;
use support::*;

const K1: &str = "first-signing-key-0123456789";
const K2: &str = "second-signing-key-0123456789";
const TOKEN: &str = "admin-token";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn toml(keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\naccess_log = \"off\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         [[routes]]\nprefix = \"/open\"\nurl = \"{{origin}}/open\"\n\
         [[routes]]\nurl = \"{{origin}}\"\n[routes.signing]\nkeys = [{}]\n",
        keys.join(", ")
    )
}

/// `path` with `token` in its query, encoded as a player would send it.
fn signed(path: &str, token: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}token={}", token.replace('&', "%26"))
}

async fn refusal(c: &TestClient, edge: &outpost::app::RunningEdge, path: &str) -> (u16, String) {
    let got = get(c, &url(edge, path)).await;
    (got.status.as_u16(), got.text())
}

#[tokio::test]
async fn signed_urls_are_checked_and_the_token_never_reaches_the_origin_or_the_key() {
    let origin = TestOrigin::start().await;
    for path in [
        "/vod/a.ts",
        "/vod/a.ts?v=1",
        "/live/s1/index.m3u8",
        "/live/s1/seg-1.ts",
        "/live/s2/seg-1.ts",
        "/open/free.ts",
    ] {
        origin.set(path, Script::ok(format!("body of {path}")));
    }
    let edge = start_edge(&toml(&[K1]), &origin).await;
    let c = client();
    let exp = now() + 300;

    // Missing, tampered, expired, wrong key: 403 with the reason, counted.
    let (status, body) = refusal(&c, &edge, "/vod/a.ts").await;
    assert_eq!(status, 403);
    assert!(body.contains("no token"), "{body}");
    let good = sign(K1, exp, None, "/vod/a.ts");
    let tampered = good.replacen(&format!("exp={exp}"), &format!("exp={}", exp + 86_400), 1);
    let cases = [
        (sign(K1, exp, None, "/vod/other.ts"), "signature does not match"),
        (tampered, "signature does not match"),
        (sign(K1, now() - 1, None, "/vod/a.ts"), "expired"),
        (sign(K2, exp, None, "/vod/a.ts"), "signature does not match"),
        ("exp=1~hmac=00".to_owned(), "malformed"),
    ];
    for (token, reason) in &cases {
        let (status, body) = refusal(&c, &edge, &signed("/vod/a.ts", token)).await;
        assert_eq!(status, 403, "{token}");
        assert!(body.contains(reason), "{token}: {body}");
    }
    assert_eq!(origin.total(), 0, "a refused request reached the origin");
    let metrics = get(&c, &admin_url(&edge, "/metrics")).await.text();
    assert!(
        metrics.contains(&format!(
            "outpost_refused_total{{reason=\"signature\"}} {}",
            cases.len() + 1
        )),
        "{metrics}"
    );

    // A valid token: served; the origin sees neither the token nor its cookie.
    let got = send(
        &c,
        "GET",
        &url(&edge, &signed("/vod/a.ts?v=1", &good)),
        &[("cookie", "session=abc; token=x")],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "body of /vod/a.ts?v=1");
    assert_eq!(origin.paths(), ["/vod/a.ts?v=1"]);
    let sent = &origin.requests("/vod/a.ts?v=1")[0];
    assert_eq!(sent.get("cookie").unwrap(), "session=abc");

    // Two differently signed URLs of one object: one origin fetch.
    let stream = sign(K1, exp + 60, Some("/live/s1/index.m3u8"), "");
    let exact = sign(K1, exp, None, "/live/s1/seg-1.ts");
    assert_eq!(
        get(&c, &url(&edge, &signed("/live/s1/seg-1.ts", &exact))).await.status,
        200
    );
    let again = get(&c, &url(&edge, &signed("/live/s1/seg-1.ts", &stream))).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("cache-status"), "outpost; hit");
    assert_eq!(origin.hits("/live/s1/seg-1.ts"), 1);

    // The playlist's token covers its folder, not another stream's; in a cookie too.
    assert_eq!(
        get(&c, &url(&edge, &signed("/live/s1/index.m3u8", &stream)))
            .await
            .status,
        200
    );
    let (status, body) = refusal(&c, &edge, &signed("/live/s2/seg-1.ts", &stream)).await;
    assert_eq!(status, 403);
    assert!(body.contains("another path"), "{body}");
    let cookie = format!("token={stream}");
    let by_cookie = send(&c, "GET", &url(&edge, "/live/s1/seg-1.ts"), &[("cookie", &cookie)]).await;
    assert_eq!(by_cookie.status, 200);
    // A route without signing takes no token.
    assert_eq!(get(&c, &url(&edge, "/open/free.ts")).await.status, 200);
    // A browser's preflight carries no token and is answered.
    let preflight = send(
        &c,
        "OPTIONS",
        &url(&edge, "/vod/a.ts"),
        &[
            ("origin", "https://player.example"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert!(preflight.status.is_success(), "{}", preflight.status);
    edge.shutdown().await;
}

#[tokio::test]
async fn keys_rotate_through_a_reload() {
    let origin = TestOrigin::start().await;
    origin.set("/r.ts", Script::ok("rotated"));
    let dir = std::env::temp_dir().join(format!("outpost-signing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("outpost.toml");
    let write = |keys: &[&str]| std::fs::write(&file, toml(keys).replace("{origin}", &origin.url())).unwrap();
    write(&[K1]);
    let edge = start_edge(&toml(&[K1]), &origin).await;
    edge.edge.set_source(Source {
        file: Some(file.clone()),
        ..Source::default()
    });
    let c = client();
    let exp = now() + 300;
    let (old, new) = (sign(K1, exp, None, "/r.ts"), sign(K2, exp, None, "/r.ts"));
    let status = |token: String| {
        let c = c.clone();
        let at = url(&edge, &signed("/r.ts", &token));
        async move { get(&c, &at).await.status.as_u16() }
    };
    let reload = || {
        let c = c.clone();
        let at = admin_url(&edge, "/reload");
        async move {
            let got = send(&c, "POST", &at, &[("authorization", &format!("Bearer {TOKEN}"))]).await;
            assert_eq!(got.status, 200, "{}", got.text());
        }
    };
    assert_eq!((status(old.clone()).await, status(new.clone()).await), (200, 403));
    // The new key signs, the old one still verifies while players hold its tokens.
    write(&[K2, K1]);
    reload().await;
    assert_eq!((status(old.clone()).await, status(new.clone()).await), (200, 200));
    write(&[K2]);
    reload().await;
    assert_eq!((status(old).await, status(new).await), (403, 200));
    assert_eq!(origin.hits("/r.ts"), 1);
    edge.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn outpost_sign_prints_a_url_the_edge_serves() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = rt.block_on(TestOrigin::start());
    origin.set("/live/s1/seg-9.ts", Script::ok("signed by the command"));
    let config = toml(&[K1]).replace("{origin}", &origin.url());
    let edge = Binary::start(&config);
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args([
            "sign",
            "--config",
            edge.config_file().to_str().unwrap(),
            "--path",
            "/live/s1/index.m3u8",
            "--acl",
            "/live/s1/index.m3u8",
            "--ttl",
            "5m",
        ])
        .env_remove("OUTPOST_CONFIG")
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let line = String::from_utf8(printed.stdout).unwrap();
    let query = line.trim().split_once('?').expect("a query").1.to_owned();
    let c = client();
    let got = rt.block_on(get(&c, &format!("http://{}/live/s1/seg-9.ts?{query}", edge.listen)));
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "signed by the command");
    let unsigned = rt.block_on(get(&c, &format!("http://{}/live/s1/seg-9.ts", edge.listen)));
    assert_eq!(unsigned.status, 403);
}

#[tokio::test]
async fn a_fleet_checks_the_token_once_and_fetches_through_the_owner() {
    let origin = TestOrigin::start().await;
    let routes = format!("[[routes]]\nurl = \"{{origin}}\"\n[routes.signing]\nkeys = [\"{K1}\"]\n");
    let (ports, edges) = start_fleet_with(2, &routes, &origin, "").await;
    // A segment the second member owns, asked of the first.
    let path = path_owned_by(&origin, &ports, 1, "/live/s1/seg-");
    origin.set(&path, Script::ok("through the owner"));
    let token = sign(K1, now() + 300, Some("/live/s1/*"), "");
    let c = client();
    let at = |edge: &outpost::app::RunningEdge| format!("http://{}{}", edge.addrs.listen, signed(&path, &token));
    let got = get(&c, &at(&edges[0])).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "through the owner");
    assert!(
        got.header("cache-status").contains("detail=peer"),
        "{}",
        got.header("cache-status")
    );
    assert_eq!(peer_requests(&edges[0]), 1);
    // The owner serves its own clients from the same entry, with a token too.
    assert_eq!(get(&c, &at(&edges[1])).await.header("cache-status"), "outpost; hit");
    assert_eq!(
        get(&c, &format!("http://{}{path}", edges[1].addrs.listen)).await.status,
        403
    );
    assert_eq!(origin.hits(&path), 1);
    stop_all(edges).await;
}
