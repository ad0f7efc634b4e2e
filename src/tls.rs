//! TLS on baton's one listener (`--tls-cert-file`, `--tls-key-file`, and
//! `--tls-client-ca-file` to require client certificates, as etcd's
//! `--client-cert-auth` does), part of the transport layer next to
//! [`server`](crate::server).
//!
//! Handshakes run in each connection's own task (see
//! [`accept`](crate::server::accept)), off the accept loop and bounded by
//! the header-read timeout, so one slow or silent client cannot hold up
//! everyone else's connections; the connection is then served exactly as
//! without TLS, gRPC by ALPN `h2` and HTTP/1.1 alike. rustls (through
//! tokio-rustls, with the ring provider tonic already uses) does the TLS.

use std::{path::Path, sync::Arc};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: String,
        /// Why not.
        reason: String,
    },
    /// The client CA file holds nothing rustls can verify clients with.
    #[error("cannot use {path} to verify client certificates: {reason}")]
    ClientCa {
        /// The file.
        path: String,
        /// Why not.
        reason: String,
    },
    /// rustls refused the certificate and key (a mismatch, say).
    #[error("cannot use the certificate {cert} with the key {key}: {source}")]
    Config {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// A rustls server configuration from a PEM certificate chain and key,
/// offering HTTP/2 and HTTP/1.1 by ALPN; with `client_ca`, only clients
/// presenting a certificate signed by one of its CAs get in.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs(cert, "a certificate chain")?;
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| pem_error("a private key", key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match client_ca {
        None => WebPkiClientVerifier::no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca, "CA certificates")? {
                roots.add(c).map_err(|e| TlsError::ClientCa {
                    path: ca.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca.display().to_string(),
                    reason: e.to_string(),
                })?
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_client_cert_verifier(verifier)
                .with_single_cert(chain, private)
        })
        .map_err(|source| TlsError::Config {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in the PEM file at `path`; at least one.
fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(what, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(what, path, "no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn pem_error(what: &'static str, path: &Path, reason: String) -> TlsError {
    TlsError::Pem {
        what,
        path: path.display().to_string(),
        reason,
    }
}
