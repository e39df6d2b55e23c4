//! The router: severity routes, the sliding per-(rule, host) throttle, the digest at the local
//! hour (+09:00), state export/import, and bounded memory.

use mamori_alert::{
    Alert, Decision, Delivery, DigestSettings, Route, Router, RouterState, Settings, Throttle,
    MAX_DIGEST_GROUPS, MAX_HOSTS_PER_GROUP, MAX_THROTTLE_KEYS,
};
use mamori_proto::Severity;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// 2025-06-01 00:00 in Japan (2025-05-31T15:00:00Z).
const JST_MIDNIGHT: i64 = 1_748_703_600_000;

fn alert(severity: Severity, rule: &str, host: &str) -> Alert {
    Alert {
        id: format!("{rule}@{host}"),
        time_ms: 0,
        severity,
        title: format!("title of {rule}"),
        rule_id: rule.into(),
        host: (!host.is_empty()).then(|| host.to_string()),
        source: "sigma".into(),
        summary: String::new(),
        console_url: None,
    }
}

fn route(min_severity: Severity, email: &[&str], webhooks: &[&str], syslog: &[&str]) -> Route {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Route { min_severity, email: owned(email), webhooks: owned(webhooks), syslog: owned(syslog) }
}

fn settings(max_per_window: u32, window_s: u64) -> Settings {
    Settings {
        routes: vec![
            route(Severity::Low, &[], &[], &["siem"]),
            route(Severity::High, &["it@hospital.example.jp", "boss@hospital.example.jp"], &["teams"], &[]),
            route(
                Severity::Critical,
                &["it@hospital.example.jp", "director@hospital.example.jp"],
                &[],
                &["siem"],
            ),
        ],
        throttle: Throttle { window_s, max_per_window },
        digest: DigestSettings {
            enabled: true,
            hour_local: 8,
            utc_offset_minutes: 540,
            email: vec!["it@hospital.example.jp".into()],
        },
        ..Settings::default()
    }
}

fn sent(decision: &Decision) -> bool {
    !decision.deliveries.is_empty()
}

#[test]
fn each_severity_gets_the_union_of_its_routes() {
    let mut router = Router::new(settings(100, 3600));
    let siem = Delivery::Syslog { name: "siem".into() };
    let teams = Delivery::Webhook { name: "teams".into() };

    let low = router.route(&alert(Severity::Low, "r1", "pc1"), 0);
    assert_eq!(low, Decision { deliveries: vec![siem.clone()], throttled: false });
    let medium = router.route(&alert(Severity::Medium, "r1", "pc1"), 0);
    assert_eq!(medium.deliveries, std::slice::from_ref(&siem));
    let high = router.route(&alert(Severity::High, "r1", "pc1"), 0);
    assert_eq!(
        high.deliveries,
        [
            Delivery::Email { to: vec!["boss@hospital.example.jp".into(), "it@hospital.example.jp".into()] },
            teams.clone(),
            siem.clone()
        ]
    );
    let critical = router.route(&alert(Severity::Critical, "r1", "pc1"), 0);
    assert_eq!(
        critical.deliveries,
        [
            Delivery::Email {
                to: vec![
                    "boss@hospital.example.jp".into(),
                    "director@hospital.example.jp".into(),
                    "it@hospital.example.jp".into()
                ]
            },
            teams,
            siem
        ]
    );

    // Below every route: nothing to send, but not "throttled" either.
    let mut only_high = settings(100, 3600);
    only_high.routes.remove(0);
    let mut router = Router::new(only_high);
    assert_eq!(
        router.route(&alert(Severity::Medium, "r1", "pc1"), 0),
        Decision { deliveries: vec![], throttled: false }
    );
}

#[test]
fn the_throttle_counts_per_rule_and_host_in_a_sliding_window() {
    let mut router = Router::new(settings(2, 60));
    let a = alert(Severity::High, "brute-force", "pc1");
    let t0 = 1_000_000;
    assert!(sent(&router.route(&a, t0)));
    assert!(sent(&router.route(&a, t0 + 10_000)));
    let third = router.route(&a, t0 + 20_000);
    assert_eq!(third, Decision { deliveries: vec![], throttled: true });
    // Another host, another rule: their own budgets.
    assert!(sent(&router.route(&alert(Severity::High, "brute-force", "pc2"), t0 + 20_000)));
    assert!(sent(&router.route(&alert(Severity::High, "other-rule", "pc1"), t0 + 20_000)));
    // Exactly one window after the first: that one no longer counts.
    assert!(router.route(&a, t0 + 59_999).throttled);
    assert!(sent(&router.route(&a, t0 + 60_000)));
    // t0+10s still counts until t0+70s.
    assert!(router.route(&a, t0 + 65_000).throttled);
    assert!(sent(&router.route(&a, t0 + 70_000)));
    // Suppressed alerts did not use up budget: after a quiet window both slots are free again.
    assert!(sent(&router.route(&a, t0 + 200_000)));
    assert!(sent(&router.route(&a, t0 + 200_001)));
    assert!(router.route(&a, t0 + 200_002).throttled);
}

#[test]
fn the_digest_is_due_at_the_local_hour_and_holds_throttled_alerts() {
    let mut router = Router::new(settings(1, 3600));
    let evening = JST_MIDNIGHT - 3 * HOUR; // 2025-05-31 21:00 JST
    let a = alert(Severity::Critical, "ransom", "pc1");
    assert!(sent(&router.route(&a, evening)));
    assert!(router.route(&a, evening + MINUTE).throttled);
    assert!(router.route(&a, evening + 2 * MINUTE).throttled);
    router.route(&alert(Severity::Critical, "ransom", "pc2"), evening + 3 * MINUTE);
    router.route(&alert(Severity::Low, "usb", "pc3"), evening + 4 * MINUTE);
    router.note_for_digest("sigma.info", "情報レベルの検知", Some("srv1"), evening + 5 * MINUTE);

    // Fresh state at 21:00 JST: not due (the first digest waits for 08:00).
    assert!(!router.digest_due(evening + 6 * MINUTE));
    assert_eq!(router.take_digest(evening + 6 * MINUTE), None);
    let seven_59 = JST_MIDNIGHT + 8 * HOUR - MINUTE;
    assert!(!router.digest_due(seven_59));
    let eight = JST_MIDNIGHT + 8 * HOUR; // 2025-05-31T23:00:00Z
    assert!(router.digest_due(eight));

    let digest = router.take_digest(eight + 30_000).expect("due at 08:00 JST");
    assert_eq!(digest.from_ms, evening);
    assert_eq!(digest.to_ms, eight + 30_000);
    assert_eq!(digest.total(), 6);
    assert_eq!(digest.suppressed(), 2);
    let order: Vec<(Option<Severity>, &str)> =
        digest.groups.iter().map(|g| (g.severity, g.rule_id.as_str())).collect();
    assert_eq!(
        order,
        [(Some(Severity::Critical), "ransom"), (Some(Severity::Low), "usb"), (None, "sigma.info")]
    );
    let ransom = &digest.groups[0];
    assert_eq!((ransom.sent, ransom.suppressed, ransom.not_routed), (2, 2, 0));
    let hosts: Vec<(&str, u64)> = ransom.hosts.iter().map(|h| (h.host.as_str(), h.count)).collect();
    assert_eq!(hosts, [("pc1", 3), ("pc2", 1)]);
    assert_eq!((ransom.first_ms, ransom.last_ms), (evening, evening + 3 * MINUTE));
    assert_eq!(digest.groups[2].not_routed, 1);

    let mail = mamori_alert::render::digest_mail(&digest);
    assert_eq!(mail.subject, "[mamori] 日次ダイジェスト 2025-06-01: 警告 6 件 (抑制 2 件)");
    assert!(
        mail.body.contains("対象期間: 2025-05-31 21:00 - 2025-06-01 08:00:30 (UTC+09:00)"),
        "{}",
        mail.body
    );
    assert!(
        mail.body.contains("■ 重大 (4 件)\n・title of ransom [ransom]: 4 件 (通知 2 / 抑制 2 / 対象外 0)"),
        "{}",
        mail.body
    );
    assert!(mail.body.contains("    ホスト: pc1 (3), pc2 (1)"), "{}", mail.body);
    assert!(mail.body.contains("■ 情報 (1 件)\n・情報レベルの検知 [sigma.info]"), "{}", mail.body);

    // Taken: not due again until tomorrow 08:00 JST, and the next one starts empty.
    assert!(!router.digest_due(eight + HOUR));
    assert!(!router.digest_due(eight + 24 * HOUR - 1));
    assert!(router.digest_due(eight + 24 * HOUR));
    let next = router.take_digest(eight + 24 * HOUR).unwrap();
    assert_eq!(next.total(), 0);
    assert_eq!(next.from_ms, eight + 30_000);
    assert!(mamori_alert::render::digest_mail(&next).subject.ends_with("警告はありません"));
}

#[test]
fn a_digest_missed_while_down_is_due_on_return() {
    let mut router = Router::new(settings(5, 3600));
    let eight = JST_MIDNIGHT + 8 * HOUR;
    router.take_digest(eight).unwrap();
    // Down from 07:00 to 15:00 the next day: due at 15:00 all the same.
    assert!(router.digest_due(eight + 24 * HOUR + 7 * HOUR));
    let mut disabled = settings(5, 3600);
    disabled.digest.enabled = false;
    let mut router = Router::new(disabled);
    assert!(!router.digest_due(eight));
    assert_eq!(router.take_digest(eight), None);
}

#[test]
fn state_survives_export_and_import_through_json() {
    let mut router = Router::new(settings(2, 3600));
    let a = alert(Severity::High, "brute-force", "pc1");
    let eight = JST_MIDNIGHT + 8 * HOUR;
    router.take_digest(eight).unwrap();
    let t = eight + HOUR;
    router.route(&a, t);
    router.route(&a, t + 1);
    assert!(router.route(&a, t + 2).throttled);

    let json = serde_json::to_string(&router.export_state()).unwrap();
    let mut restored = Router::new(settings(2, 3600));
    restored.import_state(serde_json::from_str::<RouterState>(&json).unwrap());
    assert_eq!(restored.export_state(), router.export_state());
    // Still throttled after the "restart", and the digest remembers when it last went out.
    assert!(restored.route(&a, t + 3).throttled);
    assert!(sent(&restored.route(&a, t + HOUR + 1)));
    assert!(!restored.digest_due(eight + 2 * HOUR));
    let digest = restored.take_digest(eight + 24 * HOUR).unwrap();
    assert_eq!(digest.from_ms, eight);
    assert_eq!((digest.groups[0].sent, digest.groups[0].suppressed), (3, 2));

    // Under a stricter limit, the imported history is cut to it.
    let mut stricter = Router::new(settings(1, 3600));
    stricter.import_state(serde_json::from_str(&json).unwrap());
    assert!(stricter.route(&a, t + 3).throttled);
    assert!(serde_json::from_str::<RouterState>("{}").is_ok());
}

#[test]
fn state_stays_bounded_under_a_flood() {
    let mut router = Router::new(settings(5, 3600));
    let t = 1_000_000_000;
    // A scan touching many hosts, then many rules.
    let hosts = MAX_THROTTLE_KEYS + 500;
    for i in 0..hosts {
        let d = router.route(&alert(Severity::Critical, "scan", &format!("pc{i:05}")), t + i as i64);
        assert!(sent(&d), "a new host is never throttled");
    }
    assert!(router.throttle_keys() <= MAX_THROTTLE_KEYS);
    let rules = MAX_DIGEST_GROUPS + 100;
    for i in 0..rules {
        router.route(&alert(Severity::Low, &format!("rule-{i}"), "pc1"), t + 20_000);
    }
    assert!(router.throttle_keys() <= MAX_THROTTLE_KEYS);

    let state = router.export_state();
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.len() < 2_000_000, "{} bytes", json.len());

    let mut restored = Router::new(settings(5, 3600));
    restored.import_state(state);
    let digest = restored
        .take_digest(JST_MIDNIGHT + 8 * HOUR + 24 * HOUR * 400)
        .unwrap_or_else(|| panic!("a digest is due on a fresh router during the configured hour"));
    assert_eq!(digest.groups.len(), MAX_DIGEST_GROUPS);
    assert_eq!(digest.total(), (hosts + rules) as u64, "every alert is counted, grouped or not");
    assert_eq!(digest.ungrouped, (rules + 1 - MAX_DIGEST_GROUPS) as u64);
    let scan = &digest.groups[0];
    assert_eq!(scan.rule_id, "scan");
    assert_eq!(scan.hosts.len(), MAX_HOSTS_PER_GROUP);
    assert_eq!(scan.other_hosts, (hosts - MAX_HOSTS_PER_GROUP) as u64);
}

#[test]
fn an_oversized_hand_made_state_is_cut_to_the_bounds_on_import() {
    let entries: Vec<serde_json::Value> = (0..MAX_THROTTLE_KEYS + 50)
        .map(|i| serde_json::json!({"rule_id": "r", "host": format!("h{i}"), "sent_ms": [1, 2, 3, 4, 5, 6, 7, 8, 9], "last_ms": i}))
        .collect();
    let state: RouterState = serde_json::from_value(serde_json::json!({"throttle": entries})).unwrap();
    let mut router = Router::new(settings(3, 3600));
    router.import_state(state);
    assert_eq!(router.throttle_keys(), MAX_THROTTLE_KEYS);
    let exported = serde_json::to_value(router.export_state()).unwrap();
    let throttle = exported["throttle"].as_array().unwrap();
    assert!(throttle.iter().all(|e| e["sent_ms"] == serde_json::json!([7, 8, 9])));
    // The most recently active keys were kept.
    assert!(!throttle.iter().any(|e| e["host"] == "h0"));
    assert!(throttle.iter().any(|e| e["host"] == format!("h{}", MAX_THROTTLE_KEYS + 49)));
}
