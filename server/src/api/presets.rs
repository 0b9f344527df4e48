//! Provider presets at the gRPC edge (ListPresets and ResolvePreset of `SmtpAccountService`).

use crate::domain::presets::{self, Preset, PresetId, Resolved};
use crate::error::{Error, Result};
use mailplane_proto::v1 as pb;
use mailplane_smtp::proto as smtp_pb;
use std::collections::BTreeMap;

/// Every preset, placeholders unfilled.
pub fn list() -> pb::ListPresetsResponse {
    pb::ListPresetsResponse {
        presets: PresetId::ALL
            .into_iter()
            .map(|id| to_pb(&id.preset(), None))
            .collect(),
    }
}

/// The preset `req.name` with its placeholders filled from `req.placeholder_values`.
pub fn resolve(req: &pb::ResolvePresetRequest) -> Result<pb::Preset> {
    let id = preset_id(&req.name)?;
    let values: BTreeMap<String, String> = req
        .placeholder_values
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let resolved = presets::resolve(id, &values)?;
    Ok(to_pb(&resolved.preset, Some(&resolved)))
}

/// Parses `presets/{preset_id}`.
fn preset_id(name: &str) -> Result<PresetId> {
    let Some(id) = name.strip_prefix("presets/") else {
        return Err(Error::invalid(
            "name",
            format!(
                "must be presets/{{preset_id}}, one of: {}",
                PresetId::NAMES.map(|n| format!("presets/{n}")).join(", ")
            ),
        ));
    };
    Ok(PresetId::parse(id)?)
}

/// The message of `preset`, with the filled host and token URL of `resolved` when given.
fn to_pb(preset: &Preset, resolved: Option<&Resolved>) -> pb::Preset {
    pb::Preset {
        name: format!("presets/{}", preset.id),
        preset_id: preset.id.as_str().to_owned(),
        display_name: preset.display_name.to_owned(),
        host: resolved.map_or_else(|| preset.host.to_owned(), |r| r.host.clone()),
        port: u32::from(preset.port),
        security: smtp_pb::security_to_pb(preset.security).into(),
        auth_mechanism: smtp_pb::mechanism_to_pb(preset.auth_mechanism).into(),
        credential_kind: pb::CredentialKind::from(preset.credential_kind).into(),
        token_url: match resolved {
            Some(r) => r.token_url.clone().unwrap_or_default(),
            None => preset.token_url.unwrap_or_default().to_owned(),
        },
        scope: preset.scope.unwrap_or_default().to_owned(),
        username: preset.username.unwrap_or_default().to_owned(),
        sender_rules: preset.sender_rules.to_owned(),
        placeholders: preset
            .placeholders
            .iter()
            .map(|p| pb::PresetPlaceholder {
                key: p.key().to_owned(),
                description: p.description().to_owned(),
                example: p.example().to_owned(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, pairs: &[(&str, &str)]) -> pb::ResolvePresetRequest {
        pb::ResolvePresetRequest {
            name: name.to_owned(),
            placeholder_values: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn list_has_every_preset_with_its_templates() {
        let presets = list().presets;
        assert_eq!(presets.len(), PresetId::ALL.len());
        let m365 = &presets[0];
        assert_eq!(m365.name, "presets/microsoft365");
        assert_eq!(m365.auth_mechanism, i32::from(pb::AuthMechanism::Xoauth2));
        assert!(m365.token_url.contains("{tenant}"));
        assert_eq!(m365.placeholders[0].key, "tenant");
    }

    #[test]
    fn resolve_fills_and_errors_name_the_field() {
        let got = resolve(&request("presets/amazon-ses", &[("region", "eu-west-1")])).unwrap();
        assert_eq!(got.host, "email-smtp.eu-west-1.amazonaws.com");
        assert_eq!(got.placeholders.len(), 1);
        let err = resolve(&request("presets/microsoft365", &[])).unwrap_err();
        assert!(
            err.to_string().starts_with("placeholder_values[tenant]: "),
            "{err}"
        );
        for bad in ["microsoft365", "presets/yahoo", ""] {
            let err = resolve(&request(bad, &[])).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { ref field, .. } if field == "name"));
        }
    }
}
