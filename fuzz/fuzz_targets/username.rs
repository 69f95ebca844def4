//! Username parsing: never panics; an accepted name parses again to the same normalised form.
#![no_main]

use authd::domain::Username;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(name) = Username::parse(text) {
        let again = Username::parse(name.as_str()).expect("an accepted name parses again");
        assert_eq!(again.normalized(), name.normalized());
    }
});
