#![no_main]
libfuzzer_sys::fuzz_target!(init: farsight::fuzzing::image_detect_init(), |data: &[u8]| farsight::fuzzing::image_detect(data));
