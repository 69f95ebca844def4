//! Email parsing: never panics; an accepted address parses again to the same normalised form
//! (normalisation is idempotent) and stays within the length bound.
#![no_main]

use authd::domain::Email;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(email) = Email::parse(text) {
        assert!(email.as_str().len() <= Email::MAX_LEN);
        let again = Email::parse(email.as_str()).expect("an accepted address parses again");
        assert_eq!(again.normalized(), email.normalized());
        let normal = Email::parse(email.normalized()).expect("the normal form is an address");
        assert_eq!(normal.normalized(), email.normalized());
    }
});
