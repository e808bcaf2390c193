#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| farsight::fuzzing::config_toml(data));
