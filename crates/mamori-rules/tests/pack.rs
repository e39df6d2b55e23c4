//! The embedded pack is the `rules/` directory, loads without a problem in the Sigma and
//! correlation engines, and `write_pack` manages its directory safely.

use std::path::{Path, PathBuf};

use mamori_rules::{write_pack, DEFAULT_PACK, MARKER};

fn rules_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))
}

fn yml_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_rule_file_is_embedded_with_its_current_text() {
    let embedded: Vec<String> = DEFAULT_PACK.iter().map(|f| f.name.to_string()).collect();
    assert_eq!(embedded, yml_names(&rules_dir()), "add new rule files to DEFAULT_PACK (sorted)");
    for file in DEFAULT_PACK {
        assert_eq!(
            std::fs::read_to_string(rules_dir().join(file.name)).expect("read"),
            file.yaml,
            "{}",
            file.name
        );
    }
}

#[test]
fn the_pack_loads_without_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_pack(dir.path()).expect("write");
    let (rules, report) =
        mamori_sigma::RuleSet::load(&[dir.path().to_path_buf()], &mamori_sigma::Pipeline::default_windows());
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.files, DEFAULT_PACK.len());
    let docs: Vec<(PathBuf, serde_json::Value)> =
        report.correlations.iter().map(|c| (c.origin.clone(), c.doc.clone())).collect();
    let (correlator, problems) = mamori_correlate::Correlator::load(&docs);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(rules.len() + correlator.len(), DEFAULT_PACK.len());
    assert!(correlator.len() >= 5, "the pack is mostly correlations");
}

#[test]
fn writing_replaces_stale_rules_and_keeps_other_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("default");
    write_pack(&pack).expect("first write");
    assert_eq!(yml_names(&pack), yml_names(&rules_dir()));
    assert!(pack.join(MARKER).exists());
    // A rule dropped from the pack in an upgrade, and a local edit: both go.
    std::fs::write(pack.join("old_rule_from_last_release.yml"), "title: old\n").expect("write");
    std::fs::write(pack.join(DEFAULT_PACK[0].name), "title: edited\n").expect("write");
    std::fs::write(pack.join("notes.txt"), "mine").expect("write");
    write_pack(&pack).expect("second write");
    assert_eq!(yml_names(&pack), yml_names(&rules_dir()));
    assert_eq!(std::fs::read_to_string(pack.join(DEFAULT_PACK[0].name)).expect("read"), DEFAULT_PACK[0].yaml);
    assert_eq!(
        std::fs::read_to_string(pack.join("notes.txt")).expect("read"),
        "mine",
        "not a rule: left alone"
    );
}

#[test]
fn a_directory_mamori_did_not_write_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("site_rule.yml"), "title: the site's own\n").expect("write");
    let error = write_pack(dir.path()).expect_err("must refuse");
    assert!(error.to_string().contains("not written by mamori"), "{error}");
    assert!(dir.path().join("site_rule.yml").exists(), "nothing deleted");
}
