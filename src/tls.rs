//! TLS: the traffic listener's certificate (reloadable) with its optional client-certificate
//! check, and the TLS client settings of `https://` upstreams. rustls with the ring provider.
//!
//! Guarantees: a certificate is used only when every file parses and the key fits the
//! certificate; a reload builds the new listener settings in full and swaps them whole, so new
//! handshakes use the new certificate while established connections keep theirs; ALPN offers
//! `h2` and `http/1.1`.
//! Refuses: an invalid new certificate, key or client CA file on reload (the old settings stay,
//! the caller logs and counts it); with `require_client_cert`, a handshake without a client
//! certificate issued by a CA of `client_ca_file`; a presented client certificate of any other
//! CA, also when client certificates are optional.

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use crate::config::{ListenerTlsConfig, UpstreamConfig};

/// ALPN protocol ids offered by the listener and to upstreams, preferred first.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("`{key}` = `{}`: cannot read: {e}", path.display()))
}

/// Every certificate of a PEM file; `key` is the config key named in errors.
pub fn load_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path, key)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{key}` = `{}`: not a PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "`{key}` = `{}`: no PEM certificate (`BEGIN CERTIFICATE`) found",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, RSA or SEC1).
pub fn load_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path, key)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "`{key}` = `{}`: no PEM private key (`BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`) found",
            path.display()
        ),
        other => format!("`{key}` = `{}`: not a PEM file: {other}", path.display()),
    })
}

/// A trust store of every certificate of a PEM bundle.
pub fn load_roots(path: &Path, key: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in load_certs(path, key)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!(
                "`{key}` = `{}`: certificate {} is not a usable CA certificate: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(roots)
}

/// Builds the listener's rustls settings from the files named in `[server.tls]`.
pub fn server_config(cfg: &ListenerTlsConfig) -> Result<ServerConfig, String> {
    let certs = load_certs(&cfg.cert_file, "server.tls.cert_file")?;
    let key = load_key(&cfg.key_file, "server.tls.key_file")?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match &cfg.client_ca_file {
        Some(ca) => {
            let roots = load_roots(ca, "server.tls.client_ca_file")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if cfg.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("`server.tls.client_ca_file` = `{}`: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "`server.tls.key_file` = `{}` cannot be used with `server.tls.cert_file` = `{}`: {e}",
            cfg.key_file.display(),
            cfg.cert_file.display()
        )
    })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(config)
}

/// The listener's TLS settings: one snapshot per handshake, swapped whole by a reload.
pub struct ServerTls {
    cfg: ListenerTlsConfig,
    current: ArcSwap<ServerConfig>,
    /// SHA-256 of the files' contents as last loaded or looked at.
    seen: Mutex<[u8; 32]>,
}

impl ServerTls {
    /// Loads the files named in `[server.tls]`; an error names the key and the file.
    pub fn load(cfg: &ListenerTlsConfig) -> Result<ServerTls, String> {
        let seen = files_digest(cfg);
        let config = server_config(cfg)?;
        Ok(ServerTls {
            cfg: cfg.clone(),
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new(seen),
        })
    }

    /// An acceptor with the settings in force now (one per connection).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Rereads the files and swaps the new settings in; on error the old ones stay.
    pub fn reload(&self) -> Result<(), String> {
        let digest = files_digest(&self.cfg);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = digest;
        let config = server_config(&self.cfg)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    /// Reloads when the contents of a file changed since the last load or look; `None` when
    /// nothing changed. A failed reload is not retried until the files change again.
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let digest = files_digest(&self.cfg);
        if *self.seen.lock().unwrap_or_else(|e| e.into_inner()) == digest {
            return None;
        }
        Some(self.reload())
    }

    /// The files, for log lines.
    pub fn cert_file(&self) -> &Path {
        &self.cfg.cert_file
    }
}

/// SHA-256 over the contents of the certificate, key and client CA files (a missing file
/// counts as empty). The files are a few kilobytes: hashing them is cheaper than trusting
/// modification times, which certificate tools do not always change.
fn files_digest(cfg: &ListenerTlsConfig) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in [
        Some(&cfg.cert_file),
        Some(&cfg.key_file),
        cfg.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let bytes = std::fs::read(p).unwrap_or_default();
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(&bytes);
    }
    h.finalize().into()
}

/// The TLS client settings of one upstream: the CAs of `ca_file` (or the built-in webpki
/// roots) and the client certificate of `client_cert_file`/`client_key_file` when set.
pub fn upstream_client_config(name: &str, up: &UpstreamConfig) -> Result<ClientConfig, String> {
    let roots = match &up.ca_file {
        Some(p) => load_roots(p, &format!("upstreams.{name}.ca_file"))?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots);
    // ALPN is left empty: the connector builder sets it (`h2`, `http/1.1`) and refuses a
    // config that already has it.
    let config = match (&up.client_cert_file, &up.client_key_file) {
        (Some(cert), Some(key)) => {
            let cert_key = format!("upstreams.{name}.client_cert_file");
            let key_key = format!("upstreams.{name}.client_key_file");
            let certs = load_certs(cert, &cert_key)?;
            let pk = load_key(key, &key_key)?;
            builder.with_client_auth_cert(certs, pk).map_err(|e| {
                format!(
                    "`{key_key}` = `{}` cannot be used with `{cert_key}` = `{}`: {e}",
                    key.display(),
                    cert.display()
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn missing_certificate_names_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ListenerTlsConfig {
            cert_file: dir.path().join("absent.pem"),
            key_file: dir.path().join("key.pem"),
            client_ca_file: None,
            require_client_cert: false,
        };
        let err = server_config(&cfg).unwrap_err();
        assert!(err.starts_with("`server.tls.cert_file` = `"), "{err}");
        assert!(err.contains("absent.pem"), "{err}");
    }

    #[test]
    fn file_without_pem_sections_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "cert.pem", "not a certificate\n");
        let err = load_certs(&p, "server.tls.cert_file").unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = load_key(&p, "server.tls.key_file").unwrap_err();
        assert!(err.contains("no PEM private key"), "{err}");
        assert!(err.starts_with("`server.tls.key_file`"), "{err}");
    }

    #[test]
    fn digest_changes_with_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ListenerTlsConfig {
            cert_file: write(dir.path(), "c.pem", "a"),
            key_file: write(dir.path(), "k.pem", "b"),
            client_ca_file: None,
            require_client_cert: false,
        };
        let before = files_digest(&cfg);
        assert_eq!(before, files_digest(&cfg));
        write(dir.path(), "k.pem", "c");
        assert_ne!(before, files_digest(&cfg));
    }
}
