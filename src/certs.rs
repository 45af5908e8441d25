//! The HTTPS listener's certificate: read from `server.tls_cert` and
//! `server.tls_key`, and read again on reload, so that a renewed certificate
//! is served from the next handshake without closing a connection.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// The certificate handshakes get now.
#[derive(Debug)]
pub struct Certs {
    current: ArcSwap<CertifiedKey>,
}

impl Certs {
    /// Reads the certificate chain and key `tls` names; the error names the file.
    pub fn load(tls: &TlsConfig) -> Result<Self, String> {
        Ok(Self {
            current: ArcSwap::from_pointee(read(tls)?),
        })
    }

    /// Reads the files again and serves what they hold from the next
    /// handshake on; on an error the certificate served stays as it was.
    pub fn reload(&self, tls: &TlsConfig) -> Result<(), String> {
        self.current.store(Arc::new(read(tls)?));
        Ok(())
    }

    /// Reads the files without putting what they hold in place: a reload
    /// checks every part of a new config before it changes anything.
    pub fn check(tls: &TlsConfig) -> Result<(), String> {
        read(tls).map(drop)
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The crypto the edge's TLS uses, client and server alike.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(tls: &TlsConfig) -> Result<CertifiedKey, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("server.tls_cert {}: {e}", tls.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls_cert {}: no certificate in the file",
            tls.cert.display()
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| format!("server.tls_key {}: {e}", tls.key.display()))?;
    let key = CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| format!("server.tls_cert and server.tls_key: {e}"))?;
    Ok(key)
}
