//! A realistic month of a mid-sized hospital, shared by the tests, and helpers to check rendered text.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use mamori_report::{
    BackupRow, ChecklistRow, ChecklistStatus, EndpointRow, EndpointStatus, IsolationRow, IsolationTrigger,
    MonthlyReport, ReportMonth, RuleCount, Severity, SeverityCounts, Totals, DEFAULT_FONT,
};

/// A hostname longer than any column: it must be wrapped and cut, never overflow.
pub const LONG_HOST: &str =
    "radiology-reading-room-workstation-with-an-absurdly-long-name-07.imaging.minato-general-hospital.example";

/// Small deterministic generator, so that the figures vary like real ones but every run is the same.
struct Figures(u64);

impl Figures {
    fn next(&mut self, below: u32) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % u64::from(below)) as u32
    }
}

pub fn host_names(count: usize) -> Vec<String> {
    let departments = [
        "受付PC",
        "診察室",
        "ナースステーション",
        "薬剤部",
        "放射線科-WS",
        "検査部",
        "医事課",
        "rad-ws",
        "lab-pc",
    ];
    let mut names = vec!["受付PC-01".to_owned(), "電子カルテサーバ".to_owned(), LONG_HOST.to_owned()];
    let mut index = 0;
    while names.len() < count {
        let department = departments[index % departments.len()];
        names.push(format!("{department}-{:02}", index / departments.len() + 2));
        index += 1;
    }
    names
}

fn timestamp(day: u32, hour: u32, minute: u32) -> String {
    format!("2026-04-{day:02}T{hour:02}:{minute:02}:00+09:00")
}

pub fn endpoints(count: usize) -> Vec<EndpointRow> {
    let mut figures = Figures(20260401);
    host_names(count)
        .into_iter()
        .enumerate()
        .map(|(index, host)| {
            let status = match index % 11 {
                5 => EndpointStatus::Offline,
                10 => EndpointStatus::Revoked,
                _ => EndpointStatus::Online,
            };
            EndpointRow {
                host,
                agent_id: format!("a7c3{index:04}-5e1b-4d2a-9f00-{:012x}", index * 7919),
                status,
                detections: SeverityCounts {
                    critical: figures.next(3),
                    high: figures.next(6),
                    medium: figures.next(15),
                    low: figures.next(40),
                },
                quarantined: figures.next(9),
                processes_stopped: figures.next(5),
                isolations: u32::from(index % 13 == 4),
                last_scan: (index != 7)
                    .then(|| timestamp(28 + figures.next(3), figures.next(24), figures.next(60))),
                last_seen: Some(if status == EndpointStatus::Online {
                    timestamp(30, 23, figures.next(60))
                } else {
                    format!("2026-03-{:02}T09:15:00+09:00", 10 + figures.next(15))
                }),
            }
        })
        .collect()
}

pub fn backups(endpoints: &[EndpointRow]) -> Vec<BackupRow> {
    let mut figures = Figures(7);
    endpoints
        .iter()
        .step_by(3)
        .enumerate()
        .map(|(index, endpoint)| BackupRow {
            host: endpoint.host.clone(),
            last_backup: (index != 4).then(|| timestamp(30, 2, figures.next(60))),
            backups_ok: 25 + figures.next(6),
            backups_failed: if index % 5 == 2 { 1 + figures.next(3) } else { 0 },
            suspicious_snapshots: u32::from(index == 3),
            last_restore_test: (index % 4 != 1).then(|| timestamp(1 + figures.next(27), 14, 0)),
        })
        .collect()
}

pub fn report(endpoint_count: usize) -> MonthlyReport {
    let endpoints = endpoints(endpoint_count);
    let backups = backups(&endpoints);
    let totals = Totals::from_rows(&endpoints, &backups, 6);
    let previous = Totals {
        endpoints: totals.endpoints.saturating_sub(2),
        detections: SeverityCounts {
            critical: totals.detections.critical + 4,
            high: totals.detections.high.saturating_sub(9),
            medium: totals.detections.medium,
            low: totals.detections.low + 31,
        },
        quarantined: totals.quarantined + 12,
        processes_stopped: totals.processes_stopped.saturating_sub(3),
        isolations: 0,
        backups_ok: totals.backups_ok.saturating_sub(40),
        backups_failed: totals.backups_failed + 2,
        suspicious_snapshots: 0,
        false_positives: 6,
    };
    MonthlyReport {
        institution: "みなと総合病院".to_owned(),
        month: ReportMonth::new(2026, 4).unwrap(),
        generated: "2026-05-01T07:30:00+09:00".to_owned(),
        period_start: "2026-04-01T00:00:00+09:00".to_owned(),
        period_end: "2026-04-30T23:59:59+09:00".to_owned(),
        endpoints,
        totals,
        previous: Some(previous),
        top_rules: vec![
            rule("mamori.ransom.canary", "ランサムウェアのおとりファイルへの書き込み", Severity::Critical, 9),
            rule("yara.Emotet_Loader", "Emotet ローダー（メール添付のマクロ文書）", Severity::High, 27),
            rule("sigma.win_susp_rdp_brute", "RDP へのパスワード総当たり", Severity::High, 41),
            rule("yara.PUA_RemoteAccess", "許可されていない遠隔操作ツール", Severity::Medium, 63),
            rule(
                "sigma.proc_creation_lolbin_certutil",
                "certutil によるファイルのダウンロード",
                Severity::Low,
                112,
            ),
        ],
        isolations: vec![
            IsolationRow {
                host: "受付PC-01".to_owned(),
                started: timestamp(12, 9, 41),
                ended: Some(timestamp(12, 15, 5)),
                reason: "ランサムウェアのおとりファイルへの書き込みを検知".to_owned(),
                trigger: IsolationTrigger::Automatic,
            },
            IsolationRow {
                host: "薬剤部-03".to_owned(),
                started: timestamp(29, 18, 2),
                ended: None,
                reason: "情報システム課の判断（不審な遠隔操作ツール）".to_owned(),
                trigger: IsolationTrigger::Manual,
            },
        ],
        backups,
        checklist: vec![
            checklist(
                "6.2-1",
                "バックアップを取得し、復元手順を確認している",
                "Backups are taken and restores are tested",
                ChecklistStatus::Ok,
                &["日次バックアップ 30 回成功", "4月8日に復元テストを実施"],
                &[],
            ),
            checklist(
                "8.1-3",
                "不正ソフトウェア対策を全端末に導入している",
                "Malware protection on every endpoint",
                ChecklistStatus::Partial,
                &["40 台でエージェント稼働"],
                &["オフラインの端末 3 台の確認"],
            ),
            checklist(
                "13-2",
                "サイバー攻撃を想定した事業継続計画（BCP）を整備している",
                "A business continuity plan for cyber attacks exists",
                ChecklistStatus::Missing,
                &[],
                &["BCP の策定", "訓練の実施"],
            ),
        ],
    }
}

fn rule(rule_id: &str, title: &str, severity: Severity, count: u32) -> RuleCount {
    RuleCount { rule_id: rule_id.to_owned(), title: title.to_owned(), severity, count }
}

fn checklist(
    id: &str,
    title_ja: &str,
    title_en: &str,
    status: ChecklistStatus,
    evidence: &[&str],
    missing: &[&str],
) -> ChecklistRow {
    ChecklistRow {
        id: id.to_owned(),
        title_ja: title_ja.to_owned(),
        title_en: title_en.to_owned(),
        status,
        evidence: evidence.iter().map(|text| text.to_string()).collect(),
        missing: missing.iter().map(|text| text.to_string()).collect(),
    }
}

/// `1,234`: the test's own formatting, independent of the crate's.
pub fn grouped(count: u64) -> String {
    let digits: Vec<char> = count.to_string().chars().collect();
    digits.rchunks(3).rev().map(|group| group.iter().collect::<String>()).collect::<Vec<_>>().join(",")
}

/// The trend text the report should show, computed here from the two figures.
pub fn expected_trend(current: u64, previous: Option<u64>) -> String {
    match previous {
        None => "—".to_owned(),
        Some(previous) if current == previous => "±0".to_owned(),
        Some(0) => format!("▲ +{}", grouped(current)),
        Some(previous) if current > previous => {
            let difference = current - previous;
            format!("▲ +{} (+{:.1}%)", grouped(difference), difference as f64 * 100.0 / previous as f64)
        }
        Some(previous) => {
            let difference = previous - current;
            format!("▼ -{} (-{:.1}%)", grouped(difference), difference as f64 * 100.0 / previous as f64)
        }
    }
}

/// Whitespace removed, so that text wrapped over several lines still matches.
pub fn squash(text: &str) -> String {
    text.chars().filter(|character| !character.is_whitespace()).collect()
}

/// Runs spaces collapsed to one, for comparing a table line's cells.
pub fn single_spaced(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `Some(program)` when it can be run; otherwise prints why the caller skips.
pub fn tool(program: &str) -> Option<&str> {
    match Command::new(program).arg("-v").output() {
        Ok(_) => Some(program),
        Err(_) => {
            eprintln!("SKIPPED: {program} is not installed (Debian package poppler-utils)");
            None
        }
    }
}

pub fn font_available() -> bool {
    if Path::new(DEFAULT_FONT).exists() {
        true
    } else {
        eprintln!("SKIPPED: {DEFAULT_FONT} is missing (Debian package fonts-ipaexfont-gothic)");
        false
    }
}
