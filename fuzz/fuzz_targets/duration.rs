//! Duration parsing (`90s`, `15m`, `12h`, `30d`, `500ms`): never panics or overflows, and a
//! duration written back in seconds reads the same.
#![no_main]

use authd::config::parse_duration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Some(duration) = parse_duration(text) {
        if duration.subsec_nanos() == 0 {
            assert_eq!(parse_duration(&format!("{}s", duration.as_secs())), Some(duration));
        }
    }
});
