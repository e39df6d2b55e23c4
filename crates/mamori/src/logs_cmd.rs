//! `mamori logs`: what the manager receives from firewalls and servers, and what its Sigma
//! rules detect (run where the manager is).

use std::path::Path;

use clap::Subcommand;
use mamori_proto::{self as proto, path};

use crate::manage_cmd::{query_params, runtime, tail_pages, ManagerAccess, TailArgs};

#[derive(Subcommand)]
pub enum LogsAction {
    /// Syslog receivers and their counters (received, stored, malformed, dropped), and the
    /// rules loaded with every rule not used and why.
    Status {
        /// The status as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        manager: ManagerAccess,
    },
    /// The newest received log events, oldest first; with --follow, keep printing new ones.
    Tail {
        /// Only from this sender, e.g. `udp 10.0.0.1`.
        #[arg(long)]
        source: Option<String>,
        /// Only lines containing this text (case-insensitive).
        #[arg(short = 'q', long, value_name = "TEXT")]
        query: Option<String>,
        #[command(flatten)]
        tail: TailArgs,
    },
    /// Sigma detections and correlations, oldest first; with --follow, keep printing new ones.
    Detections {
        /// Only these levels (repeatable), e.g. --level high --level critical.
        #[arg(long)]
        level: Vec<String>,
        /// Only about this host.
        #[arg(long)]
        host: Option<String>,
        /// Only of this rule (id, name or title).
        #[arg(long)]
        rule: Option<String>,
        #[command(flatten)]
        tail: TailArgs,
    },
}

pub fn run(action: LogsAction, data_dir: &Path) -> anyhow::Result<u8> {
    runtime()?.block_on(async move {
        match action {
            LogsAction::Status { json, manager } => {
                let status: serde_json::Value =
                    manager.client(data_dir)?.get(path::ADMIN_LOG_STATUS, &[]).await?;
                if json {
                    println!("{}", serde_json::to_string(&status)?);
                } else {
                    print_status(&status);
                }
            }
            LogsAction::Tail { source, query, tail } => {
                let base = query_params(&[("source", source), ("q", query)]);
                tail_pages::<proto::LogEventPage>(path::ADMIN_LOG_EVENTS, base, &tail, data_dir, |e| {
                    if tail.json {
                        println!("{}", serde_json::to_string(e)?);
                    } else {
                        println!("{}  {:<20}  {}", e.time, e.source, e.data.get());
                    }
                    Ok(())
                })
                .await?;
            }
            LogsAction::Detections { level, host, rule, tail } => {
                let levels = (!level.is_empty()).then(|| level.join(","));
                let base = query_params(&[("level", levels), ("host", host), ("rule", rule)]);
                tail_pages::<proto::LogDetectionPage>(
                    path::ADMIN_LOG_DETECTIONS,
                    base,
                    &tail,
                    data_dir,
                    |d| {
                        if tail.json {
                            println!("{}", serde_json::to_string(d)?);
                        } else {
                            let kind = if d.kind == "correlation" { "[correlation] " } else { "" };
                            let host = d.host.as_deref().unwrap_or("-");
                            println!(
                                "{}  {:<13}  {host:<20}  {kind}{}  ({})",
                                d.time, d.level, d.title, d.source
                            );
                        }
                        Ok(())
                    },
                )
                .await?;
            }
        }
        Ok(0)
    })
}

fn print_status(status: &serde_json::Value) {
    let listen = &status["listen"];
    let mut any = false;
    for proto in ["udp", "tcp", "tls"] {
        if let Some(addr) = listen[proto].as_str() {
            println!("syslog {proto}: {addr}");
            any = true;
        }
    }
    if !any {
        println!("syslog: not received (start the manager with --syslog-udp/--syslog-tcp/--syslog-tls)");
    }
    let stats = &status["stats"];
    let n = |k: &str| stats[k].as_u64().unwrap_or(0);
    println!(
        "received {}, stored {}, malformed {}, framing errors {}, UDP dropped {} (kernel: {}), write errors {}, connections {}",
        n("received"),
        n("stored"),
        n("malformed"),
        n("framing_errors"),
        n("udp_dropped"),
        stats["udp_kernel_drops"].as_u64().map_or("-".to_string(), |d| d.to_string()),
        n("write_errors"),
        n("connections"),
    );
    let rules = &status["rules"];
    println!(
        "rules: {} detection and {} correlation rules from {} files",
        rules["rules_loaded"], rules["correlations_loaded"], rules["files"]
    );
    for problem in rules["problems"].as_array().into_iter().flatten() {
        println!("  not used: {}", problem.as_str().unwrap_or_default());
    }
}
