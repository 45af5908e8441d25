//! Replays every input kept for the fuzz targets (`tests/fuzz/<target>/`:
//! the seeds, and each crash a fuzzer found, kept as a regression test)
//! through the same entry points the fuzzer drives. `benches/fuzz/run`
//! fuzzes them further.

use std::path::Path;

use outpost::fuzzing::TARGETS;

#[test]
fn every_kept_fuzz_input_is_read_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "no inputs kept for {name}");
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", input.display());
        }
    }
}

#[test]
fn every_fuzz_target_has_a_corpus_and_a_fuzzer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in TARGETS {
        assert!(root.join("tests/fuzz").join(name).is_dir(), "no corpus for {name}");
        let fuzzer = root.join("benches/fuzz/fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&fuzzer).unwrap_or_else(|e| panic!("{}: {e}", fuzzer.display()));
        let call = format!("outpost::fuzzing::run(\"{name}\", data)");
        assert!(text.contains(&call), "{} does not call {call}", fuzzer.display());
    }
}
