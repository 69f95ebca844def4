//! API-key parsing: never panics; whatever it accepts is a key of the documented shape whose
//! checksum is the one authd would write.
#![no_main]

use authd::api_keys::format::{KEY_LEN, KEY_START, PREFIX_LEN, parse, with_checksum};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(prefix) = parse(text) {
        assert_eq!(text.len(), KEY_LEN);
        assert!(text.starts_with(KEY_START));
        assert_eq!(prefix, &text[..PREFIX_LEN]);
        let body = &text[..KEY_LEN - 6];
        assert_eq!(with_checksum(body), text, "the checksum is the one authd writes");
    }
});
