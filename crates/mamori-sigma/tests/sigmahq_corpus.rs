//! Loads the whole SigmaHQ rule repository (real rules, /work/shared/corpora) and checks
//! what loads, what does not and why.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mamori_sigma::{Pipeline, RuleSet};

fn corpus() -> Option<PathBuf> {
    let path =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpora/sigma/sigmahq/rules"));
    if path.is_dir() {
        Some(path)
    } else {
        println!("SKIP: SigmaHQ corpus not found at {}", path.display());
        None
    }
}

/// Counts YAML documents with a `detection` key, independently of the loader.
fn count_detection_documents(dir: &std::path::Path) -> (usize, usize) {
    let (mut files, mut detections) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                files += 1;
                let text = std::fs::read_to_string(&path).unwrap();
                // Top-level `detection:` lines, one per document.
                detections += text.lines().filter(|l| l.starts_with("detection:")).count();
            }
        }
    }
    (files, detections)
}

#[test]
fn loads_at_least_97_percent_of_sigmahq_rules() {
    let Some(dir) = corpus() else { return };
    let (files, detection_docs) = count_detection_documents(&dir);
    let started = std::time::Instant::now();
    let (rules, report) = RuleSet::load(&[dir], &Pipeline::default_windows());
    let elapsed = started.elapsed();
    println!(
        "SigmaHQ: {} files, {} detection documents, {} rules loaded, {} problems, {} correlations, in {:?}",
        report.files,
        detection_docs,
        report.rules_loaded,
        report.problems.len(),
        report.correlations.len(),
        elapsed
    );
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for problem in &report.problems {
        assert!(!problem.reason.trim().is_empty(), "problem without a reason: {problem:?}");
        assert!(problem.path.exists(), "problem without a real path: {problem:?}");
        // Group by the reason without the part naming the exact value.
        let group = problem.reason.split(':').take(2).collect::<Vec<_>>().join(":");
        reasons.entry(group).or_default().push(format!("{} ({:?})", problem.path.display(), problem.rule));
    }
    for (reason, rules) in &reasons {
        println!("  {:4}  {reason}", rules.len());
        for rule in rules.iter().take(3) {
            println!("          e.g. {rule}");
        }
    }
    assert_eq!(report.files, files);
    assert_eq!(rules.len(), report.rules_loaded);
    // Every detection document is either loaded or reported.
    assert_eq!(
        report.rules_loaded + report.problems.iter().filter(|p| p.rule.is_some()).count(),
        detection_docs
    );
    let ratio = report.rules_loaded as f64 / detection_docs as f64;
    println!("loaded ratio: {:.2}%", ratio * 100.0);
    assert!(ratio >= 0.97, "only {:.2}% of detection rules loaded", ratio * 100.0);
    // Every loaded rule knows where it came from and what it is.
    for info in rules.rules() {
        assert!(!info.title.is_empty());
        assert!(info.path.exists());
    }
}

/// Damaged input (real rules cut at arbitrary points, or with bytes swapped) never panics;
/// what loads still evaluates.
#[test]
fn damaged_rules_are_reported_not_fatal() {
    let Some(dir) = corpus() else { return };
    let mut files = Vec::new();
    let mut stack = vec![dir.join("windows/process_creation")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut event = mamori_sigma::Event::new();
    event.insert("mamori.logsource.product".into(), "windows".into());
    event.insert("Channel".into(), "Microsoft-Windows-Sysmon/Operational".into());
    event.insert("EventID".into(), 1.into());
    event.insert("CommandLine".into(), "cmd.exe /c whoami".into());
    let (mut damaged, mut reported) = (0, 0);
    for file in files.iter().take(200) {
        let text = std::fs::read_to_string(file).unwrap();
        let bytes = text.as_bytes();
        for cut in [bytes.len() / 3, bytes.len() / 2, bytes.len() * 4 / 5] {
            let Ok(prefix) = std::str::from_utf8(&bytes[..cut]) else { continue };
            // Cut, and also with the condition's selections renamed away.
            for variant in
                [prefix.to_string(), text.replace("selection", "missing").replace("condition", "cond")]
            {
                damaged += 1;
                let (rules, report) = RuleSet::from_yaml(&variant, &Pipeline::default_windows());
                reported += usize::from(!report.problems.is_empty());
                assert!(report.problems.iter().all(|p| !p.reason.is_empty()));
                let _ = rules.matching(&event);
            }
        }
    }
    println!("{damaged} damaged texts, {reported} reported problems");
    assert!(reported > damaged / 2);
}
