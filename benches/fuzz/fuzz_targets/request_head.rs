#![no_main]
// See outpost::fuzzing for what this target reads and checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| outpost::fuzzing::run("request_head", data));
