//! The rules the store enforces inside its write transactions, as plain functions that decide.
//!
//! The store reads what a rule needs (the current record, how many accounts exist, which
//! accounts use a credential), asks the rule, and writes what it decided, all in one
//! transaction. The rules never touch the database, so they are tested here without one.

use super::credential::AuthDestination;
use super::oauth::{OAuthSettings, TokenSource};
use super::{
    Account, AccountId, AccountSpec, AuthMechanism, ConnectorId, CredentialId, CredentialKind,
    CredentialSpec, Micros, Role, etag, mechanism_for,
};
use crate::error::{Error, Result};

/// Creating an account: the first account becomes the default, and so must be enabled.
/// Returns whether the new account takes the default flag (clearing it on the others).
pub fn create_account(spec: &mut AccountSpec, existing_accounts: i64) -> Result<bool> {
    if existing_accounts == 0 {
        if !spec.enabled {
            return Err(Error::FailedPrecondition(
                "the first account becomes the default account, and a default account must be \
                 enabled; create it enabled"
                    .into(),
            ));
        }
        spec.is_default = true;
    }
    Ok(spec.is_default)
}

/// Updating an account: the default cannot give up the flag (another account must take it) or
/// be disabled. Returns whether the account takes the default flag from another one.
pub fn update_account(id: AccountId, current: &AccountSpec, new: &AccountSpec) -> Result<bool> {
    if current.is_default && !new.is_default {
        return Err(Error::FailedPrecondition(format!(
            "{id} is the default account; make another account the default \
             (SetDefaultAccount) instead of clearing is_default"
        )));
    }
    if current.is_default && !new.enabled {
        return Err(Error::FailedPrecondition(format!(
            "{id} is the default account and must stay enabled; make another account the \
             default first"
        )));
    }
    new.check()?;
    Ok(new.is_default && !current.is_default)
}

/// Changing `allow_plaintext_auth`: only the admin role may turn it on, since it lets a
/// session send the credential without TLS. Turning it off, or keeping it, needs no more than
/// the RPC itself. `role` is the caller's (`None`: not known, treated as not an admin).
pub fn plaintext_auth_change(role: Option<Role>, before: bool, after: bool) -> Result<()> {
    if after && !before && role != Some(Role::Admin) {
        return Err(Error::PermissionDenied(format!(
            "only the admin role may set allow_plaintext_auth (it lets AUTH send the credential \
             without TLS); the caller's role is {}: ask an admin, or use a TLS security mode",
            role.map_or("unknown", Role::as_str)
        )));
    }
    Ok(())
}

/// Deleting an account: the default cannot go while other accounts exist.
pub fn delete_account(id: AccountId, current: &AccountSpec, existing_accounts: i64) -> Result<()> {
    if current.is_default && existing_accounts > 1 {
        return Err(Error::FailedPrecondition(format!(
            "{id} is the default account and other accounts exist; make another account the \
             default (mailplane accounts set-default) before deleting it"
        )));
    }
    Ok(())
}

/// Making an account the default: `false` when it already is (nothing to do); a disabled
/// account cannot be the default.
pub fn set_default_account(id: AccountId, current: &AccountSpec) -> Result<bool> {
    if current.is_default {
        return Ok(false);
    }
    if !current.enabled {
        return Err(Error::FailedPrecondition(format!(
            "{id} is disabled, and a default account must be enabled; enable it first"
        )));
    }
    Ok(true)
}

/// An account naming a credential: `credential` is its spec, or `None` if it does not exist.
/// Fills in the mechanism from the kind when none was chosen, and checks that they fit and that
/// the account's host and port are among the credential's allowed destinations.
pub fn account_credential(
    spec: &mut AccountSpec,
    id: CredentialId,
    credential: Option<&CredentialSpec>,
) -> Result<()> {
    let Some(credential) = credential else {
        return Err(Error::FailedPrecondition(format!(
            "credential {id} does not exist; create it first (mailplane credentials create) or \
             name an existing one"
        )));
    };
    if spec.auth_mechanism.is_none() {
        spec.auth_mechanism = Some(mechanism_for(credential.kind));
    }
    spec.check_credential(credential.kind)?;
    account_destination(spec, id, &credential.allowed_destinations)?;
    if credential.agents_get_tokens() && !sends_through_connector(spec) {
        return Err(Error::FailedPrecondition(format!(
            "the tokens of {id} are got by a network connector's agents (token_source \
             TOKEN_SOURCE_CONNECTOR), so an account can use it only through a network connector: \
             set use_network_connector and network_connector, or have the credential's \
             token_source set to TOKEN_SOURCE_SERVER"
        )));
    }
    Ok(())
}

/// Whether an account sends through a network connector.
fn sends_through_connector(spec: &AccountSpec) -> bool {
    spec.use_network_connector && spec.network_connector.is_some()
}

/// Changing who gets a credential's tokens: when the connector's agents will, every account
/// using it must send through a connector. `FailedPrecondition` lists those that do not.
pub fn credential_token_source(
    id: CredentialId,
    credential: &CredentialSpec,
    users: &[Account],
) -> Result<()> {
    if !credential.agents_get_tokens() {
        return Ok(());
    }
    let direct: Vec<String> = users
        .iter()
        .filter(|a| !sends_through_connector(&a.spec))
        .map(|a| format!("{} ({})", a.id, a.spec.account_name))
        .collect();
    if direct.is_empty() {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "accounts that use {id} send directly, and could not get its tokens once the network \
         connector's agents get them: {}; point them at a network connector first, or keep \
         token_source TOKEN_SOURCE_SERVER",
        direct.join(", ")
    )))
}

/// An account may use a credential only while its host and port match one of the credential's
/// `allowed_destinations` (so that no one can aim the secret at a relay of their choosing).
pub fn account_destination(
    spec: &AccountSpec,
    id: CredentialId,
    allowed: &[AuthDestination],
) -> Result<()> {
    if mailplane_smtp::destination_allowed(allowed, &spec.host, spec.port) {
        return Ok(());
    }
    let target = host_port(&spec.host, spec.port);
    let list = if allowed.is_empty() {
        "none (an admin must set them first)".to_owned()
    } else {
        join(allowed)
    };
    Err(Error::FailedPrecondition(format!(
        "{target} is not among the allowed destinations of {id} ({list}): an account may use a \
         credential only with a host and port the credential allows; use one of them, or have an \
         admin add {target} (mailplane credentials update {} --allow-destination {target})",
        id.0
    )))
}

/// `host:port`, with an IPv6 address in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn join(destinations: &[AuthDestination]) -> String {
    destinations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Changing a credential's `allowed_destinations`: adding a destination that none of the
/// current ones covers (widening) needs the admin role, or the secret given again in the same
/// call (who knows the secret may send it anywhere). Narrowing needs no more than the RPC.
/// `role` is the caller's (`None`: not known, treated as not an admin).
pub fn destinations_change(
    id: CredentialId,
    role: Option<Role>,
    secret_given: bool,
    before: &[AuthDestination],
    after: &[AuthDestination],
) -> Result<()> {
    if role == Some(Role::Admin) || secret_given {
        return Ok(());
    }
    let added: Vec<AuthDestination> = after
        .iter()
        .filter(|a| !before.iter().any(|b| a.is_covered_by(b)))
        .cloned()
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!(
        "adding {} to the allowed_destinations of {id} widens where its secret may be sent, which \
         needs the admin role or the secret given again in the same call; the caller's role is \
         {}: ask an admin, or give the secret with the change (--rotate-secret)",
        join(&added),
        role.map_or("unknown", Role::as_str)
    )))
}

/// Moving a credential's token endpoint to another host or port sends its client secret
/// somewhere new, which needs the admin role or the client secret given again in the same
/// call (as widening `allowed_destinations` does). A new path on the same host does not.
pub fn token_url_change(
    id: CredentialId,
    role: Option<Role>,
    secret_given: bool,
    before: &OAuthSettings,
    after: &OAuthSettings,
) -> Result<()> {
    let origin = |u: &str| {
        url::Url::parse(u)
            .ok()
            .map(|u| (u.host_str().map(str::to_owned), u.port_or_known_default()))
    };
    if role == Some(Role::Admin) || secret_given {
        return Ok(());
    }
    if after.token_source == TokenSource::Connector && before.token_source != after.token_source {
        return Err(Error::PermissionDenied(format!(
            "letting the connector's agents get the tokens of {id} sends its client secret (and \
             refresh token) to them in each job, which needs the admin role or the client \
             secret given again in the same call; the caller's role is {}",
            role.map_or("unknown", Role::as_str)
        )));
    }
    if after.token_url.is_empty() || origin(&before.token_url) == origin(&after.token_url) {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!(
        "moving the token_url of {id} to {} sends its client secret to a new host, which needs \
         the admin role or the client secret given again in the same call; the caller's role \
         is {}",
        after.token_url,
        role.map_or("unknown", Role::as_str)
    )))
}

/// Changing a credential's `allowed_destinations`: every account using it must still be
/// allowed. `FailedPrecondition` lists those that would not be.
pub fn credential_destinations(
    id: CredentialId,
    allowed: &[AuthDestination],
    users: &[Account],
) -> Result<()> {
    let outside: Vec<String> = users
        .iter()
        .filter(|a| !mailplane_smtp::destination_allowed(allowed, &a.spec.host, a.spec.port))
        .map(|a| {
            format!(
                "{} ({}, {})",
                a.id,
                a.spec.account_name,
                host_port(&a.spec.host, a.spec.port)
            )
        })
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "the new allowed_destinations of {id} would leave accounts that use it outside the list: \
         {}; keep their host and port in the list, or point those accounts elsewhere first",
        outside.join(", ")
    )))
}

/// An account naming a network connector that does not exist.
pub fn missing_connector(id: ConnectorId) -> Error {
    Error::FailedPrecondition(format!(
        "network connector {id} does not exist; create it first (mailplane connectors create) \
         or name an existing one"
    ))
}

/// Changing a credential's kind: every account using it must still fit the new kind.
pub fn credential_kind(id: CredentialId, kind: CredentialKind, users: &[Account]) -> Result<()> {
    for account in users {
        account.spec.check_credential(kind).map_err(|_| {
            Error::FailedPrecondition(format!(
                "{} uses {id} with auth_mechanism {}, which does not fit kind {}; change the \
                 account first",
                account.id,
                account
                    .spec
                    .auth_mechanism
                    .map_or("", AuthMechanism::as_str),
                kind.as_str()
            ))
        })?;
    }
    Ok(())
}

/// `FailedPrecondition` naming the accounts (id and name) that still use `name`.
pub fn not_in_use(name: &str, users: &[(i64, String)], advice: &str) -> Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = users
        .iter()
        .map(|(id, account)| format!("{} ({account})", AccountId(*id)))
        .collect();
    Err(Error::FailedPrecondition(format!(
        "{name} is used by {}; {advice}",
        names.join(", ")
    )))
}

/// `Aborted` when the caller's etag names another version than the current one.
pub fn check_version(name: &str, expected: Option<i64>, current: i64) -> Result<()> {
    match expected {
        Some(expected) if expected != current => Err(Error::Aborted(format!(
            "{name} was changed by someone else (your etag {} is stale, the current one is {}); \
             read it again and reapply your change",
            etag(expected),
            etag(current)
        ))),
        _ => Ok(()),
    }
}

/// A new test of `account`, which has `unfinished` tests queued or running on any replica:
/// `ResourceExhausted` when that is already `limit`.
pub fn test_cap(account: AccountId, unfinished: i64, limit: usize) -> Result<()> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    if unfinished >= limit {
        return Err(Error::ResourceExhausted(format!(
            "{account} already has {unfinished} tests running (the limit is {limit}, on all \
             replicas together); wait for one to finish"
        )));
    }
    Ok(())
}

/// A new test on a server that runs `running` tests: `ResourceExhausted` when that is already
/// `limit`.
pub fn server_test_cap(running: usize, limit: usize) -> Result<()> {
    if running >= limit {
        return Err(Error::ResourceExhausted(format!(
            "this server already runs {running} tests (its limit, max_tests_running, is \
             {limit}); try again when some have finished"
        )));
    }
    Ok(())
}

/// Using an enrollment token, given its stored `(connector, expire_time, used_time)` if it
/// exists: the connector it enrolls into, or why it cannot be used.
pub fn enrollment_token(
    token: Option<(i64, Micros, Option<Micros>)>,
    now: Micros,
) -> Result<ConnectorId> {
    match token {
        None => Err(Error::Unauthenticated(
            "the enrollment token is not valid; create one with `mailplane connectors token \
             CONNECTOR`"
                .into(),
        )),
        Some((_, _, Some(_))) => Err(Error::Unauthenticated(
            "the enrollment token was already used (each token enrolls one agent); create a new \
             one with `mailplane connectors token`"
                .into(),
        )),
        Some((_, expire, None)) if expire <= now => Err(Error::Unauthenticated(
            "the enrollment token has expired; create a new one with `mailplane connectors \
             token`"
                .into(),
        )),
        Some((connector, _, None)) => Ok(ConnectorId(connector)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_caps_tests_at_once() {
        assert!(server_test_cap(63, 64).is_ok());
        let err = server_test_cap(64, 64).unwrap_err();
        assert!(matches!(err, Error::ResourceExhausted(_)), "{err}");
        assert!(err.to_string().contains("max_tests_running"), "{err}");
    }

    #[test]
    fn test_cap_counts_every_replica() {
        assert!(test_cap(AccountId(1), 3, 4).is_ok());
        let err = test_cap(AccountId(1), 4, 4).unwrap_err();
        assert!(matches!(err, Error::ResourceExhausted(_)), "{err}");
        assert!(err.to_string().contains("limit is 4"), "{err}");
    }
    use crate::domain::account::tests::spec;

    #[test]
    fn the_first_account_becomes_the_default() {
        let mut s = spec();
        assert!(create_account(&mut s, 0).unwrap());
        assert!(s.is_default);
        let mut s = spec();
        assert!(!create_account(&mut s, 3).unwrap());
        let mut s = AccountSpec {
            enabled: false,
            ..spec()
        };
        assert!(create_account(&mut s, 0).is_err());
    }

    #[test]
    fn the_default_keeps_its_flag_and_stays_enabled() {
        let id = AccountId(1);
        let default = AccountSpec {
            is_default: true,
            ..spec()
        };
        let cleared = AccountSpec {
            is_default: false,
            ..spec()
        };
        assert!(update_account(id, &default, &cleared).is_err());
        assert!(update_account(id, &spec(), &default).unwrap());
        assert!(delete_account(id, &default, 2).is_err());
        assert!(delete_account(id, &default, 1).is_ok());
        assert!(!set_default_account(id, &default).unwrap());
        let disabled = AccountSpec {
            enabled: false,
            ..spec()
        };
        assert!(set_default_account(id, &disabled).is_err());
    }

    #[test]
    fn only_an_admin_turns_on_plaintext_auth() {
        for role in [Role::Operator, Role::Viewer, Role::Sender] {
            let err = plaintext_auth_change(Some(role), false, true).unwrap_err();
            assert!(matches!(err, Error::PermissionDenied(_)), "{err}");
            assert!(err.to_string().contains("allow_plaintext_auth"), "{err}");
            // Keeping it on (another field changed) or turning it off is fine.
            assert!(plaintext_auth_change(Some(role), true, true).is_ok());
            assert!(plaintext_auth_change(Some(role), true, false).is_ok());
            assert!(plaintext_auth_change(Some(role), false, false).is_ok());
        }
        assert!(plaintext_auth_change(None, false, true).is_err());
        assert!(plaintext_auth_change(Some(Role::Admin), false, true).is_ok());
    }

    fn dests(list: &[&str]) -> Vec<AuthDestination> {
        list.iter().map(|d| d.parse().unwrap()).collect()
    }

    #[test]
    fn widening_destinations_needs_an_admin_or_the_secret() {
        let id = CredentialId(3);
        let before = dests(&["relay.example.com:587", "*.mail.example.org"]);
        for role in [Some(Role::Operator), Some(Role::Viewer), None] {
            // Narrowing, keeping, and adding what is already covered are fine.
            for after in [
                &["relay.example.com:587"][..],
                &["relay.example.com:587", "*.mail.example.org"],
                &["eu.mail.example.org:25", "*.eu.mail.example.org"],
            ] {
                assert!(
                    destinations_change(id, role, false, &before, &dests(after)).is_ok(),
                    "{after:?}"
                );
            }
            for after in [
                &["relay.example.com"][..],
                &["relay.example.com:587", "attacker.test:587"],
                &["*.example.org"],
                &["relay.example.com:2525"],
            ] {
                let err = destinations_change(id, role, false, &before, &dests(after)).unwrap_err();
                assert!(matches!(err, Error::PermissionDenied(_)), "{err}");
                let text = err.to_string();
                assert!(
                    text.contains("admin role") && text.contains("secret given again"),
                    "{text}"
                );
                assert!(
                    text.contains(&dests(after).last().unwrap().to_string()),
                    "{text}"
                );
                // The secret given again in the same call is enough.
                assert!(destinations_change(id, role, true, &before, &dests(after)).is_ok());
            }
        }
        let wide = dests(&["attacker.test"]);
        assert!(destinations_change(id, Some(Role::Admin), false, &before, &wide).is_ok());
        // From nothing (an unused credential after the upgrade) everything is widening.
        assert!(destinations_change(id, Some(Role::Operator), false, &[], &before).is_err());
    }

    #[test]
    fn accounts_must_stay_inside_their_credentials_destinations() {
        let id = CredentialId(3);
        let mut s = spec();
        s.host = "relay.example.com".into();
        s.port = 587;
        assert!(account_destination(&s, id, &dests(&["relay.example.com:587"])).is_ok());
        assert!(account_destination(&s, id, &dests(&["*.example.com"])).is_ok());
        for list in [&["relay.example.com:25"][..], &["attacker.test"], &[]] {
            let err = account_destination(&s, id, &dests(list)).unwrap_err();
            assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("relay.example.com:587") && text.contains("credentials/3"),
                "{text}"
            );
        }
        s.host = "2001:db8::1".into();
        let err = account_destination(&s, id, &[]).unwrap_err();
        assert!(err.to_string().contains("[2001:db8::1]:587"), "{err}");
        assert!(account_destination(&s, id, &dests(&["[2001:db8::1]:587"])).is_ok());

        let users = [Account {
            id: AccountId(9),
            spec: AccountSpec {
                host: "relay.example.com".into(),
                port: 587,
                ..spec()
            },
            version: 1,
            create_time: 0,
            update_time: 0,
        }];
        assert!(credential_destinations(id, &dests(&["relay.example.com"]), &users).is_ok());
        let err = credential_destinations(id, &dests(&["other.example.com"]), &users).unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        assert!(
            err.to_string().contains("accounts/9")
                && err.to_string().contains("relay.example.com:587"),
            "{err}"
        );
    }

    #[test]
    fn messages_name_the_users_and_the_versions() {
        let err = not_in_use("credentials/2", &[(1, "a".into())], "fix it").unwrap_err();
        assert_eq!(
            err.to_string(),
            "credentials/2 is used by accounts/1 (a); fix it"
        );
        assert!(check_version("accounts/1", Some(1), 2).is_err());
        assert!(check_version("accounts/1", None, 2).is_ok());
        assert!(enrollment_token(Some((1, 10, None)), 5).is_ok());
        assert!(enrollment_token(Some((1, 10, None)), 10).is_err());
    }
}
