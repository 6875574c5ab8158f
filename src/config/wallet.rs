//! The CU's wallet (`WALLET`: an Arweave JWK as JSON, or `WALLET_FILE`: its path). Only the
//! address is derived here — `base64url(sha256(n))` of the RSA modulus, as Arweave defines it —
//! for `GET /`; the key itself is not kept.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest;

use super::ConfigError;
use super::values::{Sources, err};

/// Largest wallet file read.
pub const MAX_WALLET_BYTES: u64 = 64 * 1024;

/// The Arweave address of JWK `json`.
pub fn address(json: &str) -> Result<String, String> {
    let jwk: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not a JSON JWK: {e}"))?;
    if jwk.get("kty").and_then(|v| v.as_str()) != Some("RSA") {
        return Err("expected an Arweave RSA JWK (\"kty\": \"RSA\")".into());
    }
    let n = jwk.get("n").and_then(|v| v.as_str()).ok_or("the JWK has no modulus \"n\"")?;
    let modulus = URL_SAFE_NO_PAD.decode(n.trim_end_matches('=')).map_err(|_| "\"n\" is not base64url")?;
    if modulus.len() < 256 {
        return Err(format!("the modulus is {} bytes; Arweave keys have 512", modulus.len()));
    }
    Ok(URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&modulus)))
}

/// The address from `WALLET` or `WALLET_FILE` (one is required, as in the reference).
pub fn from_sources(src: &Sources<'_>) -> Result<String, ConfigError> {
    if let Some((v, from)) = src.get("WALLET") {
        return address(&v).map_err(|why| err("WALLET", "<redacted>", &from, &why));
    }
    if let Some((v, from)) = src.get("WALLET_FILE") {
        let path = std::path::Path::new(v.trim());
        let len = std::fs::metadata(path).map_err(|e| err("WALLET_FILE", &v, &from, &e.to_string()))?.len();
        if len > MAX_WALLET_BYTES {
            return Err(err("WALLET_FILE", &v, &from, &format!("larger than {MAX_WALLET_BYTES} bytes")));
        }
        let json = std::fs::read_to_string(path).map_err(|e| err("WALLET_FILE", &v, &from, &e.to_string()))?;
        return address(&json).map_err(|why| err("WALLET_FILE", &v, &from, &why));
    }
    Err(err("WALLET", "", "not set", "one of WALLET (a JWK as JSON) or WALLET_FILE (its path) is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_is_the_hash_of_the_modulus() {
        let n = URL_SAFE_NO_PAD.encode([0xab; 512]);
        let want = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest([0xab; 512]));
        assert_eq!(address(&format!(r#"{{"kty":"RSA","n":"{n}","e":"AQAB"}}"#)), Ok(want));
        assert!(address(r#"{"kty":"EC"}"#).is_err());
        assert!(address("nope").is_err());
        assert!(address(r#"{"kty":"RSA","n":"AQAB"}"#).is_err());
    }
}
