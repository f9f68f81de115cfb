//! The SRTP keys a peer connection sends with, for a send path of our own (issue 16): rtc derives
//! them from DTLS and keeps them private, so each connection gets a crypto provider of its own —
//! rtc's, wrapped — that notes them as rtc derives them.
//!
//! SRTP's key derivation (RFC 3711 §4.3, AES-CM PRF, key derivation rate 0) encrypts one block
//! per label with the master key: the master salt, with the label XORed into byte 7, and a
//! counter in the last two bytes. rtc builds the context it sends with (the *local* one) before
//! the one it receives with, so the first master key derived from is the local one; the label of
//! each block is its byte 7 XOR the same byte of the first block (label 0). The block for label
//! 0 encrypts to the session key, the one for label 2 to the session salt. Nothing per packet
//! passes through the wrapper: the ciphers it hands out are rtc's own.

use rtc::crypto::{
    ActiveKeyExchange, AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher, CryptoAlgorithm, CryptoError,
    HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac, PublicKey, RTCCrypto, RTCCryptoProvider, RTCRandom, SignatureScheme,
    SigningKey, StreamCipher, StreamCipherAlgorithm,
};
use std::sync::{Arc, Mutex};

/// SRTP's labels (RFC 3711 §4.3.1) this needs.
const LABEL_SRTP_ENCRYPTION: u8 = 0x00;
const LABEL_SRTP_AUTHENTICATION: u8 = 0x01;
const LABEL_SRTP_SALT: u8 = 0x02;
/// Master keys noted (the local and the remote context's; more would be something else), and
/// blocks kept per master key (a context
/// derives six labels, the authentication keys in two blocks each).
const MAX_MASTERS: usize = 4;
const MAX_BLOCKS: usize = 16;

/// The session keys of one direction of SRTP (RTP only; SRTCP stays with rtc).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// AEAD_AES_128_GCM (RFC 7714) rather than AES_CM_128_HMAC_SHA1 (RFC 3711).
    pub aead: bool,
    /// The session encryption key (16 bytes for AES-128).
    pub key: Vec<u8>,
    /// The session salt: 12 bytes for AEAD_AES_128_GCM, 14 for AES-CM.
    pub salt: Vec<u8>,
    /// AES-CM's HMAC-SHA1 session authentication key (20 bytes); empty for GCM.
    pub auth: Vec<u8>,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SrtpKeys {{ aead: {}, key: {} bytes, salt: {} bytes, auth: {} bytes }}",
            self.aead,
            self.key.len(),
            self.salt.len(),
            self.auth.len()
        )
    }
}

/// The master key and salt one direction's SRTP context derives its session keys from: what
/// a receiver needs to build rtc's own context for the direction it receives (the load
/// harness's viewers open the server's SRTP themselves, `loadtest/src/engine.rs`).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKeys {
    /// AEAD_AES_128_GCM (RFC 7714) rather than AES_CM_128_HMAC_SHA1 (RFC 3711).
    pub aead: bool,
    pub key: Vec<u8>,
    /// 12 bytes for AEAD_AES_128_GCM, 14 for AES-CM.
    pub salt: Vec<u8>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKeys {{ aead: {}, key: {} bytes, salt: {} bytes }}", self.aead, self.key.len(), self.salt.len())
    }
}

/// The blocks derived from one master key: (label, counter, output).
struct Master {
    key: Vec<u8>,
    /// The PRF input of its first block (label 0, counter 0): the master salt, zero-padded.
    salt: [u8; 14],
    /// Byte 7 of its first block, the label-0 one: the master salt's byte 7.
    byte7: u8,
    blocks: Vec<(u8, u16, [u8; 16])>,
}

impl Master {
    fn block(&self, label: u8, counter: u16) -> Option<&[u8; 16]> {
        self.blocks.iter().find(|b| b.0 == label && b.1 == counter).map(|b| &b.2)
    }
}

#[derive(Default)]
struct Noted {
    masters: Vec<Master>,
    /// Which master is the local one, and whether its cipher is an AEAD: known when rtc builds
    /// a cipher from a session key derived from it — the first such is the local context's.
    local: Option<(usize, bool)>,
}

/// One peer connection's crypto provider: rtc's, noting the local SRTP session keys.
pub struct KeyTap {
    inner: Arc<dyn RTCCryptoProvider>,
    crypto: TapCrypto,
}

struct TapCrypto {
    inner: Arc<dyn RTCCryptoProvider>,
    /// A leaf lock: taken for a copy in or out, never while calling anything else.
    noted: Mutex<Noted>,
}

impl KeyTap {
    pub fn new(inner: Arc<dyn RTCCryptoProvider>) -> Arc<Self> {
        Arc::new(Self { crypto: TapCrypto { inner: inner.clone(), noted: Mutex::new(Noted::default()) }, inner })
    }

    /// The keys the connection encrypts its RTP with, once DTLS has completed and rtc has
    /// derived them (AES-128 profiles).
    pub fn local_keys(&self) -> Option<SrtpKeys> {
        let noted = self.crypto.noted.lock().unwrap_or_else(|p| p.into_inner());
        let (at, aead) = noted.local?;
        let m = noted.masters.get(at)?;
        let key = m.block(LABEL_SRTP_ENCRYPTION, 0)?.to_vec();
        let salt = m.block(LABEL_SRTP_SALT, 0)?[..if aead { 12 } else { 14 }].to_vec();
        let auth = if aead {
            Vec::new()
        } else {
            let (a, b) = (m.block(LABEL_SRTP_AUTHENTICATION, 0)?, m.block(LABEL_SRTP_AUTHENTICATION, 1)?);
            a.iter().chain(&b[..4]).copied().collect()
        };
        Some(SrtpKeys { aead, key, salt, auth })
    }

    /// The master key and salt of the direction the connection receives, once DTLS has
    /// completed and rtc has built both contexts: the one master noted besides the local one
    /// (`None` while there is none, or if there were more than one).
    pub fn remote_master(&self) -> Option<MasterKeys> {
        let noted = self.crypto.noted.lock().unwrap_or_else(|p| p.into_inner());
        let (at, aead) = noted.local?;
        let mut others = noted.masters.iter().enumerate().filter(|(i, m)| *i != at && m.block(LABEL_SRTP_ENCRYPTION, 0).is_some());
        let (_, m) = others.next()?;
        if others.next().is_some() {
            return None;
        }
        Some(MasterKeys { aead, key: m.key.clone(), salt: m.salt[..if aead { 12 } else { 14 }].to_vec() })
    }
}

impl RTCCryptoProvider for KeyTap {
    fn name(&self) -> &'static str {
        "onair key tap"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }

    fn random(&self) -> &dyn RTCRandom {
        self.inner.random()
    }
}

impl TapCrypto {
    /// A block encrypted with a 16-byte key, before (`input`) and after (`output`).
    fn note_block(&self, key: &[u8], input: &[u8; 16], output: &[u8]) {
        let Ok(output) = <[u8; 16]>::try_from(output) else { return };
        let counter = u16::from_be_bytes([input[14], input[15]]);
        let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
        let at = match noted.masters.iter().position(|m| m.key == key) {
            Some(at) => at,
            None if noted.masters.len() < MAX_MASTERS && counter == 0 => {
                let mut salt = [0u8; 14];
                salt.copy_from_slice(&input[..14]);
                noted.masters.push(Master { key: key.to_vec(), byte7: input[7], salt, blocks: Vec::new() });
                noted.masters.len() - 1
            }
            None => return,
        };
        let m = &mut noted.masters[at];
        let label = input[7] ^ m.byte7;
        if m.blocks.len() < MAX_BLOCKS && m.block(label, counter).is_none() {
            m.blocks.push((label, counter, output));
        }
    }

    /// rtc builds a cipher with `key`: if it is a session key derived here, its master is the
    /// local one (the first so used).
    fn note_cipher(&self, key: &[u8], aead: bool) {
        let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
        if noted.local.is_some() {
            return;
        }
        let found = noted.masters.iter().position(|m| m.block(LABEL_SRTP_ENCRYPTION, 0).is_some_and(|b| key.len() == 16 && b[..] == *key));
        if let Some(at) = found {
            noted.local = Some((at, aead));
        }
    }
}

impl RTCCrypto for TapCrypto {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.crypto().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.crypto().hash(algorithm, data)
    }

    fn block_encrypt(&self, algorithm: BlockCipherAlgorithm, key: &[u8], block: &mut [u8]) -> Result<(), CryptoError> {
        let input: Option<[u8; 16]> = block.try_into().ok();
        self.inner.crypto().block_encrypt(algorithm, key, block)?;
        if let Some(input) = input
            && algorithm == BlockCipherAlgorithm::Aes128
        {
            self.note_block(key, &input, block);
        }
        Ok(())
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.inner.crypto().new_hmac(algorithm, key)
    }

    fn new_stream_cipher(&self, algorithm: StreamCipherAlgorithm, key: &[u8]) -> Result<Box<dyn StreamCipher>, CryptoError> {
        if algorithm == StreamCipherAlgorithm::Aes128Ctr {
            self.note_cipher(key, false);
        }
        self.inner.crypto().new_stream_cipher(algorithm, key)
    }

    fn new_aead(&self, algorithm: AeadAlgorithm, key: &[u8]) -> Result<Box<dyn AeadCipher>, CryptoError> {
        if algorithm == AeadAlgorithm::Aes128Gcm {
            self.note_cipher(key, true);
        }
        self.inner.crypto().new_aead(algorithm, key)
    }

    fn new_cbc(&self, algorithm: CbcAlgorithm, key: &[u8]) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.inner.crypto().new_cbc(algorithm, key)
    }

    fn start_key_exchange(&self, algorithm: KeyExchangeAlgorithm) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.inner.crypto().start_key_exchange(algorithm)
    }

    fn generate_signing_key(&self, scheme: SignatureScheme) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().generate_signing_key(scheme)
    }

    fn import_signing_key(&self, scheme: SignatureScheme, pkcs8_der: &[u8]) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner.crypto().verify_signature(scheme, public_key, message, signature)
    }
}
