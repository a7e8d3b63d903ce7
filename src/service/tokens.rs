//! API tokens (spec §2.2): short-lived JWTs that stand in for an API key, so that a browser can
//! upload without ever holding the key. `GET /user/apikeys/token` issues one (HS256, signed
//! with a secret kept in the store); `Authorization: Bearer` presents it and gets exactly the
//! rights of the key that issued it. A token dies with its key, with the store's secret
//! (`darkroom admin token rotate-secret`), at its `exp`, and outside the addresses it was bound
//! to. The payload carries what rokka.js decodes: `id`, `exp`, `expt`, `ips`, `rn`.

use super::accounts::Principal;
use crate::error::{Error, Result};
use crate::model::net::parse_net;
use crate::storage::Records;
use ipnet::IpNet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::IpAddr;

/// Lifetime of a token when `expires_in` is not given.
pub const DEFAULT_LIFETIME: i64 = 86_400;
/// Longest lifetime a token may ask for (a year).
pub const MAX_LIFETIME: i64 = 365 * 86_400;
/// Most addresses or networks one token may be bound to.
pub const MAX_IPS: usize = 10;

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub id: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// The lifetime it was issued with; a renewal may not ask for more.
    pub expt: i64,
    /// Addresses or networks it is valid from; empty = anywhere.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Whether it may be used to get a new token.
    #[serde(default)]
    pub rn: bool,
    /// The id of the API key that issued it (directly or through earlier tokens).
    pub kid: String,
}

/// What `GET /user/apikeys/token` asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenRequest {
    pub expires_in: Option<i64>,
    pub renewable: Option<bool>,
    pub no_ip_protection: bool,
    /// The `ips` list as given (`request_ip` stands for the caller's address).
    pub ips: Vec<String>,
}

fn key(store: &dyn Records) -> Result<Vec<u8>> {
    Ok(store.token_secret()?)
}

/// The claims of a bearer token, if it is one this store issued, unexpired, whose key still
/// exists, presented from an address it is bound to. Expired and forged tokens are 401 (rokka.js
/// then drops its token); a valid token from elsewhere is 403.
pub fn verify(
    store: &dyn Records,
    token: &str,
    caller: Option<IpAddr>,
    now: i64,
) -> Result<Claims> {
    let secret = key(store)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
    let data =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&secret), &validation)
            .map_err(|e| Error::Unauthenticated(format!("the token is not valid: {e}")))?;
    let claims = data.claims;
    if claims.exp <= now {
        return Err(Error::Unauthenticated("the token has expired".into()));
    }
    let key_exists = store
        .user_keys(&claims.id)?
        .iter()
        .any(|(_, k)| k.id == claims.kid);
    if !key_exists {
        return Err(Error::Unauthenticated(
            "the API key that issued this token was deleted".into(),
        ));
    }
    if !claims.ips.is_empty() {
        let allowed = caller.is_some_and(|ip| {
            claims
                .ips
                .iter()
                .filter_map(|n| parse_net(n))
                .any(|net| net.contains(&ip))
        });
        if !allowed {
            return Err(Error::Forbidden(
                "this token is not valid from this address".into(),
            ));
        }
    }
    Ok(claims)
}

/// Issues a token for `who`. `presented` holds the claims when the request itself came with a
/// token (a renewal): it must be renewable and may not ask for a longer lifetime.
pub fn issue(
    store: &dyn Records,
    who: &Principal,
    presented: Option<&Claims>,
    request: &TokenRequest,
    caller: Option<IpAddr>,
    now: i64,
) -> Result<Value> {
    let Principal::User { user_id, key_id } = who else {
        return Err(Error::Invalid(
            "the root key cannot issue tokens; use a user's API key".into(),
        ));
    };
    // A renewal without `expires_in` keeps the lifetime of the token it renews.
    let lifetime = request
        .expires_in
        .unwrap_or(presented.map_or(DEFAULT_LIFETIME, |t| t.expt));
    if !(1..=MAX_LIFETIME).contains(&lifetime) {
        return Err(Error::Invalid(format!(
            "expires_in must be between 1 and {MAX_LIFETIME} seconds"
        )));
    }
    if let Some(token) = presented {
        if !token.rn {
            return Err(Error::Forbidden("this token is not renewable".into()));
        }
        if lifetime > token.expt {
            return Err(Error::Forbidden(format!(
                "a renewed token may live at most {} seconds, as the token it renews",
                token.expt
            )));
        }
    }
    if request.no_ip_protection && !request.ips.is_empty() {
        return Err(Error::Invalid(
            "no_ip_protection and ips cannot be used together".into(),
        ));
    }
    let ips: Vec<String> = if request.no_ip_protection {
        Vec::new()
    } else if request.ips.is_empty() {
        let ip = caller.ok_or_else(|| {
            Error::Invalid("the caller's address is unknown; use no_ip_protection".into())
        })?;
        vec![ip.to_string()]
    } else {
        if request.ips.len() > MAX_IPS {
            return Err(Error::Invalid(format!(
                "a token may be bound to at most {MAX_IPS} addresses"
            )));
        }
        let mut out = Vec::new();
        for entry in &request.ips {
            let entry = entry.trim();
            let net = if entry == "request_ip" {
                caller.map(|ip| ip.to_string()).ok_or_else(|| {
                    Error::Invalid("request_ip: the caller's address is unknown".into())
                })?
            } else {
                parse_net(entry)
                    .ok_or_else(|| {
                        Error::Invalid(format!("ips: '{entry}' is not an address or a network"))
                    })?
                    .to_string()
            };
            if !out.contains(&net) {
                out.push(net);
            }
        }
        out
    };
    // Bound to addresses, a token is renewable by default; unbound, it is not.
    let renewable = request.renewable.unwrap_or(!ips.is_empty());
    let claims = Claims {
        id: user_id.clone(),
        exp: now + lifetime,
        expt: lifetime,
        ips,
        rn: renewable,
        kid: presented.map_or_else(|| key_id.clone(), |t| t.kid.clone()),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&key(store)?),
    )
    .map_err(Error::internal)?;
    Ok(json!({
        "token": token,
        "payload": {
            "id": claims.id,
            "exp": claims.exp,
            "expt": claims.expt,
            "ips": claims.ips,
            "rn": claims.rn,
        }
    }))
}

/// The client's address: the peer, unless the peer is a trusted proxy, then the nearest
/// address in `X-Forwarded-For` that is not one (walking from the right, since a client can
/// write anything on the left).
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(list) = forwarded_for else {
        return Some(peer);
    };
    let mut last = peer;
    for entry in list.rsplit(',') {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            // A malformed entry: trust stops here.
            return Some(last);
        };
        if !is_trusted(&ip) {
            return Some(ip);
        }
        last = ip;
    }
    Some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|s| parse_net(s)).collect()
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let trusted = nets(&["127.0.0.1", "::1"]);
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("1.2.3.4"), &trusted),
            ip("1.2.3.4")
        );
        // A client cannot prepend its own choice: the right-most untrusted entry counts.
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("6.6.6.6, 1.2.3.4"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("1.2.3.4, 127.0.0.1"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(client_ip(ip("127.0.0.1"), None, &trusted), ip("127.0.0.1"));
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("junk"), &trusted),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn networks_and_addresses_parse() {
        assert!(parse_net("10.0.0.0/8")
            .unwrap()
            .contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert!(parse_net("192.0.2.7")
            .unwrap()
            .contains(&"192.0.2.7".parse::<IpAddr>().unwrap()));
        assert!(parse_net("2001:db8::/32").is_some());
        assert!(parse_net("nope").is_none());
    }
}
