#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| farsight::fuzzing::pairs_file(data));
