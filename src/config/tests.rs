use super::*;

fn err(text: &str) -> ConfigError {
    Config::from_toml(text).expect_err("config should be refused")
}

#[test]
fn defaults_are_valid() {
    let c = Config::from_toml("").expect("embedded defaults load");
    assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.cache.memory, 1 << 30);
    assert_eq!(c.cache.max_object, 256 << 20);
    assert_eq!(c.server.header_timeout, Duration::from_secs(10));
    assert_eq!(c.server.cors_origins, vec!["*".to_string()]);
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].origin.authority.as_str(), "127.0.0.1:9000");
    assert!(c.admin.token.is_none());
    assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.send_timeout, Duration::from_secs(60));
    assert_eq!(c.server.max_connections_per_ip, 1000);
    assert!(c.server.trusted_proxies.is_empty());
    // A quarter of the budget for fills, the rest for the store.
    assert_eq!(c.cache.fill_memory(), 256 << 20);
    assert_eq!(c.cache.store_memory(), 768 << 20);
}

#[test]
fn trusted_proxies_are_cidrs_or_addresses() {
    let c = Config::from_toml("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\", \"::1\"]\n").unwrap();
    let nets: Vec<String> = c.server.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.1/32", "::1/128"]);
}

#[test]
fn fills_get_at_least_max_object() {
    let c = Config::from_toml("[cache]\nmemory = \"64MiB\"\nmax_object = \"32MiB\"\n").unwrap();
    assert_eq!(c.cache.fill_memory(), 32 << 20);
    assert_eq!(c.cache.store_memory(), 32 << 20);
}

#[test]
fn unknown_keys_are_named() {
    let e = err("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n");
    assert_eq!(e.key, "server.lisen");
    let e = err("[cache]\nmemroy = \"1GiB\"\n");
    assert_eq!(e.key, "cache.memroy");
    let e = err("[[routes]]\nurl = \"http://127.0.0.1:1\"\nhots = \"a\"\n");
    assert!(e.key.ends_with("hots"), "{e}");
}

#[test]
fn bad_values_are_named() {
    let cases = [
        ("[server]\nheader_timeout = \"soon\"", "server.header_timeout"),
        ("[server]\nlisten = \"nowhere\"", "server.listen"),
        ("[cache]\nmemory = \"lots\"", "cache.memory"),
        ("[cache]\nmemory = \"1MiB\"\nmax_object = \"2MiB\"", "cache.max_object"),
        (
            "[cache]\nmemory = \"1MiB\"\nmax_object = \"600KiB\"",
            "cache.max_object",
        ),
        ("[server]\nidle_timeout = \"0s\"", "server.idle_timeout"),
        ("[server]\nsend_timeout = \"0s\"", "server.send_timeout"),
        ("[server]\nmax_connections_per_ip = 0", "server.max_connections_per_ip"),
        ("[server]\nsend_buffer = \"1KiB\"", "server.send_buffer"),
        ("[server]\nsend_buffer = \"1GiB\"", "server.send_buffer"),
        (
            "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]",
            "server.trusted_proxies",
        ),
        ("[server]\ntrusted_proxies = [\"lb.example\"]", "server.trusted_proxies"),
        (
            "[[routes]]\nurl = \"http://a\"\nstrip_headers = [\"bad header\"]",
            "routes[0].strip_headers",
        ),
        ("[[routes]]\nurl = \"ftp://x\"", "routes[0].url"),
        ("[[routes]]\nurl = \"http://a\"\nprefix = \"live\"", "routes[0].prefix"),
        (
            "[[routes]]\nurl = \"http://a\"\nbackups = [\"nope\"]",
            "routes[0].backups",
        ),
        ("[server]\ntls_listen = \"127.0.0.1:0\"", "server.tls_cert"),
        ("[cluster]\npeers = [\"http://127.0.0.1:1\"]", "cluster.secret"),
        ("[cluster]\ndns = \"peers\"\nsecret = \"s\"", "cluster.dns"),
        (
            "[cluster]\nself = \"http://10.0.0.1:8080\"\npeers = [\"http://10.0.0.1:8080\"]\nsecret = \"short\"",
            "cluster.secret",
        ),
        (
            "[cluster]\npeers = [\"http://10.0.0.1:8080\"]\nsecret = \"0123456789abcdef\"",
            "cluster.self",
        ),
        (
            "[cluster]\nself = \"http://10.0.0.9:8080\"\npeers = [\"http://10.0.0.1:8080\"]\nsecret = \"0123456789abcdef\"",
            "cluster.self",
        ),
        (
            "[cluster]\nself = \"http://10.0.0.1:8080\"\npeers = [\"http://10.0.0.1:8080\"]\ndns = \"p:8080\"\nsecret = \"0123456789abcdef\"",
            "cluster.dns",
        ),
        ("[cluster]\ndns_interval = \"0s\"", "cluster.dns_interval"),
        (
            "[cluster]\nself = \"http://10.0.0.1:8080\"\npeers = [\"http://10.0.0.1:8080/edge\"]\nsecret = \"0123456789abcdef\"",
            "cluster.peers",
        ),
        ("routes = []", "routes"),
        (
            "[[routes]]\nurl = \"http://a\"\n[routes.signing]\nkeys = []",
            "routes[0].signing.keys",
        ),
        (
            "[[routes]]\nurl = \"http://a\"\n[routes.signing]\nkeys = [\"0123456789abcdef\", \"short\"]",
            "routes[0].signing.keys[1]",
        ),
        (
            "[[routes]]\nurl = \"http://a\"\n[routes.signing]\nkeys = [\"0123456789abcdef\"]\nparam = \"a b\"",
            "routes[0].signing.param",
        ),
    ];
    for (text, key) in cases {
        let e = err(text);
        assert_eq!(e.key, key, "for {text:?}: {e}");
    }
}

#[test]
fn routes_parse_into_parts() {
    let c = Config::from_toml(
        "[[routes]]\nhost = \"Live.Example.COM\"\nprefix = \"/live/\"\nurl = \"https://cdn.example.com/base/\"\ndownload_timeout = \"2s\"\n",
    )
    .unwrap();
    let r = &c.routes[0];
    assert_eq!(r.host.as_deref(), Some("live.example.com"));
    assert_eq!(r.origin.scheme, Scheme::HTTPS);
    assert_eq!(r.origin.base_path, "/base");
    assert_eq!(r.download_timeout, Duration::from_secs(2));
}

#[test]
fn check_output_masks_secrets() {
    let c = Config::from_toml(
        "[admin]\ntoken = \"hunter2\"\n[cluster]\nsecret = \"s3cret\"\n[[routes]]\nurl = \"http://a\"\n[routes.signing]\nkeys = [\"signing-key-0123456789\"]\n",
    )
    .unwrap();
    let text = c.to_masked_toml();
    assert!(
        !text.contains("hunter2") && !text.contains("s3cret") && !text.contains("signing-key"),
        "{text}"
    );
    assert!(text.contains("********"));
    // The printed config is itself a valid config.
    Config::from_toml(&text.replace("********", "x-long-enough-for-a-key")).expect("check output reloads");
}

#[test]
fn the_shipped_config_documents_every_key() {
    let text = include_str!("../../conf/outpost.toml");
    let raw = RawConfig {
        routes: vec![toml::from_str("url = \"http://127.0.0.1:9000\"").unwrap()],
        ..Default::default()
    };
    let value = toml::Value::try_from(&raw).unwrap();
    for (section, table) in value.as_table().unwrap() {
        let table = match table {
            toml::Value::Array(routes) => routes[0].as_table().unwrap(),
            other => other.as_table().unwrap(),
        };
        for key in table.keys() {
            let documented = text.lines().any(|line| {
                let line = line.trim_start_matches('#').trim_start();
                line.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            assert!(documented, "conf/outpost.toml does not document {section}.{key}");
        }
    }
}

#[test]
fn a_fleet_config_loads() {
    let c = Config::from_toml(
        "[cluster]\nself = \"http://10.0.0.2:8080\"\npeers = [\"http://10.0.0.1:8080\", \"http://10.0.0.2:8080\"]\nsecret = \"0123456789abcdef\"\n",
    )
    .unwrap();
    assert_eq!(c.cluster.peers.len(), 2);
    assert_eq!(c.cluster.dns_interval, Duration::from_secs(5));
    assert!(c.cluster.keep_copies);
}

#[test]
fn a_slice_is_between_64_kib_and_max_object_and_defaults_follow_max_object() {
    let c = Config::from_toml("").unwrap().cache;
    assert_eq!((c.slice_above(), c.slice_size()), (256 << 20, 16 << 20));
    let c = Config::from_toml("[cache]\nslice = \"1MiB\"").unwrap().cache;
    assert_eq!((c.slice_above(), c.slice_size()), (1 << 20, 1 << 20));
    let c = Config::from_toml("[cache]\nmemory = \"16MiB\"\nmax_object = \"4MiB\"")
        .unwrap()
        .cache;
    assert_eq!(c.slice_size(), 4 << 20);
    for bad in ["[cache]\nslice = \"1KiB\"", "[cache]\nslice = \"512MiB\""] {
        let e = Config::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains("cache.slice"), "{e}");
    }
}
