//! The TOML configuration loader: any text is either settings or one clear error, never a panic.
//! Keys ending in `_file` are skipped: they name files to read, which is not parsing.
#![no_main]

use authd::config::Settings;
use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    match name {
        "AUTHD_DATABASE_URL" => Some("postgres://fuzz@127.0.0.1/fuzz".into()),
        "AUTHD_KEY_ENCRYPTION_KEY" => Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into()),
        _ => None,
    }
}

fuzz_target!(|text: &str| {
    if text.contains("_file") {
        return;
    }
    match Settings::from_toml(&env, text) {
        Ok(settings) => assert!(settings.tokens.access_token_ttl.as_secs() >= 10),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
