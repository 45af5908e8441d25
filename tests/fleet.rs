//! Sibling edges: a fleet fetches each key from the origin once, streams it
//! through the key's owner, survives losing a member, and trusts only signed
//! sibling requests.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use support::*;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_storm_on_three_edges_reaches_the_origin_once_and_streams_through_the_owner() {
    let origin = TestOrigin::start().await;
    let body = noise(2 << 20, 7);
    let gate = Arc::new(Notify::new());
    origin.set(
        "/storm.ts",
        Script::ok(body.clone())
            .header("etag", "\"storm\"")
            .throttle(64 << 10, Duration::ZERO)
            .gated(Arc::clone(&gate)),
    );
    let (ports, edges) = start_fleet(3, &origin, "").await;
    let owner = owner_of(&ports, &format!("{}/storm.ts", origin.url()));
    let started = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..300 {
        let url = url(&edges[i % 3], "/storm.ts");
        let started = Arc::clone(&started);
        clients.spawn(async move {
            let c = client();
            let response = c
                .request(http::Request::get(&url).body(Default::default()).unwrap())
                .await
                .unwrap();
            let status = response.headers()["cache-status"].to_str().unwrap().to_owned();
            let mut body = response.into_body();
            let mut got = Vec::new();
            while let Some(frame) = body.frame().await {
                let data = frame.expect("the body arrives whole").into_data().unwrap_or_default();
                if got.is_empty() && !data.is_empty() {
                    started.fetch_add(1, Ordering::SeqCst);
                }
                got.extend_from_slice(&data);
            }
            (i % 3, status, got)
        });
    }
    // Every client, on every member, has bytes while the origin still holds
    // back all but its first 64 KiB.
    let deadline = Instant::now() + Duration::from_secs(30);
    while started.load(Ordering::SeqCst) < 300 {
        assert!(
            Instant::now() < deadline,
            "{} of 300 clients got a first byte before the origin sent the rest",
            started.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gate.notify_one();
    let mut through_peer = 0;
    while let Some(done) = clients.join_next().await {
        let (member, status, got) = done.unwrap();
        assert!(got == body[..], "a body from member {member} differs");
        if member != owner {
            assert!(status.contains("detail=peer"), "{status}");
            through_peer += 1;
        } else {
            assert!(!status.contains("detail=peer"), "{status}");
        }
    }
    assert_eq!(through_peer, 200);
    assert_eq!(origin.hits("/storm.ts"), 1, "one origin request for the fleet");
    for (i, edge) in edges.iter().enumerate() {
        let (to_origin, to_peer) = (origin_requests(edge), peer_requests(edge));
        match i == owner {
            true => assert_eq!((to_origin, to_peer), (1, 0), "the owner"),
            false => assert_eq!((to_origin, to_peer), (0, 1), "member {i}"),
        }
    }
    stop_all(edges).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_keys_through_each_of_three_edges_are_each_fetched_from_the_origin_once() {
    let origin = TestOrigin::start().await;
    let (ports, edges) = start_fleet(3, &origin, "").await;
    let c = client();
    let mut owned = [0usize; 3];
    for k in 0..60 {
        let path = format!("/vod/seg-{k}.ts");
        origin.set(&path, Script::ok(payload(20_000 + k, k as u8)));
        let owner = owner_of(&ports, &format!("{}{path}", origin.url()));
        owned[owner] += 1;
        for (i, edge) in edges.iter().enumerate() {
            let got = get(&c, &url(edge, &path)).await;
            assert_eq!(got.status, 200, "{path} via {i}");
            assert!(got.bytes()[..] == payload(20_000 + k, k as u8)[..], "{path} via {i}");
            let status = got.header("cache-status");
            // A member that does not own the key asks the owner once, then keeps its copy.
            if i != owner {
                assert!(status.contains("detail=peer"), "{path} via {i}: {status}");
            }
        }
        for edge in &edges {
            let again = get(&c, &url(edge, &path)).await;
            assert!(again.header("cache-status").starts_with("outpost; hit"), "{path}");
        }
        assert_eq!(origin.hits(&path), 1, "{path}");
    }
    // Every member owns a share.
    assert!(owned.iter().all(|&n| n >= 8), "{owned:?}");
    stop_all(edges).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_watched_through_three_edges_reaches_the_origin_once_per_segment() {
    let live = FfmpegLive::start("fleet", Packaging::Ts);
    live.wait_segments(2).await;
    let origin = TestOrigin::start().await;
    origin.serve_dir("/live/", &live.dir);
    let (_, edges) = start_fleet(3, &origin, "").await;
    let c = client();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        for edge in &edges {
            let playlist = get(&c, &url(edge, "/live/index.m3u8")).await;
            assert_eq!(playlist.status, 200);
            // The newest two segments, as a player near the live edge asks.
            let uris = segment_uris(&playlist.text());
            for uri in uris.iter().rev().take(2) {
                let path = format!("/live/{uri}");
                let got = get(&c, &url(edge, &path)).await;
                assert_eq!(got.status, 200, "{path}");
                seen.insert(path);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(seen.len() >= 4, "segments seen: {seen:?}");
    for path in &seen {
        assert_eq!(origin.hits(path), 1, "{path}: once for the fleet, prefetch included");
    }
    // Playlists went through their owner too: the two others asked it.
    assert!(edges.iter().map(peer_requests).sum::<u64>() > 0);
    stop_all(edges).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_owner_mid_body_leaves_every_other_client_a_whole_body() {
    let origin = TestOrigin::start().await;
    let ports = free_ports(3);
    // The third member is a process of its own, to be killed.
    let path = path_owned_by(&origin, &ports, 2, "/big-");
    let body = noise(4 << 20, 3);
    origin.set(
        &path,
        Script::ok(body.clone())
            .header("etag", "\"big-v1\"")
            .throttle(64 << 10, Duration::from_millis(15))
            .ranges(),
    );
    let toml = |port| member_toml(ROUTE, &origin.url(), port, &ports, "");
    let mut doomed = Binary::start_at(&toml(ports[2]), &format!("127.0.0.1:{}", ports[2]));
    let survivors = [
        start_member(&toml(ports[0]), ports[0]).await,
        start_member(&toml(ports[1]), ports[1]).await,
    ];
    let received = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..20 {
        let url = url(&survivors[i % 2], &path);
        let received = Arc::clone(&received);
        clients.spawn(async move {
            let response = client()
                .request(http::Request::get(&url).body(Default::default()).unwrap())
                .await
                .unwrap();
            let mut body = response.into_body();
            let mut got = Vec::new();
            while let Some(frame) = body.frame().await {
                let data = frame.map_err(|e| e.to_string())?.into_data().unwrap_or_default();
                received.fetch_add(data.len(), Ordering::SeqCst);
                got.extend_from_slice(&data);
            }
            Ok::<_, String>(got)
        });
    }
    // Kill the owner once the clients have some of the body, long before the end.
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::SeqCst) < 20 * (512 << 10) {
        assert!(Instant::now() < deadline, "the clients got too little of the body");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    doomed.kill();
    while let Some(done) = clients.join_next().await {
        let got = done.unwrap().expect("the body goes on after the owner died");
        assert!(got == body[..], "every body is whole and the same");
    }
    // The rest came from the origin once more, as a range: never the whole again per member.
    let requests = origin.requests(&path);
    assert!(requests.len() <= 3, "{} origin requests", requests.len());
    assert!(
        requests[1..].iter().all(|h| h.contains_key("range")),
        "only ranges after the first"
    );
    // The dead member's keys are served by the survivors, with no error.
    let c = client();
    for k in 0..5 {
        let next = path_owned_by(&origin, &ports, 2, &format!("/after-{k}-"));
        origin.set(&next, Script::ok(payload(10_000, k)));
        for edge in &survivors {
            let got = get(&c, &url(edge, &next)).await;
            assert_eq!(got.status, 200, "{next}");
            assert!(got.bytes()[..] == payload(10_000, k)[..]);
        }
    }
    let metrics = get(&c, &admin_url(&survivors[0], "/metrics")).await.text();
    assert!(
        metrics.contains("outpost_cluster_members{state=\"down\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("outpost_cluster_members{state=\"up\"} 2"), "{metrics}");
    stop_all(survivors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_freezes_mid_body_is_marked_down_and_the_body_finished_from_the_origin() {
    let origin = TestOrigin::start().await;
    let ports = free_ports(2);
    let path = path_owned_by(&origin, &ports, 1, "/frozen-");
    let body = noise(2 << 20, 11);
    origin.set(
        &path,
        Script::ok(body.clone())
            .header("etag", "\"f1\"")
            .throttle(64 << 10, Duration::from_millis(20))
            .ranges(),
    );
    let toml = |port| member_toml(ROUTE, &origin.url(), port, &ports, "");
    let frozen = Binary::start_at(&toml(ports[1]), &format!("127.0.0.1:{}", ports[1]));
    let edge = start_member(&toml(ports[0]), ports[0]).await;
    let response = client()
        .request(http::Request::get(url(&edge, &path)).body(Default::default()).unwrap())
        .await
        .unwrap();
    let mut stream = response.into_body();
    let mut got = Vec::new();
    let mut stopped = false;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(20), stream.frame())
        .await
        .expect("bytes keep coming")
    {
        got.extend_from_slice(&frame.expect("no break").into_data().unwrap_or_default());
        if !stopped && got.len() > 256 << 10 {
            // SIGSTOP: the owner's connections stay open and silent.
            frozen.signal("STOP");
            stopped = true;
        }
    }
    assert!(stopped);
    assert!(got == body[..], "whole and the same, after the stall");
    let requests = origin.requests(&path);
    assert_eq!(requests.len(), 2, "the owner's fetch, then the rest as a range");
    assert_eq!(requests[1]["if-range"], "\"f1\"");
    let owner = member_status(&edge, &member(ports[1])).await;
    assert_eq!(owner["up"], false, "{owner}");
    assert!(owner["last_error"].as_str().unwrap().contains("stalled"), "{owner}");
    frozen.signal("CONT");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_went_away_is_probed_until_it_answers_and_then_owns_its_keys_again() {
    let origin = TestOrigin::start().await;
    let (ports, mut edges) = start_fleet(2, &origin, "").await;
    let c = client();
    let gone = edges.pop().unwrap();
    gone.shutdown().await;
    let first = path_owned_by(&origin, &ports, 1, "/a-");
    origin.set(&first, Script::ok(payload(5_000, 1)));
    // The owner refuses connections: the fetch goes on to the origin, no error.
    let got = get(&c, &url(&edges[0], &first)).await;
    assert_eq!(got.status, 200);
    assert!(!got.header("cache-status").contains("detail=peer"));
    let down = member_status(&edges[0], &member(ports[1])).await;
    assert_eq!(down["up"], false, "{down}");
    assert!(down["last_error"].as_str().unwrap().contains("unreachable"), "{down}");
    assert!(down["down_since"].as_u64().is_some());
    assert_eq!(member_status(&edges[0], &member(ports[0])).await["this_edge"], true);
    // Back on the same address: a probe finds it within a few seconds.
    let back = start_member(&member_toml(ROUTE, &origin.url(), ports[1], &ports, ""), ports[1]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let members = members(&edges[0]).await;
        if members.iter().all(|m| m["up"] == true) {
            let shares: f64 = members.iter().map(|m| m["share"].as_f64().unwrap()).sum();
            assert!((shares - 1.0).abs() < 1e-6, "{members:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the member was not probed up: {members:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = path_owned_by(&origin, &ports, 1, "/b-");
    origin.set(&second, Script::ok(payload(5_000, 2)));
    let got = get(&c, &url(&edges[0], &second)).await;
    assert!(
        got.header("cache-status").contains("detail=peer"),
        "the owner is asked again"
    );
    assert_eq!(peer_requests(&back), 0);
    back.shutdown().await;
    stop_all(edges).await;
}

/// Sends `path` to `edge` with extra headers.
async fn send_with(edge: &outpost::RunningEdge, path: &str, headers: &[(&str, &str)]) -> Got {
    send(&client(), "GET", &url(edge, path), headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_sibling_requests_are_ordinary_client_requests() {
    let origin = TestOrigin::start().await;
    let (ports, edges) = start_fleet(2, &origin, "").await;
    let signer = outpost::cluster::Signer::new(SECRET.as_bytes());
    let now = outpost::cluster::unix_secs(std::time::SystemTime::now());
    // Keys the second member owns, asked of the first.
    let paths: Vec<String> = (0..6)
        .map(|i| path_owned_by(&origin, &ports, 1, &format!("/f{i}-")))
        .collect();
    for p in &paths {
        origin.set(p, Script::ok(payload(1_000, 9)));
    }
    let forged = [
        ("no signature", None),
        ("a bad signature", Some(format!("{now}.{}", "ab".repeat(32)))),
        ("a stale signature", Some(signer.sign("GET", &paths[2], now - 120))),
        ("another path's signature", Some(signer.sign("GET", "/other.ts", now))),
    ];
    for (i, (what, signature)) in forged.iter().enumerate() {
        let before = peer_requests(&edges[0]);
        let headers: Vec<(&str, &str)> = signature.iter().map(|s| ("outpost-sibling", s.as_str())).collect();
        let got = send_with(&edges[0], &paths[i], &headers).await;
        assert_eq!(got.status, 200, "{what}");
        // Served as a client's: the first member asks the owner, as for anyone.
        assert_eq!(peer_requests(&edges[0]), before + 1, "{what}");
    }
    // A valid signature: served from this member's cache or the origin, never passed on.
    let before = peer_requests(&edges[0]);
    let valid = signer.sign("GET", &paths[4], now);
    let got = send_with(&edges[0], &paths[4], &[("outpost-sibling", &valid)]).await;
    assert_eq!(got.status, 200);
    assert_eq!(peer_requests(&edges[0]), before, "a sibling's request is not sent on");
    // A request that carries the fleet's CDN-Loop token, replayed: never sent to a sibling.
    let token = signer.token().to_owned();
    let got = send_with(&edges[0], &paths[5], &[("cdn-loop", &format!("other-cdn, {token}"))]).await;
    assert_eq!(got.status, 200);
    assert_eq!(peer_requests(&edges[0]), before);
    assert_eq!(origin.hits(&paths[5]), 1);
    // The fleet's own paths want a signature: unsigned, they are routed like any path.
    let c = client();
    let purge = send(
        &c,
        "POST",
        &url(&edges[1], "/.well-known/outpost/purge?prefix=http"),
        &[],
    )
    .await;
    assert_eq!(purge.status, 405, "{}", purge.text());
    // And a client's GET of them goes to the origin (which has none), never
    // to a sibling, which would answer it as its own.
    for edge in &edges {
        let probe = get(&c, &url(edge, "/.well-known/outpost/sibling")).await;
        assert_eq!(probe.status, 404, "{}", probe.text());
    }
    stop_all(edges).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_disagree_on_the_member_list_never_loop() {
    let origin = TestOrigin::start().await;
    let ports = free_ports(2);
    let (a, b) = (ports[0], ports[1]);
    // The second member knows the first by another name: its ranking differs.
    let other_name = format!("http://localhost:{a}");
    let a_list = [member(a), member(b)];
    let b_list = [other_name.clone(), member(b)];
    let key_of = |p: &str| format!("{}{p}", origin.url());
    let path = (0..10_000)
        .map(|i| format!("/loop-{i}.ts"))
        .find(|p| {
            let k = key_of(p);
            *outpost::rendezvous::owner(&k, &a_list).unwrap() == member(b)
                && *outpost::rendezvous::owner(&k, &b_list).unwrap() == other_name
        })
        .expect("a key each member believes the other owns");
    origin.set(&path, Script::ok(payload(3_000, 4)));
    let toml_a = member_toml(ROUTE, &origin.url(), a, &ports, "");
    let cluster_b = format!(
        "{}\n[cluster]\nself = \"{}\"\npeers = [\"{other_name}\", \"{}\"]\nsecret = \"{SECRET}\"\n",
        ROUTE.replace("{origin}", &origin.url()),
        member(b),
        member(b)
    );
    let edge_a = start_member(&toml_a, a).await;
    let edge_b = start_member(&cluster_b, b).await;
    let got = get(&client(), &url(&edge_a, &path)).await;
    assert_eq!(got.status, 200);
    // A asked B; B, asked by a sibling, went to the origin and asked no one.
    assert_eq!((peer_requests(&edge_a), peer_requests(&edge_b)), (1, 0));
    assert_eq!(origin.hits(&path), 1);
    // And the other way round, on a fresh key.
    let path2 = (0..10_000)
        .map(|i| format!("/loop2-{i}.ts"))
        .find(|p| {
            let k = key_of(p);
            *outpost::rendezvous::owner(&k, &a_list).unwrap() == member(b)
                && *outpost::rendezvous::owner(&k, &b_list).unwrap() == other_name
        })
        .unwrap();
    origin.set(&path2, Script::ok(payload(3_000, 5)));
    let got = get(&client(), &url(&edge_b, &path2)).await;
    assert_eq!(got.status, 200);
    assert_eq!((peer_requests(&edge_a), peer_requests(&edge_b)), (1, 1));
    assert_eq!(origin.hits(&path2), 1);
    edge_a.shutdown().await;
    edge_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_follow_keep_copies_and_private_answers_are_kept_by_no_one() {
    let origin = TestOrigin::start().await;
    let (ports, edges) = start_fleet(2, &origin, "keep_copies = false").await;
    let c = client();
    let path = path_owned_by(&origin, &ports, 1, "/nocopy-");
    origin.set(&path, Script::ok(payload(8_000, 1)));
    for _ in 0..3 {
        let got = get(&c, &url(&edges[0], &path)).await;
        assert!(got.header("cache-status").contains("detail=peer"));
    }
    // No copy on the first member: it asked the owner each time; the origin once.
    assert_eq!(peer_requests(&edges[0]), 3);
    assert_eq!(origin.hits(&path), 1);

    let private = path_owned_by(&origin, &ports, 1, "/private-");
    origin.set(
        &private,
        Script::ok(payload(2_000, 2)).headers(&[("cache-control", "private, max-age=60")]),
    );
    for _ in 0..2 {
        let got = get(&c, &url(&edges[0], &private)).await;
        assert_eq!(got.status, 200);
        assert!(got.bytes()[..] == payload(2_000, 2)[..]);
    }
    assert_eq!(origin.hits(&private), 2, "each request is the client's own");
    let key = format!("{}{private}", origin.url());
    assert!(
        edges.iter().all(|e| e.edge.store().get(key.as_str()).is_none()),
        "kept by no one"
    );
    stop_all(edges).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_member_is_applied_on_every_member() {
    let origin = TestOrigin::start().await;
    let routes = format!("{ROUTE}[admin]\ntoken = \"purge-token\"\n");
    let (ports, edges) = start_fleet_with(3, &routes, &origin, "").await;
    let c = client();
    origin.set("/p/a.ts", Script::ok(payload(4_000, 1)));
    for edge in &edges {
        assert_eq!(get(&c, &url(edge, "/p/a.ts")).await.status, 200);
    }
    assert_eq!(origin.hits("/p/a.ts"), 1);
    let target = url(&edges[0], "/p/a.ts");
    let purge = send(
        &c,
        "POST",
        &admin_url(&edges[0], &format!("/purge?url={target}")),
        &[("authorization", "Bearer purge-token")],
    )
    .await;
    assert_eq!(purge.status, 200);
    let text = purge.text();
    assert!(text.starts_with("purged 1\n"), "{text}");
    for port in &ports[1..] {
        assert!(text.contains(&format!("{}: purged 1", member(*port))), "{text}");
    }
    let key = format!("{}/p/a.ts", origin.url());
    assert!(
        edges.iter().all(|e| e.edge.store().get(key.as_str()).is_none()),
        "gone everywhere"
    );
    for edge in &edges {
        assert_eq!(get(&c, &url(edge, "/p/a.ts")).await.status, 200);
    }
    assert_eq!(origin.hits("/p/a.ts"), 2, "fetched once more, for the whole fleet");
    stop_all(edges).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_can_come_from_dns() {
    let origin = TestOrigin::start().await;
    let ports = free_ports(2);
    let toml = format!(
        "{}\n[cluster]\nself = \"{}\"\ndns = \"localhost:{}\"\ndns_interval = \"200ms\"\nsecret = \"{SECRET}\"\n",
        ROUTE.replace("{origin}", &origin.url()),
        member(ports[0]),
        ports[1]
    );
    let edge = start_member(&toml, ports[0]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let urls: Vec<String> = members(&edge)
            .await
            .iter()
            .map(|m| m["url"].as_str().unwrap().to_owned())
            .collect();
        if urls.contains(&member(ports[1])) {
            assert!(urls.contains(&member(ports[0])), "this edge is a member: {urls:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "localhost was not resolved into members: {urls:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    edge.shutdown().await;
}

#[tokio::test]
async fn a_copy_expires_when_the_owners_does() {
    let origin = TestOrigin::start().await;
    let (ports, edges) = start_fleet(2, &origin, "").await;
    let path = path_owned_by(&origin, &ports, 1, "/aged-");
    origin.set(
        &path,
        Script::ok(payload(3_000, 8)).headers(&[("cache-control", "max-age=10")]),
    );
    let c = client();
    // The owner has held it for 6 s when the other member first asks.
    assert_eq!(get(&c, &url(&edges[1], &path)).await.status, 200);
    advance(Duration::from_secs(6)).await;
    let copy = get(&c, &url(&edges[0], &path)).await;
    assert!(copy.header("cache-status").contains("detail=peer"));
    assert_eq!(copy.header("age"), "6", "the owner's Age comes with the copy");
    advance(Duration::from_secs(2)).await;
    assert_eq!(get(&c, &url(&edges[0], &path)).await.header("age"), "8");
    assert_eq!(origin.hits(&path), 1);
    // 3 s on, both are 11 s old and stale: the copy does not live 10 s of its own.
    advance(Duration::from_secs(3)).await;
    let again = get(&c, &url(&edges[0], &path)).await;
    assert!(
        !again.header("cache-status").starts_with("outpost; hit"),
        "{}",
        again.header("cache-status")
    );
    assert_eq!(origin.hits(&path), 2, "refetched through the owner once both expired");
    stop_all(edges).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_accepts_but_never_answers_is_marked_down_after_the_timeout() {
    let origin = TestOrigin::start().await;
    let ports = free_ports(2);
    let path = path_owned_by(&origin, &ports, 1, "/silent-");
    origin.set(&path, Script::ok(payload(6_000, 3)));
    let toml = |port| member_toml(ROUTE, &origin.url(), port, &ports, "");
    let silent = Binary::start_at(&toml(ports[1]), &format!("127.0.0.1:{}", ports[1]));
    let edge = start_member(&toml(ports[0]), ports[0]).await;
    // Stopped: the kernel still accepts its connections; nothing answers.
    silent.signal("STOP");
    let got = get(&client(), &url(&edge, &path)).await;
    assert_eq!(got.status, 200, "the origin, after the owner's timeout");
    assert!(got.bytes()[..] == payload(6_000, 3)[..]);
    assert_eq!(origin.hits(&path), 1);
    let owner = member_status(&edge, &member(ports[1])).await;
    assert_eq!(owner["up"], false, "{owner}");
    assert!(
        owner["last_error"].as_str().unwrap().contains("no response headers"),
        "{owner}"
    );
    silent.signal("CONT");
    edge.shutdown().await;
}
