//! `mamori hunt`: Sigma rules over EVTX files and text logs, offline, for incident response.
//! The work is `mamori-hunt`'s; this file chooses the rules, draws the progress bar, prints and
//! picks the exit code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mamori_hunt::{write_csv, write_human, write_json, Hunt, HuntOptions, HuntResult, Pipeline, Progress};

#[derive(Args)]
pub struct HuntArgs {
    /// Sigma rule file, or directory searched for .yml/.yaml rules (repeatable). Detection and
    /// correlation rules. Default: mamori's built-in rule pack for hospitals.
    #[arg(long = "rules", value_name = "PATH")]
    rules: Vec<PathBuf>,
    /// Field mappings and logsource settings in addition to the built-in Windows ones
    /// (a pySigma-style processing pipeline in YAML; repeatable, applied in order).
    #[arg(long = "pipeline", value_name = "FILE")]
    pipelines: Vec<PathBuf>,
    /// One JSON object per detection, then a summary object.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV: one row per detection (the summary goes to stderr).
    #[arg(long)]
    csv: bool,
    /// Files read at once (default: one per CPU).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Do not list each rule that could not be loaded (their number is still in the summary).
    #[arg(long)]
    quiet_rules: bool,
    /// EVTX files, text logs, or directories holding them.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// Exit code: 0 nothing detected, 1 detections, 2 an input could not be read (detections in
/// what was read are still printed) — the same meaning as `mamori scan`'s.
pub fn run(args: HuntArgs) -> anyhow::Result<u8> {
    let pipeline = Pipeline::default_windows()
        .with_files(&args.pipelines)
        .map_err(|e| anyhow::anyhow!("pipeline {}", e.0))?;
    // The built-in pack is written to a private directory for the loader, which reads paths.
    let _pack_dir;
    let rules = if args.rules.is_empty() {
        let dir = tempfile::tempdir().context("cannot create a temporary directory for the rule pack")?;
        mamori_rules::write_pack(dir.path()).context("cannot write the built-in rule pack")?;
        let path = dir.path().to_path_buf();
        _pack_dir = dir;
        vec![path]
    } else {
        for path in &args.rules {
            std::fs::metadata(path)
                .with_context(|| format!("cannot read the rules at {}", path.display()))?;
        }
        args.rules.clone()
    };

    let hunt = Hunt::load(&rules, &pipeline);
    let report = hunt.load_report();
    if !args.quiet_rules {
        for problem in &report.problems {
            let rule = problem.rule.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            eprintln!("mamori: rule not loaded: {}{rule}: {}", problem.path.display(), problem.reason);
        }
    }
    if hunt.rules().is_empty() && hunt.correlations_loaded() == 0 {
        anyhow::bail!("no rule could be loaded from {}", display_paths(&rules));
    }

    let bar = progress_bar(args.json || args.csv);
    let options = HuntOptions { threads: args.jobs.unwrap_or(0), ..HuntOptions::default() };
    let result = hunt.run(&args.paths, &options, &|p: Progress| update(&bar, p));
    bar.finish_and_clear();

    print(&args, &result)?;
    let code = exit_code(&result);
    // The process ends right after: freeing thousands of compiled rules and every detection
    // one by one would only delay the exit (a tenth of a second for SigmaHQ).
    std::mem::forget(hunt);
    std::mem::forget(result);
    Ok(code)
}

fn print(args: &HuntArgs, result: &HuntResult) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        write_json(&mut out, result)?;
    } else if args.csv {
        write_csv(&mut out, result)?;
        // CSV stays one table; the people-facing summary goes beside it.
        let mut summary = Vec::new();
        write_human(&mut summary, &HuntResult { detections: Vec::new(), summary: result.summary.clone() })?;
        std::io::stderr().write_all(&summary)?;
    } else {
        write_human(&mut out, result)?;
    }
    out.flush().context("cannot write the output")?;
    Ok(())
}

fn exit_code(result: &HuntResult) -> u8 {
    let summary = &result.summary;
    if !summary.input_problems.is_empty() || summary.record_errors > 0 {
        2
    } else if result.detections.is_empty() {
        0
    } else {
        1
    }
}

/// A bar on stderr when it is a terminal; hidden otherwise (and for machine-readable output
/// on a terminal, where it would interleave with nothing but is still noise in a capture).
fn progress_bar(machine_output: bool) -> ProgressBar {
    if !std::io::stderr().is_terminal() || (machine_output && !std::io::stdout().is_terminal()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(8));
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

fn update(bar: &ProgressBar, progress: Progress) {
    bar.set_length(progress.bytes_total);
    bar.set_position(progress.bytes_done);
    bar.set_message(format!(
        "{}/{} files, {} records",
        progress.files_done, progress.files_total, progress.records_done
    ));
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
