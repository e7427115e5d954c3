//! Keeping secrets out of error messages.
//!
//! Configuration errors reach places a secret must never go: the log, the
//! terminal, and `weir serve`'s `last_error`, which its API shows without
//! authentication. Two rules hold everywhere a configuration error is
//! formatted:
//!
//! * a TOML syntax error is reported by line, column and key
//!   ([`toml_error`]), never with the source line the `toml` crate quotes
//!   (which may be `"sasl.password" = "..."`);
//! * the value of every secret-looking key ([`is_secret_key`]: passwords,
//!   secrets, tokens, private keys) is replaced by `***` in any message
//!   ([`redact`]), and a message about such a key has every quoted value
//!   replaced ([`redact_at`]).
//!
//! ```
//! use weir_connector::secrets::redact;
//! assert_eq!(redact(r#"bad line: "sasl.password" = "hunter2""#), r#"bad line: "sasl.password" = "***""#);
//! assert_eq!(redact("api.token: use at least 16 characters"), "api.token: use at least 16 characters");
//! ```

/// What replaces a secret.
pub const REDACTED: &str = "***";

/// True for a configuration key whose value is a secret: its last dotted
/// part names a password, a secret, a token, a credential or key material
/// (`sasl.password`, `api.token`, `ssl.key.pem`, `client-secret`), but not
/// where a secret is kept (`password-env`, `password-file`,
/// `ssl.key.location`).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.trim_matches(|c| c == '"' || c == '\'' || c == '`').to_ascii_lowercase();
    let last = key.rsplit('.').next().unwrap_or(&key);
    if ["-env", "_env", "-file", "_file", "location", "-path", "_path"].iter().any(|s| last.ends_with(s)) {
        return false;
    }
    const WORDS: &[&str] = &["password", "passwd", "secret", "token", "credential", "private", "apikey", "api-key", "api_key", "pem"];
    WORDS.iter().any(|w| last.contains(w))
        || last == "key"
        || last.ends_with("-key")
        || last.ends_with("_key")
        || key.contains("key.pem")
        || key.contains("oauthbearer.config")
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// `text` with the value of every secret-looking key replaced by `***`:
/// `KEY = VALUE` (TOML, `KEY=VALUE`, quoted keys) and `"KEY": VALUE`
/// (JSON). A quoted value is replaced up to its closing quote (or the end
/// of the line, for an unterminated one); a bare value up to the next
/// space, comma or bracket.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_key_char) {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let len = from.find(|c| !is_key_char(c)).unwrap_or(from.len());
        let (key, after) = from.split_at(len);
        out.push_str(key);
        rest = after;
        if !is_secret_key(key) {
            continue;
        }
        // The separator: an optional closing quote, spaces, `=` (or `:`
        // right after a quoted key, as in JSON), spaces.
        let quoted = before.ends_with(['"', '\'']) && after.starts_with(['"', '\'']);
        let mut sep = after.strip_prefix(['"', '\'']).unwrap_or(after);
        let lead = sep.len() - sep.trim_start_matches([' ', '\t']).len();
        sep = &sep[lead..];
        let Some(value) = sep.strip_prefix('=').or_else(|| if quoted { sep.strip_prefix(':') } else { None }) else {
            continue;
        };
        let value_at = value.len() - value.trim_start_matches([' ', '\t']).len();
        let value = &value[value_at..];
        let head = after.len() - value.len();
        out.push_str(&after[..head]);
        let (kept, tail) = match value.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let body = &value[1..];
                let end = body.find([q, '\n']).unwrap_or(body.len());
                let close = if body[end..].starts_with(q) { 1 } else { 0 };
                (format!("{q}{REDACTED}{}", if close == 1 { q.to_string() } else { String::new() }), &body[end + close..])
            }
            Some(_) => {
                let end = value.find(|c: char| c.is_whitespace() || matches!(c, ',' | '}' | ']' | ')')).unwrap_or(value.len());
                (REDACTED.to_owned(), &value[end..])
            }
            None => (String::new(), value),
        };
        out.push_str(&kept);
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// A message about the key at `path` (`sources.k.properties.sasl.password`),
/// redacted: when that key is a secret, every quoted value in the message
/// is replaced too (a deserializer may quote the offending value).
pub fn redact_at(path: &str, message: &str) -> String {
    let message = redact(message);
    if !is_secret_key(path) {
        return message;
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message.as_str();
    while let Some(i) = rest.find(['"', '\'']) {
        let q = rest[i..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=i]);
        let body = &rest[i + 1..];
        match body.find(q) {
            Some(end) => {
                out.push_str(REDACTED);
                out.push(q);
                rest = &body[end + 1..];
            }
            None => {
                out.push_str(REDACTED);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A TOML syntax error of `text`, by line, column and key, without the
/// source line the `toml` crate's own message quotes:
/// `line 3, column 20 (key "sasl.password"): invalid basic string`.
pub fn toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = redact(e.message().trim());
    let Some(span) = e.span() else { return message };
    let upto = text.get(..span.start).unwrap_or(text);
    let line_no = upto.matches('\n').count() + 1;
    let line_start = upto.rfind('\n').map_or(0, |i| i + 1);
    let column = upto[line_start..].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && k.len() <= 128 && k.chars().all(|c| is_key_char(c) || matches!(c, '"' | '\'' | ' ')))
        .map(|k| format!(" (key {k})"))
        .unwrap_or_default();
    format!("line {line_no}, column {column}{key}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_recognised() {
        for k in ["password", "sasl.password", "\"sasl.password\"", "api.token", "token", "client-secret", "ssl.key.pem", "ssl.key.password", "private-key", "key", "sasl.oauthbearer.config"] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["password-env", "password-file", "token-env", "ssl.key.location", "brokers", "topic", "keys", "key-by", "listen"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn values_of_secret_keys_are_redacted() {
        let cases = [
            (r#""sasl.password" = "hunter2""#, r#""sasl.password" = "***""#),
            (r#"3 | "sasl.password" = "hunter2"#, r#"3 | "sasl.password" = "***"#),
            ("token=abc123 next", "token=*** next"),
            (r#"{"password":"x y","user":"u"}"#, r#"{"password":"***","user":"u"}"#),
            ("password = 'a', topic = \"t\"", "password = '***', topic = \"t\""),
            ("api.token: use at least 16 characters", "api.token: use at least 16 characters"),
            ("unknown field `token`, expected `listen`", "unknown field `token`, expected `listen`"),
            ("password-env = \"PG_PASS\"", "password-env = \"PG_PASS\""),
        ];
        for (text, want) in cases {
            assert_eq!(redact(text), want, "{text}");
        }
        assert_eq!(redact_at("sources.k.properties.sasl.password", "invalid value: string \"hunter2\", expected x"), "invalid value: string \"***\", expected x");
        assert_eq!(redact_at("sources.k.topic", "invalid value: string \"t\""), "invalid value: string \"t\"");
    }

    /// Issue 16: a syntax error on a secret's line is reported by position
    /// and key, never by echoing the line.
    #[test]
    fn toml_syntax_errors_do_not_echo_the_source_line() {
        let text = "[sources.k.properties]\n\"sasl.password\" = \"hunter2\n";
        let e = toml::from_str::<toml::Table>(text).unwrap_err();
        assert!(e.to_string().contains("hunter2"), "the toml crate quotes the line: {e}");
        let m = toml_error(&e, text);
        assert!(!m.contains("hunter2"), "{m}");
        assert!(m.starts_with("line 2, column "), "{m}");
        assert!(m.contains("(key \"sasl.password\")"), "{m}");
    }
}
