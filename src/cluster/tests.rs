use super::*;
use crate::config::Config;

const MEMBERS: [&str; 3] = ["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080"];

fn cluster_as(me: &str) -> Arc<Cluster> {
    let toml = format!(
        "[cluster]\nself = \"{me}\"\npeers = [{}]\nsecret = \"0123456789abcdef\"\n",
        MEMBERS.map(|m| format!("\"{m}\"")).join(", ")
    );
    Cluster::new(&Config::from_toml(&toml).unwrap().cluster).unwrap()
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("http://origin/vod/seg-{i}.m4s")).collect()
}

fn names(members: &[Arc<Member>]) -> Vec<&str> {
    members.iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn no_cluster_section_means_a_single_edge() {
    assert!(Cluster::new(&Config::from_toml("").unwrap().cluster).is_none());
}

#[test]
fn every_member_sends_a_key_to_its_owner_and_the_owner_to_the_origin() {
    let fleet: Vec<Arc<Cluster>> = MEMBERS.iter().map(|m| cluster_as(m)).collect();
    for key in keys(300) {
        let owner = *rendezvous::owner(&key, &MEMBERS).unwrap();
        for cluster in &fleet {
            let siblings = cluster.siblings_for(&key);
            if cluster.me().name == owner {
                assert!(siblings.is_empty(), "the owner of {key} asks no sibling");
            } else {
                assert_eq!(siblings[0].name, owner, "{key} from {}", cluster.me().name);
                // Only members ranked above this one: never one below, which
                // would ask this one back.
                let ranked = rendezvous::ranked(&key, &MEMBERS);
                let mine = ranked.iter().position(|m| **m == cluster.me().name).unwrap();
                assert_eq!(siblings.len(), mine.min(MAX_SIBLINGS), "{key}");
            }
        }
    }
}

#[test]
fn a_member_marked_down_loses_its_keys_to_the_next_until_it_answers() {
    let cluster = cluster_as(MEMBERS[0]);
    let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000);
    let key = keys(500)
        .into_iter()
        .find(|k| {
            rendezvous::ranked(k, &MEMBERS)
                .iter()
                .map(|m| **m)
                .eq([MEMBERS[1], MEMBERS[2], MEMBERS[0]])
        })
        .expect("some key ranks 2, 3, 1");
    assert_eq!(names(&cluster.siblings_for(&key)), [MEMBERS[1], MEMBERS[2]]);
    let second = cluster
        .members()
        .iter()
        .find(|m| m.name == MEMBERS[1])
        .cloned()
        .unwrap();
    cluster.failed(&second, "connection refused", now);
    assert_eq!(names(&cluster.siblings_for(&key)), [MEMBERS[2]]);
    assert_eq!(cluster.counts(), (2, 1));
    assert_eq!(names(&cluster.down()), [MEMBERS[1]]);
    let status = cluster.status();
    let down = status.iter().find(|s| s.url == MEMBERS[1]).unwrap();
    assert!(!down.up && down.down_since == Some(1_796_000_000));
    assert_eq!(down.last_error.as_deref(), Some("connection refused"));
    cluster.answered(&second);
    assert_eq!(names(&cluster.siblings_for(&key)), [MEMBERS[1], MEMBERS[2]]);
    assert_eq!(cluster.counts(), (3, 0));
}

#[test]
fn a_new_member_list_keeps_the_health_of_members_that_stay() {
    let cluster = cluster_as(MEMBERS[0]);
    let third = cluster
        .members()
        .iter()
        .find(|m| m.name == MEMBERS[2])
        .cloned()
        .unwrap();
    cluster.failed(&third, "timed out", SystemTime::UNIX_EPOCH);
    let url = |u: &str| {
        Config::from_toml(&format!("[[routes]]\nurl = \"{u}\"\n"))
            .unwrap()
            .routes[0]
            .origin
            .clone()
    };
    // DNS now answers the second, the third and a fourth; not this member.
    cluster.set_members(vec![url(MEMBERS[1]), url(MEMBERS[2]), url("http://10.0.0.4:8080")]);
    let status = cluster.status();
    let listed: Vec<&str> = status.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(listed, [MEMBERS[0], MEMBERS[1], MEMBERS[2], "http://10.0.0.4:8080"]);
    assert!(status[0].this_edge && status[0].up);
    assert!(!status[2].up, "the third stays down");
    assert!(status[3].up);
}

#[test]
fn shares_split_the_keys_between_members_that_are_up() {
    let cluster = cluster_as(MEMBERS[0]);
    let keys = keys(3000);
    let shares = cluster.shares(keys.iter().map(String::as_str));
    assert_eq!(shares.len(), 3);
    assert!((shares.iter().map(|s| s.1).sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(shares.iter().all(|(_, s)| (0.25..0.42).contains(s)), "{shares:?}");
    let empty = cluster.shares(std::iter::empty());
    assert!(empty.iter().all(|(_, s)| (*s - 1.0 / 3.0).abs() < 1e-9));
}

#[test]
fn only_a_valid_signature_makes_a_sibling() {
    let cluster = cluster_as(MEMBERS[0]);
    let now = SystemTime::now();
    let mut headers = HeaderMap::new();
    assert!(!cluster.is_sibling("GET", "/a.ts", &headers, now), "no signature");
    let sig = cluster.signer().sign("GET", "/a.ts", unix_secs(now));
    headers.insert(SIGNATURE, sig.parse().unwrap());
    assert!(cluster.is_sibling("GET", "/a.ts", &headers, now));
    assert!(
        !cluster.is_sibling("GET", "/b.ts", &headers, now),
        "signed for another path"
    );
    let later = now + std::time::Duration::from_secs(WINDOW_SECS + 5);
    assert!(!cluster.is_sibling("GET", "/a.ts", &headers, later), "stale");
    headers.insert(
        SIGNATURE,
        format!("{}.{}", unix_secs(now), "de".repeat(32)).parse().unwrap(),
    );
    assert!(!cluster.is_sibling("GET", "/a.ts", &headers, now), "forged");
}

#[test]
fn the_fleet_token_in_cdn_loop_marks_a_looped_request() {
    let cluster = cluster_as(MEMBERS[0]);
    let token = cluster.signer().token().to_owned();
    let looped = |values: &[&str]| {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(CDN_LOOP, v.parse().unwrap());
        }
        cluster.looped(&headers)
    };
    assert!(!looped(&[]));
    assert!(!looped(&["cloudflare", "fastly; abc=1"]));
    assert!(looped(&[&token]));
    assert!(looped(&[&format!("cloudflare, {token}; hops=1")]));
    assert!(looped(&["akamai", &token]));
    assert!(!looped(&[&format!("{token}x")]));
    assert!(!looped(&["outpost-000000000000"]), "another fleet's token");
}
