//! TLS to PostgreSQL (`tls = "require" | "verify-full"`), through OpenSSL.
//!
//! `require` encrypts and refuses a server without TLS but does not check
//! the server's certificate (libpq's `sslmode=require`): it protects
//! against eavesdropping, not against an impostor. `verify-full` checks the
//! chain against `tls-ca-file` (or the system's authorities) and that the
//! certificate names the host in the URL.

use crate::config::TlsMode;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use std::path::Path;

/// OpenSSL's connector for `mode` (with the authorities and the verify
/// mode set), or `None` for `disable`. Shared with the CDC source, which
/// speaks the replication protocol itself. `require` also needs the host
/// name check turned off per connection (see [`connector`]).
pub fn ssl_connector(mode: TlsMode, ca_file: Option<&Path>) -> Result<Option<SslConnector>, String> {
    if mode == TlsMode::Disable {
        return Ok(None);
    }
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| format!("tls: cannot set up OpenSSL: {e}"))?;
    match mode {
        TlsMode::Disable => unreachable!("handled above"),
        TlsMode::Require => builder.set_verify(SslVerifyMode::NONE),
        TlsMode::VerifyFull => {
            builder.set_verify(SslVerifyMode::PEER);
            if let Some(ca) = ca_file {
                builder.set_ca_file(ca).map_err(|e| format!("tls-ca-file: cannot read certificates from {}: {e}", ca.display()))?;
            }
        }
    }
    Ok(Some(builder.build()))
}

/// The connector for `mode`, or `None` for `disable`.
pub fn connector(mode: TlsMode, ca_file: Option<&Path>) -> Result<Option<MakeTlsConnector>, String> {
    let Some(ssl) = ssl_connector(mode, ca_file)? else { return Ok(None) };
    let mut connector = MakeTlsConnector::new(ssl);
    if mode == TlsMode::Require {
        // No certificate check, so no host name check either.
        connector.set_callback(|config, _| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(Some(connector))
}
